"""The `chat_template` format: whatever the tokenizer's own Jinja chat template produces, split into
per-message segments by rendering prefixes of the conversation."""

from __future__ import annotations

import re
from typing import Any

from jaxtool.data.formats.base import ChatFormat, FormatError, Reply, Segment, _assistant_segments, _nonempty
from jaxtool.data.formats.hermes import HermesFormat
from jaxtool.data.formats.llama3_json import PYTHON_TAG, Llama3JsonFormat
from jaxtool.data.formats.pythonic import PythonicFormat
from jaxtool.data.schema import Conversation, Message
from jaxtool.errors import ConfigError


# End-of-turn markers of common templates; the ones the tokenizer knows as tokens become stops.
KNOWN_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>",
                     "<|endoftext|>", "<|end_of_text|>", "</s>", "<|END_OF_TURN_TOKEN|>")


def message_to_openai(m: Message) -> dict:
    """A `Message` as the dict HF chat templates expect (arguments as an object, content never None)."""
    d: dict[str, Any] = {"role": m.role, "content": m.content if m.content is not None else ""}
    if m.tool_calls:
        d["tool_calls"] = [{"id": c.id or f"call_{k}", "type": "function",
                            "function": {"name": c.name, "arguments": dict(c.arguments)}}
                           for k, c in enumerate(m.tool_calls)]
    if m.role == "tool":
        if m.name is not None:
            d["name"] = m.name
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
    return d


def _known_token(tokenizer, token: str) -> bool:
    try:
        tid = tokenizer.convert_tokens_to_ids(token)
        return tid is not None and tokenizer.convert_ids_to_tokens(tid) == token
    except (KeyError, TypeError, ValueError, IndexError):
        return False


class ChatTemplateFormat(ChatFormat):
    """Render through `tokenizer.apply_chat_template`, split into per-message segments.

    The text of message k is `render(messages[:k+1])` minus `render(messages[:k])`; an assistant
    message is further split at `render(messages[:k], add_generation_prompt=True)` (its header,
    not trained) and after its last end-of-turn marker (trailing newline etc., not trained). Every
    prefix must extend the previous one; a template that rewrites earlier turns (e.g. one that
    strips reasoning from past assistant turns) is refused with a `FormatError` naming the message,
    because no exact mask exists for it. Masks come from lengths, never from searching the text.

    `parse` cannot know the template's call syntax, so it tries, in order: hermes `<tool_call>`
    blocks, Llama JSON (`{`/`<|python_tag|>`), a pythonic list (`[`); otherwise plain text.
    """

    name = "chat_template"

    @classmethod
    def from_options(cls, tokenizer=None, **options):
        return cls(tokenizer, **options)

    def __init__(self, tokenizer):
        if tokenizer is None:
            raise ConfigError("format 'chat_template' needs a tokenizer (pass tokenizer=...)")
        if not getattr(tokenizer, "chat_template", None):
            from jaxtool.data.formats import FORMAT_NAMES

            raise ConfigError("format 'chat_template': this tokenizer has no chat template; "
                              f"pick one of {[n for n in FORMAT_NAMES if n != 'chat_template']}")
        self.tokenizer = tokenizer
        markers = [m for m in KNOWN_END_MARKERS if _known_token(tokenizer, m)]
        eos = getattr(tokenizer, "eos_token", None)
        if eos and eos not in markers:
            markers.insert(0, eos)
        self.stop_strings = tuple(markers)
        self.special_tokens = ()

    def _apply(self, msgs: list[dict], tools, gen: bool, where: str) -> str:
        try:
            text = self.tokenizer.apply_chat_template(msgs, tools=tools, add_generation_prompt=gen, tokenize=False)
        except Exception as e:  # noqa: BLE001 - jinja raises TemplateError and friends
            raise FormatError(self.name, "chat template failed", f"{where}: {type(e).__name__}: {e}") from None
        if not isinstance(text, str):  # some versions return a list for batched input
            text = text[0]
        return text

    def _tools(self, conv: Conversation):
        return [t.to_dict() for t in conv.tools] or None

    def generation_prompt(self, conv: Conversation) -> str:
        msgs = [message_to_openai(m) for m in conv.messages]
        full = self._apply(msgs, self._tools(conv), False, "whole conversation")
        gp = self._apply(msgs, self._tools(conv), True, "whole conversation + generation prompt")
        if not gp.startswith(full):
            raise FormatError(self.name, "generation prompt does not extend the rendered conversation")
        return gp[len(full):]

    def render(self, conv: Conversation) -> list[Segment]:
        msgs = [message_to_openai(m) for m in conv.messages]
        tools = self._tools(conv)
        out: list[Segment] = []
        done = ""  # text up to the last fixed boundary
        run: list[tuple[int, str | None]] = []  # non-assistant messages since then, with their prefix text
        turn = 0

        def not_prefix(k: int, what: str):
            raise FormatError(self.name, "template is not prefix-stable",
                              f"rendering messages[:{k}]{what} does not start with the text of the earlier "
                              "messages, so no exact per-message mask exists")

        def flush_run(target: str, k: int, what: str) -> int | None:
            """Emit the non-assistant messages before `target` as segments. Their own boundaries are
            best effort (a template may render a message differently once the next one exists, e.g.
            Qwen's grouping of consecutive tool results); only boundaries that `target` confirms are
            used. Returns the first message not emitted (it shares the next segment), or None."""
            nonlocal done
            if not target.startswith(done):
                not_prefix(k, what)
            first = None
            for j, text in run:
                first = j if first is None else first
                if text is not None and len(text) > len(done) and text.startswith(done) and target.startswith(text):
                    out.append(Segment(text[len(done):], conv.messages[first].role, False, -1, first))
                    done, first = text, None
            run.clear()
            return first

        for k, m in enumerate(conv.messages):
            if m.role != "assistant":
                try:
                    run.append((k, self._apply(msgs[:k + 1], tools, False, f"messages[:{k + 1}]")))
                except FormatError:  # e.g. Llama 3.1 with tools cannot render a system-only prefix
                    run.append((k, None))
                continue
            gp = self._apply(msgs[:k], tools, True, f"messages[:{k}] + generation prompt")
            full = self._apply(msgs[:k + 1], tools, False, f"messages[:{k + 1}]")
            leftover = flush_run(gp, k, " with a generation prompt")
            if not full.startswith(gp):
                not_prefix(k + 1, " (ending in an assistant message)")
            header = gp[len(done):]
            body = full[len(gp):]
            end = max((body.rfind(s) + len(s) for s in self.stop_strings if body.rfind(s) >= 0), default=-1)
            if end < 0:
                raise FormatError(self.name, "assistant turn has no end-of-turn marker",
                                  f"message {k}: looked for {list(self.stop_strings)}")
            lost = [c.name for c in m.tool_calls if c.name not in body]
            if lost:  # e.g. SmolLM2's template prints only `content`
                raise FormatError(self.name, "chat template drops tool calls",
                                  f"message {k}: calls to {lost} do not appear in the rendered turn")
            if leftover is not None:  # earlier messages without a usable boundary share the header's segment
                out.append(Segment(header, conv.messages[leftover].role, False, -1, leftover))
                header = ""
            _assistant_segments(out, k, turn, header, body[:end], body[end:])
            turn += 1
            done = full
        if run:
            final = self._apply(msgs, tools, False, "whole conversation")
            leftover = flush_run(final, len(msgs), "")
            if leftover is not None and len(final) > len(done):
                out.append(Segment(final[len(done):], conv.messages[leftover].role, False, -1, leftover))
                done = final
        missing = [t.name for t in conv.tools if t.name not in done]
        if missing:
            raise FormatError(self.name, "chat template does not render the tools",
                              f"tool names {missing} do not appear in the rendered text")
        return [s for s in out if s.text]

    def parse(self, text: str) -> Reply:
        text = self.cut_at_stop(text)
        if "<tool_call>" in text:
            return HermesFormat().parse(text)
        s = text.strip()
        if s.startswith((PYTHON_TAG, "{")) or re.match(r"\[\s*\{", s):
            return Llama3JsonFormat().parse(s)
        if s.startswith("["):
            return PythonicFormat().parse(s)
        return Reply(_nonempty(text))
