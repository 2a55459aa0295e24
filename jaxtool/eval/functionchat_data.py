"""FunctionChat-Bench (kakao/FunctionChat-Bench, v2.0.0) evaluation files as `Conversation`s.

One yielded conversation = one evaluation item: the messages the model sees, followed by the gold
assistant message (the turn to evaluate). The gold message carries `meta["type_of_output"]`
(call / slot / relevance / completion) and the conversation carries::

    meta = {"source": "functionchat", "subset": "singlecall" | "calldecision" | "dialog",
            "row": <line index>, "serial_num": ..., "eval_turns": [<index of the gold message>],
            "acceptable_arguments": {arg: [alternative values]},   # parsed, {} when none
            "acceptable_arguments_raw": <the field as written>,     # for the LLM judge's rubric
            + "tools_type" (singlecall) | "category" (calldecision) | "dialog_num", "turn_num" (dialog)}

The file layout is recognised per line:

- Singlecall (`function_num`, `query`, `ground_truth`, `acceptable_arguments`, `tools`): each line
  has 4 queries and 5 tool sets (exact, 4_random, 4_close, 8_random, 8_close); every (query, tool
  set) pair is one item, queries outer and tool sets inner as in FunctionChat's payload creator, so
  25 lines give 500 items. Gold calls are JSON strings `{"name", "arguments": "<json>"}`;
  `type_of_output` is always "call".
- CallDecision (`serial_num`, `category`, `input_messages`, `input_tools`, `type_of_output`,
  `ground_truth`, `acceptable_arguments`): one item per line; the messages already start with
  their own system prompt.
- Dialog (`dialog_num`, `tools`, `turns[]` with `query` messages, `ground_truth`, `type_of_output`,
  `acceptable_arguments`, `serial_num`): one item per turn.

FunctionChat's runner prepends `system_prompt.txt` to Singlecall and Dialog requests. With
`system_prompt="auto"` (default) the loader does the same when a `system_prompt.txt` sits next to
the data file; pass a path or the text itself to choose another, or "" for none.

`acceptable_arguments` is null, a JSON string mapping argument -> value or list of values, or a
free-text instruction ("Only ground truth is allowed.", ...). Free text means no alternatives, as in
FunctionChat's `get_acceptable_arguments`; a single value becomes a one-element list.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

from jaxtool.data.schema import Conversation, Message, SchemaError, Tool, ToolCall
from jaxtool.data.sources.base import BadRow, LoadReport, read_records, require_field, require_mapping
from jaxtool.errors import DataError

SUBSETS = ("singlecall", "calldecision", "dialog")
TOOLS_TYPES = ("exact", "4_random", "4_close", "8_random", "8_close")
OUTPUT_TYPES = ("call", "slot", "relevance", "completion")


def load(path: str, *, on_bad_row: str = "error", report: LoadReport | None = None, limit: int | None = None,
         system_prompt: str | None = "auto", tools_type: str = "all") -> Iterator[Conversation]:
    """Yield one Conversation per FunctionChat-Bench evaluation item (module docstring).

    tools_type: "all" or one of TOOLS_TYPES (Singlecall only; FunctionChat's `--tools_type`).
    """
    if tools_type != "all" and tools_type not in TOOLS_TYPES:
        raise DataError(f"tools_type must be 'all' or one of {TOOLS_TYPES}, got {tools_type!r}")
    report = report or LoadReport(f"functionchat:{path}", on_bad_row)
    sys_text = _system_prompt(path, system_prompt)
    n = 0
    for idx, rec in read_records(path):
        items: list[Conversation] = []
        with report.row(idx):
            rec = require_mapping(rec)
            items = list(_convert(rec, idx, sys_text, tools_type))
        for conv in items:
            if limit is not None and n >= limit:
                return
            report.keep()
            n += 1
            yield conv
        if limit is not None and n >= limit:
            return


def _system_prompt(path: str, system_prompt: str | None) -> str | None:
    if not system_prompt:
        return None
    if system_prompt == "auto":
        sibling = os.path.join(os.path.dirname(os.path.abspath(path)), "system_prompt.txt")
        return _read_text(sibling) if os.path.isfile(sibling) else None
    if os.path.isfile(system_prompt):
        return _read_text(system_prompt)
    return system_prompt


def _read_text(p: str) -> str:
    with open(p, encoding="utf-8") as fh:
        return fh.read().strip()


def subset_of(rec: dict) -> str:
    if "function_num" in rec and "query" in rec:
        return "singlecall"
    if "input_messages" in rec:
        return "calldecision"
    if "turns" in rec:
        return "dialog"
    raise BadRow("unknown layout", "expected a Singlecall (function_num, query, ...), CallDecision "
                 "(input_messages, ...) or Dialog (dialog_num, turns, ...) line; got keys "
                 f"{sorted(rec)[:8]}")


def _convert(rec: dict, idx: Any, sys_text: str | None, tools_type: str) -> Iterator[Conversation]:
    subset = subset_of(rec)
    if subset == "singlecall":
        yield from _singlecall(rec, idx, sys_text, tools_type)
    elif subset == "calldecision":
        yield _calldecision(rec, idx)
    else:
        yield from _dialog(rec, idx, sys_text)


# --------------------------------------------------------------------------------------------

def parse_acceptable(raw: Any) -> dict[str, list]:
    """`acceptable_arguments` as {argument: [alternative values]} ({} for null / free-text notes)."""
    value = raw
    for _ in range(2):  # a JSON string, possibly JSON-encoded twice
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): list(v) if isinstance(v, list) else [v] for k, v in value.items()}


def _tools(raw: Any, field: str) -> tuple[Tool, ...]:
    if not isinstance(raw, list):
        raise BadRow("wrong field type", f"expected a list of tools, got {type(raw).__name__}", field=field)
    try:
        return tuple(Tool.from_dict(t, f"{field}[{i}]") for i, t in enumerate(raw))
    except SchemaError as e:
        raise BadRow("bad tool", str(e), field=field) from None


def _messages(raw: Any, field: str) -> tuple[Message, ...]:
    if not isinstance(raw, list):
        raise BadRow("wrong field type", f"expected a list of messages, got {type(raw).__name__}", field=field)
    try:
        return tuple(Message.from_dict(m, f"{field}[{i}]") for i, m in enumerate(raw))
    except SchemaError as e:
        raise BadRow("bad message", str(e), field=field) from None


def _gold(raw: Any, type_of_output: Any, field: str) -> Message:
    if type_of_output not in OUTPUT_TYPES:
        raise BadRow("bad type_of_output", f"expected one of {OUTPUT_TYPES}, got {type_of_output!r}",
                     field="type_of_output")
    if isinstance(raw, str):  # Singlecall: '{"name": ..., "arguments": "<json>"}'
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise BadRow("bad ground truth", f"not JSON ({e.msg} at char {e.pos})", field=field) from None
        try:
            call = ToolCall.from_dict(obj, field)
        except SchemaError as e:
            raise BadRow("bad ground truth", str(e), field=field) from None
        msg = Message("assistant", None, tool_calls=(call,))
    else:
        try:
            msg = Message.from_dict(raw, field)
        except SchemaError as e:
            raise BadRow("bad ground truth", str(e), field=field) from None
        if msg.role != "assistant":
            raise BadRow("bad ground truth", f"expected an assistant message, got role {msg.role!r}", field=field)
    if type_of_output == "call" and not msg.tool_calls:
        raise BadRow("bad ground truth", "type_of_output is 'call' but the gold message has no tool_calls", field=field)
    if type_of_output != "call" and not (msg.content or "").strip():
        raise BadRow("bad ground truth", f"type_of_output is {type_of_output!r} but the gold message has no text",
                     field=field)
    return Message("assistant", msg.content, tool_calls=msg.tool_calls, meta={"type_of_output": type_of_output})


def _item(messages: tuple[Message, ...], tools: tuple[Tool, ...], gold: Message, meta: dict,
          where: str) -> Conversation:
    conv = Conversation(messages=messages + (gold,), tools=tools,
                        meta={"source": "functionchat", **meta, "eval_turns": [len(messages)]})
    try:
        return conv.validate(where)
    except SchemaError as e:
        raise BadRow("invalid conversation", str(e)) from None


def _with_system(messages: tuple[Message, ...], sys_text: str | None) -> tuple[Message, ...]:
    if sys_text and not (messages and messages[0].role == "system"):
        return (Message("system", sys_text),) + messages
    return messages


def _singlecall(rec: dict, idx: Any, sys_text: str | None, tools_type: str) -> Iterator[Conversation]:
    queries = require_field(rec, "query", list)
    truths = require_field(rec, "ground_truth", list)
    accs = rec.get("acceptable_arguments") or [None] * len(queries)
    variants = require_field(rec, "tools", list)
    if not (len(queries) == len(truths) == len(accs)):
        raise BadRow("length mismatch", f"{len(queries)} queries, {len(truths)} ground truths, "
                     f"{len(accs)} acceptable_arguments", field="query")
    sets = []
    for j, v in enumerate(variants):
        if not isinstance(v, dict) or "type" not in v or "content" not in v:
            raise BadRow("bad tools variant", "expected {type, content}", field=f"tools[{j}]")
        if tools_type in ("all", v["type"]):
            sets.append((v["type"], _tools(v["content"], f"tools[{j}].content")))
    out = []
    for q, (query, truth, acc) in enumerate(zip(queries, truths, accs)):
        if not isinstance(query, dict) or not isinstance(query.get("content"), str):
            raise BadRow("bad query", "expected {serial_num, content}", field=f"query[{q}]")
        truth_raw = truth.get("content") if isinstance(truth, dict) else truth
        gold = _gold(truth_raw, "call", f"ground_truth[{q}].content")
        acc_raw = acc.get("content") if isinstance(acc, dict) else acc
        messages = _with_system((Message("user", query["content"]),), sys_text)
        for ttype, tools in sets:
            meta = {"subset": "singlecall", "row": idx, "serial_num": query.get("serial_num"),
                    "function_name": rec.get("function_name"), "tools_type": ttype,
                    "ground_truth_raw": json.loads(truth_raw),
                    "acceptable_arguments": parse_acceptable(acc_raw), "acceptable_arguments_raw": acc_raw}
            out.append(_item(messages, tools, gold, meta, f"row {idx} query {q} {ttype}"))
    return iter(out)


def _calldecision(rec: dict, idx: Any) -> Conversation:
    messages = _messages(require_field(rec, "input_messages", list), "input_messages")
    tools = _tools(require_field(rec, "input_tools", list), "input_tools")
    gold = _gold(require_field(rec, "ground_truth", dict), rec.get("type_of_output"), "ground_truth")
    acc_raw = rec.get("acceptable_arguments")
    meta = {"subset": "calldecision", "row": idx, "serial_num": rec.get("serial_num"),
            "category": rec.get("category"), "acceptable_arguments": parse_acceptable(acc_raw),
            "acceptable_arguments_raw": acc_raw}
    return _item(messages, tools, gold, meta, f"row {idx}")


def _dialog(rec: dict, idx: Any, sys_text: str | None) -> Iterator[Conversation]:
    tools = _tools(require_field(rec, "tools", list), "tools")
    out = []
    for k, turn in enumerate(require_field(rec, "turns", list)):
        if not isinstance(turn, dict):
            raise BadRow("bad turn", "expected an object", field=f"turns[{k}]")
        messages = _with_system(_messages(turn.get("query"), f"turns[{k}].query"), sys_text)
        gold = _gold(turn.get("ground_truth"), turn.get("type_of_output"), f"turns[{k}].ground_truth")
        acc_raw = turn.get("acceptable_arguments")
        meta = {"subset": "dialog", "row": idx, "serial_num": turn.get("serial_num"),
                "dialog_num": rec.get("dialog_num"), "turn_num": turn.get("turn_num"),
                "acceptable_arguments": parse_acceptable(acc_raw), "acceptable_arguments_raw": acc_raw}
        out.append(_item(messages, tools, gold, meta, f"row {idx} turn {k}"))
    return iter(out)
