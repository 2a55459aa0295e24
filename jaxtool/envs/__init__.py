"""Tool environments: worlds that a model's parsed tool calls run against (see `base`).

`base`  the interface (`ToolEnv`, `ToolResult`, `EnvBatch`)
`toy`   `KeyValueEnv`, a tiny deterministic environment for tests
`bfcl`  BFCL's multi-turn simulators (bfcl-eval's classes) behind the interface
"""

from jaxtool.envs.base import EnvBatch, EnvEntryError, ToolCall, ToolEnv, ToolResult, function_schema
from jaxtool.envs.toy import KeyValueEnv

__all__ = ["EnvBatch", "EnvEntryError", "KeyValueEnv", "ToolCall", "ToolEnv", "ToolResult", "function_schema"]
