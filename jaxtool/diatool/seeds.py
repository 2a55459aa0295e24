"""Type 1 seeds: dialogues whose first user turn already holds every required argument, so the
assistant goes straight to the call: user → assistant tool call → tool result → assistant completion.

`extract_seed` cuts such an episode out of any loaded `Conversation` (glaive, ToolACE, SGD, jaxtool's
own JSONL, ...) or says why it cannot (`NotASeed.reason`, a short countable category). What is
accepted, in order:

- any number of leading system messages (kept: they stay in every trajectory built from the seed);
- the first user turn;
- one assistant message with exactly one tool call (its text content, if any, is kept) to a tool
  that is in the tools list, with every required parameter of that tool among its arguments;
- exactly one tool message answering it;
- one assistant message with text and no tool calls (the completion).

Anything after the completion is cut off (counted as ``truncated``). xLAM rows have calls but no
tool results or completions, so they can never form a seed (reason ``no tool result``).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
from typing import Any, Iterable, Mapping

from jaxtool.data.schema import Conversation, Message, Tool, ToolCall
from jaxtool.diatool.guard import normalize_query


class NotASeed(Exception):
    """A conversation that cannot be a Type 1 seed. `reason` is the counted category."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclasses.dataclass(frozen=True)
class Seed:
    """One Type 1 episode. `tools` is the full tools list of the source dialogue."""

    id: str
    system: tuple[Message, ...]
    query: str
    call_message: Message
    tool_messages: tuple[Message, ...]
    completion: Message
    tools: tuple[Tool, ...]
    source_meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def call(self) -> ToolCall:
        return self.call_message.tool_calls[0]

    @property
    def tool(self) -> Tool:
        t = next((t for t in self.tools if t.name == self.call.name), None)
        assert t is not None, "extract_seed guarantees the called tool is listed"
        return t

    @property
    def required(self) -> list[str]:
        """Required parameters of the called tool, in schema order (the slots DiaTool asks about)."""
        return self.tool.required

    @property
    def arguments(self) -> dict:
        return dict(self.call.arguments)

    def fingerprint(self) -> str:
        """Content hash (first user turn + call) used to drop duplicate seeds."""
        blob = json.dumps([normalize_query(self.query), self.call.name, self.arguments],
                          sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def extract_seed(conv: Conversation, seed_id: str) -> tuple[Seed, bool]:
    """`(seed, truncated)`; raises `NotASeed` when `conv` does not start with a Type 1 episode."""
    msgs = list(conv.messages)
    i = 0
    system = []
    while i < len(msgs) and msgs[i].role == "system":
        system.append(msgs[i])
        i += 1
    if i >= len(msgs) or msgs[i].role != "user":
        raise NotASeed("no first user turn", f"message {i} is {msgs[i].role if i < len(msgs) else 'missing'}")
    user = msgs[i]
    if not (user.content or "").strip():
        raise NotASeed("empty first user turn")
    i += 1
    if i >= len(msgs) or msgs[i].role != "assistant":
        raise NotASeed("no assistant turn after the first user turn")
    call_msg = msgs[i]
    if not call_msg.tool_calls:
        raise NotASeed("first assistant turn is not a tool call",
                       "the assistant answers or asks before calling (not a Type 1 dialogue)")
    if len(call_msg.tool_calls) > 1:
        raise NotASeed("more than one tool call", f"{len(call_msg.tool_calls)} parallel calls")
    call = call_msg.tool_calls[0]
    tool = conv.tool(call.name)
    if tool is None:
        raise NotASeed("called tool not in the tools list", call.name)
    missing = [r for r in tool.required if r not in call.arguments]
    if missing:
        raise NotASeed("call lacks a required argument", f"{call.name} without {missing}")
    i += 1
    if i >= len(msgs) or msgs[i].role != "tool":
        raise NotASeed("no tool result", "the call is not followed by a tool message")
    tool_msg = msgs[i]
    if not (tool_msg.content or "").strip():
        raise NotASeed("empty tool result")
    i += 1
    if i >= len(msgs) or msgs[i].role != "assistant":
        raise NotASeed("no completion after the tool result")
    completion = msgs[i]
    if completion.tool_calls or not (completion.content or "").strip():
        raise NotASeed("no completion after the tool result", "the next assistant turn is not plain text")
    truncated = i + 1 < len(msgs)
    seed = Seed(id=seed_id, system=tuple(system), query=user.content, call_message=call_msg,
                tool_messages=(tool_msg,), completion=completion, tools=conv.tools,
                source_meta=dict(conv.meta))
    return seed, truncated


def seed_id_of(conv: Conversation, index: Any, source: str = "seed") -> str:
    """A stable id: the conversation's own ``meta["id"]`` (or ``dialogue_id``), else source:index."""
    for key in ("id", "dialogue_id", "seed_id"):
        v = conv.meta.get(key)
        if isinstance(v, (str, int)) and str(v):
            return str(v)
    return f"{source}:{index}"


@dataclasses.dataclass
class SeedReport:
    """What `collect_seeds` read, kept, and dropped (by reason)."""

    read: int = 0
    kept: int = 0
    truncated: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict = dataclasses.field(default_factory=dict)  # reason -> (seed id, detail)
    by_required: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def skip(self, reason: str, seed_id: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, (seed_id, detail))

    def to_dict(self) -> dict:
        return {
            "read": self.read, "kept": self.kept, "truncated_after_completion": self.truncated,
            "skipped": dict(self.skipped.most_common()),
            "skip_examples": {k: {"seed": v[0], "detail": v[1]} for k, v in self.examples.items()},
            "kept_by_required_count": {str(k): v for k, v in sorted(self.by_required.items())},
        }

    def __str__(self) -> str:
        lines = [f"seeds: {self.read} dialogues read, {self.kept} kept "
                 f"({self.truncated} cut after the completion), {sum(self.skipped.values())} dropped"]
        for reason, n in self.skipped.most_common():
            sid, detail = self.examples[reason]
            lines.append(f"  {n:6d} × {reason}  (first: {sid}{': ' + detail if detail else ''})")
        return "\n".join(lines)


def collect_seeds(items: Iterable[tuple[str, Conversation]], guard=None,
                  report: SeedReport | None = None) -> tuple[list[Seed], SeedReport]:
    """Seeds from `(seed_id, conversation)` pairs: extracted, de-duplicated, and filtered by the
    split guard (`guard.match(query)` -> benchmark name or None). Every drop is counted."""
    report = report or SeedReport()
    seeds: list[Seed] = []
    seen_ids: set[str] = set()
    seen_content: set[str] = set()
    for sid, conv in items:
        report.read += 1
        try:
            seed, truncated = extract_seed(conv, sid)
        except NotASeed as e:
            report.skip(e.reason, sid, e.detail)
            continue
        fp = seed.fingerprint()
        if fp in seen_content:
            report.skip("duplicate seed (same first turn and call)", sid)
            continue
        if sid in seen_ids:
            report.skip("duplicate seed id", sid)
            continue
        if guard is not None:
            bench = guard.match(seed.query)
            if bench is not None:
                report.skip(f"first user turn matches a {bench} test query", sid)
                continue
        seen_ids.add(sid)
        seen_content.add(fp)
        report.truncated += int(truncated)
        report.kept += 1
        report.by_required[len(seed.required)] += 1
        seeds.append(seed)
    return seeds, report
