"""ToolACE (hub `Team-ACE/ToolACE`, file `data.json`) -> Conversations.

Row: `{"system": str, "conversations": [{"from": "user"|"assistant"|"tool", "value": str}]}`.

- `system` embeds the tool list: an instruction, then `"Here is a list of functions in JSON format that
  you can invoke:\\n"`, a JSON list of `{"name", "description", "parameters"}` (BFCL-style schemas with
  `"type": "dict"`), then a format instruction (`"Should you decide to return the function call(s)..."`).
  The instruction before the list becomes the system message; the list becomes `Conversation.tools`
  (BFCL/Python type names such as `"dict"`/`"float"` become JSON schema's `"object"`/`"number"`); the
  format instruction is kept in `meta["system_suffix"]` (chat formats add their own).
- An assistant turn that is a bracketed call list, `[Func Name(arg="v", n=3), Other()]`, becomes tool
  calls. ToolACE tool names may contain spaces and other characters that are not Python identifiers
  (`Market Trends API`, `Get Quote/Info`), so `jaxtool.data.calls.parse_pythonic` cannot read the list as
  written: `split_calls` cuts it into `(name, argument text)` pieces with a quote- and bracket-aware scan
  (preferring the longest listed tool name at each call), and each argument list is read by
  `parse_pythonic` on a placeholder call — `ast` + literal evaluation, never `eval`. JSON spellings
  `true`/`false`/`null` in arguments are accepted as literals.
- A tool turn holds the results as JSON, normally a list `[{"name": f, "results": {...}}]`: each entry
  becomes one tool message named `f` (content = the `results` value as JSON, or the entry without its
  name when there is no `results` key). Anything else becomes one tool message with the text as given.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator, Mapping

from jaxtool.data.brackets import PY_QUOTES, matching_close, spans
from jaxtool.data.calls import parse_pythonic
from jaxtool.data.schema import Conversation, Message, SchemaError, Tool, ToolCall
from jaxtool.data.sources import _common
from jaxtool.data.sources.base import BadRow, LoadReport, read_records, require_field, require_mapping
from jaxtool.errors import json_error_text

SOURCE = "toolace"
HUB_NAME = "Team-ACE/ToolACE"
TOOLS_MARKER = "Here is a list of functions in JSON format that you can invoke:"

_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
          "tool": "tool", "function": "tool", "observation": "tool", "system": "system"}
_CALL_START = re.compile(r"^\[\s*[^\[\]()\"'{}]+?\s*\(", re.S)
_JSON_WORDS = {"true": "True", "false": "False", "null": "None"}
_WORD = re.compile(r"(?<!\w)[^\W\d_]\w*")   # a word: starts with a letter, not inside another word


def load(path_or_name: str | None = None, *, on_bad_row: str = "error", report: LoadReport | None = None,
         limit: int | None = None, keep_system: bool = True, split: str | None = None) -> Iterator[Conversation]:
    """Conversations from a local ToolACE JSON/JSONL/Parquet file or the hub dataset."""
    rows = read_records(path_or_name or HUB_NAME, split=split)
    return _common.iterate(SOURCE, rows, lambda i, r: convert(i, r, keep_system=keep_system),
                           on_bad_row=on_bad_row, report=report, limit=limit)


def convert(index: Any, record: Any, *, keep_system: bool = True) -> Conversation:
    rec = require_mapping(record)
    system = rec.get("system") or ""
    if not isinstance(system, str):
        raise BadRow("wrong field type", f"expected str, got {type(system).__name__}", field="system")
    turns = require_field(rec, "conversations", list)
    instruction, tools, suffix = parse_system(system)
    tools, dropped = _common.dedupe_tools(tools)
    names = [t.name for t in tools]
    messages: list[Message] = []
    if keep_system and instruction:
        messages.append(Message("system", instruction))
    pending: list[ToolCall] = []
    n_calls = 0
    for k, turn in enumerate(turns):
        field = f"conversations[{k}]"
        if not isinstance(turn, Mapping):
            raise BadRow("invalid turn", f"expected an object, got {type(turn).__name__}", field=field)
        role = _ROLES.get(str(turn.get("from", "")).lower())
        value = turn.get("value")
        if role is None:
            raise BadRow("invalid turn", f"unknown speaker {turn.get('from')!r}", field=field)
        if not isinstance(value, str):
            raise BadRow("invalid turn", f"'value' must be a string, got {type(value).__name__}", field=field)
        if role == "system":
            if messages and any(m.role != "system" for m in messages):
                raise BadRow("invalid turn", "system turn after the dialogue started", field=field)
            messages.append(Message("system", value))
        elif role == "user":
            messages.append(Message("user", value))
            pending = []
        elif role == "assistant":
            if looks_like_calls(value):
                calls = parse_calls(value, names, field=field)
                _common.check_calls_known(calls, names, field=field)
                calls = list(_common.numbered_calls(calls, n_calls))
                n_calls += len(calls)
                messages.append(Message("assistant", None, tool_calls=tuple(calls)))
                pending = list(calls)
            else:
                messages.append(Message("assistant", value))
                pending = []
        else:
            if not pending and not (messages and messages[-1].role == "tool"):
                raise BadRow("result without call", "tool turn with no assistant call before it", field=field)
            messages.extend(tool_messages(value, pending))
    meta = _common.base_meta(SOURCE, index, _common.dataset_id(rec), system_suffix=suffix or None,
                             duplicate_tools_dropped=dropped or None)
    return _common.finish(Conversation(messages=tuple(messages), tools=tools, meta=meta))


def parse_system(system: str) -> tuple[str, list[Tool], str]:
    """`(instruction before the tool list, tools, text after the list)`."""
    at = system.find(TOOLS_MARKER)
    if at >= 0:
        instruction, search_from = system[:at].strip(), at + len(TOOLS_MARKER)
    else:
        instruction, search_from = None, 0
    start = system.find("[", search_from)
    if at < 0:
        start = system.find("[{")
    if start < 0:
        return (instruction if instruction is not None else system.strip()), [], ""
    try:
        specs, end = json.JSONDecoder().raw_decode(system, start)
    except json.JSONDecodeError as e:
        if at < 0:  # no marker and no decodable list: a system prompt without tools
            return system.strip(), [], ""
        raise BadRow("unparseable tool list", f"{json_error_text(e)}", field="system") from None
    if not isinstance(specs, list):
        raise BadRow("unparseable tool list", f"expected a JSON list, got {type(specs).__name__}", field="system")
    tools = []
    for k, spec in enumerate(specs):
        tools.append(_tool(spec, k))
    if instruction is None:
        instruction = system[:start].strip()
    suffix = system[end:].strip()
    return instruction, tools, suffix


def _tool(spec: Any, k: int) -> Tool:
    if not isinstance(spec, Mapping):
        raise BadRow("invalid tool", f"tool {k}: expected an object, got {type(spec).__name__}", field="system")
    spec = dict(spec)
    params = spec.get("parameters", spec.get("arguments"))
    spec["parameters"] = object_schema(params) if isinstance(params, Mapping) else params
    spec.pop("arguments", None)
    try:
        return Tool.from_dict(spec, where=f"system tool {k}")
    except SchemaError as e:
        raise BadRow("invalid tool", str(e), field="system") from None


# Python/BFCL type names seen in ToolACE schemas -> JSON-schema names.
_TYPE_NAMES = {"dict": "object", "float": "number", "tuple": "array", "list": "array", "int": "integer",
               "str": "string", "bool": "boolean"}


def object_schema(schema: Mapping[str, Any]) -> dict:
    """Rewrite BFCL/Python type names (`dict`, `float`, `tuple`, ...) as JSON-schema ones (`object`,
    `number`, `array`, ...), recursively through properties/items."""
    out = dict(schema)
    if isinstance(out.get("type"), str) and out["type"] in _TYPE_NAMES:
        out["type"] = _TYPE_NAMES[out["type"]]
    if isinstance(out.get("properties"), Mapping):
        out["properties"] = {k: object_schema(v) if isinstance(v, Mapping) else v
                             for k, v in out["properties"].items()}
    if isinstance(out.get("items"), Mapping):
        out["items"] = object_schema(out["items"])
    if isinstance(out.get("additionalProperties"), Mapping):
        out["additionalProperties"] = object_schema(out["additionalProperties"])
    return out


def looks_like_calls(text: str) -> bool:
    """An assistant turn written as `[Name(...), ...]` (as opposed to a text reply)."""
    s = text.strip()
    return s.startswith("[") and s.endswith("]") and bool(_CALL_START.match(s))


def parse_calls(text: str, tool_names: list[str] = (), field: str = "value") -> list[ToolCall]:
    """`[Func Name(a="x", b=2), g()]` -> ToolCalls; names may contain spaces and punctuation."""
    pieces = split_calls(text, tool_names)
    if isinstance(pieces, str):
        raise BadRow("unparseable call", f"{pieces} in {text.strip()[:80]!r}", field=field)
    calls = []
    for name, arg_text in pieces:
        parsed = parse_pythonic(f"_f({_json_words_to_python(arg_text)})")
        if not parsed:
            raise BadRow("unparseable call", f"{name}: {parsed.reason}", field=field)
        calls.append(ToolCall(name, dict(parsed[0].arguments)))
    return calls


def split_calls(text: str, tool_names: list[str] = ()) -> list[tuple[str, str]] | str:
    """`[(name, argument text), ...]`, or a string saying what is wrong."""
    s = text.strip()
    if not (s.startswith("[") and s.endswith("]")):
        return "a call list must be enclosed in [ ]"
    inner, pos, out = s[1:-1], 0, []
    names = sorted(set(tool_names), key=len, reverse=True)
    while True:
        while pos < len(inner) and inner[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(inner):
            break
        name, open_at = None, -1
        for cand in names:  # a listed name may itself contain "(" or ","
            if inner.startswith(cand, pos):
                j = pos + len(cand)
                while j < len(inner) and inner[j] in " \t":
                    j += 1
                if j < len(inner) and inner[j] == "(":
                    name, open_at = cand, j
                    break
        if name is None:
            open_at = inner.find("(", pos)
            if open_at < 0:
                return f"expected 'name(' at char {pos + 1}"
            name = inner[pos:open_at].strip()
            if not name or any(ch in name for ch in "\"'[]{}()"):
                return f"bad function name {name!r}"
        close_at = matching_close(inner, open_at, PY_QUOTES)
        if close_at < 0:
            return f"unbalanced parentheses after {name!r}"
        out.append((name, inner[open_at + 1:close_at]))
        pos = close_at + 1
    if not out:
        return "empty call list"
    return out


def _json_words_to_python(arg_text: str) -> str:
    """Rewrite bare `true`/`false`/`null` (outside string literals) as Python literals; a word
    followed by `=` is a keyword argument's name and stays."""
    def word(m: re.Match, seg: str) -> str:
        w = m.group(0)
        return _JSON_WORDS[w] if w in _JSON_WORDS and seg[m.end():].lstrip()[:1] != "=" else w

    out = []
    for begin, end, kind in spans(arg_text, 0, PY_QUOTES):
        seg = arg_text[begin:end]
        out.append(_WORD.sub(lambda m: word(m, seg), seg) if kind == "text" else seg)
    return "".join(out)


def tool_messages(value: str, pending: list[ToolCall]) -> list[Message]:
    """Tool messages for one tool turn, answering the pending calls in order (consumed from `pending`)."""
    try:
        data = json.loads(value)
    except json.JSONDecodeError:
        data = None
    entries = data if isinstance(data, list) else [data] if isinstance(data, dict) else None
    if entries and all(isinstance(e, Mapping) and isinstance(e.get("name"), str) for e in entries) \
            and _names_answer(entries, pending):
        msgs = []
        for e in entries:
            call = next(c for c in pending if c.name == e["name"])
            pending.remove(call)
            body = e["results"] if "results" in e else {k: v for k, v in e.items() if k != "name"}
            msgs.append(Message("tool", json.dumps(body, ensure_ascii=False), name=call.name, tool_call_id=call.id))
        return msgs
    if len(pending) == 1:
        call = pending.pop()
        return [Message("tool", value, name=call.name, tool_call_id=call.id)]
    return [Message("tool", value)]


def _names_answer(entries: list, pending: list[ToolCall]) -> bool:
    left = [c.name for c in pending]
    for e in entries:
        if e["name"] not in left:
            return False
        left.remove(e["name"])
    return True
