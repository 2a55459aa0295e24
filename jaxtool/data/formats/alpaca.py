"""The `alpaca` format: Stanford Alpaca `### Instruction:` / `### Input:` / `### Response:` (CALM-IT's
row layout); tool calls as API-Bank `API-Request: [...]`."""

from __future__ import annotations

from jaxtool.data.calls import ParseError
from jaxtool.data.formats.base import (
    ChatFormat,
    Reply,
    Segment,
    _assistant_segments,
    _call_list_text,
    _nonempty,
    _parse_call_list_text,
)
from jaxtool.data.formats.plain import DEFAULT_PLAIN_EOS, _tools_lines, plain_eos
from jaxtool.data.schema import Conversation, Message


class AlpacaFormat(ChatFormat):
    """Stanford Alpaca's prompt (tatsu-lab/stanford_alpaca `PROMPT_DICT`), target = output + EOS.

    Single turn, exactly Alpaca: with a system message (and/or tools) it is the Instruction and the
    user message the Input ("prompt_input"); without, the user message is the Instruction
    ("prompt_no_input"). `### Response:` is followed directly by the output, as in Alpaca.

    INFERRED beyond Alpaca (which is single-turn): every later user/tool stretch becomes another
    `\\n\\n### Input:\\n...` block and every assistant message another `### Response:` block, so
    multi-turn dialogues keep all their turns; tools are listed as JSON lines under
    `Available tools:` in the Instruction; a tool call is written API-Bank style
    `API-Request: [f(a=1)]` (after the text, on its own line, when both) and a tool result as an
    Input line `API-Response: <result>`.
    """

    name = "alpaca"
    prepend_bos = True
    PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                    "context. Write a response that appropriately completes the request.\n\n")
    PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                       "completes the request.\n\n")

    @classmethod
    def from_options(cls, tokenizer=None, **options):
        return cls(eos=plain_eos(tokenizer, options), **options)

    def __init__(self, eos: str = DEFAULT_PLAIN_EOS):
        self.eos = eos
        self.stop_strings = (eos, "\n\n### Input:", "\n\n### Response:", "\n\n### Instruction:")
        self.special_tokens = (eos,)

    def generation_prompt(self, conv: Conversation) -> str:
        return "\n\n### Response:"

    def _output(self, m: Message) -> str:
        if not m.tool_calls:
            return m.content or ""
        calls = "API-Request: " + _call_list_text(m.tool_calls)
        return (m.content + "\n" + calls) if m.content else calls

    def render(self, conv: Conversation) -> list[Segment]:
        # Each block opens with its "\n\n" separator (see ReactFormat.render for why).
        out: list[Segment] = []
        msgs = list(enumerate(conv.messages))
        instr_parts, k = [], 0
        while k < len(msgs) and msgs[k][1].role == "system":
            instr_parts.append(msgs[k][1].content or "")
            k += 1
        if conv.tools:
            instr_parts.append("Available tools:\n" + _tools_lines(conv.tools))
        if instr_parts:
            preamble, instruction = self.PROMPT_INPUT, "\n\n".join(instr_parts)
            role, idx = ("system", 0) if k else ("template", -1)
        elif k < len(msgs) and msgs[k][1].role == "user":
            preamble, instruction = self.PROMPT_NO_INPUT, msgs[k][1].content or ""
            role, idx = "user", msgs[k][0]
            k += 1
        else:
            preamble, instruction, role, idx = self.PROMPT_NO_INPUT, "", "template", -1
        out.append(Segment(preamble + "### Instruction:\n" + instruction, role, False, -1, idx))
        turn, in_input = 0, False
        for i, m in msgs[k:]:
            if m.role == "assistant":
                _assistant_segments(out, i, turn, "\n\n### Response:", self._output(m) + self.eos)
                turn, in_input = turn + 1, False
                continue
            line = f"API-Response: {m.content or ''}" if m.role == "tool" else (m.content or "")
            out.append(Segment(("\n" if in_input else "\n\n### Input:\n") + line, m.role, False, -1, i))
            in_input = True
        return out

    def parse(self, text: str) -> Reply:
        text = self.cut_at_stop(text)
        i = text.find("API-Request:")
        if i < 0:
            return Reply(_nonempty(text))
        content = text[:i]
        if content.endswith("\n"):
            content = content[:-1]
        got = _parse_call_list_text(text[i + len("API-Request:"):])
        if isinstance(got, ParseError):
            return Reply(text, (), ParseError(f"API-Request: {got.reason}", text))
        return Reply(_nonempty(content), tuple(got))
