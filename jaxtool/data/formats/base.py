"""The pieces every chat format shares: `Segment`, `Reply`, `FormatError`, the `ChatFormat` base
class and small text helpers (JSON decoding at a position, call-list text)."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Sequence

from jaxtool.data.calls import STRICT_JSON, ParseError, parse_json_calls, parse_pythonic, render_pythonic
from jaxtool.data.schema import Conversation, Message, ToolCall
from jaxtool.errors import DataError, json_error_text


SEGMENT_ROLES = ("system", "user", "assistant", "tool", "template")


class FormatError(DataError):
    """A conversation this format cannot express. `reason` is short and countable."""

    def __init__(self, fmt: str, reason: str, detail: str = ""):
        self.fmt = fmt
        self.reason = f"{fmt}: {reason}"
        self.detail = detail
        super().__init__(f"{self.reason}" + (f" ({detail})" if detail else ""))


@dataclasses.dataclass(frozen=True)
class Segment:
    """A piece of rendered text.

    text     : exact text (special tokens written literally, e.g. `<|im_end|>`)
    role     : the message role it renders ("system", "user", "assistant", "tool"), or "template"
               for text that belongs to no message (BOS, a format's fixed preamble)
    trainable: True only for assistant text the loss is taken on (incl. its end-of-turn marker)
    turn     : assistant-turn index (0, 1, ...) for trainable segments, -1 otherwise
    message  : index into `conv.messages` of the message it renders (-1 for "template" text and
               for the generation prompt of a turn that does not exist yet)
    """

    text: str
    role: str
    trainable: bool = False
    turn: int = -1
    message: int = -1


@dataclasses.dataclass(frozen=True)
class Reply:
    """What a model generated, parsed.

    content   : text meant for the user (None when there is none)
    tool_calls: the calls it made, in order
    error     : a `ParseError` when the output breaks the format (then `content` holds the raw text
                and `tool_calls` whatever parsed before the break); None when it parsed
    thought   : the ReAct `Thought:` text (`react` format only)
    """

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    error: ParseError | None = None
    thought: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_message(self) -> Message:
        """The reply as an assistant `Message` (thought kept in `meta["thought"]`)."""
        meta = {"thought": self.thought} if self.thought is not None else {}
        return Message("assistant", self.content, tool_calls=tuple(self.tool_calls), meta=meta)


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------

def _nonempty(text: str | None) -> str | None:
    return text if text else None


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


_JSON = STRICT_JSON


def _decode_json_at(text: str, pos: int) -> tuple[Any, int] | ParseError:
    try:
        return _JSON.raw_decode(text, pos)
    except json.JSONDecodeError as e:
        return ParseError(f"not JSON: {json_error_text(e)}", text)
    except RecursionError:
        return ParseError("not JSON: nested too deeply", text)
    except ValueError as e:  # NaN / Infinity, a 5000-digit integer
        return ParseError(f"not JSON: {str(e)[:80]}", text)


def _args_json(call: ToolCall) -> str:
    return json.dumps(dict(call.arguments), ensure_ascii=False)


def _call_list_text(calls: Sequence[ToolCall]) -> str:
    """Pythonic `[f(a=1)]` when every call can be written so; otherwise a JSON list (INFERRED:
    names like "Market Trends API" have no pythonic form, and losing the call is not an option)."""
    try:
        return render_pythonic(calls)
    except ValueError:
        return json.dumps([{"name": c.name, "arguments": dict(c.arguments)} for c in calls], ensure_ascii=False)


def _parse_call_list_text(body: str) -> list[ToolCall] | ParseError:
    s = body.strip()
    if s.startswith("{") or re.match(r"\[\s*\{", s):
        return parse_json_calls(s)
    return parse_pythonic(s)


class ChatFormat:
    """Base class. Subclasses implement `render`, `parse` and `generation_prompt`."""

    name: str = ""
    stop_strings: tuple[str, ...] = ()
    special_tokens: tuple[str, ...] = ()
    # Plain-text formats start a document themselves, so the tokenizer's own automatic prefix
    # (e.g. Llama-2's `<s>`) belongs in front; chat formats write their BOS in the text.
    prepend_bos: bool = False

    @classmethod
    def from_options(cls, tokenizer=None, **options) -> "ChatFormat":
        """The format as `get_format(name, tokenizer, **options)` builds it (formats that read the
        tokenizer override this)."""
        return cls(**options)

    def render(self, conv: Conversation) -> list[Segment]:
        raise NotImplementedError

    def generation_prompt(self, conv: Conversation) -> str:
        """Text that opens the next assistant turn after `conv`."""
        raise NotImplementedError

    def parse(self, text: str) -> Reply:
        raise NotImplementedError

    # -- derived -----------------------------------------------------------------------------
    def prompt_segments(self, conv: Conversation) -> list[Segment]:
        """`render(conv)` + the generation prompt of the next assistant turn, as segments."""
        if not conv.messages:
            raise FormatError(self.name, "empty conversation")
        if conv.messages[-1].role == "assistant":
            raise FormatError(self.name, "prompt needs a conversation ending in a user/tool message",
                              "the last message is an assistant turn")
        segs = list(self.render(conv))
        gp = self.generation_prompt(conv)
        if gp:
            segs.append(Segment(gp, "assistant", False, -1, -1))
        return segs

    def prompt(self, conv: Conversation) -> str:
        """The conversation so far + the generation prompt for the next assistant turn."""
        return "".join(s.text for s in self.prompt_segments(conv))

    def text(self, conv: Conversation) -> str:
        return "".join(s.text for s in self.render(conv))

    def cut_at_stop(self, text: str) -> str:
        """Text before the first stop string (the generator may or may not have removed it)."""
        cut = len(text)
        for s in self.stop_strings:
            if s:
                i = text.find(s)
                if 0 <= i < cut:
                    cut = i
        return text[:cut]

    def __repr__(self) -> str:
        return f"<ChatFormat {self.name}>"


def _assistant_segments(out: list[Segment], idx: int, turn: int, header: str, body: str, trailer: str = ""):
    if header:
        out.append(Segment(header, "assistant", False, -1, idx))
    out.append(Segment(body, "assistant", True, turn, idx))
    if trailer:
        out.append(Segment(trailer, "assistant", False, -1, idx))


def _split_leading_system(conv: Conversation) -> tuple[Message | None, list[tuple[int, Message]]]:
    msgs = list(enumerate(conv.messages))
    if msgs and msgs[0][1].role == "system":
        return msgs[0][1], msgs[1:]
    return None, msgs
