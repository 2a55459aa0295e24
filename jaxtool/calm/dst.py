"""SNIPS -> single-turn dialogue-state tracking (CALM-IT's DST task, the paper's Fig. 4).

Input: the Conversations of `jaxtool.data.sources.snips` (user utterance -> a call of the intent
with the slot spans as arguments). Each utterance becomes one row:

- Instruction: the task, then one line per domain listing the slots the *data itself* uses for it
  ("The user can seek for BookRestaurant by slots - city, cuisine, ..."; domains = SNIPS intents,
  both sorted by name, collected from the conversations being converted), "Do not capture any other
  slots!", the answer format and a sample output taken from the data (the first utterance, in input
  order, with at least two slots; its first two slots).
- Input: ``User: <utterance>``.
- Output: ``System: {"domain": "<intent>", "slot_values": {"<slot>": "<span text>", ...}}`` (the
  ``System:`` prefix as Fig. 4 prints it, then JSON, slots in the order they occur in the utterance;
  a slot that occurs twice holds the list of its spans).

Bad input (counted by reason, never dropped silently): a slot value that is empty or does not occur
in the utterance ("slot text not in utterance"), a conversation that is not one user message and
one call ("not a SNIPS utterance").

The wording of the instruction is jaxtool's; its parts follow the figure's description (the figure's
exact text could not be retrieved here: docs/fidelity.md).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from jaxtool.calm.example import CalmExample
from jaxtool.data.schema import Conversation
from jaxtool.data.sources.base import BadRow, LoadReport

TASK = "dst"
OUTPUT_PREFIX = "System: "   # Fig. 4: the DST output is the System turn

INTRO = ("You are the dialogue state tracker of a task-oriented assistant. Read the user's utterance, decide "
         "which domain it belongs to, and extract the values of that domain's slots that the user states.")
FORMAT = ("Copy each value exactly as the user wrote it. Answer with one JSON object of the form "
          '{"domain": <domain>, "slot_values": {<slot>: <value>, ...}} and nothing else.')


def _parts(conv: Conversation) -> tuple[str, str, dict]:
    """(utterance, intent, slot values) of a SNIPS conversation, or BadRow."""
    msgs = conv.messages
    if (len(msgs) != 2 or msgs[0].role != "user" or msgs[1].role != "assistant"
            or len(msgs[1].tool_calls) != 1 or not isinstance(msgs[0].content, str)):
        raise BadRow("not a SNIPS utterance", "expected one user message and one intent call")
    call = msgs[1].tool_calls[0]
    return msgs[0].content, call.name, dict(call.arguments)


def domain_slots(convs: Iterable[Conversation]) -> dict[str, list[str]]:
    """`{intent: sorted slot names}` as they occur in the conversations (malformed ones ignored here;
    the converter counts them)."""
    seen: dict[str, set[str]] = {}
    for conv in convs:
        try:
            _, intent, slots = _parts(conv)
        except BadRow:
            continue
        seen.setdefault(intent, set()).update(slots)
    return {d: sorted(seen[d]) for d in sorted(seen)}


def sample_output(convs: Iterable[Conversation]) -> dict | None:
    """The Fig. 4 sample answer: the first utterance with >= 2 slots, cut to its first two slots."""
    for conv in convs:
        try:
            _, intent, slots = _parts(conv)
        except BadRow:
            continue
        if len(slots) >= 2:
            return {"domain": intent, "slot_values": dict(list(slots.items())[:2])}
    return None


def instruction(domains: Mapping[str, list[str]], sample: Mapping[str, Any] | None) -> str:
    lines = [INTRO]
    for d, slots in domains.items():
        lines.append(f"The user can seek for {d} by slots - {', '.join(slots)}.")
    lines.append("Do not capture any other slots!")
    lines.append(FORMAT)
    if sample is not None:
        lines.append("Sample output: " + json.dumps(sample, ensure_ascii=False))
    return "\n".join(lines)


def _check_value(value: Any, utterance: str, slot: str) -> None:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, str) or not v.strip() or v not in utterance:
            raise BadRow("slot text not in utterance", f"{slot}={v!r} does not occur in {utterance!r}",
                         field=f"slot_values.{slot}")


def to_example(conv: Conversation, instr: str) -> CalmExample:
    utterance, intent, slots = _parts(conv)
    for slot, value in slots.items():
        _check_value(value, utterance, slot)
    out = OUTPUT_PREFIX + json.dumps({"domain": intent, "slot_values": slots}, ensure_ascii=False)
    meta = {"objective": "dst", "source": conv.meta.get("source"), "row": conv.meta.get("row")}
    return CalmExample(TASK, instr, f"User: {utterance}", out, meta)


def convert(convs: Iterable[Conversation], report: LoadReport) -> list[CalmExample]:
    """Every conversation as a DST row; bad ones go to `report` (its policy: raise or count)."""
    convs = list(convs)
    instr = instruction(domain_slots(convs), sample_output(convs))
    out = []
    for conv in convs:
        ex = None
        with report.row(conv.meta.get("row")):
            ex = to_example(conv, instr)
        if ex is not None:
            report.keep()
            out.append(ex)
    return out
