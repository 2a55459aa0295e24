"""The `pythonic` format: ChatML with BFCL's default system prompt and pythonic calls
`[get_weather(city="Paris", days=3)]` (BFCL, iTool, ToolACE)."""

from __future__ import annotations

from jaxtool.data.calls import ParseError, parse_pythonic, render_pythonic
from jaxtool.data.formats.base import FormatError, Reply, _nonempty
from jaxtool.data.formats.bfcl_prompt import bfcl_system_prompt
from jaxtool.data.formats.chatml import _ChatMLFormat
from jaxtool.data.schema import Message


class PythonicFormat(_ChatMLFormat):
    """ChatML turns, BFCL's system prompt, calls written as a Python list `[f(a=1), g()]`.

    System: BFCL's prompt (tools present), then `\\n\\n` + the conversation's own system message
    (BFCL appends it the same way). Assistant: the call list; a message with text and calls writes
    the text, a newline, then the list (INFERRED: BFCL asks for calls only). Tool results: a
    ChatML `tool` turn each (BFCL sends them as `role: tool` messages through the model's
    template; ChatML templates such as SmolLM2's write the role name as given).
    """

    name = "pythonic"

    def _system_text(self, system, tools):
        if not tools:
            return system
        prompt = bfcl_system_prompt(tools)
        return prompt + "\n\n" + system if system is not None else prompt

    def _assistant_body(self, m: Message) -> str:
        if not m.tool_calls:
            return m.content or ""
        try:
            calls = render_pythonic(m.tool_calls)
        except ValueError as e:
            raise FormatError(self.name, "call not expressible as a Python call", str(e)) from None
        return (m.content + "\n" + calls) if m.content else calls

    def parse(self, text: str) -> Reply:
        text = self.cut_at_stop(text)
        s = text.strip()
        if not s:
            return Reply(None)
        first_err = None
        if s.startswith(("[", "```")):
            got = parse_pythonic(s)
            if not isinstance(got, ParseError):
                return Reply(None, tuple(got))
            first_err = got
        head, sep, last = text.rpartition("\n")
        if sep and last.strip().startswith("["):
            got = parse_pythonic(last)
            if not isinstance(got, ParseError):
                return Reply(_nonempty(head), tuple(got))
            return Reply(text, (), first_err or got)
        if first_err is not None:
            return Reply(text, (), first_err)
        return Reply(text)
