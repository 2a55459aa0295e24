"""One CALM-IT row: an Alpaca Instruction / Input / Output triple of one task, and the text helpers
the converters share (call and signature rendering).

A row becomes a jaxtool `Conversation` of three messages — system = Instruction, user = Input,
assistant = Output — with no tools and no tool calls, so the `alpaca` chat format renders it as
Stanford Alpaca's "prompt_input" layout::

    Below is an instruction that describes a task, paired with an input ... request.

    ### Instruction:
    <instruction>

    ### Input:
    <input>

    ### Response:<output><eos>

and the loss mask covers exactly `<output><eos>` (the format marks only assistant text as trained).
The task's own calls, thoughts and JSON live inside the Output text; nothing is re-encoded by the
chat format.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from jaxtool.data.calls import render_pythonic_call
from jaxtool.data.schema import Conversation, Message, Tool, ToolCall
from jaxtool.data.sources.base import BadRow


@dataclasses.dataclass(frozen=True)
class CalmExample:
    """task: "dst" | "hammer" | "toolace" | "cra"; meta: provenance (source, row, objective, ...)."""

    task: str
    instruction: str
    input: str
    output: str
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.output, str) or not self.output.strip():
            raise BadRow("empty output", f"{self.task} example has no output text", field="output")

    def to_conversation(self) -> Conversation:
        msgs = (Message("system", self.instruction), Message("user", self.input), Message("assistant", self.output))
        return Conversation(messages=msgs, meta={"task": self.task, **dict(self.meta)})

    def to_dict(self) -> dict:
        """The conversation row written to the CALM-IT JSONL (`conversations` source layout)."""
        return self.to_conversation().to_dict()

    def alpaca(self) -> dict:
        return {"instruction": self.instruction, "input": self.input, "output": self.output}

    @classmethod
    def from_conversation(cls, conv: Conversation) -> "CalmExample":
        """Inverse of `to_conversation` (for rows read back from a CALM-IT JSONL)."""
        roles = [m.role for m in conv.messages]
        if roles != ["system", "user", "assistant"] or conv.tools:
            raise BadRow("not a CALM-IT row", f"expected system/user/assistant messages and no tools, got {roles}")
        meta = dict(conv.meta)
        task = meta.pop("task", "")
        s, u, a = conv.messages
        return cls(task, s.content or "", u.content or "", a.content or "", meta)


# --------------------------------------------------------------------------------------------
# text helpers
# --------------------------------------------------------------------------------------------

def py_value(value: Any) -> str:
    """A JSON value as a Python literal in `repr` style: strings single-quoted ('x'), numbers and
    booleans bare (2, True), lists and dicts recursively. This is how CALM's CRA rows write
    arguments: `f(a='x', b=2)`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{py_value(str(k))}: {py_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(py_value(v) for v in value) + "]"
    raise BadRow("argument has no literal form", f"value of type {type(value).__name__}")


def py_call(call: ToolCall) -> str:
    """`Name(a='x', b=2)` (Python literal arguments, keyword order as given)."""
    for k in call.arguments:
        if not (isinstance(k, str) and k.isidentifier()):
            raise BadRow("call not expressible", f"argument name {k!r} of {call.name} is not an identifier")
    return f"{call.name}(" + ", ".join(f"{k}={py_value(v)}" for k, v in call.arguments.items()) + ")"


def bracket_call(call: ToolCall) -> str:
    """`Name(a="x", b=2)` as ToolACE and BFCL write calls: JSON-style string literals, and the tool
    name exactly as listed even when it is not an identifier (`Market Trends API(...)`, ToolACE's
    own spelling)."""
    try:
        body = render_pythonic_call(ToolCall("f", dict(call.arguments)))
    except ValueError as e:
        raise BadRow("call not expressible", f"{call.name}: {e}") from None
    return call.name + body[1:]


def bracket_calls(calls: Sequence[ToolCall]) -> str:
    """`[f(a=1), g(b="x")]`."""
    return "[" + ", ".join(bracket_call(c) for c in calls) + "]"


def signature(tool: Tool) -> str:
    """`Name(arg1, arg2, ...)`: the tool's parameters, required ones first (CALM's tool list for
    the CRA task)."""
    params = tool.required + [p for p in tool.properties if p not in tool.required]
    return f"{tool.name}({', '.join(params)})"
