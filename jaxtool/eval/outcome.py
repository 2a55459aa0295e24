"""Outcome correctness O of iTool's reward R = O + C (Zeng et al. 2025, Eq. 6): is the policy's
response the gold answer? (Also online RL's `outcome` reward; it lives below both applications.)

A response (token ids from the sampler) is decoded to text, cut at the format's stop strings, and
parsed by the chat format's own parser (`jaxtool.data.formats`; pythonic calls with `ast`, JSON with
`json` — model output is never evaluated). Then:

- **BFCL items** (examples whose meta carries BFCL's `functions`, `ground_truth` and `category`, as
  the `bfcl:` source yields them): BFCL's AST checker (`jaxtool.eval.bfcl.checker.check_ast`, or
  `check_relevance` for the relevance categories), with BFCL's pythonic decoder for the pythonic
  format — the same verdict `jaxtool eval bfcl` gives.
- **Other data** (xlam, ToolACE, glaive, jaxtool conversations), whose gold answer is a list of
  calls rather than BFCL's lists of acceptable values — *call equality*:
  * the same number of calls, matched order-free (each gold call takes the first unmatched
    predicted call equal to it);
  * two calls are equal when the names are equal and every argument is: given on both sides with
    equal values, or given on one side only with the value the tool schema declares as its
    `default` (omitting a default-valued argument is not an error);
  * values: strings equal after BFCL's `standardize_string` (case, spaces and , . / - _ * ^
    ignored); numbers equal as numbers (5 == 5.0; a boolean is not a number); booleans and None
    exactly; lists element-wise; objects key-wise;
  * a gold answer without calls (a text reply) is matched by a response without calls.

O is 1.0 for a correct response and 0.0 otherwise. Every verdict is counted by reason
(`OutcomeJudge.counts`): `correct`, `empty response`, `unparseable` (split into `call never closed`
when generation stopped without an end-of-turn), `no call`, `call when none expected`, `wrong number
of calls`, `wrong function name`, `wrong arguments`, BFCL's error types for BFCL items, and
`gold unusable` for a gold answer that cannot be compared (counted, scored 0, never raised).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Mapping, Sequence

from jaxtool.data.schema import Tool, ToolCall
from jaxtool.eval.bfcl.checker import check_ast, check_relevance, standardize_string
from jaxtool.eval.bfcl.decode import DecodeError, calls_from_tool_calls, decode_pythonic


@dataclasses.dataclass(frozen=True)
class Outcome:
    correct: bool
    reason: str           # "correct" or why not (a short, countable category)
    detail: str = ""

    @property
    def value(self) -> float:
        return 1.0 if self.correct else 0.0


# ------------------------------------------------------------------------------------------------
# call equality (non-BFCL data)
# ------------------------------------------------------------------------------------------------

_MISSING = object()


def values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0) or float(a) == float(b)
    if isinstance(a, str) and isinstance(b, str):
        return standardize_string(a) == standardize_string(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(values_equal(a[k], b[k]) for k in a)
    if a is None or b is None:
        return a is None and b is None
    return False


def _defaults(tool: Tool | None) -> dict:
    if tool is None:
        return {}
    return {k: v["default"] for k, v in tool.properties.items() if isinstance(v, Mapping) and "default" in v}


def argument_problem(gold: Mapping[str, Any], pred: Mapping[str, Any], tool: Tool | None) -> str | None:
    """Why `pred` arguments differ from `gold` (None when equal, per the rules above)."""
    defaults = _defaults(tool)
    for k in list(gold) + [k for k in pred if k not in gold]:
        g, p = gold.get(k, _MISSING), pred.get(k, _MISSING)
        if g is not _MISSING and p is not _MISSING:
            if not values_equal(g, p):
                return f"{k}: {p!r} != gold {g!r}"
        elif p is _MISSING:
            if not (k in defaults and values_equal(g, defaults[k])):
                return f"{k}: missing (gold {g!r})"
        elif not (k in defaults and values_equal(p, defaults[k])):
            return f"{k}: unexpected ({p!r})"
    return None


def compare_calls(gold: Sequence[ToolCall], pred: Sequence[ToolCall], tools: Sequence[Tool]) -> Outcome:
    """Call equality of a predicted call list with the gold one (order-free)."""
    if not gold:
        return Outcome(True, "correct") if not pred else Outcome(False, "call when none expected",
                                                                  ", ".join(c.name for c in pred))
    if not pred:
        return Outcome(False, "no call")
    if len(pred) != len(gold):
        return Outcome(False, "wrong number of calls", f"{len(pred)} calls, {len(gold)} expected")
    by_name = {t.name: t for t in tools}
    free = list(range(len(pred)))
    for g in gold:
        match, why = None, None
        for j in free:
            if pred[j].name != g.name:
                continue
            problem = argument_problem(g.arguments, pred[j].arguments, by_name.get(g.name))
            if problem is None:
                match = j
                break
            why = why or problem
        if match is None:
            if why is None:
                return Outcome(False, "wrong function name", f"no call to {g.name!r} "
                               f"(got {[p.name for p in pred]})")
            return Outcome(False, "wrong arguments", f"{g.name}: {why}")
        free.remove(match)
    return Outcome(True, "correct")


# ------------------------------------------------------------------------------------------------
# the judge
# ------------------------------------------------------------------------------------------------

def _bfcl_meta(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for m in (meta, meta.get("origin") if isinstance(meta.get("origin"), Mapping) else None):
        if m and "functions" in m and "category" in m and ("ground_truth" in m):
            return m
    return None


def judge_text(example, text: str, fmt, *, finished: bool = True) -> Outcome:
    """The verdict for one response text (already cut at the stop strings) against `example`'s gold."""
    if not text.strip():
        return Outcome(False, "empty response")
    bfcl = _bfcl_meta(example.conversation.meta)
    if bfcl is not None:
        if fmt.name == "pythonic":
            calls = decode_pythonic(text)
        else:
            reply = fmt.parse(text)
            calls = DecodeError(reply.error.reason) if reply.error is not None else calls_from_tool_calls(reply.tool_calls)
        if isinstance(calls, DecodeError) and not finished:
            return Outcome(False, "call never closed", calls.reason)
        try:
            if bfcl["ground_truth"] is None:
                v = check_relevance(bfcl["category"], calls)
            else:
                v = check_ast(bfcl["category"], bfcl["functions"], calls, bfcl["ground_truth"])
        except Exception as e:  # a malformed BFCL doc / answer: the gold is unusable, not the response
            return Outcome(False, "gold unusable", f"{type(e).__name__}: {e}")
        return Outcome(True, "correct") if v.valid else Outcome(False, v.error_type or "incorrect", v.error or "")
    reply = fmt.parse(text)
    if reply.error is not None:
        return Outcome(False, "unparseable" if finished else "call never closed", reply.error.reason)
    gold = example.gold
    return compare_calls(gold.tool_calls, reply.tool_calls, example.tools)


class OutcomeJudge:
    """The host `outcome(query_index, response_token_ids) -> float` the search calls.

    `examples[q]` is the query the search's prompt q came from. Token ids are decoded with the
    tokenizer. A response is *finished* when it ends with a stop id (EOS / end of turn), or — for a
    caller that strips the final end-of-turn token, as the MCTS does — when it is shorter than
    `length_limit` (a response that reached the limit was cut by it). Verdicts are counted by reason
    in `counts`; the last verdict per query is kept in `last`."""

    def __init__(self, examples: Sequence, fmt, tokenizer, stop_ids: Sequence[int], length_limit: int | None = None):
        self.examples = list(examples)
        self.fmt = fmt
        self.tokenizer = tokenizer
        self.stop_ids = set(int(i) for i in stop_ids)
        self.length_limit = length_limit
        self.counts: collections.Counter = collections.Counter()
        self.first: dict[str, str] = {}
        self.last: dict[int, Outcome] = {}

    def text_of(self, ids: Sequence[int]) -> tuple[str, bool]:
        ids = [int(i) for i in ids]
        finished = (bool(ids) and ids[-1] in self.stop_ids) or (
            self.length_limit is not None and len(ids) < self.length_limit)
        while ids and ids[-1] in self.stop_ids:
            ids = ids[:-1]
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        cut = self.fmt.cut_at_stop(text)
        return cut, finished or len(cut) < len(text)

    def verdict(self, query_index: int, response_ids: Sequence[int]) -> Outcome:
        try:
            ex = self.examples[int(query_index)]
        except (IndexError, ValueError, TypeError):
            out = Outcome(False, "gold unusable", f"no example for query {query_index!r}")
        else:
            text, finished = self.text_of(response_ids)
            try:
                out = judge_text(ex, text, self.fmt, finished=finished)
            except Exception as e:  # never crash the search on a verdict
                out = Outcome(False, "gold unusable", f"{type(e).__name__}: {e}")
            self.last[int(query_index)] = out
        self.counts[out.reason] += 1
        if out.detail:
            self.first.setdefault(out.reason, out.detail[:200])
        return out

    def __call__(self, query_index, response_ids) -> float:
        return self.verdict(query_index, response_ids).value

    def summary(self) -> dict:
        return {"verdicts": dict(self.counts.most_common()), "first_of_each": dict(self.first)}
