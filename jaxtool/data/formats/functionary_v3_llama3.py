"""The `functionary_v3_llama3` format: MeetKai functionary "v3.llama3" (the template DiaTool-DPO
trained with): TypeScript tool schema in the system turn, `>>>recipient` blocks, `>>>all` for text."""

from __future__ import annotations

from typing import Mapping

from jaxtool.data.calls import ParseError
from jaxtool.data.formats.base import (
    ChatFormat,
    FormatError,
    Reply,
    Segment,
    _args_json,
    _assistant_segments,
    _decode_json_at,
    _nonempty,
    _skip_ws,
)
from jaxtool.data.formats.llama3_json import BOT, EH, EOT, EOTEXT, SH, _header
from jaxtool.data.formats.typescript import typescript_schema
from jaxtool.data.schema import Conversation, ToolCall


class FunctionaryV3Llama3Format(ChatFormat):
    """MeetKai functionary "v3.llama3" (functionary-small-v3.2 / medium-v3.0), DiaTool-DPO's template.

    `<|begin_of_text|>` + a fixed system turn (functionary's instruction + the TypeScript schema of
    the tools); user/system/tool messages as Llama 3 turns with their own role names; an
    assistant turn as `>>>all\\n<text>` and/or `>>>name\\n<json arguments>` blocks, then
    `<|eot_id|>`. The generation prompt ends with the first `>>>`, exactly as functionary's
    `get_assistant_prefixes` does, so the trained text starts at the first recipient name.
    Arguments are written `json.dumps(..., ensure_ascii=False)` (INFERRED: the template inserts
    the OpenAI `arguments` string as given).
    """

    name = "functionary_v3_llama3"
    stop_strings = (EOT, EOTEXT)
    special_tokens = (BOT, SH, EH, EOT)
    SYSTEM = ("You are capable of executing available function(s) if required.\n"
              "Only execute function(s) when absolutely necessary.\n"
              "Ask for the required input to:recipient==all\n"
              "Use JSON for function arguments.\n"
              "Respond in this format:\n"
              ">>>${recipient}\n${content}\n"
              "Available functions:\n")

    def generation_prompt(self, conv: Conversation) -> str:
        return _header("assistant") + ">>>"

    def render(self, conv: Conversation) -> list[Segment]:
        out = [Segment(BOT + _header("system") + self.SYSTEM + typescript_schema(conv.tools) + EOT, "template")]
        turn = 0
        for i, m in enumerate(conv.messages):
            if m.role == "assistant":
                blocks = []
                if m.content:
                    blocks.append("all\n" + m.content)
                for c in m.tool_calls:
                    if "\n" in c.name or ">>>" in c.name or not c.name.strip():
                        raise FormatError(self.name, "tool name not usable as a >>>recipient", repr(c.name))
                    blocks.append(c.name + "\n" + _args_json(c))
                _assistant_segments(out, i, turn, _header("assistant") + ">>>", ">>>".join(blocks) + EOT)
                turn += 1
            else:
                out.append(Segment(_header(m.role) + (m.content or "") + EOT, m.role, False, -1, i))
        return out

    def parse(self, text: str) -> Reply:
        s = ">>>" + self.cut_at_stop(text)  # the generation prompt ended with ">>>"
        content_parts: list[str] = []
        calls: list[ToolCall] = []

        def fail(reason: str) -> Reply:
            return Reply(text, tuple(calls), ParseError(reason, text))

        pos = 0
        while pos < len(s):
            if not s.startswith(">>>", pos):
                return fail(f"expected '>>>' at char {pos - 3}")
            pos += 3
            nl = s.find("\n", pos)
            name = (s[pos:] if nl < 0 else s[pos:nl]).strip()
            pos = len(s) if nl < 0 else nl + 1
            if name == "all":
                nxt = s.find(">>>", pos)
                end = len(s) if nxt < 0 else nxt
                content_parts.append(s[pos:end])
                pos = end
                continue
            if not name:
                if pos >= len(s) and not calls and not content_parts:
                    return Reply(None)  # nothing generated
                return fail("empty recipient after '>>>'")
            got = _decode_json_at(s, _skip_ws(s, pos))
            if isinstance(got, ParseError):
                return fail(f"arguments of {name}: {got.reason}")
            obj, pos = got
            if not isinstance(obj, Mapping):
                return fail(f"arguments of {name} must be a JSON object, got {type(obj).__name__}")
            calls.append(ToolCall(name=name, arguments=dict(obj)))
            pos = _skip_ws(s, pos)
        content = "".join(content_parts) if content_parts else None
        return Reply(_nonempty(content), tuple(calls))
