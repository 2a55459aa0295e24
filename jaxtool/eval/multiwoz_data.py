"""MultiWOZ dialogues in the MultiWOZ 2.1 / ConvLab-2 layout, for dialogue-state tracking (DST).

The file is a JSON object keyed by dialogue id (`"PMUL1635"`; a `.json` suffix, as in the original
MultiWOZ release, is dropped). `log` alternates user (even index) and system (odd index) turns; the
belief state after user turn t is the `metadata` of system turn 2t+1. A trailing user turn without a
system turn (no state) is dropped.

The gold state is read the way IC-DST's preprocessing reads it (`get_summary_bstate`): for every
domain, each `book` slot except `booked` becomes `"<domain>-book <slot>"`, each `semi` slot becomes
`"<domain>-<slot>"`, slot names lower-cased (`leaveAt` -> `leaveat`, `pricerange`); empty values
and `"not mentioned"` are absent. Values are kept as written (stripped); the evaluator normalises
gold and predicted values with the same function (`jaxtool.eval.dst`).

The domains of a user turn are those of its ConvLab-2 user dialogue acts (`"Taxi-Inform"` -> taxi),
`general` excluded, in order of appearance.

`load_dialogues` yields `MwozDialogue`s; `load` (the source-registry entry) yields Conversations of
alternating user / assistant messages whose user messages carry
`meta = {"belief_state": {...}, "domains": [...]}`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping

from jaxtool.data.schema import Conversation, Message
from jaxtool.data.sources.base import BadRow, LoadReport, read_records, require_field, require_mapping

ABSENT = ("", "not mentioned")


@dataclasses.dataclass(frozen=True)
class MwozTurn:
    index: int
    user: str
    system: str
    state: Mapping[str, str]
    domains: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class MwozDialogue:
    dialogue_id: str
    turns: tuple[MwozTurn, ...]
    row: Any = None


def belief_state(metadata: Mapping[str, Any], where: str = "metadata") -> dict[str, str]:
    """`"domain-slot" -> value` from a MultiWOZ 2.1 system-turn `metadata` (module docstring)."""
    if not isinstance(metadata, Mapping):
        raise BadRow("bad belief state", f"expected an object, got {type(metadata).__name__}", field=where)
    state: dict[str, str] = {}
    for domain, parts in metadata.items():
        if not isinstance(parts, Mapping):
            raise BadRow("bad belief state", "expected {book, semi}", field=f"{where}.{domain}")
        for kind in ("book", "semi"):
            slots = parts.get(kind) or {}
            if not isinstance(slots, Mapping):
                raise BadRow("bad belief state", "expected an object", field=f"{where}.{domain}.{kind}")
            for slot, value in slots.items():
                if slot == "booked":
                    continue
                if not isinstance(value, str):
                    raise BadRow("bad belief state", f"slot value must be a string, got {type(value).__name__}",
                                 field=f"{where}.{domain}.{kind}.{slot}")
                v = value.strip()
                if v.lower() in ABSENT:
                    continue
                name = slot.strip().lower()
                state[f"{domain.lower()}-book {name}" if kind == "book" else f"{domain.lower()}-{name}"] = v
    return state


def act_domains(dialog_act: Any) -> tuple[str, ...]:
    out: list[str] = []
    if isinstance(dialog_act, Mapping):
        for key in dialog_act:
            dom = str(key).split("-", 1)[0].lower()
            if dom != "general" and dom not in out:
                out.append(dom)
    return tuple(out)


def _dialogue(did: Any, rec: Any) -> MwozDialogue:
    rec = require_mapping(rec)
    log = require_field(rec, "log", list)
    turns = []
    for t in range(len(log) // 2):
        u, s = log[2 * t], log[2 * t + 1]
        if not isinstance(u, Mapping) or not isinstance(u.get("text"), str):
            raise BadRow("bad turn", "expected {text, ...}", field=f"log[{2 * t}]")
        if not isinstance(s, Mapping) or not isinstance(s.get("text"), str):
            raise BadRow("bad turn", "expected {text, metadata, ...}", field=f"log[{2 * t + 1}]")
        if not s.get("metadata"):
            raise BadRow("missing belief state", "system turn has no metadata", field=f"log[{2 * t + 1}].metadata")
        turns.append(MwozTurn(index=t, user=u["text"].strip(), system=s["text"].strip(),
                              state=belief_state(s["metadata"], f"log[{2 * t + 1}].metadata"),
                              domains=act_domains(u.get("dialog_act"))))
    if not turns:
        raise BadRow("empty dialogue", "no user turn with a following system turn", field="log")
    name = str(did)
    return MwozDialogue(name[:-5] if name.endswith(".json") else name, tuple(turns), did)


def load_dialogues(path: str, *, on_bad_row: str = "error", report: LoadReport | None = None,
                   limit: int | None = None) -> Iterator[MwozDialogue]:
    report = report or LoadReport(f"multiwoz:{path}", on_bad_row)
    n = 0
    for did, rec in read_records(path):
        if limit is not None and n >= limit:
            return
        dia = None
        with report.row(did):
            if isinstance(rec, Mapping) and "dialogue_id" in rec and "log" in rec:  # a list of dialogues
                did = rec["dialogue_id"]
            dia = _dialogue(did, rec)
        if dia is not None:
            report.keep()
            n += 1
            yield dia


def load(path: str, *, on_bad_row: str = "error", report: LoadReport | None = None,
         limit: int | None = None) -> Iterator[Conversation]:
    for dia in load_dialogues(path, on_bad_row=on_bad_row, report=report, limit=limit):
        msgs = []
        for t in dia.turns:
            msgs.append(Message("user", t.user, meta={"belief_state": dict(t.state), "domains": list(t.domains)}))
            msgs.append(Message("assistant", t.system))
        yield Conversation(tuple(msgs), meta={"source": "multiwoz", "dialogue_id": dia.dialogue_id, "row": dia.row})
