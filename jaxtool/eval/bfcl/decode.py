"""Turning a model's raw output into the list of calls BFCL's AST checker compares.

A decoded call is a `(name, arguments)` pair. The rules follow BFCL's decoder for prompt-based
models (its `default_decode_ast_prompting`), because BFCL's numbers depend on them:

- strip backticks, newlines and spaces from both ends, add a missing leading `[` / trailing `]`,
  then strip spaces and single quotes; parse with `ast.parse(..., mode="eval")`;
- the body must be one call or a list/tuple of calls; positional arguments are ignored;
- argument values: literals as they are, with **tuples kept as tuples** (the checker accepts a tuple
  only where the doc says `tuple`); a bare name `x` becomes the string "x" and a subscript
  `data['a']` its source text (BFCL's "variables"); a call without keywords `f(1)` becomes its
  source text and one with keywords `f(a=1)` a nested `{"f": {"a": 1}}`; a unary operator on a
  constant negates it (BFCL's rule, so `+5` reads as -5); `...` reads as "...";
- arithmetic between literals (`3*4`, `"a"*3`, `1e-3*2`) is folded to its value. BFCL evaluates such
  expressions with `eval`; here a small interpreter handles only + - * / // % ** on numbers,
  strings, lists and tuples, with size limits, and anything else (names, calls) fails the decode.
  Model output is never evaluated.
- everything else (attributes like `np.pi`, comparisons, f-strings, lambdas, comprehensions,
  `**kwargs` values) makes the whole output undecodable, as in BFCL.

`decode_json` reads JSON calls (`{"name", "arguments"|"parameters"}` or BFCL's
`{"function", "parameters"}`, alone or in a list). `calls_from_tool_calls` takes calls already
parsed by a chat format. Each decoder returns a list of calls or a falsy `DecodeError`.
"""

from __future__ import annotations

import ast
import dataclasses
import operator
from typing import Any, Iterable, Mapping, Sequence

from jaxtool.data.brackets import JS_QUOTES, split_top_level
from jaxtool.data.calls import ParseError, call_from_json_obj, scan_json_values

Call = tuple  # (name: str, arguments: dict)


@dataclasses.dataclass(frozen=True)
class DecodeError:
    """Why an output could not be decoded into calls. Falsy, so `if calls:` works."""

    reason: str

    def __bool__(self) -> bool:
        return False


class _Undecodable(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# pythonic
# ------------------------------------------------------------------------------------------------

def decode_pythonic(text: str) -> list[Call] | DecodeError:
    """`[f(a=1), mod.g(b="x")]` -> `[("f", {"a": 1}), ("mod.g", {"b": "x"})]` by BFCL's rules."""
    if not isinstance(text, str):
        return DecodeError(f"expected text, got {type(text).__name__}")
    src = text.strip("`\n ")
    if not src.startswith("["):
        src = "[" + src
    if not src.endswith("]"):
        src = src + "]"
    src = src.strip().strip("'")
    try:
        body = ast.parse(src, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        return DecodeError(f"not a Python call list: {getattr(e, 'msg', e)}")
    if isinstance(body, ast.Call):
        nodes = [body]
    elif isinstance(body, (ast.List, ast.Tuple, ast.Set)):
        nodes = body.elts
    else:
        return DecodeError(f"expected a list of calls, found {type(body).__name__}")
    calls = []
    try:
        for node in nodes:
            if not isinstance(node, ast.Call):
                return DecodeError(f"expected a function call, found {type(node).__name__}")
            calls.append(_call(node))
    except _Undecodable as e:
        return DecodeError(str(e))
    except RecursionError:
        return DecodeError("output nested too deeply")
    return calls


def _call_name(func: ast.AST) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _call(node: ast.Call) -> Call:
    args: dict[Any, Any] = {}
    for kw in node.keywords:  # positional arguments are dropped, as BFCL does
        args[kw.arg] = _value(kw.value)  # `**x` gives key None: the checker reports it as unexpected
    return (_call_name(node.func), args)


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.operand, ast.Constant) or isinstance(node.operand.value, (str, bytes)) \
                or node.operand.value is None or node.operand.value is Ellipsis:
            raise _Undecodable(f"unsupported unary expression {ast.unparse(node)!r}")
        return -node.operand.value
    if isinstance(node, ast.List):
        return [_value(v) for v in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_value(v) for v in node.elts)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _Undecodable("dict unpacking (**) is not a value")
        out = {}
        for k, v in zip(node.keys, node.values):
            key = _value(k)
            try:
                out[key] = _value(v)
            except TypeError:  # unhashable key such as a list
                raise _Undecodable(f"unhashable dict key {ast.unparse(k)!r}") from None
        return out
    if isinstance(node, ast.BinOp):
        return _fold(node)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        if not node.keywords:
            return ast.unparse(node)
        name, args = _call(node)
        return {name: args}
    if isinstance(node, ast.Subscript):
        return ast.unparse(node.value) + "[" + ast.unparse(node.slice) + "]"
    raise _Undecodable(f"unsupported expression {type(node).__name__}: {ast.unparse(node)!r}")


# Arithmetic on literals. The limits keep a hostile `"a" * 10**12` from exhausting memory.
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_MAX_SEQ = 100_000
_MAX_INT_BITS = 4096


def _fold(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (bool, int, float, complex, str)):
            return node.value
        raise _Undecodable(f"cannot do arithmetic on {node.value!r}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _fold(node.operand)
        if isinstance(v, (str, list, tuple)):
            raise _Undecodable("unary minus on a sequence")
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_fold(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        a, b = _fold(node.left), _fold(node.right)
        _check_size(node.op, a, b)
        try:
            out = _OPS[type(node.op)](a, b)
        except (ArithmeticError, TypeError, ValueError) as e:
            raise _Undecodable(f"cannot compute {ast.unparse(node)!r}: {e}") from None
        if isinstance(out, int) and out.bit_length() > _MAX_INT_BITS:
            raise _Undecodable(f"{ast.unparse(node)!r} is too large")
        return out
    raise _Undecodable(f"unsupported expression in arithmetic: {ast.unparse(node)!r}")


def _check_size(op: ast.AST, a: Any, b: Any) -> None:
    if isinstance(op, ast.Pow) and isinstance(a, (int, float, complex)) and isinstance(b, (int, float)):
        if abs(b) > 10_000 or (isinstance(a, int) and isinstance(b, int) and abs(a) > 1
                               and b * max(a.bit_length(), 1) > _MAX_INT_BITS):
            raise _Undecodable("exponent too large")
    if isinstance(op, ast.Mult):
        for seq, n in ((a, b), (b, a)):
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * max(n, 0) > _MAX_SEQ:
                raise _Undecodable("repeated sequence too long")
    if isinstance(a, (int,)) and isinstance(b, int) and isinstance(op, ast.Mult) \
            and a.bit_length() + b.bit_length() > _MAX_INT_BITS:
        raise _Undecodable("product too large")


# ------------------------------------------------------------------------------------------------
# JSON and already-parsed calls
# ------------------------------------------------------------------------------------------------

def _json_call(obj: Any) -> Call | DecodeError:
    """One JSON call object (also OpenAI's `{"function": {...}}` and `{"function": "name", ...}`)."""
    if isinstance(obj, Mapping) and "name" not in obj and isinstance(obj.get("function"), str):
        obj = {**obj, "name": obj["function"]}
    call = call_from_json_obj(obj)
    if isinstance(call, ParseError):
        return DecodeError(call.reason)
    return (call.name, dict(call.arguments))


def calls_from_json(value: Any) -> list[Call] | DecodeError:
    """Calls from decoded JSON: one call object or a list of them (`[]` is no call)."""
    objs = value if isinstance(value, list) else [value]
    calls = []
    for obj in objs:
        c = _json_call(obj)
        if isinstance(c, DecodeError):
            return c
        calls.append(c)
    return calls


def decode_json(text: str) -> list[Call] | DecodeError:
    """JSON call objects in text: one object, a list, or several separated by whitespace/`;`/`,`;
    a ```json fence is removed (`jaxtool.data.calls.scan_json_values`)."""
    if not isinstance(text, str):
        return DecodeError(f"expected text, got {type(text).__name__}")
    values = scan_json_values(text)
    if isinstance(values, ParseError):
        return DecodeError(values.reason)
    return calls_from_json(values)


def calls_from_tool_calls(tool_calls: Iterable[Any]) -> list[Call]:
    """`jaxtool.data.schema.ToolCall`s (from a chat format's parser) as decoded calls."""
    return [(c.name, dict(c.arguments)) for c in tool_calls]


def jsonable(calls: Sequence[Call] | DecodeError) -> Any:
    """Decoded calls in a JSON-safe form for item logs: `[{"name", "arguments"}]` (tuples as lists)."""
    if isinstance(calls, DecodeError):
        return None
    return [{"name": n, "arguments": _plain(a)} for n, a in calls]


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)


# ------------------------------------------------------------------------------------------------
# Java / JavaScript call syntax (simple_java, simple_javascript)
# ------------------------------------------------------------------------------------------------

_QUOTES = JS_QUOTES
MAX_SOURCE_CHARS = 200_000


def decode_source_call(text: str, language: str) -> list[Call] | DecodeError:
    """`[Class.method(param=<source>, ...)]` written in Java or JavaScript syntax -> one call whose
    argument values are their source text, as BFCL's Java/JavaScript decoders return them (string and
    char literals unquoted at the top level, everything else — `new ArrayList<>(...)`, `50L`,
    `{a: 1}`, `mapController` — kept as written); BFCL's checker converts them by the doc's types.

    BFCL parses these outputs with tree-sitter (not a dependency here); this reader splits the
    argument list at top-level commas instead, and like BFCL keeps only the first call. Differences:
    BFCL drops whitespace between tokens of a composite value (`a + b` -> `a+b`), this keeps the
    value's text trimmed. Never evaluated."""
    if not isinstance(text, str):
        return DecodeError(f"expected text, got {type(text).__name__}")
    if len(text) > MAX_SOURCE_CHARS:
        return DecodeError(f"output of {len(text)} characters (more than {MAX_SOURCE_CHARS})")
    src = text.strip("`\n ")
    if src.startswith("[") and src.endswith("]"):
        src = src[1:-1]
    src = src.strip()
    calls = split_top_level(src)
    if not calls or not calls[0].strip():
        return DecodeError(f"not a {language} call list")
    first = calls[0].strip()
    open_at = first.find("(")
    if open_at <= 0 or not first.endswith(")"):
        return DecodeError(f"expected a {language} method call, got {first[:60]!r}")
    name = first[:open_at].strip()
    if not all(part.isidentifier() for part in name.split(".")):
        return DecodeError(f"{name[:60]!r} is not a (dotted) method name")
    inner = first[open_at + 1:-1]
    args_src = split_top_level(inner) if inner.strip() else []
    if args_src is None:
        return DecodeError("unbalanced brackets or quotes in the arguments")
    args: dict[str, Any] = {}
    for a in args_src:
        key, eq, value = a.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key.isidentifier() or value.startswith("="):
            continue  # BFCL keeps only named (`param=value`) arguments
        if key in args:
            return DecodeError(f"argument {key!r} given twice")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in _QUOTES:
            value = value[1:-1]
        args[key] = value
    return [(name, args)]
