"""The `llama3_json` format: Llama 3.1 / 3.3 JSON tool calling as Meta's chat template renders it
(tools in the first user message, `{"name", "parameters"}` calls, results in the `ipython` role);
also the Llama 3 header tokens `functionary_v3_llama3` shares."""

from __future__ import annotations

import json
import re

from jaxtool.data.calls import ParseError, parse_json_calls
from jaxtool.data.formats.base import (
    ChatFormat,
    FormatError,
    Reply,
    Segment,
    _args_json,
    _assistant_segments,
    _nonempty,
    _split_leading_system,
)
from jaxtool.data.schema import Conversation, Message


BOT = "<|begin_of_text|>"
EOT = "<|eot_id|>"
EOM = "<|eom_id|>"
EOTEXT = "<|end_of_text|>"
SH, EH = "<|start_header_id|>", "<|end_header_id|>"
PYTHON_TAG = "<|python_tag|>"


def _header(role: str) -> str:
    return f"{SH}{role}{EH}\n\n"


class Llama3JsonFormat(ChatFormat):
    """Llama 3.1 / 3.3 JSON tool calling, following Meta's `tokenizer_config.json` chat template
    with its defaults (`tools_in_user_message=true`, `date_string="26 Jul 2024"`).

    `<|begin_of_text|>`; a system turn always (`Environment: ipython` when tools exist, the
    knowledge/today dates, the trimmed system message); tools as 4-space-indented JSON in front of
    the first user message with Meta's instruction; an assistant call as
    `{"name": "f", "parameters": {...}}<|eot_id|>`; tool results as `ipython` turns. User,
    system and assistant text is trimmed, as the template does.

    Beyond the official template (INFERRED, which raises instead): several calls in one turn are
    written `; `-separated, the convention vLLM's `llama3_json` parser reads. An assistant message
    with both text and calls is refused (`FormatError`): the official template silently drops the
    text.
    """

    name = "llama3_json"
    stop_strings = (EOT, EOM, EOTEXT)
    special_tokens = (BOT, SH, EH, EOT, EOM, PYTHON_TAG)
    TOOLS_INSTRUCTION = ("Given the following functions, please respond with a JSON for a function call "
                         "with its proper arguments that best answers the given prompt.\n\n"
                         "Respond in the format {\"name\": function name, \"parameters\": dictionary of "
                         "argument name and its value}.Do not use variables.\n\n")

    def __init__(self, date_string: str = "26 Jul 2024"):
        self.date_string = date_string

    def generation_prompt(self, conv: Conversation) -> str:
        return _header("assistant")

    def _call_text(self, m: Message) -> str:
        if m.content and m.content.strip():
            raise FormatError(self.name, "assistant message with both text and tool calls",
                              "Llama 3.1's template would drop the text")
        return "; ".join('{"name": ' + json.dumps(c.name, ensure_ascii=False) + ', "parameters": '
                         + _args_json(c) + "}" for c in m.tool_calls)

    def render(self, conv: Conversation) -> list[Segment]:
        out = [Segment(BOT, "template")]
        system, rest = _split_leading_system(conv)
        head = _header("system")
        if conv.tools:
            head += "Environment: ipython\n"
        head += "Cutting Knowledge Date: December 2023\n" + f"Today Date: {self.date_string}\n\n"
        head += (system.content or "").strip() if system else ""
        out.append(Segment(head + EOT, "system", False, -1, 0 if system else -1))
        if conv.tools:
            if not rest or rest[0][1].role != "user":
                raise FormatError(self.name, "tools need a first user message to carry them",
                                  "the first non-system message is not a user message")
            i, first = rest[0]
            text = _header("user") + self.TOOLS_INSTRUCTION
            text += "".join(json.dumps(t.to_dict(), indent=4, ensure_ascii=False) + "\n\n" for t in conv.tools)
            text += (first.content or "").strip() + EOT
            out.append(Segment(text, "user", False, -1, i))
            rest = rest[1:]
        turn = 0
        for i, m in rest:
            if m.role == "assistant":
                body = self._call_text(m) if m.tool_calls else (m.content or "").strip()
                _assistant_segments(out, i, turn, _header("assistant"), body + EOT)
                turn += 1
            elif m.role == "tool":
                out.append(Segment(_header("ipython") + (m.content or "") + EOT, "tool", False, -1, i))
            else:
                out.append(Segment(_header(m.role) + (m.content or "").strip() + EOT, m.role, False, -1, i))
        return out

    def parse(self, text: str) -> Reply:
        text = self.cut_at_stop(text)
        s = text.strip()
        if s.startswith(PYTHON_TAG):
            s = s[len(PYTHON_TAG):].strip()
        if s.startswith("{") or re.match(r"\[\s*\{", s):
            got = parse_json_calls(s)
            if isinstance(got, ParseError):
                return Reply(s, (), got)
            return Reply(None, tuple(got))
        return Reply(_nonempty(s))


# -- functionary's TypeScript-style tool schema ------------------------------------------------
