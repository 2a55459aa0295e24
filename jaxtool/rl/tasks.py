"""RL tasks: what a rollout starts from and what its reward is judged against.

    Task(id, prompt, example=None, env="", entry=None)

* **Single-turn tool-call tasks** from any training source (`name:path`, a conversations JSONL, or
  `bundled`), through iTool's example builder (`jaxtool.eval.tool_tasks.load_examples`): the prompt is
  every message before the gold assistant turn (with its tools), the gold turn is judged by the
  outcome checker (`jaxtool.eval.outcome.judge_text`: call equality, or BFCL's AST rules for BFCL
  items). Gold answers that do not parse back, bad rows, duplicates and BFCL test queries (the
  split guard, `data.guard=bfcl`) are dropped there and counted by reason (`ExampleReport`).
* **Multi-turn environment tasks** from a JSONL file (`data.env_tasks`), one object per line:
  `{"id": str, "env": "kv", "messages": [{"role": "user", "content": ...}, ...], "entry": {...},
  "goal": {...}}` — the environment (an entry of `ENVS`) is built and `reset(entry)` per trajectory;
  its tools are the prompt's tools; `goal` is what the `env_goal` reward compares with
  `env.state()`. Bad lines raise a `DataError` naming file, line and field.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Mapping

from jaxtool.data.schema import Conversation, Message, Tool
from jaxtool.errors import ConfigError, DataError


def _kv():
    from jaxtool.envs.toy import KeyValueEnv

    return KeyValueEnv()


def _bfcl():
    from jaxtool.envs.bfcl import BFCLEnv

    return BFCLEnv()


# environment name -> factory of a fresh `jaxtool.envs.ToolEnv`. "bfcl": BFCL's multi-turn simulators
# (an example environment: entries are {"involved_classes": [...], "initial_config": {...}} written
# for training — never BFCL's test entries: the split guard drops a task whose user turn is a BFCL
# test query)
ENVS: dict[str, Callable[[], Any]] = {"kv": _kv, "bfcl": _bfcl}


@dataclasses.dataclass
class Task:
    id: str
    prompt: Conversation           # messages up to the first assistant turn, with the tools
    example: Any = None            # the itool `Example` (gold answer) of a single-turn task
    env: str = ""                  # an entry of ENVS for multi-turn tasks
    entry: Mapping[str, Any] | None = None   # the environment's dataset entry; "goal" for env_goal

    def make_env(self):
        if not self.env:
            return None
        env = ENVS[self.env]()
        env.reset(dict(self.entry or {}))
        return env


def source_tasks(specs, fmt, *, target: str = "first_call", limit: int = 0, guard: str = "bfcl",
                 guard_data: str = ""):
    """Single-turn tasks from training sources; (tasks, ExampleReport)."""
    from jaxtool.eval.tool_tasks import load_examples, make_guard

    exs, report = load_examples(list(specs), fmt, target=target, limit=limit, guard=make_guard(guard, guard_data))
    return [Task(e.id, e.prompt, example=e) for e in exs], report


def env_tasks(path: str, limit: int = 0, guard=None, dropped=None) -> list[Task]:
    """Multi-turn tasks from a JSONL file (see the module doc). `guard` (a `SplitGuard`): a task with a
    user turn equal to a benchmark test query is dropped and counted in `dropped` (a Counter)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected an object")
            env = row.get("env")
            if env not in ENVS:
                raise DataError(f"{where}: field 'env' must be one of {sorted(ENVS)}, got {env!r}")
            msgs = row.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise DataError(f"{where}: field 'messages' must be a non-empty list of messages")
            entry = row.get("entry") or {}
            if not isinstance(entry, dict):
                raise DataError(f"{where}: field 'entry' must be an object")
            entry = {**entry, "goal": row.get("goal")} if "goal" in row else entry
            probe = ENVS[env]()
            probe.reset(entry)
            tools = tuple(Tool.from_dict(t, f"{where}: env tool") for t in probe.tools())
            try:
                conv = Conversation(tuple(Message.from_dict(m, f"{where}: messages[{i}]") for i, m in enumerate(msgs)),
                                    tools=tools, meta={"id": str(row.get("id", n))})
            except DataError:
                raise
            if guard is not None and any(m.role == "user" and guard.match(m.content or "") for m in conv.messages):
                if dropped is not None:
                    dropped["task: benchmark test query"] += 1
                continue
            out.append(Task(str(row.get("id", n)), conv, env=env, entry=entry))
            if limit and len(out) >= limit:
                break
    if not out:
        raise ConfigError(f"{path}: no tasks" + (f" ({dict(dropped)})" if dropped else ""))
    return out


__all__ = ["Task", "ENVS", "source_tasks", "env_tasks"]
