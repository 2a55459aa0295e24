"""A tiny deterministic tool environment for tests: a key-value store with a call counter.

Tools: `kv_set(key, value)`, `kv_get(key)`, `kv_delete(key)`, `kv_list()`. The entry given to
`reset` may hold `{"initial": {key: value, ...}}`. Results are JSON text; a missing key, an unknown
tool or bad arguments come back as `ToolResult(error=True)` with a message naming the problem.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from jaxtool.envs.base import EnvEntryError, ToolCall, ToolEnv, ToolResult, function_schema

_TOOLS = [
    function_schema("kv_set", "Store a value under a key.",
                    {"key": {"type": "string"}, "value": {"type": "string"}}, ["key", "value"]),
    function_schema("kv_get", "Read the value stored under a key.", {"key": {"type": "string"}}, ["key"]),
    function_schema("kv_delete", "Delete a key.", {"key": {"type": "string"}}, ["key"]),
    function_schema("kv_list", "List the stored keys, sorted.", {}, []),
]
_REQUIRED = {t["function"]["name"]: set(t["function"]["parameters"]["required"]) for t in _TOOLS}
_ALLOWED = {t["function"]["name"]: set(t["function"]["parameters"]["properties"]) for t in _TOOLS}


class KeyValueEnv(ToolEnv):
    def __init__(self) -> None:
        self.store: dict[str, Any] = {}
        self.calls = 0

    def tools(self) -> list[dict]:
        return [dict(t) for t in _TOOLS]

    def reset(self, entry: Mapping[str, Any] | None = None) -> str | None:
        initial = (entry or {}).get("initial", {})
        if not isinstance(initial, Mapping):
            raise EnvEntryError(f"KeyValueEnv entry: field 'initial' must be an object, "
                                f"got {type(initial).__name__}")
        self.store = {str(k): v for k, v in initial.items()}
        self.calls = 0
        return None

    def state(self) -> dict:
        return {"store": dict(self.store), "calls": self.calls}

    def snapshot(self) -> Any:
        return (dict(self.store), self.calls)

    def restore(self, snap: Any) -> None:
        self.store, self.calls = dict(snap[0]), snap[1]

    def step(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        return [self._one(c) for c in calls]

    def _one(self, call: ToolCall) -> ToolResult:
        name, args = call.name, dict(call.arguments)
        if name not in _REQUIRED:
            return ToolResult(f"Error: unknown function {name!r}", True, name)
        missing = _REQUIRED[name] - set(args)
        extra = set(args) - _ALLOWED[name]
        if missing or extra:
            return ToolResult(f"Error: {name}: missing {sorted(missing)}, unexpected {sorted(extra)}", True, name)
        self.calls += 1
        if name == "kv_set":
            self.store[str(args["key"])] = args["value"]
            return ToolResult(json.dumps({"ok": True}), False, name)
        if name == "kv_list":
            return ToolResult(json.dumps(sorted(self.store)), False, name)
        key = str(args["key"])
        if key not in self.store:
            return ToolResult(f"Error: no key {key!r}", True, name)
        if name == "kv_get":
            return ToolResult(json.dumps(self.store[key]), False, name)
        del self.store[key]
        return ToolResult(json.dumps({"ok": True}), False, name)
