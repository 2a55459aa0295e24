"""SGD -> Conversational ReAct API calling (CALM-IT's CRA task, the paper's Figs. 6-7).

Every SGD system turn is a ReAct step User -> Thought1 -> Action -> Observation -> Thought2 ->
System reply, read from the SGD annotations: the frame's ``service_call`` is the Action, written
``Method(slot='value', ...)`` (`jaxtool.calm.example.py_call`); its ``service_results`` are the
Observation, the JSON text of the results list exactly as `jaxtool.data.sources.sgd` stores it; the
gold system utterance is the reply, verbatim, after ``System:``. A system turn without a call is
User -> Thought -> System. Thoughts come from a thought writer (`jaxtool.calm.thoughts`: template by
default, or an LLM).

Two objectives per turn with a call (one row each), as the paper's figures show them
(``layout="figures"``, the default):

- action prediction (Fig. 6) — Instruction: `ACTION_INSTRUCTION`, listing the available functions
  as ``Name(arg1, arg2, ...)``; Input: the dialogue so far + ``User: <text>`` + ``Thought: <thought1>``;
  Output: ``Action: <call>`` only;
- response generation (Fig. 7) — Instruction: `RESPONSE_INSTRUCTION` (its own, no tool list); Input:
  the same + ``Action: <call>``, ``Observation: <results>``, ``Thought: <thought2>``; Output:
  ``System: <gold utterance>`` only.

A turn without a call gives one response-generation row whose Input ends with the User turn and its
Thought (the figures show only call turns; the paper is silent on these, and this keeps one layout).

``layout="generate"`` is the variant §4.2's prose implies — the model writes its own thoughts: the
action row's Input ends with the User turn and its Output is ``Thought: <thought1>\nAction: <call>``;
the response row's Input ends with the Observation and its Output is
``Thought: <thought2>\nSystem: <gold>`` (a no-call turn: Input ends with the User turn).

The dialogue so far keeps every earlier event, one line each, in order: ``User:``, ``Thought:``,
``Action:``, ``Observation:``, ``Thought:``, ``System:`` (Figs. 6-7 show earlier thoughts and results
in the history). Several calls in one turn (which SGD's train split does not have) give one
``Action:`` line per call and one ``Observation:`` line per result, in order.

The instruction texts are jaxtool's wording of what the figures show (the figures' exact instruction
text could not be retrieved here; docs/fidelity.md says so).

Bad input (counted by reason, the rest of the dialogue is kept): a system turn whose service call has
no ``service_results`` field ("service call without results"; its user turn and reply still enter
the history of later turns, without Thought/Action/Observation lines). Dialogues the SGD loader
rejects are counted by the loader.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable, Iterator, Mapping

from jaxtool.calm.example import CalmExample, py_call, signature
from jaxtool.calm.thoughts import CraTurn, TemplateThoughts
from jaxtool.data.schema import Conversation, ToolCall
from jaxtool.data.sources import _common, sgd
from jaxtool.data.sources.base import BadRow, LoadReport, read_records
from jaxtool.errors import ConfigError

TASK = "cra"
LAYOUTS = ("figures", "generate")

# Fig. 6 (action prediction): the functions listed as Name(arg, ...); Output = the Action line.
ACTION_INSTRUCTION = """You are a task-oriented dialogue assistant that can call the functions listed below. The \
conversation so far is given line by line (User, Thought, Action, Observation, System); it ends with the \
user's latest turn and your thought about it. Write the function call to make next, as \
Action: FunctionName(argument='value', ...)

Available functions:
{apis}"""
# Fig. 7 (response generation): its own instruction, no tool list; Output = the System reply.
RESPONSE_INSTRUCTION = """You are a task-oriented dialogue assistant. The conversation so far is given line by line \
(User, Thought, Action, Observation, System); it ends with the user's latest turn, your thought, and, when \
you called a function, the call and its result (Observation) followed by your thought about it. Write your \
reply to the user, as
System: your reply"""
# layout="generate" (§4.2 prose): the model writes the Thought before the Action / the reply.
ACTION_INSTRUCTION_GENERATE = """You are a task-oriented dialogue assistant that can call the functions listed below. \
The conversation so far is given line by line (User, Thought, Action, Observation, System); it ends with the \
user's latest turn. Write your thought about it and then the function call to make next, as
Thought: your reasoning
Action: FunctionName(argument='value', ...)

Available functions:
{apis}"""
RESPONSE_INSTRUCTION_GENERATE = """You are a task-oriented dialogue assistant. The conversation so far is given line by \
line (User, Thought, Action, Observation, System); it ends with the user's latest turn and, when you called a \
function, the call and its result (Observation). Write your thought and then your reply to the user, as
Thought: your reasoning
System: your reply"""


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ConfigError(f"CRA layout must be one of {LAYOUTS} (--cra-layout), got {layout!r}")
    return layout


def instruction(tools, layout: str = "figures") -> str:
    """The action-prediction instruction (Fig. 6): the available functions as `Name(arg, ...)`."""
    tmpl = ACTION_INSTRUCTION if check_layout(layout) == "figures" else ACTION_INSTRUCTION_GENERATE
    return tmpl.format(apis="\n".join(signature(t) for t in tools))


def response_instruction(layout: str = "figures") -> str:
    """The response-generation instruction (Fig. 7): no tool list."""
    return RESPONSE_INSTRUCTION if check_layout(layout) == "figures" else RESPONSE_INSTRUCTION_GENERATE


@dataclasses.dataclass(frozen=True)
class SkippedTurn:
    """A system turn that cannot be a CRA step: why (`bad`), and the text it leaves in the history."""

    bad: BadRow
    turn: Any
    user: str | None
    response: str


def calls_without_results(record: Any) -> list[int]:
    """SGD turn indices of SYSTEM turns with a frame that has a `service_call` but no `service_results`."""
    out = []
    turns = record.get("turns") if isinstance(record, Mapping) else None
    for k, turn in enumerate(turns if isinstance(turns, list) else []):
        if not isinstance(turn, Mapping) or turn.get("speaker") != "SYSTEM":
            continue
        frames = turn.get("frames") if isinstance(turn.get("frames"), list) else []
        if any(isinstance(f, Mapping) and "service_call" in f and "service_results" not in f for f in frames):
            out.append(k)
    return out


def load_sgd(path: str, *, on_bad_row: str = "error", report: LoadReport | None = None,
             limit: int | None = None) -> Iterator[Conversation]:
    """The SGD loader's Conversations, each with `meta["calls_without_results"]` read from the raw
    record (the loader itself stores a missing results field as `[]`)."""
    files, schema_path = sgd.locate(path)
    services = sgd.load_schema(schema_path)
    rows = ((f"{os.path.basename(f)}:{i}", rec) for f in files for i, rec in read_records(f))

    def convert(index, record):
        conv = sgd.convert(index, record, services)
        return conv.replace(meta={**conv.meta, "calls_without_results": calls_without_results(record)})

    return _common.iterate(sgd.SOURCE, rows, convert, on_bad_row=on_bad_row, report=report, limit=limit)


def turns(conv: Conversation) -> Iterator[CraTurn | SkippedTurn]:
    """The system turns of one SGD conversation, in order, each with `history` = "" (`convert`
    fills it, since the history holds the thoughts written for earlier turns); a turn that cannot
    be a CRA step is yielded as a `SkippedTurn` naming why (the caller counts it)."""
    missing = set(conv.meta.get("calls_without_results") or ())
    did = str(conv.meta.get("id"))
    user: str | None = None
    calls: list[ToolCall] = []
    results: list[str] = []
    for m in conv.messages:
        if m.role == "user":
            user = m.content or ""
            calls, results = [], []
        elif m.role == "assistant" and m.tool_calls:
            calls = list(m.tool_calls)
        elif m.role == "tool":
            results.append(m.content or "")
        elif m.role == "assistant":
            k = m.meta.get("turn")
            frames = m.meta.get("frames") or []
            acts = tuple(a for f in frames if isinstance(f, Mapping) for a in (f.get("actions") or [])
                         if isinstance(a, Mapping))
            text = m.content or ""
            if user is None:
                yield SkippedTurn(BadRow("system turn before any user turn", f"{did} turn {k}", field=f"turns[{k}]"),
                                  k, None, text)
            elif k in missing:
                yield SkippedTurn(BadRow("service call without results", f"{did} turn {k}: {[c.name for c in calls]}",
                                         field=f"turns[{k}].frames"), k, user, text)
            elif len(results) != len(calls):
                yield SkippedTurn(BadRow("service call without results", f"{did} turn {k}: {len(calls)} calls, "
                                         f"{len(results)} results", field=f"turns[{k}].frames"), k, user, text)
            else:
                yield CraTurn(did, k, "", user, tuple(calls), tuple(results), text, acts, conv.tools)
            user, calls, results = None, [], []


def step_lines(t: CraTurn, th) -> list[str]:
    """This turn's lines as later turns' history shows them (thoughts included, Figs. 6-7)."""
    lines = [f"User: {t.user}"]
    if t.calls:
        lines += [f"Thought: {th.before}"] + [f"Action: {py_call(c)}" for c in t.calls]
        lines += [f"Observation: {r}" for r in t.observations]
    lines += [f"Thought: {th.after}", f"System: {t.response}"]
    return lines


def examples(t: CraTurn, writer, tools_instr: str, base_meta: Mapping[str, Any], layout: str = "figures",
             thoughts=None) -> list[CalmExample]:
    """The rows of one turn (module docstring). `tools_instr` is the action-prediction instruction."""
    th = thoughts if thoughts is not None else writer.write(t)
    head = ((t.history + "\n") if t.history else "") + f"User: {t.user}"
    meta = {**base_meta, "dialogue_id": t.dialogue_id, "turn": t.turn, "thoughts": writer.name, "layout": layout}
    resp_instr = response_instruction(layout)
    reply = f"System: {t.response}"
    if not t.calls:
        if layout == "figures":
            return [CalmExample(TASK, resp_instr, f"{head}\nThought: {th.after}", reply, {**meta, "objective": "response"})]
        return [CalmExample(TASK, resp_instr, head, f"Thought: {th.after}\n{reply}", {**meta, "objective": "response"})]
    actions = "\n".join(f"Action: {py_call(c)}" for c in t.calls)
    observations = "\n".join(f"Observation: {r}" for r in t.observations)
    if layout == "figures":
        return [
            CalmExample(TASK, tools_instr, f"{head}\nThought: {th.before}", actions, {**meta, "objective": "action"}),
            CalmExample(TASK, resp_instr, f"{head}\nThought: {th.before}\n{actions}\n{observations}\nThought: {th.after}",
                        reply, {**meta, "objective": "response"}),
        ]
    return [
        CalmExample(TASK, tools_instr, head, f"Thought: {th.before}\n{actions}", {**meta, "objective": "action"}),
        CalmExample(TASK, resp_instr, f"{head}\nThought: {th.before}\n{actions}\n{observations}",
                    f"Thought: {th.after}\n{reply}", {**meta, "objective": "response"}),
    ]


def convert(convs: Iterable[Conversation], report: LoadReport, writer=None, layout: str = "figures") -> list[CalmExample]:
    """CRA rows of every system turn; bad turns go to `report` (one report row per system turn)."""
    check_layout(layout)
    writer = writer or TemplateThoughts()
    out: list[CalmExample] = []
    for conv in convs:
        instr = instruction(conv.tools, layout)
        base = {"source": conv.meta.get("source"), "row": conv.meta.get("row")}
        history: list[str] = []
        for t in turns(conv):
            rows = None
            where = f"{conv.meta.get('id')} turn {getattr(t, 'turn', '?')}"
            with report.row(where):
                if isinstance(t, SkippedTurn):
                    history += ([f"User: {t.user}"] if t.user is not None else []) + [f"System: {t.response}"]
                    raise t.bad
                t = dataclasses.replace(t, history="\n".join(history))
                th = writer.write(t)
                rows = examples(t, writer, instr, base, layout, thoughts=th)
                history += step_lines(t, th)
            if rows is not None:
                report.keep()
                out.extend(rows)
    return out
