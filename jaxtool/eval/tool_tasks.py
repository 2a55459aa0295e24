"""Tool-use tasks with a gold answer, shared by iTool (its training examples) and online RL (its
single-turn tasks), so neither application imports the other: a tool-use query (the messages before an assistant turn, plus the
candidate tools) and its gold answer (that assistant turn).

An `Example` is stored as one `Conversation` whose last message is the gold assistant message, so
`prompt` = every message before it and `gold` = the last one. Which assistant turn of a source
dialogue becomes the gold answer is `target`:

- `first_call` (default): the first assistant message that calls a tool; a dialogue without any
  call falls back to its last assistant message (a text answer: the policy is then right when it
  makes no call);
- `last`: the last assistant message (iTool's released loader takes the final turn).

Every conversation is checked before it becomes an example; a failed check drops it and counts it
by reason in an `ExampleReport` (never an exception, never a silent drop):

- `source: <reason>`            the source loader skipped the row (bad JSON, unknown tool, ...)
- `no assistant turn`           nothing to learn from
- `prompt does not end with a user or tool message`
- `tool schema invalid`         a tool's `parameters` is not an object schema with a mapping of
                                property schemas and a `required` list naming its properties
- `gold call does not fit its tool schema`   unknown tool, unknown argument, or a required one missing
- `gold not expressible in <format>`         the chat format cannot write the gold answer
                                              (e.g. a tool name with spaces in pythonic calls)
- `gold does not parse back`    rendering the gold answer and parsing it with the format's own
                                parser does not give the same calls back
- `benchmark test query`        a user turn of the query equals a BFCL test query (split guard)
- `duplicate id`
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any, Iterable, Iterator, Mapping, Sequence

from jaxtool.data.schema import Conversation, Message, SchemaError, Tool, ToolCall
from jaxtool.errors import ConfigError, DataError

TARGETS = ("first_call", "last")


@dataclasses.dataclass(frozen=True)
class Example:
    """One iTool example. `conversation.messages[-1]` is the gold assistant message."""

    id: str
    conversation: Conversation

    @property
    def prompt(self) -> Conversation:
        """The query: every message before the gold answer, and the candidate tools."""
        return self.conversation.replace(messages=self.conversation.messages[:-1])

    @property
    def gold(self) -> Message:
        return self.conversation.messages[-1]

    @property
    def tools(self) -> tuple[Tool, ...]:
        return self.conversation.tools

    # -- the three difficulty criteria of iTool §3.1 ------------------------------------------
    @property
    def n_tools(self) -> int:
        """Number of candidate tools."""
        return len(self.tools)

    @property
    def toolset_chars(self) -> int:
        """String length of the toolset: characters of the tools' specs as compact JSON."""
        return len(json.dumps([t.spec() for t in self.tools], ensure_ascii=False))

    @property
    def n_calls(self) -> int:
        """Number of tool calls in the gold answer."""
        return len(self.gold.tool_calls)

    @property
    def query(self) -> str:
        """The first user turn (what the split guard compares)."""
        return next((m.content or "" for m in self.conversation.messages if m.role == "user"), "")

    def to_dict(self) -> dict:
        d = self.conversation.to_dict()
        d["meta"] = {**dict(self.conversation.meta), "id": self.id}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "example") -> "Example":
        conv = Conversation.from_dict(d, where)
        ex_id = conv.meta.get("id")
        if not isinstance(ex_id, str) or not ex_id:
            raise DataError(f"{where}: meta.id must be a non-empty string")
        if not conv.messages or conv.messages[-1].role != "assistant":
            raise DataError(f"{where}: the last message must be the gold assistant answer")
        return cls(ex_id, conv)


@dataclasses.dataclass
class ExampleReport:
    """Conversations seen, examples kept, and drops counted by reason (first detail kept)."""

    seen: int = 0
    kept: int = 0
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    first: dict = dataclasses.field(default_factory=dict)
    guard: dict = dataclasses.field(default_factory=dict)

    def drop(self, reason: str, detail: str = "", n: int = 1) -> None:
        self.dropped[reason] += n
        self.first.setdefault(reason, detail)

    def to_dict(self) -> dict:
        return {"seen": self.seen, "kept": self.kept, "dropped": dict(self.dropped.most_common()),
                "first_of_each": dict(self.first), "guard": dict(self.guard)}

    def __str__(self) -> str:
        lines = [f"examples: {self.seen} conversations read, {self.kept} kept, {sum(self.dropped.values())} dropped"]
        for reason, n in self.dropped.most_common():
            detail = self.first.get(reason)
            lines.append(f"  {n:6d} × {reason}" + (f"  (first: {detail})" if detail else ""))
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# checks
# ------------------------------------------------------------------------------------------------

def tool_schema_problem(tool: Tool) -> str | None:
    """Why `tool.parameters` is not a usable JSON object schema, or None."""
    p = tool.parameters
    if p.get("type", "object") not in ("object", "dict"):
        return f"{tool.name}: parameters.type is {p.get('type')!r}, not 'object'"
    props = p.get("properties", {})
    if not isinstance(props, Mapping):
        return f"{tool.name}: parameters.properties is not an object"
    for name, spec in props.items():
        if not isinstance(spec, Mapping):
            return f"{tool.name}: property {name!r} is not a schema object"
        t = spec.get("type")
        if t is not None and not isinstance(t, str) and not (isinstance(t, list) and all(isinstance(x, str) for x in t)):
            return f"{tool.name}: property {name!r} has type {t!r}"
    req = p.get("required", [])
    if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
        return f"{tool.name}: parameters.required is not a list of names"
    missing = [r for r in req if r not in props]
    if missing:
        return f"{tool.name}: required {missing} not among the properties"
    return None


def call_schema_problem(call: ToolCall, tools: Sequence[Tool]) -> str | None:
    """Why a gold call does not fit its tool's schema (unknown tool / argument, missing required), or None."""
    tool = next((t for t in tools if t.name == call.name), None)
    if tool is None:
        return f"call to {call.name!r}, which is not among the tools"
    props = tool.properties
    if props:
        unknown = [a for a in call.arguments if a not in props]
        if unknown:
            return f"{call.name}: unknown arguments {unknown}"
    missing = [r for r in tool.required if r not in call.arguments]
    if missing:
        return f"{call.name}: required arguments {missing} missing"
    return None


def _calls_key(calls: Iterable[ToolCall]) -> list:
    return [(c.name, json.dumps(dict(c.arguments), sort_keys=True, ensure_ascii=False)) for c in calls]


def gold_round_trip_problem(conv: Conversation, fmt) -> tuple[str, str] | None:
    """(reason, detail) when the format cannot write the gold answer or its parser does not give
    the gold calls back; None when it round-trips."""
    from jaxtool.data.formats import FormatError

    try:
        segs = fmt.render(conv)
    except FormatError as e:
        return f"gold not expressible in {fmt.name}", str(e)
    except DataError as e:
        return f"gold not expressible in {fmt.name}", str(e)
    last = len(conv.messages) - 1
    body = "".join(s.text for s in segs if s.trainable and s.message == last)
    reply = fmt.parse(body)
    if reply.error is not None:
        return "gold does not parse back", f"{reply.error.reason}: {body[:120]!r}"
    gold = conv.messages[-1]
    if sorted(_calls_key(reply.tool_calls)) != sorted(_calls_key(gold.tool_calls)):
        return "gold does not parse back", f"parsed {_calls_key(reply.tool_calls)} != gold {_calls_key(gold.tool_calls)}"
    return None


def pick_target(conv: Conversation, target: str) -> int | None:
    """Index of the assistant message that becomes the gold answer, or None."""
    turns = conv.assistant_turns
    if not turns:
        return None
    if target == "first_call":
        calls = [i for i in turns if conv.messages[i].tool_calls]
        return calls[0] if calls else turns[-1]
    if target == "last":
        return turns[-1]
    raise ConfigError(f"data.target must be one of {TARGETS}, got {target!r}")


# ------------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------------

def make_guard(kind: str, data_dir: str = ""):
    """The split guard that keeps benchmark test queries out (`kind` "bfcl"), or None ("none")."""
    if kind == "none":
        return None
    if kind != "bfcl":
        raise ConfigError(f"data.guard must be 'bfcl' or 'none', got {kind!r}")
    from jaxtool.eval.split_guard import SplitGuard, bfcl_data_dir, bfcl_queries
    path = data_dir or bfcl_data_dir()
    if not path:
        raise ConfigError("data.guard=bfcl needs the BFCL test files: install bfcl-eval "
                          "(pip install --no-deps bfcl-eval), set data.guard_data=DIR, or data.guard=none")
    guard = SplitGuard()
    guard.add_queries(bfcl_queries(path), "bfcl")
    return guard


def examples_from_conversations(convs: Iterable[tuple[str, Conversation]], fmt, *, target: str = "first_call",
                                guard=None, report: ExampleReport | None = None) -> list[Example]:
    """Examples from `(id, conversation)` pairs; every drop is counted in `report` by reason."""
    rep = report if report is not None else ExampleReport()
    out: list[Example] = []
    seen_ids: set[str] = set()
    for ex_id, conv in convs:
        rep.seen += 1
        idx = pick_target(conv, target)
        if idx is None:
            rep.drop("no assistant turn", ex_id)
            continue
        trimmed = conv.replace(messages=conv.messages[:idx + 1])
        before = [m for m in trimmed.messages[:-1] if m.role != "system"]
        if not before or before[-1].role not in ("user", "tool"):
            rep.drop("prompt does not end with a user or tool message", ex_id)
            continue
        bad_tool = next((p for p in map(tool_schema_problem, trimmed.tools) if p), None)
        if bad_tool:
            rep.drop("tool schema invalid", f"{ex_id}: {bad_tool}")
            continue
        bad_call = next((p for p in (call_schema_problem(c, trimmed.tools) for c in trimmed.messages[-1].tool_calls)
                         if p), None)
        if bad_call:
            rep.drop("gold call does not fit its tool schema", f"{ex_id}: {bad_call}")
            continue
        problem = gold_round_trip_problem(trimmed, fmt)
        if problem:
            rep.drop(problem[0], f"{ex_id}: {problem[1]}")
            continue
        ex = Example(ex_id, trimmed.replace(meta={**dict(conv.meta), "id": ex_id}))
        if guard is not None:
            hit = next((h for h in (guard.match(m.content) for m in ex.prompt.messages
                                    if m.role == "user" and m.content) if h), None)
            if hit:
                rep.drop("benchmark test query", f"{ex_id} ({hit})")
                continue
        if ex_id in seen_ids:
            rep.drop("duplicate id", ex_id)
            continue
        seen_ids.add(ex_id)
        out.append(ex)
        rep.kept += 1
    return out


def bundled_train_path() -> str:
    """The small tool-call training set shipped with jaxtool (see jaxtool/assets/itool/NOTE.md)."""
    from importlib.resources import files

    return str(files("jaxtool") / "assets" / "itool" / "train.jsonl")


def _source_conversations(spec: str, limit: int, report: ExampleReport) -> Iterator[tuple[str, Conversation]]:
    from jaxtool.data.sources import LoadReport, load, parse_spec

    if spec == "bundled":
        spec = f"conversations:{bundled_train_path()}"
    name, path = parse_spec(spec)
    if path is None and os.path.exists(name):  # a bare path: jaxtool conversations JSONL
        name, path, spec = "conversations", name, f"conversations:{name}"
    load_rep = LoadReport(name, on_bad_row="skip")
    for i, conv in enumerate(load(spec, on_bad_row="skip", report=load_rep, limit=limit or None)):
        meta_id = conv.meta.get("id")
        local = meta_id if meta_id not in (None, "") else conv.meta.get("row", i)
        # jaxtool's own rows keep their ids; other sources' ids are prefixed with the source name
        yield (str(local) if name == "conversations" else f"{name}:{local}"), conv
    for reason, k in load_rep.skipped.items():
        row, detail = load_rep.examples.get(reason, ("?", ""))
        report.seen += k
        report.drop(f"source: {reason}", f"{name} row {row}: {detail}", n=k)


def load_examples(specs: Sequence[str], fmt, *, target: str = "first_call", limit: int = 0, guard=None
                  ) -> tuple[list[Example], ExampleReport]:
    """Examples from one or more source specs (`name:path`, a jaxtool conversations JSONL path, or
    `bundled`). Bad rows of a source are skipped and counted, never raised."""
    if not specs:
        raise ConfigError("data.train is empty: give one or more source specs (e.g. 'xlam:data/xlam.json') "
                          "or 'bundled'")
    import jaxtool.eval  # noqa: F401  (registers the benchmark sources, e.g. bfcl:...)

    report = ExampleReport()
    out: list[Example] = []
    for spec in specs:
        try:
            exs = examples_from_conversations(_source_conversations(spec, limit, report), fmt, target=target,
                                              guard=guard, report=report)
        except SchemaError as e:  # a row the loader let through but the schema rejects
            raise DataError(f"{spec}: {e}") from None
        known = {e.id for e in out}
        for e in exs:
            if e.id in known:
                report.kept -= 1
                report.drop("duplicate id", e.id)
            else:
                out.append(e)
    if guard is not None:
        report.guard = guard.to_dict()
    return out, report


def write_examples(path: str, examples: Sequence[Example]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for e in examples:
            fh.write(json.dumps(e.to_dict(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_examples(path: str) -> list[Example]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}, line {i}: not JSON ({e.msg})") from None
                out.append(Example.from_dict(d, f"{path}, line {i}"))
    return out


def write_conversations(path: str, examples: Sequence[Example]) -> str:
    """The examples as a jaxtool conversations JSONL (prompt + gold answer), for SFT."""
    write_examples(path, examples)
    return path
