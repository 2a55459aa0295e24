"""SGD -> Conversational ReAct API calling (CALM-IT's CRA task, the paper's Figs. 6-7).

Every SGD system turn is a ReAct step User -> Thought1 -> Action -> Observation -> Thought2 ->
Response, read from the SGD annotations: the frame's ``service_call`` is the Action, written
``Method(slot='value', ...)`` (`jaxtool.calm.example.py_call`); its ``service_results`` are the
Observation, the JSON text of the results list exactly as `jaxtool.data.sources.sgd` stores it; the
gold system utterance is the Response, verbatim. A system turn without a call is User -> Thought ->
Response. Thoughts come from a thought writer (`jaxtool.calm.thoughts`: template by default, or an LLM).

Two objectives per turn with a call (one row each), one for a turn without:

- action prediction — Input: the dialogue so far + ``User: <text>``; Output:
  ``Thought: <thought1>\\nAction: <call>`` (a ReAct step opens with its thought);
- response generation — Input: the same + ``Thought: <thought1>``, ``Action: <call>``,
  ``Observation: <results>``; Output: ``Thought: <thought2>\\nResponse: <gold utterance>``. For a turn
  without a call: Input as for action prediction; Output ``Thought: <thought>\\nResponse: <gold>``.

The dialogue so far is written one line per event: ``User:``, ``Action:``, ``Observation:``,
``Response:`` (earlier thoughts are not repeated, which keeps rows shorter; the observations stay, since
later turns answer from them). The Instruction explains the ReAct layout and lists the dialogue's
tools as signatures ``Name(arg1, arg2, ...)`` (required arguments first). Several calls in one turn
(which SGD's train split does not have) give one ``Action:`` line per call and one ``Observation:``
line per result, in order.

Bad input (counted by reason, the rest of the dialogue is kept): a system turn whose service call has
no ``service_results`` field ("service call without results"; its utterance still enters the history
of later turns, without Action/Observation lines). Dialogues the SGD loader rejects are counted by
the loader.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, Mapping

from jaxtool.calm.example import CalmExample, py_call, signature
from jaxtool.calm.thoughts import CraTurn, TemplateThoughts
from jaxtool.data.schema import Conversation, ToolCall
from jaxtool.data.sources import _common, sgd
from jaxtool.data.sources.base import BadRow, LoadReport, read_records

TASK = "cra"

INSTRUCTION = """You are a task-oriented assistant that can call the APIs listed below. Handle each user turn in \
the ReAct format:
Thought: what the user wants and what to do next
Action: an API call, written Name(argument='value', ...), when you need information or must act
Observation: the result of the call (it is given to you)
Thought: what the result means for your reply
Response: your reply to the user
Call an API only when every argument it needs is known; otherwise ask the user for it in your Response. \
When no call is needed, write the Thought and then the Response.

Available APIs:
{apis}"""


def instruction(tools) -> str:
    return INSTRUCTION.format(apis="\n".join(signature(t) for t in tools))


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


def turns(conv: Conversation) -> Iterator[CraTurn | BadRow]:
    """The system turns of one SGD conversation, in order; a turn that cannot be a CRA step is
    yielded as the `BadRow` explaining why (the caller counts it)."""
    missing = set(conv.meta.get("calls_without_results") or ())
    did = str(conv.meta.get("id"))
    history: list[str] = []
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
            step: list[str] = [f"User: {user}"]
            if user is None:
                yield BadRow("system turn before any user turn", f"{did} turn {k}", field=f"turns[{k}]")
            elif k in missing:
                yield BadRow("service call without results", f"{did} turn {k}: {[c.name for c in calls]}",
                             field=f"turns[{k}].frames")
            elif len(results) != len(calls):
                yield BadRow("service call without results", f"{did} turn {k}: {len(calls)} calls, "
                             f"{len(results)} results", field=f"turns[{k}].frames")
            else:
                yield CraTurn(did, k, "\n".join(history), user, tuple(calls), tuple(results), m.content or "", acts,
                              conv.tools)
                step += [f"Action: {py_call(c)}" for c in calls] + [f"Observation: {r}" for r in results]
            history += step + [f"Response: {m.content or ''}"]
            user, calls, results = None, [], []


def examples(t: CraTurn, writer, instr: str, base_meta: Mapping[str, Any]) -> list[CalmExample]:
    th = writer.write(t)
    head = ((t.history + "\n") if t.history else "") + f"User: {t.user}"
    meta = {**base_meta, "dialogue_id": t.dialogue_id, "turn": t.turn, "thoughts": writer.name}
    if not t.calls:
        return [CalmExample(TASK, instr, head, f"Thought: {th.after}\nResponse: {t.response}",
                            {**meta, "objective": "response"})]
    actions = "\n".join(f"Action: {py_call(c)}" for c in t.calls)
    observations = "\n".join(f"Observation: {r}" for r in t.observations)
    return [
        CalmExample(TASK, instr, head, f"Thought: {th.before}\n{actions}", {**meta, "objective": "action"}),
        CalmExample(TASK, instr, f"{head}\nThought: {th.before}\n{actions}\n{observations}",
                    f"Thought: {th.after}\nResponse: {t.response}", {**meta, "objective": "response"}),
    ]


def convert(convs: Iterable[Conversation], report: LoadReport, writer=None) -> list[CalmExample]:
    """CRA rows of every system turn; bad turns go to `report` (one report row per system turn)."""
    writer = writer or TemplateThoughts()
    out: list[CalmExample] = []
    for conv in convs:
        instr = instruction(conv.tools)
        base = {"source": conv.meta.get("source"), "row": conv.meta.get("row")}
        for t in turns(conv):
            rows = None
            where = f"{conv.meta.get('id')} turn {getattr(t, 'turn', '?')}"
            with report.row(where):
                if isinstance(t, BadRow):
                    raise t
                rows = examples(t, writer, instr, base)
            if rows is not None:
                report.keep()
                out.extend(rows)
    return out
