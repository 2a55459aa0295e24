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
from jaxtool.errors import json_error_text


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


def _jsonify(value: Any) -> Any:
    """A literal as a JSON value: tuples become lists so values compare equal to their JSON form.
    Anything JSON cannot hold — complex numbers, `...`, bytes, sets (unordered), non-finite floats,
    non-string object keys — is a `ValueError` (the call list is then a parse error): such values
    would otherwise reach the judges and the report writers, which speak JSON."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite number {value!r}")
        return value
    if isinstance(value, (tuple, list)):
        return [_jsonify(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"object key {k!r} is not a string")
            out[k] = _jsonify(v)
        return out
    raise ValueError(f"{type(value).__name__} {value!r:.40}")


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
                value = ast.literal_eval(kw.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return ParseError(f"{name}: argument {kw.arg!r} is not a literal", text)
            try:
                args[kw.arg] = _jsonify(value)
            except (ValueError, RecursionError) as e:
                return ParseError(f"{name}: argument {kw.arg!r} is not a JSON value: {e}", text)
        calls.append(ToolCall(name=name, arguments=args))
    return calls


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------

def render_json_call(call: ToolCall, arguments_key: str = "arguments") -> str:
    return json.dumps({"name": call.name, arguments_key: dict(call.arguments)}, ensure_ascii=False)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


# Python's json accepts NaN / Infinity / -Infinity; model output holding them is not JSON.
STRICT_JSON = json.JSONDecoder(parse_constant=_no_constant)


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
            args = STRICT_JSON.decode(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            return ParseError(f"{name}: 'arguments' string is not JSON ({e.msg})")
        except (ValueError, RecursionError) as e:  # NaN, a 5000-digit integer, absurd nesting
            return ParseError(f"{name}: 'arguments' string is not JSON ({type(e).__name__}: {str(e)[:80]})")
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        return ParseError(f"{name}: 'arguments' must be an object, got {type(args).__name__}")
    return ToolCall(name=name, arguments=dict(args))


def scan_json_values(text: str) -> list[Any] | ParseError:
    """The JSON values in `text`, in order: one value, or several separated by whitespace / `;` / `,`;
    a ```json fence is removed and a top-level list contributes its elements. The one scanner of
    JSON call lists (chat formats here, BFCL's decoder in `jaxtool.eval.bfcl.decode`)."""
    src = text.strip()
    if src.startswith("```"):
        src = src.strip("`").strip()
        if src.startswith("json"):
            src = src[len("json"):].strip()
    if not src:
        return ParseError("empty output", text)
    decoder = STRICT_JSON
    values, pos = [], 0
    while pos < len(src):
        while pos < len(src) and src[pos] in " \t\r\n;,":
            pos += 1
        if pos >= len(src):
            break
        try:
            value, pos = decoder.raw_decode(src, pos)
        except json.JSONDecodeError as e:
            return ParseError(f"not JSON: {json_error_text(e)}", text)
        except RecursionError:
            return ParseError("not JSON: nested too deeply", text)
        except ValueError as e:  # NaN / Infinity, a 5000-digit integer
            return ParseError(f"not JSON: {str(e)[:80]}", text)
        values.extend(value if isinstance(value, list) else [value])
    return values


def parse_json_calls(text: str) -> list[ToolCall] | ParseError:
    """One JSON call object, a JSON list of them, or several objects separated by `;`/newlines."""
    objs = scan_json_values(text)
    if isinstance(objs, ParseError):
        return objs
    calls = []
    for obj in objs:
        c = call_from_json_obj(obj)
        if isinstance(c, ParseError):
            return ParseError(c.reason, text)
        calls.append(c)
    if not calls:
        return ParseError("no call found", text)
    return calls
