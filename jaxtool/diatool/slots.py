"""A Type 2 dialogue as an augmenter produces it: the rewritten first user turn (with some required
values missing) and the slot-filling question/answer steps that recover them.

Easy: a non-empty subset of the required fields is missing; one assistant question asks for all of
them and one user answer gives them all (one step).
Hard: all N >= 2 required fields are missing; the assistant asks, the user answers one field at a
time, and each next question asks for what remains (N steps; step i asks the N-i+1 fields still
missing and gets one answered).

`structure_problems` checks these shapes for any augmenter (rules or LLM).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

DIFFICULTIES = ("easy", "hard")


class NoAugmentation(Exception):
    """The augmenter cannot produce this difficulty for this seed; `reason` is the counted category."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclasses.dataclass(frozen=True)
class SlotStep:
    """One assistant slot question and the user's answer."""

    question: str
    asked: tuple[str, ...]      # required fields the question asks for
    answer: str
    answered: tuple[str, ...]   # fields whose values the answer gives


@dataclasses.dataclass(frozen=True)
class SlotFilling:
    difficulty: str             # "easy" | "hard"
    query: str                  # the new first user turn
    missing: tuple[str, ...]    # required fields absent from `query`, in the order they get answered
    steps: tuple[SlotStep, ...]
    rejection: str | None = None  # an LLM-written polite refusal of the request (optional)
    source: str = "rules"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["steps"] = [dataclasses.asdict(s) for s in self.steps]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SlotFilling":
        steps = tuple(SlotStep(s["question"], tuple(s["asked"]), s["answer"], tuple(s["answered"]))
                      for s in d["steps"])
        return cls(d["difficulty"], d["query"], tuple(d["missing"]), steps, d.get("rejection"),
                   d.get("source", "rules"))


def structure_problems(sf: SlotFilling, required: Sequence[str]) -> list[str]:
    """Shape errors of `sf` for a tool whose required fields are `required` (empty = fine)."""
    req = list(required)
    probs = []
    if not sf.query.strip():
        probs.append("empty first user turn")
    if not sf.missing:
        probs.append("no missing field")
    extra = [f for f in sf.missing if f not in req]
    if extra:
        probs.append(f"asks non-required field(s) {extra}")
    if len(set(sf.missing)) != len(sf.missing):
        probs.append("a field is missing twice")
    for i, st in enumerate(sf.steps):
        if not st.question.strip() or not st.answer.strip():
            probs.append(f"step {i}: empty question or answer")
    if sf.difficulty == "easy":
        if len(sf.steps) != 1:
            probs.append(f"easy needs exactly one question, got {len(sf.steps)}")
        elif set(sf.steps[0].asked) != set(sf.missing) or set(sf.steps[0].answered) != set(sf.missing):
            probs.append("easy question must ask, and the answer give, every missing field")
    elif sf.difficulty == "hard":
        if len(req) < 2:
            probs.append("hard needs at least 2 required fields")
        if set(sf.missing) != set(req):
            probs.append("hard must miss every required field")
        if len(sf.steps) != len(req):
            probs.append(f"hard needs {len(req)} questions (one per required field), got {len(sf.steps)}")
        else:
            remaining = list(sf.missing)
            for i, st in enumerate(sf.steps):
                if set(st.asked) != set(remaining):
                    probs.append(f"step {i}: must ask exactly the fields still missing {sorted(remaining)}, "
                                 f"asked {sorted(st.asked)}")
                    break
                if len(st.answered) != 1 or st.answered[0] not in remaining:
                    probs.append(f"step {i}: the user must answer one of {sorted(remaining)}, "
                                 f"answered {list(st.answered)}")
                    break
                remaining.remove(st.answered[0])
    else:
        probs.append(f"unknown difficulty {sf.difficulty!r}")
    return probs
