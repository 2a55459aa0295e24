"""One schema for tool-use dialogues: a Conversation is a list of tools plus a list of messages.

Every loader in `jaxtool.data.sources` produces `Conversation`s, every chat format in
`jaxtool.data.formats` renders them, and the DiaTool-DPO builder and the evaluators consume them.

The serialised form (`Conversation.to_dict` / `from_dict`) is the OpenAI / functionary layout that
DiaTool-DPO's released training script expects::

    {"tools": [{"type": "function", "function": {"name", "description", "parameters"}}],
     "messages": [{"role": "user", "content": "..."},
                  {"role": "assistant", "content": null,
                   "tool_calls": [{"id": "call_0", "type": "function",
                                   "function": {"name": "f", "arguments": "{\\"x\\": 1}"}}]},
                  {"role": "tool", "name": "f", "tool_call_id": "call_0", "content": "..."}]}

`from_dict` also accepts arguments given as an already-decoded object and tools given as bare
function specs (`{"name", "description", "parameters"}`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Mapping, Sequence

from jaxtool.errors import DataError

ROLES = ("system", "user", "assistant", "tool")


_SURROGATE = ("text holds a lone UTF-16 surrogate (e.g. \\ud800, half of an escaped emoji): not encodable "
              "as UTF-8, so no tokenizer can read it")


def _utf8_ok(value: Any) -> bool:
    """False when `value` (a string, or JSON-able data) holds text that cannot be encoded as UTF-8."""
    if value is None:
        return True
    try:
        (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)).encode("utf-8")
    except UnicodeEncodeError:
        return False
    except (TypeError, ValueError, RecursionError):
        return True  # other problems are other checks' business
    return True


class SchemaError(DataError):
    """A conversation that breaks the schema. The message names where (`where`) and what."""

    def __init__(self, message: str, where: str = ""):
        self.where = where
        self.reason = message
        super().__init__(f"{where}: {message}" if where else message)


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """One function call made by the assistant. `arguments` is always a decoded JSON object."""

    name: str
    arguments: Mapping[str, Any]
    id: str | None = None

    def to_dict(self, call_id: str | None = None) -> dict:
        return {
            "id": self.id or call_id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "tool_call") -> "ToolCall":
        if not isinstance(d, Mapping):
            raise SchemaError(f"expected an object, got {type(d).__name__}", where)
        fn = d.get("function", d)  # OpenAI nests under "function"; bare {name, arguments} also accepted
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn.get("name"):
            raise SchemaError("missing string field 'name'", where)
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as e:
                raise SchemaError(f"field 'arguments' is not valid JSON ({e.msg} at char {e.pos})", where) from None
        if not isinstance(args, Mapping):
            raise SchemaError(f"field 'arguments' must be a JSON object, got {type(args).__name__}", where)
        return cls(name=fn["name"], arguments=dict(args), id=d.get("id"))


@dataclasses.dataclass(frozen=True)
class Tool:
    """A function the assistant may call: JSON-schema `parameters` (an object schema)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"type": "object", "properties": {}})

    @property
    def properties(self) -> dict:
        return dict(self.parameters.get("properties") or {})

    @property
    def required(self) -> list[str]:
        """Names of the required parameters, in the order the schema lists them."""
        return [r for r in (self.parameters.get("required") or []) if isinstance(r, str)]

    @property
    def optional(self) -> list[str]:
        req = set(self.required)
        return [p for p in self.properties if p not in req]

    def to_dict(self) -> dict:
        return {"type": "function", "function": self.spec()}

    def spec(self) -> dict:
        """The bare function spec `{name, description, parameters}`."""
        return {"name": self.name, "description": self.description, "parameters": dict(self.parameters)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "tool") -> "Tool":
        if not isinstance(d, Mapping):
            raise SchemaError(f"expected an object, got {type(d).__name__}", where)
        fn = d.get("function", d) if d.get("type", "function") == "function" else d
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise SchemaError("missing string field 'name'", where)
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, Mapping):
            raise SchemaError(f"field 'parameters' must be a JSON-schema object, got {type(params).__name__}", where)
        desc = fn.get("description") or ""
        if not isinstance(desc, str):
            raise SchemaError("field 'description' must be a string", where)
        return cls(name=fn["name"], description=desc, parameters=dict(params))


@dataclasses.dataclass(frozen=True)
class Message:
    """One dialogue message.

    role      : "system" | "user" | "assistant" | "tool"
    content   : text (None for an assistant message that only calls tools)
    tool_calls: assistant only
    name      : tool only — the name of the tool whose result this is
    tool_call_id: tool only, optional — the id of the call this answers
    meta      : free labels carried through (e.g. DiaTool-DPO's MDP state `{"state": 3}`); never rendered
    """

    role: str
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    name: str | None = None
    tool_call_id: str | None = None
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            d["tool_calls"] = [c.to_dict(f"call_{i}") for i, c in enumerate(self.tool_calls)]
        if self.name is not None:
            d["name"] = self.name
        if self.tool_call_id is not None:
            d["tool_call_id"] = self.tool_call_id
        if self.meta:
            d.update({k: v for k, v in self.meta.items() if k not in d})
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "message") -> "Message":
        if not isinstance(d, Mapping):
            raise SchemaError(f"expected an object, got {type(d).__name__}", where)
        role = d.get("role")
        if role == "ipython":  # Llama 3's name for tool results
            role = "tool"
        if role == "function":  # legacy OpenAI function-calling role
            role = "tool"
        if role not in ROLES:
            raise SchemaError(f"field 'role' must be one of {ROLES}, got {role!r}", where)
        content = d.get("content")
        if content is not None and not isinstance(content, str):
            if role == "tool":
                content = json.dumps(content, ensure_ascii=False)
            else:
                raise SchemaError(f"field 'content' must be a string or null, got {type(content).__name__}", where)
        raw_calls = d.get("tool_calls") or []
        if "function_call" in d and d["function_call"]:  # legacy single-call form
            raw_calls = list(raw_calls) + [d["function_call"]]
        if not isinstance(raw_calls, Sequence):
            raise SchemaError("field 'tool_calls' must be a list", where)
        calls = tuple(ToolCall.from_dict(c, f"{where}.tool_calls[{i}]") for i, c in enumerate(raw_calls))
        known = {"role", "content", "tool_calls", "function_call", "name", "tool_call_id"}
        meta = {k: v for k, v in d.items() if k not in known}
        return cls(role=role, content=content, tool_calls=calls, name=d.get("name"),
                   tool_call_id=d.get("tool_call_id"), meta=meta)


@dataclasses.dataclass(frozen=True)
class Conversation:
    """Tools + messages. `meta` carries provenance (source, row, id) and is never rendered."""

    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    # -- convenience ------------------------------------------------------------------------
    def tool(self, name: str) -> Tool | None:
        for t in self.tools:
            if t.name == name:
                return t
        return None

    @property
    def assistant_turns(self) -> list[int]:
        """Indices (into `messages`) of the assistant messages, in order."""
        return [i for i, m in enumerate(self.messages) if m.role == "assistant"]

    def replace(self, **kw) -> "Conversation":
        return dataclasses.replace(self, **kw)

    # -- validation -------------------------------------------------------------------------
    def validate(self, where: str = "conversation") -> "Conversation":
        """Check the invariants every consumer relies on; raise `SchemaError` naming the message.

        - at least one message; system messages only before the first non-system message;
        - assistant messages have content or tool calls; tool calls name a tool in `tools`
          (when `tools` is non-empty) and carry object arguments;
        - a tool message follows an assistant tool call (possibly after other tool messages) and,
          when it names its tool, that tool was called by the preceding assistant message;
        - user/system/tool messages carry string content.
        """
        if not self.messages:
            raise SchemaError("no messages", where)
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise SchemaError(f"duplicate tool names {dup}", f"{where}.tools")
        seen_non_system = False
        pending: list[str] | None = None  # names called by the last assistant message
        for k, t in enumerate(self.tools):
            if not _utf8_ok(t.to_dict()):
                raise SchemaError(_SURROGATE, f"{where}.tools[{k}]")
        for i, m in enumerate(self.messages):
            w = f"{where}.messages[{i}]"
            if m.role not in ROLES:
                raise SchemaError(f"unknown role {m.role!r}", w)
            if not _utf8_ok(m.content) or not all(_utf8_ok(c.arguments) for c in m.tool_calls):
                raise SchemaError(_SURROGATE, w)
            if m.role == "system":
                if seen_non_system:
                    raise SchemaError("system message after the dialogue started", w)
                if not isinstance(m.content, str):
                    raise SchemaError("system message needs string content", w)
                continue
            seen_non_system = True
            if m.role == "user":
                if not isinstance(m.content, str):
                    raise SchemaError("user message needs string content", w)
                pending = None
            elif m.role == "assistant":
                if m.content is None and not m.tool_calls:
                    raise SchemaError("assistant message has neither content nor tool calls", w)
                for j, c in enumerate(m.tool_calls):
                    if not isinstance(c.arguments, Mapping):
                        raise SchemaError(f"arguments must be an object, got {type(c.arguments).__name__}",
                                          f"{w}.tool_calls[{j}]")
                    if self.tools and c.name not in names:
                        raise SchemaError(f"call to tool {c.name!r} which is not in the tools list {names}",
                                          f"{w}.tool_calls[{j}]")
                pending = [c.name for c in m.tool_calls] or None
            elif m.role == "tool":
                if pending is None:
                    raise SchemaError("tool message with no preceding assistant tool call", w)
                if m.name is not None and m.name not in pending:
                    raise SchemaError(f"tool result for {m.name!r} but the preceding call was to {pending}", w)
                if not isinstance(m.content, str):
                    raise SchemaError("tool message needs string content", w)
        return self

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"tools": [t.to_dict() for t in self.tools], "messages": [m.to_dict() for m in self.messages]}
        if self.meta:
            d["meta"] = dict(self.meta)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "conversation", validate: bool = True) -> "Conversation":
        if isinstance(d, str):
            try:
                d = json.loads(d)
            except json.JSONDecodeError as e:
                raise SchemaError(f"not valid JSON ({e.msg})", where) from None
        if not isinstance(d, Mapping):
            raise SchemaError(f"expected an object with 'messages', got {type(d).__name__}", where)
        msgs = d.get("messages")
        if not isinstance(msgs, Sequence) or isinstance(msgs, str):
            raise SchemaError("missing list field 'messages'", where)
        tools = d.get("tools") or []
        if not isinstance(tools, Sequence) or isinstance(tools, str):
            raise SchemaError("field 'tools' must be a list", where)
        conv = cls(
            messages=tuple(Message.from_dict(m, f"{where}.messages[{i}]") for i, m in enumerate(msgs)),
            tools=tuple(Tool.from_dict(t, f"{where}.tools[{i}]") for i, t in enumerate(tools)),
            meta=dict(d.get("meta") or {}),
        )
        return conv.validate(where) if validate else conv

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def user(content: str, **meta) -> Message:
    return Message("user", content, meta=meta)


def system(content: str, **meta) -> Message:
    return Message("system", content, meta=meta)


def assistant(content: str | None = None, calls: Iterable[ToolCall] = (), **meta) -> Message:
    return Message("assistant", content, tool_calls=tuple(calls), meta=meta)


def tool_result(name: str, content: str, tool_call_id: str | None = None, **meta) -> Message:
    return Message("tool", content, name=name, tool_call_id=tool_call_id, meta=meta)


# ------------------------------------------------------------------------------------------------
# the one rule for call arguments (data inspect, train, iTool: every source loader applies it)
# ------------------------------------------------------------------------------------------------

NON_FINITE = "non-finite number in call arguments"
BREAKS_SCHEMA = "call arguments break the tool schema"

# JSON-schema type names, and the Python spellings some datasets use (BFCL: dict, float, tuple, ...)
_TYPES = {"string": (str,), "str": (str,), "integer": (int,), "int": (int,), "number": (int, float),
          "float": (int, float), "boolean": (bool,), "bool": (bool,), "array": (list,), "list": (list,),
          "tuple": (list,), "object": (dict,), "dict": (dict,), "null": (type(None),)}


def _non_finite_path(value: Any, path: str = "") -> str | None:
    stack = [(value, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            return p or "."
        if isinstance(v, Mapping):
            stack.extend((x, f"{p}.{k}" if p else str(k)) for k, x in v.items())
        elif isinstance(v, (list, tuple)):
            stack.extend((x, f"{p}[{i}]") for i, x in enumerate(v))
    return None


def _type_fits(value: Any, t: Any) -> bool:
    names = t if isinstance(t, list) else [t]
    kinds = [_TYPES.get(n) for n in names if isinstance(n, str)]
    if not kinds or any(k is None for k in kinds):  # unknown or "any": nothing to check
        return True
    for k in kinds:
        if isinstance(value, bool) and bool not in k:
            continue
        if isinstance(value, k):
            return True
        if int in k and float not in k and isinstance(value, float) and value.is_integer():
            return True  # 3.0 for an integer
    return False


def call_problem(call: ToolCall, tools: Sequence[Tool], check_required: bool = False,
                 check_types: bool = False) -> tuple[str, str] | None:
    """(reason, detail) when a call's arguments cannot be a training target, else None.

    - a NaN / Infinity / 1e999 anywhere in the arguments (JSON has no such numbers: a rendered target
      `{"city": NaN}` is text jaxtool's own call parser — and any JSON parser — rejects);
    - with a tools list that names the tool: an argument the schema does not list (when it lists
      properties); with `check_required`, also a required argument missing (iTool's gold-call rule);
      with `check_types`, a value of the wrong JSON type (schema types as JSON-schema names or their
      Python spellings; others are not checked).
    By default (what every source loader applies) only the unambiguous cases count: the public
    datasets' own schemas are loose — xLAM declares `"type": "int"` for a longitude given as 9.7 and
    leaves optional parameters without a default (so "required" is a guess), SNIPS repeats a slot as
    a list — and a type or required rule would drop good rows.
    Calls to a tool missing from a non-empty tools list are `Conversation.validate`'s business."""
    bad = _non_finite_path(call.arguments)
    if bad is not None:
        return NON_FINITE, (f"{call.name}: argument {bad} is NaN or infinite (also what an overflowing "
                            "literal such as 1e999 decodes to); JSON has no such number")
    tool = next((t for t in tools if t.name == call.name), None)
    if tool is None:
        return None
    props = tool.properties
    if props:
        unknown = [a for a in call.arguments if a not in props]
        if unknown:
            return BREAKS_SCHEMA, f"{call.name}: unknown arguments {unknown} (the schema lists {sorted(props)})"
    missing = [r for r in tool.required if r not in call.arguments] if check_required else []
    if missing:
        return BREAKS_SCHEMA, f"{call.name}: required arguments {missing} missing"
    if check_types:
        for name, value in call.arguments.items():
            spec = props.get(name)
            if isinstance(spec, Mapping) and "type" in spec and not _type_fits(value, spec["type"]):
                return BREAKS_SCHEMA, (f"{call.name}: argument {name!r} is {type(value).__name__} "
                                       f"{json.dumps(value, default=str)[:40]}, the schema says {spec['type']!r}")
    return None


def conversation_call_problem(conv: "Conversation", schema: bool = True) -> tuple[str, str, str] | None:
    """(reason, detail, where) of the first assistant call that `call_problem` rejects, or None.
    `schema=False` checks only the numbers (a DPO rejected side may break the schema on purpose)."""
    for i, m in enumerate(conv.messages):
        for j, c in enumerate(m.tool_calls):
            p = call_problem(c, conv.tools if schema else ())
            if p is not None:
                return p[0], p[1], f"messages[{i}].tool_calls[{j}]"
    return None
