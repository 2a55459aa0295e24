"""The tool-environment interface: something a model's tool calls run against.

A `ToolEnv` is one episode's world. `reset(entry)` builds it from a dataset entry (and may return a
first observation); `step(calls)` runs a list of parsed calls in order and returns one `ToolResult`
per call; `state()` is a cheap, comparable (JSON-like) picture of the world that checkers compare;
`snapshot()` / `restore(snap)` save and roll back the whole world (the MCTS sampler expands several
children from one node; an RL rollout may branch). `tools()` lists the OpenAI-style function schemas
available *now* (BFCL's `miss_func` entries add functions mid-episode).

Calls reach an environment already parsed — a `jaxtool.data.schema.ToolCall` (name + a dict of
JSON-literal arguments), produced by the chat format's parser (`jaxtool.data.calls`). An environment
never sees model text, and never `eval`s anything: it looks the name up in its own table of tools.

`EnvBatch` holds one environment per entry of a batch and steps only the ones given calls, so a
batched decoder (one `Backend.generate` call for every entry's current step) drives entries that
advance independently: some finish their turn, others keep calling tools.

Layering: `jaxtool.envs` sits above `jaxtool.data` (for `ToolCall`) and below `jaxtool.sample` and
`jaxtool.eval`; it imports nothing from the layers above it (tests/test_layering.py).
"""

from __future__ import annotations

import abc
import copy
import dataclasses
from typing import Any, Callable, Iterable, Mapping, Sequence

from jaxtool.data.schema import ToolCall
from jaxtool.errors import DataError

__all__ = ["ToolCall", "ToolResult", "ToolEnv", "EnvBatch", "EnvEntryError", "function_schema"]


class EnvEntryError(DataError):
    """A dataset entry an environment cannot be built from (names the entry and the field)."""


@dataclasses.dataclass(frozen=True)
class ToolResult:
    """What one call returned, as the text the model will read in the tool message.

    content: the result (environments serialise structured results to JSON text themselves)
    error  : True when the call failed (unknown function, bad arguments, the tool raised)
    name   : the function called (for chat formats whose tool messages carry it)
    """

    content: str
    error: bool = False
    name: str = ""


def function_schema(name: str, description: str, properties: Mapping[str, Mapping[str, Any]],
                    required: Sequence[str] = ()) -> dict:
    """An OpenAI-style `{"type": "function", "function": {...}}` schema."""
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": dict(properties), "required": list(required)}}}


class ToolEnv(abc.ABC):
    """One episode's tool world. Subclasses implement `tools`, `reset`, `step`, `state`; the default
    `snapshot`/`restore` deep-copy `self.__dict__`, which is right for small pure-Python worlds
    (override where a cheaper copy exists)."""

    @abc.abstractmethod
    def tools(self) -> list[dict]:
        """OpenAI-style function schemas of the tools callable now."""

    @abc.abstractmethod
    def reset(self, entry: Mapping[str, Any] | None = None) -> str | None:
        """(Re)build the world from a dataset entry; the initial observation, or None."""

    @abc.abstractmethod
    def step(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        """Run `calls` in order; exactly one result per call. Never raises for a bad call: an
        unknown name, bad arguments or a failing tool is a `ToolResult(error=True)`."""

    @abc.abstractmethod
    def state(self) -> dict:
        """A comparable snapshot of the world (JSON-like values: equal worlds give equal dicts)."""

    def snapshot(self) -> Any:
        """An opaque copy of the whole world; `restore(snap)` returns to it (snap stays reusable)."""
        return copy.deepcopy(self.__dict__)

    def restore(self, snap: Any) -> None:
        self.__dict__.clear()
        self.__dict__.update(copy.deepcopy(snap))

    def tool_names(self) -> list[str]:
        return [t["function"]["name"] if "function" in t else t["name"] for t in self.tools()]


class EnvBatch:
    """One environment per entry; steps only the entries given calls.

        batch = EnvBatch(lambda: KeyValueEnv(), entries)       # reset(entry) on each
        results = batch.step({0: calls_a, 3: calls_b})          # {0: [...], 3: [...]}
        batch.done[1] = True                                    # callers mark finished entries
        batch.active()                                          # indices not done
    """

    def __init__(self, make_env: Callable[[], ToolEnv], entries: Iterable[Mapping[str, Any] | None]):
        self.entries = list(entries)
        self.envs: list[ToolEnv] = [make_env() for _ in self.entries]
        self.observations: list[str | None] = [env.reset(e) for env, e in zip(self.envs, self.entries)]
        self.done: list[bool] = [False] * len(self.envs)

    def __len__(self) -> int:
        return len(self.envs)

    def __getitem__(self, i: int) -> ToolEnv:
        return self.envs[i]

    def active(self) -> list[int]:
        return [i for i, d in enumerate(self.done) if not d]

    def step(self, calls: Mapping[int, Sequence[ToolCall]]) -> dict[int, list[ToolResult]]:
        """Step env i with calls[i] for each i given; others are untouched."""
        out = {}
        for i, cs in calls.items():
            if self.done[i]:
                raise ValueError(f"entry {i} is done; it cannot be stepped")
            out[i] = self.envs[i].step(cs)
        return out

    def states(self, indices: Sequence[int] | None = None) -> list[dict]:
        idx = range(len(self.envs)) if indices is None else indices
        return [self.envs[i].state() for i in idx]

    def snapshot(self, indices: Sequence[int] | None = None) -> dict[int, Any]:
        idx = range(len(self.envs)) if indices is None else indices
        return {i: self.envs[i].snapshot() for i in idx}

    def restore(self, snaps: Mapping[int, Any]) -> None:
        for i, s in snaps.items():
            self.envs[i].restore(s)
