"""xlam-function-calling-60k (hub `Salesforce/xlam-function-calling-60k`, APIGen) -> Conversations.

Row: `{"id": int, "query": str, "answers": JSON text of [{"name", "arguments"}], "tools": JSON text of
[{"name", "description", "parameters"}]}` (decoded lists are accepted too). xLAM `parameters` are not JSON
schema but a map `{param: {"type": "str", "description": ..., "default": ...}}`; `convert_parameters`
turns them into a JSON-schema object:

- type: Python-style names map to JSON-schema types (`str`->string, `int`->integer, `float`->number,
  `bool`->boolean, `List[...]`/`list`->array (with `items` when the element type maps), `Dict[...]`/
  `dict`->object, `Union[a, b]`->a list of types). A trailing `", optional"`, an `Optional[...]` wrapper or
  a `Union[..., None]` marks the parameter optional. A type that maps to nothing (`Any`, `Callable`, ...) leaves `type` unset and
  keeps the original string under `x-xlam-type`.
- required: an explicit boolean `"required"` in the parameter (the form the dataset card documents) wins;
  otherwise a parameter is required unless its type says optional or it has a `default` other than
  None/"". (The real rows carry RapidAPI example values in `default`, and mark optional parameters with
  `", optional"`; Hammer's preprocessing likewise treats None and "" as "no default".)
- `default` is kept when it is not None/"".

Conversation: user query -> assistant with the (possibly parallel) calls. xLAM has no tool results.
Rows with `answers == []` (the layout of the XLAM-7.5k-Irrelevance set Hammer adds) become an assistant
reply saying no tool fits (`no_call_reply`), with `meta["no_call"] = True`.
Real rows list the same tool name more than once; the first is kept (as Hammer's preprocessing does) and
`meta["duplicate_tools_dropped"]` counts the rest.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Mapping

from jaxtool.data.schema import Conversation, Message, Tool, ToolCall
from jaxtool.data.sources import _common
from jaxtool.data.sources.base import BadRow, LoadReport, read_records, require_field, require_mapping

SOURCE = "xlam"
HUB_NAME = "Salesforce/xlam-function-calling-60k"
NO_CALL_REPLY = "None of the available functions can be used for this request."

_SIMPLE_TYPES = {
    "str": "string", "string": "string", "int": "integer", "integer": "integer", "float": "number",
    "number": "number", "bool": "boolean", "boolean": "boolean", "list": "array", "array": "array",
    "tuple": "array", "set": "array", "dict": "object", "object": "object", "none": "null", "nonetype": "null",
}
_GENERIC = re.compile(r"^(\w+)\s*\[(.*)\]$", re.S)


def load(path_or_name: str | None = None, *, on_bad_row: str = "error", report: LoadReport | None = None,
         limit: int | None = None, no_call_reply: str = NO_CALL_REPLY, split: str | None = None) -> Iterator[Conversation]:
    """Conversations from a local xLAM JSON/JSONL/Parquet file or the (gated) hub dataset."""
    rows = read_records(path_or_name or HUB_NAME, split=split)
    return _common.iterate(SOURCE, rows, lambda i, r: convert(i, r, no_call_reply=no_call_reply),
                           on_bad_row=on_bad_row, report=report, limit=limit)


def convert(index: Any, record: Any, *, no_call_reply: str = NO_CALL_REPLY) -> Conversation:
    rec = require_mapping(record)
    query = require_field(rec, "query", str)
    raw_tools = _common.json_field(rec, "tools", list)
    raw_answers = _common.json_field(rec, "answers", list)
    tools = []
    for k, t in enumerate(raw_tools):
        tools.append(convert_tool(t, field=f"tools[{k}]"))
    tools, dropped = _common.dedupe_tools(tools)
    calls = []
    for k, a in enumerate(raw_answers):
        calls.append(_answer(a, field=f"answers[{k}]"))
    _common.check_calls_known(calls, [t.name for t in tools], field="answers")
    if calls:
        reply = Message("assistant", None, tool_calls=_common.numbered_calls(calls, 0))
    else:
        reply = Message("assistant", no_call_reply, meta={"no_call": True})
    meta = _common.base_meta(SOURCE, index, _common.dataset_id(rec), duplicate_tools_dropped=dropped or None,
                             no_call=True if not calls else None)
    return _common.finish(Conversation(messages=(Message("user", query), reply), tools=tools, meta=meta))


def _answer(a: Any, field: str) -> ToolCall:
    if not isinstance(a, Mapping):
        raise BadRow("invalid answer", f"expected an object, got {type(a).__name__}", field=field)
    name = a.get("name")
    if not isinstance(name, str) or not name:
        raise BadRow("invalid answer", "missing string 'name'", field=field)
    args = a.get("arguments", {})
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise BadRow("invalid answer", f"{name}: 'arguments' must be an object, got {type(args).__name__}",
                     field=field)
    return ToolCall(name, dict(args))


def convert_tool(spec: Any, field: str = "tools") -> Tool:
    """An xLAM tool `{name, description, parameters: {p: {type, description, default}}}` as a `Tool`."""
    if not isinstance(spec, Mapping):
        raise BadRow("invalid tool", f"expected an object, got {type(spec).__name__}", field=field)
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise BadRow("invalid tool", "missing string 'name'", field=field)
    desc = spec.get("description") or ""
    if not isinstance(desc, str):
        raise BadRow("invalid tool", f"{name}: 'description' must be a string", field=field)
    params = spec.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise BadRow("invalid tool", f"{name}: 'parameters' must be an object", field=field)
    return Tool(name=name, description=desc, parameters=convert_parameters(params, where=f"{field} ({name})"))


def convert_parameters(params: Mapping[str, Any], where: str = "parameters") -> dict:
    """xLAM `{param: {type, description, default}}` -> JSON schema `{"type": "object", "properties", "required"}`.

    Already-JSON-schema parameters (`{"type": "object", "properties": ...}`) are passed through.
    """
    if params.get("type") in ("object", "dict") and isinstance(params.get("properties"), Mapping):
        out = dict(params)
        out["type"] = "object"
        return out
    properties: dict[str, dict] = {}
    required: list[str] = []
    for pname, pspec in params.items():
        if not isinstance(pspec, Mapping):
            raise BadRow("invalid tool", f"parameter {pname!r} must be an object, got {type(pspec).__name__}",
                         field=where)
        prop, is_required = convert_parameter(pspec)
        properties[pname] = prop
        if is_required:
            required.append(pname)
    return {"type": "object", "properties": properties, "required": required}


def convert_parameter(pspec: Mapping[str, Any]) -> tuple[dict, bool]:
    """One xLAM parameter -> `(JSON-schema property, required?)` (rule in the module docstring)."""
    raw_type = pspec.get("type")
    prop: dict[str, Any] = {}
    optional_by_type = False
    if isinstance(raw_type, str) and raw_type.strip():
        schema, optional_by_type = parse_type(raw_type)
        if schema:
            prop.update(schema)
        else:
            prop["x-xlam-type"] = raw_type
    if isinstance(pspec.get("description"), str):
        prop["description"] = pspec["description"]
    default = pspec.get("default")
    has_default = "default" in pspec and default is not None and default != ""
    if has_default:
        prop["default"] = default
    for key in ("enum", "items", "properties"):  # occasionally present; already JSON-schema shaped
        if key in pspec and key not in prop:
            prop[key] = pspec[key]
    if isinstance(pspec.get("required"), bool):
        return prop, pspec["required"]
    return prop, not (optional_by_type or has_default)


def parse_type(raw: str) -> tuple[dict, bool]:
    """`"List[int], optional"` -> `({"type": "array", "items": {"type": "integer"}}, True)`."""
    t = raw.strip()
    optional = False
    if t.lower().endswith(", optional"):
        t, optional = t[: -len(", optional")].strip(), True
    m = _GENERIC.match(t)
    if m and m.group(1).lower() == "optional":
        return parse_type(m.group(2))[0], True
    if m and m.group(1).lower() == "union" and any(p.lower() in ("none", "nonetype") for p in _split_top(m.group(2))):
        optional = True  # Union[X, None] is Optional[X]
    return _schema_of(t), optional


def _schema_of(t: str) -> dict:
    t = t.strip()
    simple = _SIMPLE_TYPES.get(t.lower())
    if simple:
        return {"type": simple}
    m = _GENERIC.match(t)
    if not m:
        return {}
    head, inner = m.group(1).lower(), m.group(2)
    if head in ("list", "tuple", "set", "sequence", "iterable"):
        items = _schema_of(_split_top(inner)[0]) if inner.strip() else {}
        return {"type": "array", "items": items} if items else {"type": "array"}
    if head in ("dict", "mapping"):
        return {"type": "object"}
    if head == "union":
        types = []
        for part in _split_top(inner):
            s = _schema_of(part)
            if "type" not in s:
                return {}
            if s["type"] not in types:
                types.append(s["type"])
        return {"type": types[0] if len(types) == 1 else types}
    return {}


def _split_top(s: str) -> list[str]:
    """Split `"int, List[str]"` at top-level commas."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]
