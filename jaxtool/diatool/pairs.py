"""Chosen/rejected trajectory pairs per DiaTool-DPO's Table 1 (Jung et al. 2025).

States: 1 initial, 2 slot-filling, 3 complete slots / tool call, 4 wait for tool response,
5 complete (see `states`). N = number of required fields of the called tool, N > M > 1.

====  ==========  ======================  ==============================  ===========================
type  difficulty  chosen                  rejected                        what the rejected one does
====  ==========  ======================  ==============================  ===========================
1     easy        1→3→4→5                 1→2→3→4→5                       asks for a slot already given
1     easy        1→3→4→5                 1→1                             declines a callable request
1     hard        1→3→4→5                 1→(2×N)→3→4→5                   asks for every given slot
1     hard        1→3→4→5                 1→(2×M)→3→4→5                   asks for M given slots
1     hard        1→3→4→5                 1→1                             declines a callable request
2     easy        1→2→3→4→5               1→3→4→5                         calls with hallucinated slots
2     easy        1→2→3→4→5               1→1                             declines instead of asking
2     hard        1→(2×N)→3→4→5           1→3→4→5                         calls with hallucinated slots
2     hard        1→(2×N)→3→4→5           1→(2×M)→3→4→5                   asks M of N, hallucinates rest
2     hard        1→(2×N)→3→4→5           1→1                             declines instead of asking
3     hard        1→1                     1→3→4                           calls a tool it does not have
                                                                          (from an all-missing turn)
3     hard        1→1                     1→(2×N)→3→4                     slot-fills, then calls it
====  ==========  ======================  ==============================  ===========================

Where each trajectory comes from (the seed gives the call, the tool result and the completion):

- Type 1 chosen is the seed itself; its rejected slot-filling questions are the Easy / Hard Type 2
  dialogue's questions and answers grafted after the *complete* first turn.
- Type 2 uses the augmented first turn (required values removed). The 1→3→4→5 and 1→(2×M)→3→4→5
  rejected calls carry the seed's arguments, i.e. values the user never gave.
- Type 3 removes the called tool from the tools list. The Easy set has no Type 3 pair: the paper's
  §4.3 builds Easy from Types 1 and 2, and Table 1 marks both Type 3 rows Hard. Both start from the
  Hard Type 2 first turn. The rejected trajectory calls the removed tool and ends at its (seed)
  response, state 4. `type3_easy=True` (`build-diatool --type3-easy`) also builds ``t3-easy-call``
  — the 1→1 vs 1→3→4 pair from the complete (Type 1) first turn — into Easy: an extra jaxtool
  offered before, not a Table 1 row.
- A rejection (state 1) is a templated polite refusal, or the LLM-written one when asked for.

Every pair's chosen and rejected share the system messages, the first user turn and the tools list.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any, Mapping, Sequence

from jaxtool.data.schema import Conversation, Message, Tool
from jaxtool.diatool.seeds import Seed
from jaxtool.diatool.slots import NoAugmentation, SlotFilling, SlotStep
from jaxtool.diatool.states import (COMPLETE, INITIAL, SLOT_FILLING, TOOL_CALL, WAIT_RESPONSE,
                                    format_trajectory, label_problems, labelled, trajectory)
from jaxtool.diatool.templates import Templates
from jaxtool.diatool.values import mentions_any
from jaxtool.errors import DataError


@dataclasses.dataclass(frozen=True)
class PairKind:
    id: str
    type: int
    difficulty: str
    chosen: str     # Table 1 notation
    rejected: str
    what: str


PAIR_KINDS: tuple[PairKind, ...] = (
    PairKind("t1-easy-overask", 1, "easy", "1→3→4→5", "1→2→3→4→5", "asks for a slot already given"),
    PairKind("t1-easy-reject", 1, "easy", "1→3→4→5", "1→1", "declines a callable request"),
    PairKind("t1-hard-overask-n", 1, "hard", "1→3→4→5", "1→(2×N)→3→4→5", "asks for every given slot"),
    PairKind("t1-hard-overask-m", 1, "hard", "1→3→4→5", "1→(2×M)→3→4→5", "asks for M given slots"),
    PairKind("t1-hard-reject", 1, "hard", "1→3→4→5", "1→1", "declines a callable request"),
    PairKind("t2-easy-hallucinate", 2, "easy", "1→2→3→4→5", "1→3→4→5", "calls with hallucinated slots"),
    PairKind("t2-easy-reject", 2, "easy", "1→2→3→4→5", "1→1", "declines instead of asking"),
    PairKind("t2-hard-hallucinate", 2, "hard", "1→(2×N)→3→4→5", "1→3→4→5", "calls with hallucinated slots"),
    PairKind("t2-hard-partial", 2, "hard", "1→(2×N)→3→4→5", "1→(2×M)→3→4→5", "asks M of N, hallucinates the rest"),
    PairKind("t2-hard-reject", 2, "hard", "1→(2×N)→3→4→5", "1→1", "declines instead of asking"),
    # not a Table 1 row (the paper's Type 3 rows are both Hard, §4.3): built only with type3_easy=True
    PairKind("t3-easy-call", 3, "easy", "1→1", "1→3→4", "calls a tool it does not have (extra, not Table 1)"),
    PairKind("t3-hard-call", 3, "hard", "1→1", "1→3→4", "calls a missing tool from an all-missing turn"),
    PairKind("t3-hard-slotfill-call", 3, "hard", "1→1", "1→(2×N)→3→4", "slot-fills, then calls a missing tool"),
)
KINDS: dict[str, PairKind] = {k.id: k for k in PAIR_KINDS}
# Pair kinds that are not rows of the paper's Table 1 (built only when asked for).
EXTRA_KINDS = frozenset({"t3-easy-call"})


@dataclasses.dataclass(frozen=True)
class Pair:
    """One preference pair. The trajectories are the ones the builder *declared* from Table 1;
    `check_pair` verifies they equal what the messages' state labels spell out."""

    kind: str
    seed_id: str
    chosen: Conversation
    rejected: Conversation
    chosen_trajectory: str
    rejected_trajectory: str
    removed_tool: str | None = None

    @property
    def type(self) -> int:
        return KINDS[self.kind].type

    @property
    def difficulty(self) -> str:
        return KINDS[self.kind].difficulty

    def to_row(self) -> dict:
        row = {
            "chosen": _side(self.chosen),
            "rejected": _side(self.rejected),
            "type": self.type,
            "chosen_trajectory": self.chosen_trajectory,
            "rejected_trajectory": self.rejected_trajectory,
            "difficulty": self.difficulty,
            "kind": self.kind,
            "seed_id": self.seed_id,
        }
        if self.removed_tool is not None:
            row["removed_tool"] = self.removed_tool
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any], where: str = "row") -> "Pair":
        """Load a written row. Both sides go through `Conversation.from_dict`; a Type 3 rejected
        side calls the tool that was removed from its tools list on purpose, so it is validated
        with that tool (named in ``removed_tool``) put back."""
        if not isinstance(row, Mapping):
            raise DataError(f"{where}: expected an object, got {type(row).__name__}")
        for key in ("chosen", "rejected", "kind", "seed_id", "chosen_trajectory", "rejected_trajectory"):
            if key not in row:
                raise DataError(f"{where}: missing field {key!r}")
        if row["kind"] not in KINDS:
            raise DataError(f"{where}: field 'kind' must be one of {sorted(KINDS)}, got {row['kind']!r}")
        chosen = Conversation.from_dict(row["chosen"], f"{where}.chosen")
        removed = row.get("removed_tool")
        rejected = Conversation.from_dict(row["rejected"], f"{where}.rejected", validate=removed is None)
        if removed is not None:
            rejected.replace(tools=rejected.tools + (Tool(removed),)).validate(f"{where}.rejected")
        return cls(kind=row["kind"], seed_id=str(row["seed_id"]), chosen=chosen, rejected=rejected,
                   chosen_trajectory=row["chosen_trajectory"], rejected_trajectory=row["rejected_trajectory"],
                   removed_tool=removed)


def _side(conv: Conversation) -> dict:
    return {"messages": [m.to_dict() for m in conv.messages], "tools": [t.to_dict() for t in conv.tools]}


# --------------------------------------------------------------------------------------------
# trajectory pieces
# --------------------------------------------------------------------------------------------

def _slot_turns(steps: Sequence[SlotStep]) -> list[Message]:
    out = []
    for st in steps:
        out.append(labelled(Message("assistant", st.question), SLOT_FILLING, slots=list(st.asked)))
        out.append(Message("user", st.answer))
    return out


def _call_turns(seed: Seed, with_completion: bool = True) -> list[Message]:
    out = [labelled(seed.call_message, TOOL_CALL)]
    out += [labelled(m, WAIT_RESPONSE) for m in seed.tool_messages]
    if with_completion:
        out.append(labelled(seed.completion, COMPLETE))
    return out


def _declared(n_questions: int, end: Sequence[int]) -> str:
    return format_trajectory([INITIAL] + [SLOT_FILLING] * n_questions + list(end))


_CALLED = (TOOL_CALL, WAIT_RESPONSE, COMPLETE)
_CALLED_NO_COMPLETION = (TOOL_CALL, WAIT_RESPONSE)


class _Builder:
    def __init__(self, seed: Seed, templates: Templates, rng_seed: int, llm_rejection: str | None):
        self.seed = seed
        self.templates = templates
        self.rng_seed = rng_seed
        self.llm_rejection = llm_rejection
        self.pairs: list[Pair] = []
        self.unavailable: list[tuple[str, str]] = []
        self.seen: set[str] = set()
        self.t1_rejections: list[str] = []

    def rng(self, purpose: str) -> random.Random:
        return random.Random(f"{self.rng_seed}:{self.seed.id}:{purpose}")

    def rejection(self, purpose: str, avoid: Sequence[str] = ()) -> str:
        """The LLM-written refusal if there is one, else a template picked per (seed, purpose);
        texts in `avoid` are not reused while another choice exists."""
        if self.llm_rejection and self.llm_rejection not in avoid:
            return self.llm_rejection
        options = [t for t in self.templates.rejections if t not in avoid] or list(self.templates.rejections)
        return self.rng(f"reject:{purpose}").choice(options)

    def conv(self, query: str, turns: list[Message], tools: tuple[Tool, ...] | None = None) -> Conversation:
        msgs = tuple(Message(m.role, m.content) for m in self.seed.system) + (Message("user", query),) + tuple(turns)
        return Conversation(messages=msgs, tools=self.seed.tools if tools is None else tools)

    def add(self, kind: str, chosen: Conversation, rejected: Conversation, t_chosen: str, t_rejected: str,
            removed_tool: str | None = None) -> None:
        pair = Pair(kind, self.seed.id, chosen, rejected, t_chosen, t_rejected, removed_tool)
        problems = check_pair(pair)
        if problems:  # a bug in this module, never a user error
            raise AssertionError(f"seed {self.seed.id}, {kind}: " + "; ".join(problems))
        key = json.dumps([_side(chosen), _side(rejected)], sort_keys=True, ensure_ascii=False)
        if key in self.seen:
            self.skip(kind, "identical to a pair already built from this seed")
            return
        self.seen.add(key)
        self.pairs.append(pair)

    def skip(self, kind: str, reason: str) -> None:
        self.unavailable.append((kind, reason))


def build_pairs(seed: Seed, slot_fillings: Mapping[str, SlotFilling | NoAugmentation | None],
                difficulties: Sequence[str], templates: Templates, rng_seed: int = 0,
                llm_rejection: str | None = None, type3_easy: bool = False
                ) -> tuple[list[Pair], list[tuple[str, str]]]:
    """Every Table 1 pair `seed` can give for `difficulties`, and ``(kind, reason)`` for each it
    cannot. `slot_fillings[d]` is the seed's Type 2 dialogue of difficulty d (or why there is none).
    `type3_easy` adds the extra ``t3-easy-call`` kind to Easy (not a Table 1 row; §4.3)."""
    b = _Builder(seed, templates, rng_seed, llm_rejection)
    n = len(seed.required)
    full = seed.query
    t1_chosen = b.conv(full, _call_turns(seed))
    t1_decl = _declared(0, _CALLED)
    other_tools = tuple(t for t in seed.tools if t.name != seed.call.name)
    system_names_tool = any(seed.call.name in (m.content or "") for m in seed.system)

    for d in difficulties:
        sf = slot_fillings.get(d)
        why = (f"no {d} Type 2 dialogue: {sf.reason}" if isinstance(sf, NoAugmentation)
               else f"no {d} Type 2 dialogue" if sf is None else None)
        need_m = "needs >= 3 required fields (N > M > 1)"
        m = b.rng(f"M:{d}").randint(2, n - 1) if n >= 3 else None

        # ---- Type 1: the seed is chosen
        if d == "easy":
            if why:
                b.skip("t1-easy-overask", why)
            else:
                b.add("t1-easy-overask", t1_chosen,
                      b.conv(full, _slot_turns(sf.steps) + _call_turns(seed)), t1_decl, _declared(1, _CALLED))
        else:
            if why:
                b.skip("t1-hard-overask-n", why)
                b.skip("t1-hard-overask-m", why)
            else:
                b.add("t1-hard-overask-n", t1_chosen, b.conv(full, _slot_turns(sf.steps) + _call_turns(seed)),
                      t1_decl, _declared(len(sf.steps), _CALLED))
                if m is None:
                    b.skip("t1-hard-overask-m", need_m)
                else:
                    b.add("t1-hard-overask-m", t1_chosen,
                          b.conv(full, _slot_turns(sf.steps[:m]) + _call_turns(seed)), t1_decl, _declared(m, _CALLED))
        # the 1→1 pair exists in both difficulties with the same chosen side: vary the refusal
        text = b.rejection(f"t1-{d}", avoid=b.t1_rejections)
        b.t1_rejections.append(text)
        reject = labelled(Message("assistant", text), INITIAL)
        b.add(f"t1-{d}-reject", t1_chosen, b.conv(full, [reject]), t1_decl, _declared(0, (INITIAL,)))

        # ---- Type 2: the augmented dialogue is chosen
        if why:
            for k in (f"t2-{d}-hallucinate", f"t2-{d}-reject") + (("t2-hard-partial",) if d == "hard" else ()):
                b.skip(k, why)
        else:
            q = sf.query
            chosen = b.conv(q, _slot_turns(sf.steps) + _call_turns(seed))
            decl = _declared(len(sf.steps), _CALLED)
            b.add(f"t2-{d}-hallucinate", chosen, b.conv(q, _call_turns(seed)), decl, _declared(0, _CALLED))
            if d == "hard":
                if m is None:
                    b.skip("t2-hard-partial", need_m)
                else:
                    b.add("t2-hard-partial", chosen, b.conv(q, _slot_turns(sf.steps[:m]) + _call_turns(seed)),
                          decl, _declared(m, _CALLED))
            reject = labelled(Message("assistant", b.rejection(f"t2-{d}")), INITIAL)
            b.add(f"t2-{d}-reject", chosen, b.conv(q, [reject]), decl, _declared(0, (INITIAL,)))

        # ---- Type 3: the called tool is gone; declining is chosen
        # §4.3 / Table 1: Type 3 is Hard only; Easy gets t3-easy-call only as the named extra
        t3_kinds = (("t3-easy-call",) if type3_easy else ()) if d == "easy" else ("t3-hard-call", "t3-hard-slotfill-call")
        if not t3_kinds:
            continue
        if system_names_tool:
            for k in t3_kinds:
                b.skip(k, "a system message names the called tool, so removing it from the tools list "
                          "would not hide it")
            continue
        name = seed.call.name
        reject = labelled(Message("assistant", b.rejection(f"t3-{d}")), INITIAL)
        t3_decl = _declared(0, (INITIAL,))
        if d == "easy":
            b.add("t3-easy-call", b.conv(full, [reject], other_tools),
                  b.conv(full, _call_turns(seed, with_completion=False), other_tools),
                  t3_decl, _declared(0, _CALLED_NO_COMPLETION), removed_tool=name)
        elif why:
            for k in t3_kinds:
                b.skip(k, why)
        else:
            q = sf.query
            chosen = b.conv(q, [reject], other_tools)
            b.add("t3-hard-call", chosen, b.conv(q, _call_turns(seed, with_completion=False), other_tools),
                  t3_decl, _declared(0, _CALLED_NO_COMPLETION), removed_tool=name)
            b.add("t3-hard-slotfill-call", chosen,
                  b.conv(q, _slot_turns(sf.steps) + _call_turns(seed, with_completion=False), other_tools),
                  t3_decl, _declared(len(sf.steps), _CALLED_NO_COMPLETION), removed_tool=name)
    return b.pairs, b.unavailable


# --------------------------------------------------------------------------------------------
# invariants
# --------------------------------------------------------------------------------------------

def _prefix(conv: Conversation) -> tuple:
    """System messages + the first user turn."""
    out = []
    for m in conv.messages:
        out.append((m.role, m.content))
        if m.role == "user":
            break
    return tuple(out)


def _first_call(conv: Conversation):
    return next((m.tool_calls[0] for m in conv.messages if m.role == "assistant" and m.tool_calls), None)


def check_pair(pair: Pair) -> list[str]:
    """The invariants every built pair keeps (empty list = all hold):

    chosen and rejected share the system messages, the first user turn and the tools list; the
    declared trajectories equal the ones derived from the state labels and differ from each other;
    labels agree with the messages; slot questions ask only required fields — in the chosen
    trajectory only ones missing from the first user turn; a Type 3 tools list lacks the called
    tool, a Type 1/2 one has it.
    """
    probs = []
    kind = KINDS.get(pair.kind)
    if kind is None:
        return [f"unknown kind {pair.kind!r}"]
    c, r = pair.chosen, pair.rejected
    if _prefix(c) != _prefix(r):
        probs.append("chosen and rejected differ before the first assistant turn")
    if [t.to_dict() for t in c.tools] != [t.to_dict() for t in r.tools]:
        probs.append("chosen and rejected have different tools lists")
    for side, conv, declared in (("chosen", c, pair.chosen_trajectory), ("rejected", r, pair.rejected_trajectory)):
        try:
            derived = trajectory(conv)
        except DataError as e:
            probs.append(f"{side}: {e}")
            continue
        if derived != declared:
            probs.append(f"{side}: declared trajectory {declared} but the labels give {derived}")
        probs += [f"{side}: {p}" for p in label_problems(conv)]
    if pair.chosen_trajectory == pair.rejected_trajectory:
        probs.append("chosen and rejected trajectories are equal")
    call = _first_call(c) or _first_call(r)
    names = [t.name for t in c.tools]
    if call is not None:
        if kind.type == 3:
            if call.name in names or pair.removed_tool != call.name:
                probs.append("Type 3 tools list still has the called tool")
        elif call.name not in names:
            probs.append("Type 1/2 tools list lacks the called tool")
        tool_schema = next((t for t in c.tools if t.name == call.name), None)
        required = set(tool_schema.required) if tool_schema else None
        first_user = next(m.content for m in c.messages if m.role == "user")
        for side, conv in (("chosen", c), ("rejected", r)):
            for m in conv.messages:
                if m.role == "assistant" and m.meta.get("state") == SLOT_FILLING:
                    asked = m.meta.get("slots") or []
                    if required is not None and not set(asked) <= required:
                        probs.append(f"{side}: slot question asks non-required {sorted(set(asked) - required)}")
                    if side == "chosen" and any(mentions_any(first_user, call.arguments.get(f)) for f in asked):
                        probs.append("chosen: slot question asks a field the first user turn already gives")
    return probs
