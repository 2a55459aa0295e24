"""Sample conversations shared by test_formats / test_tokenize / test_pipeline / test_data_cli."""

import json
import os

from jaxtool.data.schema import Conversation, Message, Tool, ToolCall

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

WEATHER_TOOL = Tool(
    "get_weather",
    "Get the current weather",
    {"type": "object",
     "properties": {"city": {"type": "string", "description": "City name"},
                    "unit": {"type": "string", "enum": ["c", "f"]}},
     "required": ["city"]},
)


def weather_conv(multi_call: bool = True) -> Conversation:
    """System + tools, a call, its result, an answer, a follow-up with (optionally) two calls in one turn."""
    msgs = [
        Message("system", "You are a helpful assistant."),
        Message("user", "What's the weather in Paris?"),
        Message("assistant", None, tool_calls=(ToolCall("get_weather", {"city": "Paris"}),)),
        Message("tool", '{"temp_c": 21}', name="get_weather"),
        Message("assistant", "It is 21°C in Paris."),
        Message("user", "And in Oslo and Rome?"),
    ]
    if multi_call:
        msgs += [
            Message("assistant", None, tool_calls=(ToolCall("get_weather", {"city": "Oslo"}),
                                                   ToolCall("get_weather", {"city": "Rome", "unit": "c"}))),
            Message("tool", '{"temp_c": 5}', name="get_weather"),
            Message("tool", '{"temp_c": 25}', name="get_weather"),
        ]
    else:
        msgs += [
            Message("assistant", None, tool_calls=(ToolCall("get_weather", {"city": "Oslo"}),)),
            Message("tool", '{"temp_c": 5}', name="get_weather"),
        ]
    msgs.append(Message("assistant", "Oslo: 5°C, Rome: 25°C." if multi_call else "Oslo: 5°C."))
    return Conversation(messages=tuple(msgs), tools=(WEATHER_TOOL,))


def chat_conv() -> Conversation:
    """No tools, no system: three plain turns with repeated assistant text (masks must not rely on search)."""
    return Conversation(messages=(
        Message("user", "Say ok."),
        Message("assistant", "ok"),
        Message("user", "Again, say ok."),
        Message("assistant", "ok"),
        Message("user", "Once more."),
        Message("assistant", "ok"),
    ))


def functionchat_convs() -> list[Conversation]:
    """Real FunctionChat-Bench CallDecision rows (Korean), input messages + ground-truth answer."""
    path = os.path.join(FIXTURES, "functionchat_calldecision_slice", "calldecision_4.jsonl")
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            out.append(Conversation.from_dict(
                {"tools": row["input_tools"], "messages": row["input_messages"] + [row["ground_truth"]],
                 "meta": {"serial_num": row["serial_num"], "category": row["category"]}}))
    return out


def read_template(name: str) -> str:
    with open(os.path.join(FIXTURES, "chat_templates", name), encoding="utf-8") as fh:
        return fh.read()


def template_messages(conv: Conversation, tool_content_as_object: bool = False) -> list[dict]:
    """Messages in the OpenAI layout HF templates expect (independent of jaxtool.data.formats)."""
    out = []
    for m in conv.messages:
        d = {"role": m.role, "content": m.content if m.content is not None else ""}
        if m.tool_calls:
            d["tool_calls"] = [{"type": "function", "function": {"name": c.name, "arguments": dict(c.arguments)}}
                               for c in m.tool_calls]
        if m.role == "tool" and tool_content_as_object:
            d["content"] = json.loads(m.content)
        out.append(d)
    return out
