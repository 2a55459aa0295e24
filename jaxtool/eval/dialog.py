"""Dialogue-flow evaluation: FunctionChat-Bench-style, teacher-forced judging of assistant turns.

Every evaluated assistant turn gets the *gold* history before it as context (teacher forcing): the
prompt is `prompt_ids(history, fmt, tokenizer)`, the model generates greedily through a `Backend`,
the chat format parses the text into content + tool calls, and a judge (offline `RuleJudge` by
default, or `LLMJudge` with FunctionChat's rubric files) decides pass / fail for the turn's type:

call        exact function name and arguments, acceptable alternatives allowed
slot        no call; asks for the missing required information
relevance   no call; declines / answers without a tool
completion  no call; reports the tool result

Turn type of a gold assistant message, first rule that applies:
1. `meta["type_of_output"]` (FunctionChat files);
2. `meta["state"]` (DiaTool-DPO builder output): 1 -> relevance (the dialogue stays in the initial
   state: a rejection), 2 -> slot (slot-filling question), 3 -> call, 5 -> completion (answer after
   the tool result);
3. unlabelled: it has tool calls -> call; the previous message is a tool result -> completion;
   otherwise the text asks for a required parameter of an offered tool (the slot rule's test applied
   to the gold text) -> slot; else -> relevance.

Scores: per-type accuracy (pass rate), **micro avg** = passed turns / all turns (FunctionChat-Bench's
`avg(micro)` in `DialogEvaluationRegistor.get_score`), **macro avg** = mean of the per-type
accuracies over the types present. These are the micro / macro averages DiaTool-DPO (Jung et al.
2025) reports in its Table 3 for FunctionChat-Bench Dialog, as the task brief describes them; the
table itself could not be read from the sources available here. Also `call_exact_match`: the share of call turns whose
predicted calls equal the gold calls exactly (same calls, same argument values as JSON; no
acceptable alternatives, no case/space folding), and breakdowns by MDP state (DiaTool data) and by
subset / tool-set type / category / query type where the data has them.

Python API::

    result = evaluate_dialogs(conversations, backend, fmt, judge=RuleJudge(), batch_size=8)
    print(result.table()); result.summary["macro_avg"]; result.records[0]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

from jaxtool.data.schema import Conversation, Message, ToolCall
from jaxtool.errors import DataError
from jaxtool.eval import mentions, textgen
from jaxtool.eval.judge import (TURN_TYPES, Prediction, RuleJudge, TurnCase, exact_call_match,
                                slot_targets)

STATE_TURN_TYPE = {1: "relevance", 2: "slot", 3: "call", 5: "completion"}
GROUP_KEYS = ("subset", "tools_type", "category", "query_type", "difficulty")


# --------------------------------------------------------------------------------------------
# which turns, of which type
# --------------------------------------------------------------------------------------------

def turn_type(conv: Conversation, index: int) -> str:
    """The type of the gold assistant message `conv.messages[index]` (module docstring)."""
    m = conv.messages[index]
    if m.role != "assistant":
        raise DataError(f"message {index} is a {m.role!r} message, not an assistant turn")
    t = m.meta.get("type_of_output")
    if t is not None:
        if t not in TURN_TYPES:
            raise DataError(f"message {index}: type_of_output must be one of {TURN_TYPES}, got {t!r}")
        return t
    s = m.meta.get("state")
    if s is not None:
        if s not in STATE_TURN_TYPE or isinstance(s, bool):
            raise DataError(f"message {index}: assistant state must be one of {sorted(STATE_TURN_TYPE)}, got {s!r}")
        return STATE_TURN_TYPE[s]
    if m.tool_calls:
        return "call"
    if index > 0 and conv.messages[index - 1].role == "tool":
        return "completion"
    text = m.content or ""
    if conv.tools and mentions.asks_something(text):
        _, mode = slot_targets(text, conv.tools, later_calls(conv, index))
        if mode != "all":  # the text names a required parameter of an offered tool
            return "slot"
    return "relevance"


def later_calls(conv: Conversation, index: int) -> tuple[ToolCall, ...]:
    return tuple(c for m in conv.messages[index + 1:] if m.role == "assistant" for c in m.tool_calls)


@dataclasses.dataclass(frozen=True)
class DialogTurn:
    """One assistant turn to evaluate: `conv.messages[index]` with `conv.messages[:index]` as context."""

    conv_index: int
    index: int
    turn_type: str
    conv: Conversation

    @property
    def gold(self) -> Message:
        return self.conv.messages[self.index]

    @property
    def history(self) -> Conversation:
        return self.conv.replace(messages=self.conv.messages[: self.index])

    def case(self, prediction: Prediction) -> TurnCase:
        return TurnCase(turn_type=self.turn_type, tools=self.conv.tools, context=self.conv.messages[: self.index],
                        gold=self.gold, prediction=prediction,
                        acceptable=self.conv.meta.get("acceptable_arguments") or {},
                        later_calls=later_calls(self.conv, self.index),
                        acceptable_raw=self.conv.meta.get("acceptable_arguments_raw"),
                        gold_raw=self.conv.meta.get("ground_truth_raw"))


def collect_turns(conversations: Iterable[Conversation]) -> list[DialogTurn]:
    """The turns to evaluate: `meta["eval_turns"]` when given (FunctionChat items), else every
    assistant message."""
    turns = []
    for ci, conv in enumerate(conversations):
        indices = conv.meta.get("eval_turns")
        if indices is None:
            indices = conv.assistant_turns
        for i in indices:
            turns.append(DialogTurn(ci, i, turn_type(conv, i), conv))
    return turns


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class DialogResult:
    records: list[dict]
    summary: dict

    def table(self) -> str:
        from jaxtool.eval.report import markdown_table

        header, rows = table_rows(self.summary)
        return markdown_table(header, rows)


def evaluate_dialogs(conversations: Iterable[Conversation], backend: Any, fmt: Any, *, judge: Any = None,
                     batch_size: int = 8, max_new_tokens: int = 256, prompt_fn: textgen.PromptFn | None = None,
                     progress: bool = False) -> DialogResult:
    """Teacher-forced evaluation of the assistant turns of `conversations` (module docstring)."""
    judge = judge or RuleJudge()
    prompt_fn = prompt_fn or textgen.encode_prompt
    turns = collect_turns(conversations)
    prompts = [list(prompt_fn(t.history, fmt, backend.tokenizer)) for t in turns]
    texts = textgen.generate_texts(backend, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                   stop_strings=tuple(getattr(fmt, "stop_strings", ()) or ()),
                                   desc="dialog turns", progress=progress)
    records = []
    bar = textgen.progress_bar(len(turns), "judging", progress and getattr(judge, "name", "") != "rules")
    for t, prompt, text in zip(turns, prompts, texts):
        pred = Prediction.from_reply(text, fmt.parse(text))
        verdict = judge.judge(t.case(pred))
        records.append(_record(t, prompt, text, pred, verdict))
        bar.update(1)
    bar.close()
    return DialogResult(records, summarise(records, judge=getattr(judge, "name", type(judge).__name__)))


def _record(t: DialogTurn, prompt: Sequence[int], text: str, pred: Prediction, verdict: Any) -> dict:
    meta = t.conv.meta
    rec = {
        "conv": t.conv_index,
        "turn": t.index,
        "source": meta.get("source"),
        "id": meta.get("serial_num", meta.get("row")),
        "turn_type": t.turn_type,
        "state": t.gold.meta.get("state"),
        "group": {k: meta[k] for k in GROUP_KEYS if meta.get(k) is not None},
        "prompt_tokens": len(prompt),
        "output": text,
        "prediction": pred.to_dict(),
        "gold": {"content": t.gold.content,
                 "tool_calls": [{"name": c.name, "arguments": dict(c.arguments)} for c in t.gold.tool_calls]},
        "passed": bool(verdict.passed),
        "reason": verdict.reason,
        "judge": verdict.judge,
    }
    if t.turn_type == "call":
        rec["exact_match"] = exact_call_match(pred.tool_calls, t.gold.tool_calls)
    return rec


def _rate(passed: int, n: int) -> dict:
    return {"n": n, "passed": passed, "accuracy": passed / n if n else float("nan")}


def summarise(records: Sequence[dict], judge: str = "rules") -> dict:
    """Per-type accuracy, micro / macro averages, call exact match and breakdowns (module docstring)."""
    per_type = {}
    for t in TURN_TYPES:
        rs = [r for r in records if r["turn_type"] == t]
        if rs:
            per_type[t] = _rate(sum(r["passed"] for r in rs), len(rs))
    n = len(records)
    passed = sum(r["passed"] for r in records)
    calls = [r for r in records if r["turn_type"] == "call"]
    summary = {
        "judge": judge,
        "n_turns": n,
        "per_type": per_type,
        "micro_avg": passed / n if n else float("nan"),
        "macro_avg": sum(v["accuracy"] for v in per_type.values()) / len(per_type) if per_type else float("nan"),
        "call_exact_match": sum(r["exact_match"] for r in calls) / len(calls) if calls else float("nan"),
        "parse_errors": sum(1 for r in records if r["prediction"]["error"]),
    }
    states = sorted({r["state"] for r in records if r.get("state") is not None})
    if states:
        summary["per_state"] = {str(s): _rate(sum(r["passed"] for r in records if r["state"] == s),
                                              sum(1 for r in records if r["state"] == s)) for s in states}
    by_group: dict[str, dict] = {}
    for key in GROUP_KEYS:
        values = sorted({str(r["group"][key]) for r in records if key in r["group"]})
        if len(values) > 1 or (values and key != "subset"):
            by_group[key] = {}
            for v in values:
                rs = [r for r in records if str(r["group"].get(key)) == v]
                by_group[key][v] = _rate(sum(r["passed"] for r in rs), len(rs))
    if by_group:
        summary["by_group"] = by_group
    return summary


def table_rows(summary: dict) -> tuple[list[str], list[list]]:
    header = ["turn type", "turns", "passed", "accuracy"]
    rows = []
    state_of = {v: k for k, v in STATE_TURN_TYPE.items()}
    has_states = "per_state" in summary
    for t, v in summary["per_type"].items():
        label = f"{t} (state {state_of[t]})" if has_states else t
        rows.append([label, v["n"], v["passed"], v["accuracy"]])
    rows.append(["micro avg", summary["n_turns"], sum(v["passed"] for v in summary["per_type"].values()),
                 summary["micro_avg"]])
    rows.append(["macro avg", "", "", summary["macro_avg"]])
    n_call = summary["per_type"].get("call", {}).get("n", 0)
    rows.append(["call exact match", n_call, "", summary["call_exact_match"]])
    return header, rows


def chart_values(summary: dict) -> dict[str, float]:
    vals = {t: v["accuracy"] for t, v in summary["per_type"].items()}
    vals["micro avg"] = summary["micro_avg"]
    vals["macro avg"] = summary["macro_avg"]
    return vals
