"""The `react` format: CALM's conversational ReAct text (`User:` / `Thought:` / `Action:` /
`Observation:` / `Thought:` / `Response:`)."""

from __future__ import annotations

from typing import Mapping

from jaxtool.data.calls import ParseError
from jaxtool.data.formats.base import (
    ChatFormat,
    Reply,
    Segment,
    _assistant_segments,
    _call_list_text,
    _nonempty,
    _parse_call_list_text,
    _split_leading_system,
)
from jaxtool.data.formats.plain import DEFAULT_PLAIN_EOS, _strip_one_space, _tools_lines, plain_eos
from jaxtool.data.schema import Conversation, Message


class ReactFormat(ChatFormat):
    """CALM's conversational ReAct turns as plain text (layout INFERRED from the CALM paper's
    User / Thought / Action / Observation / Thought / Response description; CALM-IT's own rows are
    not available here).

        <system>\\n\\n                                  (when there is a system message)
        Available tools:\\n<one JSON spec per line>\\n\\n (when there are tools)
        User: <text>\\n
        Thought: <text>\\nAction: [f(a=1)]<eos>\\n       (assistant message with tool calls)
        Observation: <tool result>\\n
        Thought: <text>\\nResponse: <text><eos>\\n       (assistant message with text)

    An assistant message that calls tools writes its `content` as the Thought. A text reply writes
    `content` as the Response, preceded by `meta["thought"]` when present (the one place a format
    reads `Message.meta`). Calls are pythonic, or a JSON list when a name/argument has no pythonic
    form. `<eos>` is the tokenizer's EOS (pass `tokenizer=` to `get_format`), default `</s>`;
    it is trained, so the model learns to end its turn.
    """

    name = "react"
    prepend_bos = True

    @classmethod
    def from_options(cls, tokenizer=None, **options):
        return cls(eos=plain_eos(tokenizer, options), **options)

    def __init__(self, eos: str = DEFAULT_PLAIN_EOS):
        self.eos = eos
        self.stop_strings = (eos, "\nObservation:", "\nUser:")
        self.special_tokens = (eos,)

    def generation_prompt(self, conv: Conversation) -> str:
        # after a system/tools preamble with no dialogue yet, the blank line still has to come
        return "\n\n" if conv.messages and conv.messages[-1].role == "system" else ""

    def _body(self, m: Message) -> str:
        if m.tool_calls:
            head = f"Thought: {m.content}\n" if m.content else ""
            return head + "Action: " + _call_list_text(m.tool_calls)
        thought = m.meta.get("thought") if isinstance(m.meta, Mapping) else None
        head = f"Thought: {thought}\n" if isinstance(thought, str) and thought else ""
        return head + "Response: " + (m.content or "")

    def render(self, conv: Conversation) -> list[Segment]:
        # Blank-line separators open the following segment instead of closing the previous one: a
        # segment ending in "\n\n" tokenizes differently on its own than before text (GPT-2 style
        # pre-tokenizers), so boundaries are kept right after non-space characters.
        out: list[Segment] = []
        system, rest = _split_leading_system(conv)
        sep = ""
        if system is not None:
            out.append(Segment(system.content or "", "system", False, -1, 0))
            sep = "\n\n"
        if conv.tools:
            out.append(Segment(sep + "Available tools:\n" + _tools_lines(conv.tools), "template"))
            sep = "\n\n"
        turn = 0
        for i, m in rest:
            if m.role == "assistant":
                _assistant_segments(out, i, turn, sep, self._body(m) + self.eos, "\n")
                turn += 1
            elif m.role == "tool":
                out.append(Segment(f"{sep}Observation: {m.content or ''}\n", "tool", False, -1, i))
            elif m.role == "user":
                out.append(Segment(f"{sep}User: {m.content or ''}\n", "user", False, -1, i))
            else:
                out.append(Segment(f"{sep}{m.content or ''}\n", "system", False, -1, i))
            sep = ""
        return out

    def parse(self, text: str) -> Reply:
        text = self.cut_at_stop(text)
        rest = text.lstrip("\n")
        thought = None
        if rest.startswith("Thought:"):
            ends = [j for j in (rest.find("\nAction:"), rest.find("\nResponse:")) if j >= 0]
            if not ends:
                return Reply(text, (), ParseError("'Thought:' without a following 'Action:' or 'Response:'", text),
                             thought=_strip_one_space(rest[len("Thought:"):]))
            cut = min(ends)
            thought = _strip_one_space(rest[len("Thought:"):cut])
            rest = rest[cut + 1:]
        if rest.startswith("Action:"):
            got = _parse_call_list_text(rest[len("Action:"):])
            if isinstance(got, ParseError):
                return Reply(text, (), ParseError(f"Action: {got.reason}", text), thought=thought)
            return Reply(_nonempty(thought), tuple(got), thought=thought)
        if rest.startswith("Response:"):
            return Reply(_nonempty(_strip_one_space(rest[len("Response:"):])), (), thought=thought)
        if not text.strip():
            return Reply(None)
        return Reply(text, (), ParseError("expected 'Thought:', 'Action:' or 'Response:'", text), thought=thought)
