"""The `hermes` format: Hermes / Qwen2.5 ChatML tool calling (`<tools>` in the system turn,
`<tool_call>{json}</tool_call>`, results in `<tool_response>` inside a user turn)."""

from __future__ import annotations

import json

from jaxtool.data.calls import ParseError, call_from_json_obj
from jaxtool.data.formats.base import Reply, Segment, _decode_json_at, _nonempty, _skip_ws
from jaxtool.data.formats.chatml import IM_END, IM_START, _ChatMLFormat
from jaxtool.data.schema import Message, ToolCall


class HermesFormat(_ChatMLFormat):
    """Hermes-style tool calling as Qwen2.5's chat template writes it.

    System turn (tools present): `<system text>\\n\\n` (only when a system message exists — Qwen3's
    rule; Qwen2.5 would insert its own default persona) + the `# Tools` block listing each tool as
    one JSON line inside `<tools></tools>`. Assistant: `content`, then each call as
    `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` separated by newlines. Tool
    results: consecutive tool messages share one `user` turn, each wrapped in `<tool_response>`.
    """

    name = "hermes"
    TOOLS_HEADER = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
    TOOLS_FOOTER = ("\n</tools>\n\nFor each function call, return a json object with function name and "
                    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                    "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>")

    def _system_text(self, system, tools):
        if not tools:
            return system
        block = self.TOOLS_HEADER + "".join("\n" + json.dumps(t.to_dict(), ensure_ascii=False) for t in tools)
        block += self.TOOLS_FOOTER
        return (system + "\n\n" + block) if system is not None else block

    def _assistant_body(self, m: Message) -> str:
        text = m.content or ""
        for k, c in enumerate(m.tool_calls):
            if text or k > 0:
                text += "\n"
            text += "<tool_call>\n" + json.dumps({"name": c.name, "arguments": dict(c.arguments)},
                                                 ensure_ascii=False) + "\n</tool_call>"
        return text

    def _tool_turns(self, out, conv, i, m):
        msgs = conv.messages
        text = ""
        if i == 0 or msgs[i - 1].role != "tool":
            text += f"{IM_START}user"
        text += "\n<tool_response>\n" + (m.content or "") + "\n</tool_response>"
        if i == len(msgs) - 1 or msgs[i + 1].role != "tool":
            text += f"{IM_END}\n"
        out.append(Segment(text, "tool", False, -1, i))

    def parse(self, text: str) -> Reply:
        text = self.cut_at_stop(text)
        start = text.find("<tool_call>")
        if start < 0:
            return Reply(_nonempty(text))
        content = text[:start]
        if content.endswith("\n"):
            content = content[:-1]
        calls: list[ToolCall] = []
        pos = start
        while True:
            pos = _skip_ws(text, pos)
            if not text.startswith("<tool_call>", pos):
                break
            pos = _skip_ws(text, pos + len("<tool_call>"))
            got = _decode_json_at(text, pos)
            if isinstance(got, ParseError):
                return Reply(text, tuple(calls), ParseError(f"<tool_call> body: {got.reason}", text))
            obj, pos = got
            call = call_from_json_obj(obj)
            if isinstance(call, ParseError):
                return Reply(text, tuple(calls), ParseError(f"<tool_call> body: {call.reason}", text))
            pos = _skip_ws(text, pos)
            if not text.startswith("</tool_call>", pos):
                return Reply(text, tuple(calls), ParseError("<tool_call> without closing </tool_call>", text))
            pos += len("</tool_call>")
            calls.append(call)
        trailing = text[pos:].strip()
        if trailing:  # text after the calls: kept as content rather than dropped
            content = (content + "\n" + trailing) if content else trailing
        return Reply(_nonempty(content), tuple(calls))
