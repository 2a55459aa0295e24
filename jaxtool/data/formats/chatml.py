"""ChatML turns (`<|im_start|>role ... <|im_end|>`), shared by `hermes` and `pythonic`."""

from __future__ import annotations

from typing import Sequence

from jaxtool.data.formats.base import ChatFormat, Segment, _assistant_segments, _split_leading_system
from jaxtool.data.schema import Conversation, Message, Tool


IM_START, IM_END = "<|im_start|>", "<|im_end|>"


def _chatml_turn(role: str, text: str) -> str:
    return f"{IM_START}{role}\n{text}{IM_END}\n"


class _ChatMLFormat(ChatFormat):
    stop_strings = (IM_END,)
    special_tokens = (IM_START, IM_END)
    _assistant_header = f"{IM_START}assistant\n"

    def generation_prompt(self, conv: Conversation) -> str:
        return self._assistant_header

    def _system_text(self, system: str | None, tools: Sequence[Tool]) -> str | None:
        return system

    def _assistant_body(self, m: Message) -> str:
        raise NotImplementedError

    def _tool_turns(self, out, conv, i, m):
        out.append(Segment(_chatml_turn("tool", m.content or ""), "tool", False, -1, i))

    def render(self, conv: Conversation) -> list[Segment]:
        out: list[Segment] = []
        system, rest = _split_leading_system(conv)
        sys_text = self._system_text(system.content if system else None, conv.tools)
        if sys_text is not None:
            out.append(Segment(_chatml_turn("system", sys_text), "system", False, -1, 0 if system else -1))
        turn = 0
        for i, m in rest:
            if m.role == "assistant":
                _assistant_segments(out, i, turn, self._assistant_header,
                                    self._assistant_body(m) + IM_END, "\n")
                turn += 1
            elif m.role == "tool":
                self._tool_turns(out, conv, i, m)
            else:
                out.append(Segment(_chatml_turn(m.role, m.content or ""), m.role, False, -1, i))
        return out
