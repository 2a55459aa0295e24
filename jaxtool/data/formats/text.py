"""The `text` format: not a chat format (no tools, no turns) — plain documents for continued
pre-training (`get_format("text")`)."""

from __future__ import annotations

from jaxtool.data.formats.base import ChatFormat, Reply, Segment, _nonempty
from jaxtool.data.formats.plain import DEFAULT_PLAIN_EOS, plain_eos
from jaxtool.data.schema import Conversation


class TextFormat(ChatFormat):
    """Plain text for continued pre-training (CPT, e.g. DiaTool-DPO's first stage, §6.1 / App. C):
    each assistant message is a document, written as is and followed by EOS, and every one of its
    tokens is trained; other messages (if any) are written as is, untrained. No template text."""

    name = "text"
    prepend_bos = True

    @classmethod
    def from_options(cls, tokenizer=None, **options):
        return cls(eos=plain_eos(tokenizer, options), **options)

    def __init__(self, eos: str = DEFAULT_PLAIN_EOS):
        self.eos = eos
        self.stop_strings = (eos,)
        self.special_tokens = (eos,)

    def generation_prompt(self, conv: Conversation) -> str:
        return ""

    def render(self, conv: Conversation) -> list[Segment]:
        out: list[Segment] = []
        turn = 0
        for i, m in enumerate(conv.messages):
            if m.role == "assistant":
                out.append(Segment((m.content or "") + self.eos, "assistant", True, turn, i))
                turn += 1
            else:
                out.append(Segment(m.content or "", m.role, False, -1, i))
        return out

    def parse(self, text: str) -> Reply:
        return Reply(_nonempty(self.cut_at_stop(text)))
