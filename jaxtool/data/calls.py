"""Tool-call text codecs shared by the chat formats and the evaluators.

Two surface syntaxes for a list of calls:

- pythonic — `[get_weather(city="Paris", days=3), get_time()]`, as BFCL, ToolACE and iTool write
  them. Parsed with `ast.parse` + `ast.literal_eval` on each argument; never evaluated.
- JSON — `{"name": "f", "arguments": {...}}` or a list of such objects (Llama 3.1 JSON tool calling,
  Hermes' `<tool_call>` bodies); `"parameters"` is accepted as a synonym of `"arguments"`.

Parsers return either a list of `ToolCall` or a `ParseError` value — bad model output is data, not
an exception. Renderers raise `ValueError` for calls that the syntax cannot express (e.g. a pythonic
keyword that is not a Python identifier).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import keyword
import math
import unicodedata
from typing import Any, Mapping, Sequence

from jaxtool.data.schema import ToolCall


@dataclasses.dataclass(frozen=True)
class ParseError:
    """Why a piece of generated text is not a valid call list. Falsy, so `if parsed:` works."""

    reason: str
    text: str = ""

    def __bool__(self) -> bool:
        return False


# --------------------------------------------------------------------------------------------
# pythonic
# --------------------------------------------------------------------------------------------

def _py_literal(value: Any, where: str) -> str:
    if value is None:
        return "None"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: non-finite float {value!r} has no literal form")
        return repr(value)
    if isinstance(value, str):
        # A JSON string literal is also a valid Python string literal (same escapes, \uXXXX included).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: object key {k!r} is not a string")
            items.append(f"{json.dumps(k, ensure_ascii=False)}: {_py_literal(v, where)}")
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_py_literal(v, where) for v in value) + "]"
    raise ValueError(f"{where}: value of type {type(value).__name__} has no literal form")


def _is_identifier(name: str) -> bool:
    """A Python identifier that survives parsing unchanged: Python NFKC-normalises identifiers, so
    e.g. `ª` (a valid identifier) would come back as `a`."""
    return (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)
            and unicodedata.normalize("NFKC", name) == name)


def _is_call_name(name: str) -> bool:
    return bool(name) and all(_is_identifier(p) for p in name.split("."))


def render_pythonic_call(call: ToolCall) -> str:
    if not _is_call_name(call.name):
        raise ValueError(f"tool name {call.name!r} is not a (dotted) Python identifier")
    parts = []
    for k, v in call.arguments.items():
        if not _is_identifier(k):
            raise ValueError(f"argument name {k!r} of {call.name} is not a Python identifier")
        parts.append(f"{k}={_py_literal(v, f'{call.name}.{k}')}")
    return f"{call.name}({', '.join(parts)})"


def render_pythonic(calls: Sequence[ToolCall]) -> str:
    """`[f(a=1), g(b="x")]`."""
    return "[" + ", ".join(render_pythonic_call(c) for c in calls) + "]"


def _dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _literal(node: ast.AST) -> Any:
    value = ast.literal_eval(node)
    return _jsonify(value)


def _jsonify(value: Any) -> Any:
    """Tuples/sets become lists so values compare equal to their JSON form."""
    if isinstance(value, (tuple, list, set, frozenset)):
        return [_jsonify(v) for v in value]
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _jsonify(v) for k, v in value.items()}
    return value


def parse_pythonic(text: str) -> list[ToolCall] | ParseError:
    """Parse `[f(a=1), g()]` (brackets optional for a single call) into ToolCalls."""
    src = text.strip()
    if src.startswith("```"):
        src = src.strip("`").strip()
        if src.startswith("python"):
            src = src[len("python"):].strip()
    if not src:
        return ParseError("empty output", text)
    try:
        tree = ast.parse(src, mode="eval").body
    except SyntaxError as e:
        return ParseError(f"not a Python call list: {e.msg}", text)
    except (ValueError, RecursionError, MemoryError) as e:  # NUL bytes, absurd nesting
        return ParseError(f"not a Python call list: {type(e).__name__}", text)
    nodes = tree.elts if isinstance(tree, (ast.List, ast.Tuple)) else [tree]
    calls = []
    for node in nodes:
        if not isinstance(node, ast.Call):
            return ParseError(f"expected a function call, found {type(node).__name__}", text)
        name = _dotted_name(node.func)
        if name is None:
            return ParseError("call target is not a (dotted) name", text)
        if node.args:
            return ParseError(f"{name}: positional arguments are not allowed", text)
        args: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                return ParseError(f"{name}: **kwargs are not allowed", text)
            try:
                args[kw.arg] = _literal(kw.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return ParseError(f"{name}: argument {kw.arg!r} is not a literal", text)
        calls.append(ToolCall(name=name, arguments=args))
    return calls


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------

def render_json_call(call: ToolCall, arguments_key: str = "arguments") -> str:
    return json.dumps({"name": call.name, arguments_key: dict(call.arguments)}, ensure_ascii=False)


def call_from_json_obj(obj: Any) -> ToolCall | ParseError:
    if not isinstance(obj, Mapping):
        return ParseError(f"a call must be a JSON object, got {type(obj).__name__}")
    if "function" in obj and isinstance(obj["function"], Mapping):  # OpenAI tool_calls entry
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return ParseError("call has no string 'name'")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            return ParseError(f"{name}: 'arguments' string is not JSON ({e.msg})")
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        return ParseError(f"{name}: 'arguments' must be an object, got {type(args).__name__}")
    return ToolCall(name=name, arguments=dict(args))


def parse_json_calls(text: str) -> list[ToolCall] | ParseError:
    """One JSON call object, a JSON list of them, or several objects separated by `;`/newlines."""
    src = text.strip()
    if src.startswith("```"):
        src = src.strip("`").strip()
        if src.startswith("json"):
            src = src[len("json"):].strip()
    if not src:
        return ParseError("empty output", text)
    decoder = json.JSONDecoder()
    objs, pos = [], 0
    while pos < len(src):
        while pos < len(src) and src[pos] in " \t\r\n;,":
            pos += 1
        if pos >= len(src):
            break
        try:
            obj, pos = decoder.raw_decode(src, pos)
        except json.JSONDecodeError as e:
            return ParseError(f"not JSON: {e.msg} at char {e.pos}", text)
        except RecursionError:
            return ParseError("not JSON: nested too deeply", text)
        objs.extend(obj if isinstance(obj, list) else [obj])
    calls = []
    for obj in objs:
        c = call_from_json_obj(obj)
        if isinstance(c, ParseError):
            return ParseError(c.reason, text)
        calls.append(c)
    if not calls:
        return ParseError("no call found", text)
    return calls
