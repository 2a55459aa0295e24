"""glaive-function-calling-v2 (hub `glaiveai/glaive-function-calling-v2`) -> Conversations.

Each row has two text fields:

- `system`: `"SYSTEM: <instruction> -\\n{function spec}\\n\\n{another spec}..."` — the instruction, then zero
  or more JSON function specs (`{"name", "description", "parameters"}`) written one after another, or
  `"SYSTEM: You are a helpful assistant, with no access to external functions."`.
- `chat`: turns introduced by `USER:`, `ASSISTANT:` and `FUNCTION RESPONSE:` (separated by blank lines);
  assistant turns end with `<|endoftext|>`; a call is `ASSISTANT: <functioncall> {"name": "f",
  "arguments": '{"a": 1}'}` — note the arguments are a *single-quoted* JSON string inside otherwise
  JSON text, so the call is not valid JSON as written.

Conversion: the instruction becomes the system message (the specs go to `Conversation.tools`, where the
chat format renders them — keeping them in the system text too would duplicate them and defeat Hammer
masking); `USER` -> user; `ASSISTANT` -> assistant (text before `<functioncall>` kept as content);
`FUNCTION RESPONSE` -> a tool message named after the call it answers. Calls get ids `call_<n>`.
Arguments are decoded with `json` only (never `eval`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

from jaxtool.data.schema import Conversation, Message, SchemaError, Tool, ToolCall
from jaxtool.data.sources import _common
from jaxtool.data.sources.base import BadRow, LoadReport, read_records, require_field, require_mapping
from jaxtool.errors import json_error_text

SOURCE = "glaive"
HUB_NAME = "glaiveai/glaive-function-calling-v2"

_EOT = "<|endoftext|>"
_CALL_TAG = "<functioncall>"
_ROLE = re.compile(r"(?:^|\n)[ \t]*(USER|ASSISTANT|FUNCTION RESPONSE):[ \t]?")
_QUOTED_ARGS = re.compile(r'"arguments"\s*:\s*\'')


def load(path_or_name: str | None = None, *, on_bad_row: str = "error", report: LoadReport | None = None,
         limit: int | None = None, keep_system: bool = True, split: str | None = None) -> Iterator[Conversation]:
    """Conversations from a local glaive JSON/JSONL/Parquet file or the hub dataset.

    keep_system: emit the system instruction (without the function specs) as a system message.
    """
    rows = read_records(path_or_name or HUB_NAME, split=split)
    return _common.iterate(SOURCE, rows, lambda i, r: convert(i, r, keep_system=keep_system),
                           on_bad_row=on_bad_row, report=report, limit=limit)


def convert(index: Any, record: Any, *, keep_system: bool = True) -> Conversation:
    rec = require_mapping(record)
    system = require_field(rec, "system", str)
    chat = require_field(rec, "chat", str)
    instruction, tools = parse_system(system)
    tools, dropped = _common.dedupe_tools(tools)
    messages: list[Message] = []
    if keep_system and instruction:
        messages.append(Message("system", instruction))
    messages.extend(parse_chat(chat))
    calls = [c for m in messages for c in m.tool_calls]
    _common.check_calls_known(calls, [t.name for t in tools], field="chat")
    meta = _common.base_meta(SOURCE, index, _common.dataset_id(rec), duplicate_tools_dropped=dropped or None)
    return _common.finish(Conversation(messages=tuple(messages), tools=tools, meta=meta))


def parse_system(system: str) -> tuple[str, list[Tool]]:
    """`(instruction, tools)` from the `system` field."""
    text = system.strip()
    if text.startswith("SYSTEM:"):
        text = text[len("SYSTEM:"):].strip()
    start = text.find("{")
    if start < 0:
        return text, []
    instruction = text[:start].strip()
    decoder = json.JSONDecoder()
    tools, pos = [], start
    while pos < len(text):
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            break
        try:
            spec, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise BadRow("unparseable function spec", f"{json_error_text(e)}", field="system") from None
        try:
            tools.append(Tool.from_dict(spec, where=f"system function {len(tools)}"))
        except SchemaError as e:
            raise BadRow("invalid function spec", str(e), field="system") from None
    return instruction, tools


def parse_chat(chat: str) -> list[Message]:
    """Messages from the `chat` transcript."""
    marks = list(_ROLE.finditer(chat))
    if not marks or chat[:marks[0].start()].strip():
        raise BadRow("unrecognised chat layout", "expected the transcript to start with 'USER:' or 'ASSISTANT:'",
                     field="chat")
    messages: list[Message] = []
    pending: list[ToolCall] = []  # calls of the last assistant message not yet answered
    n_calls = 0
    for k, m in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(chat)
        body = chat[m.end():end].replace(_EOT, "").strip()
        role = m.group(1)
        if role == "USER":
            if not body:
                raise BadRow("empty message", f"turn {k} (USER) is empty", field="chat")
            messages.append(Message("user", body))
            pending = []
        elif role == "ASSISTANT":
            if _CALL_TAG in body:
                before, call = parse_call(body)
                call = ToolCall(call.name, call.arguments, id=f"call_{n_calls}")
                n_calls += 1
                messages.append(Message("assistant", before or None, tool_calls=(call,)))
                pending = [call]
            else:
                if not body:
                    raise BadRow("empty message", f"turn {k} (ASSISTANT) is empty", field="chat")
                messages.append(Message("assistant", body))
                pending = []
        else:  # FUNCTION RESPONSE
            if not pending:
                raise BadRow("response without call", f"turn {k} is a FUNCTION RESPONSE with no call before it",
                             field="chat")
            call = pending.pop(0)
            messages.append(Message("tool", body, name=call.name, tool_call_id=call.id))
    return messages


def parse_call(body: str) -> tuple[str, ToolCall]:
    """`(text before the call, call)` from an assistant turn containing `<functioncall>`."""
    before, _, rest = body.partition(_CALL_TAG)
    rest = rest.strip()
    obj = _decode_call_object(rest)
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise BadRow("unparseable call", "the call has no string 'name'", field="chat")
    args = obj.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise BadRow("unparseable arguments", f"{name}: {json_error_text(e)} in {args[:80]!r}",
                         field="chat") from None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise BadRow("unparseable arguments", f"{name}: arguments must be an object, got {type(args).__name__}",
                     field="chat")
    return before.strip(), ToolCall(name, args)


def _decode_call_object(text: str) -> dict:
    """Decode `{"name": ..., "arguments": ...}` where `arguments` may be a single-quoted JSON string."""
    decoder = json.JSONDecoder()
    candidates = [text]
    m = _QUOTED_ARGS.search(text)
    if m:
        close = text.rfind("'")
        if close > m.end() - 1:
            inner = text[m.end():close]
            candidates.append(text[:m.end() - 1] + json.dumps(inner, ensure_ascii=False) + text[close + 1:])
    last_error = "empty call"
    for cand in reversed(candidates):  # the repaired form first when the quirk is present
        try:
            obj, end = decoder.raw_decode(cand)
        except json.JSONDecodeError as e:
            last_error = f"{json_error_text(e)}"
            continue
        if cand[end:].strip():
            last_error = f"unexpected text after the call: {cand[end:].strip()[:40]!r}"
            continue
        if not isinstance(obj, dict):
            last_error = f"expected a JSON object, got {type(obj).__name__}"
            continue
        return obj
    raise BadRow("unparseable call", f"{last_error} in {text[:80]!r}", field="chat")
