"""Function-calling rows of CALM-IT: Hammer function masking (the paper's Fig. 5) and ToolACE.

Both tasks use the layout of CALM's Fig. 5 (Hammer's, Lin et al. 2024, and xLAM's): task, tools
and format blocks between ``[BEGIN OF ...]`` / ``[END OF ...]`` markers, in that order, and the query
between ``[BEGIN OF QUERY]`` / ``[END OF QUERY]``:

- Instruction: the TASK INSTRUCTION block (call the right tools; say so when none fits or a
  required value is missing), the AVAILABLE TOOLS block (a JSON list of the tool specs — names,
  descriptions, JSON-schema parameter types — exactly as the tools of the sample, masked or not) and
  the FORMAT INSTRUCTION block, separated by blank lines.
- Input: ``[BEGIN OF QUERY]``, the dialogue before the assistant turn, one line per message
  (``User: ...``, ``Assistant: <calls or text>``, ``Tool (<name>): <result>``), ``[END OF QUERY]``.
- Output: the assistant turn.

The block structure and markers follow the figure; the sentences inside the task and format blocks
are jaxtool's wording (the figure's exact text could not be retrieved here: docs/fidelity.md).

``hammer`` (xlam-format calls — the function-calling data Hammer masks — only; ToolACE too with
`hammer_toolace=True`, an option): each conversation is masked with
probability `mask_prob` (default 2/3, Hammer's rate) by `jaxtool.data.sources.hammer` — function and
parameter names replaced by random strings consistently across the tool list, the calls and the tool
results of that conversation, descriptions and types kept, seeded by (seed, source, row) so the build
is deterministic. Output = a JSON list ``[{"name": ..., "arguments": {...}}]``; an xlam row with no
call (the irrelevance layout, ``answers == []``) gives ``[]``. Only call turns (and those no-call rows)
are Hammer rows; text turns of ToolACE dialogues belong to the ``toolace`` task.

``toolace``: every assistant turn of every ToolACE dialogue, unmasked. A call turn's Output is the
call list as ToolACE and BFCL write it, ``[Func Name(arg="v", n=3)]`` (tool names as listed, even with
spaces); a text turn's Output is the text (clarifying questions, answers from tool results).

Bad input (counted by reason): a ToolACE row whose call does not parse is counted by the ToolACE
loader ("unparseable call"); here, a call that no syntax can write ("call not expressible") or a turn
mixing text and calls in the JSON syntax ("text and calls in one turn").
"""

from __future__ import annotations

import json
from typing import Iterable, Sequence

from jaxtool.calm.example import CalmExample, bracket_calls
from jaxtool.data.schema import Conversation, Message, Tool, ToolCall
from jaxtool.data.sources import hammer as hammer_source
from jaxtool.data.sources.base import BadRow, LoadReport
from jaxtool.errors import ConfigError

SYNTAXES = ("json", "brackets")

TASK_TEXT = ("You are a tool-calling assistant. To complete the user's request, choose the right tools from the "
             "list below and fill in their parameters. Your tasks:\n"
             "1. Make one or more tool calls that fulfil the request.\n"
             "2. If none of the tools can be used, say so instead of calling one.\n"
             "3. If the request lacks a value that a tool requires, say so instead of guessing it.")
FORMAT_JSON = ('Answer with only a JSON list of the calls to make, each {"name": <tool name>, "arguments": '
               "{<parameter>: <value>, ...}}, and no other text. Give every value the type its parameter "
               "declares. If no tool call is needed, answer with an empty list: []")
FORMAT_BRACKETS = ("To call tools, answer with only the list of calls in the form "
                   "[func_name1(param_name=param_value, ...), func_name2(...)] and no other text. When no call "
                   "is needed (to ask for a missing value, to say that no tool fits, or to answer from the tool "
                   "results), reply in plain text.")


def instruction(tools: Sequence[Tool], syntax: str) -> str:
    fmt = FORMAT_JSON if syntax == "json" else FORMAT_BRACKETS
    blocks = [("TASK INSTRUCTION", TASK_TEXT),
              ("AVAILABLE TOOLS", json.dumps([t.spec() for t in tools], ensure_ascii=False)),
              ("FORMAT INSTRUCTION", fmt)]
    return "\n\n".join(f"[BEGIN OF {name}]\n{body}\n[END OF {name}]" for name, body in blocks)


def tools_from_instruction(text: str) -> list[dict]:
    """The tool specs of an instruction written by `instruction` (for checks and tests)."""
    start = text.index("[BEGIN OF AVAILABLE TOOLS]\n") + len("[BEGIN OF AVAILABLE TOOLS]\n")
    end = text.index("\n[END OF AVAILABLE TOOLS]")
    return json.loads(text[start:end])


def calls_text(calls: Sequence[ToolCall], syntax: str) -> str:
    if syntax == "json":
        return json.dumps([{"name": c.name, "arguments": dict(c.arguments)} for c in calls], ensure_ascii=False)
    return bracket_calls(calls)


def _line(m: Message, syntax: str) -> str:
    if m.role == "user":
        return f"User: {m.content or ''}"
    if m.role == "tool":
        return (f"Tool ({m.name}): " if m.name else "Tool: ") + (m.content or "")
    if m.role == "assistant":
        parts = ([m.content] if m.content else []) + ([calls_text(m.tool_calls, syntax)] if m.tool_calls else [])
        return "Assistant: " + "\n".join(parts)
    return m.content or ""


def query_block(lines: Sequence[str]) -> str:
    """The Input: the dialogue so far inside Fig. 5's query markers."""
    return "[BEGIN OF QUERY]\n" + "\n".join(lines) + "\n[END OF QUERY]"


def _no_call(conv: Conversation, m: Message) -> bool:
    return bool(m.meta.get("no_call")) or (bool(conv.meta.get("no_call")) and not m.tool_calls)


def examples(conv: Conversation, task: str, syntax: str, *, text_turns: bool) -> list[CalmExample]:
    """The rows of one conversation: one per assistant turn that the task trains (see module doc)."""
    if syntax not in SYNTAXES:
        raise ValueError(f"syntax must be one of {SYNTAXES}, got {syntax!r}")
    instr = instruction(conv.tools, syntax)
    lines: list[str] = []
    out = []
    base = {"source": conv.meta.get("inner_source") or conv.meta.get("source"), "row": conv.meta.get("row")}
    if "hammer" in conv.meta:
        base["hammer"] = conv.meta["hammer"]
    turn = 0
    for m in conv.messages:
        if m.role == "system":
            continue
        if m.role == "assistant":
            output, objective = None, None
            if m.tool_calls:
                if m.content and syntax == "json":
                    raise BadRow("text and calls in one turn", "the JSON call syntax has no place for text",
                                 field=f"turn {turn}")
                output = (m.content + "\n" if m.content else "") + calls_text(m.tool_calls, syntax)
                objective = "call"
            elif syntax == "json" and _no_call(conv, m):
                output, objective = "[]", "no_call"
            elif text_turns:
                output, objective = m.content or "", "text"
            if output is not None:
                if not lines:
                    raise BadRow("assistant turn before any user message", field=f"turn {turn}")
                out.append(CalmExample(task, instr, query_block(lines), output,
                                       {**base, "objective": objective, "turn": turn}))
            turn += 1
        lines.append(_line(m, syntax))
    return out


def masked(conv: Conversation, *, seed: int, mask_prob: float) -> Conversation:
    """Hammer masking of one conversation (probability `mask_prob`, stream seeded by seed/source/row)."""
    return hammer_source.maybe_mask(conv, hammer_source.conversation_rng(seed, conv), mask_prob=mask_prob)


def convert_hammer(convs: Iterable[Conversation], report: LoadReport, *, seed: int = 0,
                   mask_prob: float = hammer_source.DEFAULT_MASK_PROB) -> list[CalmExample]:
    if not 0.0 <= mask_prob <= 1.0:
        raise ConfigError(f"Hammer mask_prob must be in [0, 1], got {mask_prob!r}")
    return _convert(convs, report, lambda c: examples(masked(c, seed=seed, mask_prob=mask_prob), "hammer", "json",
                                                      text_turns=False))


def convert_toolace(convs: Iterable[Conversation], report: LoadReport) -> list[CalmExample]:
    return _convert(convs, report, lambda c: examples(c, "toolace", "brackets", text_turns=True))


def _convert(convs, report: LoadReport, fn) -> list[CalmExample]:
    out = []
    for conv in convs:
        rows = None
        with report.row(f"{conv.meta.get('source')}:{conv.meta.get('row')}"):
            rows = fn(conv)
        if rows is not None:
            report.keep()
            out.extend(rows)
    return out


__all__ = ["SYNTAXES", "instruction", "query_block", "tools_from_instruction", "calls_text", "examples", "masked",
           "convert_hammer", "convert_toolace"]
