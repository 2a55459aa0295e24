"""Offline, rule-based judging of one assistant turn (FunctionChat-Bench's four output types).

A `TurnCase` is what the judge sees: the turn type, the tools, the gold history before the turn, the
gold assistant message, the acceptable alternative argument values, and the model's parsed reply
(`Prediction`). `RuleJudge().judge(case)` returns a `Verdict`.

The rules (each is tested on hand-made cases that fail when the rule is broken):

call       The reply makes tool calls and they match the gold calls. Following FunctionChat-Bench's
           exact-match stage (`evaluation_handler.exact_match`), gold call k is compared with
           predicted call k and extra predicted calls are ignored (FunctionChat reads only the first
           call); fewer predicted calls than gold calls fail. A pair matches when
           - the function names are equal (case-sensitive);
           - every predicted argument key is a gold key (no invented arguments);
           - for every gold key, the predicted value equals the gold value, or equals one of the
             acceptable alternatives for that key. Strings compare after removing all spaces and
             lower-casing (as FunctionChat's `compare_value`); other values compare as JSON values
             (1 == 1.0, but True != 1); lists/objects compare element-wise with the same rule.
             A missing gold key fails unless null is acceptable.
           Divergence from FunctionChat's code: an acceptable alternative given as a single
           number is treated as a one-element list (FunctionChat skips the check for such keys and
           accepts any value).
slot       No call, and the reply asks something (`mentions.asks_something`) that refers to at least
           one *target* parameter by name or by a distinctive description word
           (`mentions.referred_parameters`). Target parameters are the required parameters the gold
           question refers to, among the tools called later in the same gold dialogue (DiaTool
           trajectories) or else among all offered tools (`slot_targets`). "Distinctive" first means
           not used by any other parameter of any offered tool; if no target is found that way,
           words distinctive within each tool are used; if the gold question still refers to no
           required parameter, every required parameter of the candidate tools is a target. The
           reply is checked with the same word lists that found the targets.
relevance  No call and a non-empty reply. (The rule cannot tell a correct refusal from a wrong
           claim that the task was done; use the LLM judge for that.)
completion No call, a non-empty reply, and the reply mentions at least one informative value of the
           tool results that precede the turn (`mentions.informative_values` /
           `mentions.mentions_value`). When the results carry no informative value (only a status
           such as {"status": "success"}), a non-empty reply passes.

A reply whose tool-call markup the chat format could not parse (`Prediction.error`) fails every
type: for *call* it is not a valid call, for the others it is an attempted call. A reply that writes
a tool result itself (the markup a format uses to introduce one: `<tool_response>`, Llama 3's
`ipython` header, ReAct's `Observation:`, `API-Response:`) fails every non-call type: it made up
what the tool would say instead of answering, even when a value it copied matches.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

from jaxtool.data.schema import Message, Tool, ToolCall
from jaxtool.eval import mentions

TURN_TYPES = ("call", "slot", "relevance", "completion")


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The model's reply to one turn, as parsed by the chat format."""

    text: str
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    error: str | None = None

    @classmethod
    def from_reply(cls, text: str, reply: Any) -> "Prediction":
        """From a chat format's `Reply(content, tool_calls, error)` (duck-typed)."""
        err = getattr(reply, "error", None)  # a ParseError is falsy by design: test against None
        return cls(text=text, content=getattr(reply, "content", None),
                   tool_calls=tuple(getattr(reply, "tool_calls", None) or ()),
                   error=None if err is None else str(getattr(err, "reason", err)))

    def to_dict(self) -> dict:
        return {"content": self.content, "tool_calls": [_call_dict(c) for c in self.tool_calls],
                "error": self.error}


@dataclasses.dataclass(frozen=True)
class TurnCase:
    turn_type: str
    tools: tuple[Tool, ...]
    context: tuple[Message, ...]
    gold: Message
    prediction: Prediction
    acceptable: Mapping[str, list] = dataclasses.field(default_factory=dict)
    later_calls: tuple[ToolCall, ...] = ()
    acceptable_raw: Any = None  # as written in the data file, for the LLM judge's rubric
    gold_raw: Any = None  # FunctionChat Singlecall's gold object {"name", "arguments"}, for the rubric


@dataclasses.dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    judge: str = "rules"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _call_dict(c: ToolCall) -> dict:
    return {"name": c.name, "arguments": dict(c.arguments)}


# --------------------------------------------------------------------------------------------
# call matching
# --------------------------------------------------------------------------------------------

def values_equal(pred: Any, gold: Any) -> bool:
    """FunctionChat's value comparison, extended element-wise to lists and objects."""
    if isinstance(pred, str) and isinstance(gold, str):
        return pred.replace(" ", "").lower() == gold.replace(" ", "").lower()
    if isinstance(pred, bool) or isinstance(gold, bool):
        return isinstance(pred, bool) and isinstance(gold, bool) and pred == gold
    if isinstance(pred, (int, float)) and isinstance(gold, (int, float)):
        return pred == gold
    if isinstance(pred, Mapping) and isinstance(gold, Mapping):
        return pred.keys() == gold.keys() and all(values_equal(pred[k], gold[k]) for k in gold)
    if isinstance(pred, (list, tuple)) and isinstance(gold, (list, tuple)):
        return len(pred) == len(gold) and all(values_equal(p, g) for p, g in zip(pred, gold))
    return pred == gold and type(pred) is type(gold)


def call_matches(pred: ToolCall, gold: ToolCall, acceptable: Mapping[str, Sequence] | None = None
                 ) -> tuple[bool, str]:
    """(matched, reason) for one predicted call against one gold call (module docstring, *call*)."""
    acceptable = acceptable or {}
    if pred.name != gold.name:
        return False, f"function name {pred.name!r} != gold {gold.name!r}"
    extra = [k for k in pred.arguments if k not in gold.arguments]
    if extra:
        return False, f"arguments not in gold: {extra}"
    for key, gval in gold.arguments.items():
        pval = pred.arguments.get(key)
        if values_equal(pval, gval):
            continue
        alts = acceptable.get(key)
        if alts is not None and any(values_equal(pval, a) for a in alts):
            continue
        if key not in pred.arguments:
            return False, f"missing argument {key!r}"
        return False, f"argument {key!r}: {_show(pval)} != gold {_show(gval)}" + \
            (" or any acceptable value" if alts else "")
    return True, "call matches"


def _show(value: Any) -> str:
    """A value as JSON for a verdict's reason; a value JSON cannot hold (none should get here: the
    call parsers refuse them) is shown by its repr rather than stopping the evaluation."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=repr)
    except (ValueError, RecursionError):
        return repr(value)[:200]


def calls_match(pred: Sequence[ToolCall], gold: Sequence[ToolCall],
                acceptable: Mapping[str, Sequence] | None = None) -> tuple[bool, str]:
    if not pred:
        return False, "no tool call"
    if len(pred) < len(gold):
        return False, f"{len(pred)} call(s) made, {len(gold)} expected"
    for k, g in enumerate(gold):
        ok, why = call_matches(pred[k], g, acceptable)
        if not ok:
            return False, why if len(gold) == 1 else f"call {k}: {why}"
    return True, "call matches"


def exact_call_match(pred: Sequence[ToolCall], gold: Sequence[ToolCall]) -> bool:
    """Strict match: same number of calls, same names, identical arguments as JSON values
    (no acceptable alternatives, no case/space folding)."""
    if len(pred) != len(gold):
        return False
    return all(p.name == g.name and _json_equal(dict(p.arguments), dict(g.arguments)) for p, g in zip(pred, gold))


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------------------------
# slot targets and tool results
# --------------------------------------------------------------------------------------------

def _other_descriptions(tools: Sequence[Tool], tool: Tool) -> list[str]:
    return [str((spec or {}).get("description", "")) for t in tools if t.name != tool.name
            for spec in t.properties.values()]


def slot_targets(gold_text: str, tools: Sequence[Tool], later_calls: Sequence[ToolCall] = ()
                 ) -> tuple[dict[str, set[str]], str]:
    """({tool name: required parameters the gold question asks for}, mode) — module docstring, *slot*.

    mode "global": found with words distinctive among the parameters of all offered tools;
    "tool": only words distinctive within each tool found them; "all": the gold question refers to
    no required parameter, so all required parameters of the candidate tools are targets. The reply
    is checked with the same word lists ("global" or "tool"; "all" uses "tool")."""
    later = {c.name for c in later_calls}
    candidates = [t for t in tools if t.name in later] or list(tools)
    for mode in ("global", "tool"):
        targets: dict[str, set[str]] = {}
        for t in candidates:
            req = [p for p in t.required if p in t.properties]
            others = _other_descriptions(tools, t) if mode == "global" else ()
            hit = mentions.referred_parameters(gold_text, t.properties, only=req, other_descriptions=others)
            if hit:
                targets[t.name] = hit
        if targets:
            return targets, mode
    fallback = {t.name: {p for p in t.required if p in t.properties} for t in candidates}
    return {k: v for k, v in fallback.items() if v}, "all"


def tool_results_before(context: Sequence[Message]) -> list[str]:
    """Contents of the tool messages at the end of the context (the results the turn should report)."""
    out = []
    for m in reversed(context):
        if m.role != "tool":
            break
        out.append(m.content or "")
    return out[::-1]


# --------------------------------------------------------------------------------------------
# the judge
# --------------------------------------------------------------------------------------------

# markup that introduces a tool result in the chat formats (hermes, llama3_json / functionary,
# react, alpaca); an assistant reply containing one is impersonating the tool
TOOL_RESULT_MARKUP = ("<tool_response>", "<|start_header_id|>ipython", "\nObservation:", "API-Response:")


def impersonated_tool_result(text: str) -> str | None:
    """The tool-result markup `text` contains, or None."""
    padded = "\n" + text
    return next((m for m in TOOL_RESULT_MARKUP if m in padded), None)


class RuleJudge:
    """Offline judge implementing the rules of the module docstring. Stateless."""

    name = "rules"

    def judge(self, case: TurnCase) -> Verdict:
        if case.turn_type not in TURN_TYPES:
            raise ValueError(f"unknown turn type {case.turn_type!r}; expected one of {TURN_TYPES}")
        p = case.prediction
        if p.error:
            what = "unparseable tool call" if case.turn_type == "call" else "malformed tool call in reply"
            return Verdict(False, f"{what}: {p.error}")
        if case.turn_type == "call":
            ok, why = calls_match(p.tool_calls, case.gold.tool_calls, case.acceptable)
            return Verdict(ok, why)
        if p.tool_calls:
            return Verdict(False, f"made a call to {p.tool_calls[0].name!r} where none was expected")
        text = (p.content or "").strip()
        if not text:
            return Verdict(False, "empty reply")
        markup = impersonated_tool_result(text)
        if markup:
            return Verdict(False, f"reply writes a tool result itself ({markup.strip()!r})")
        return getattr(self, f"_{case.turn_type}")(case, text)

    def _relevance(self, case: TurnCase, text: str) -> Verdict:
        return Verdict(True, "no call, non-empty reply")

    def _slot(self, case: TurnCase, text: str) -> Verdict:
        if not mentions.asks_something(text):
            return Verdict(False, "reply does not ask for anything")
        targets, mode = slot_targets(case.gold.content or "", case.tools, case.later_calls)
        if not targets:
            return Verdict(False, "no required parameter to ask for in the tools")
        for tool_name, params in targets.items():
            tool = next(t for t in case.tools if t.name == tool_name)
            others = _other_descriptions(case.tools, tool) if mode == "global" else ()
            hit = mentions.referred_parameters(text, tool.properties, only=params, other_descriptions=others)
            if hit:
                return Verdict(True, f"asks for {sorted(hit)} of {tool_name}")
        wanted = sorted(f"{t}.{p}" for t, ps in targets.items() for p in ps)
        return Verdict(False, f"asks for none of the missing parameters {wanted}")

    def _completion(self, case: TurnCase, text: str) -> Verdict:
        values = mentions.informative_values(tool_results_before(case.context))
        if not values:
            return Verdict(True, "tool result has no value to check; non-empty reply")
        for v in values:
            if mentions.mentions_value(text, v):
                return Verdict(True, f"mentions tool-result value {v!r}")
        return Verdict(False, f"mentions none of the tool-result values {values[:8]}")
