"""Token ids and loss masks for a conversation in a chat format.

`tokenize_conversation` renders the conversation into segments (`jaxtool.data.formats`) and
tokenizes **each segment separately** (`add_special_tokens=False`), concatenating the ids. Every id
therefore knows the segment it came from, so

- `loss_mask[t] = 1` exactly on tokens of trainable segments: the assistant's text and its
  end-of-turn marker (`<|im_end|>`, `<|eot_id|>`, ...); 0 on system, user and tool text and on all
  template scaffolding, including the generation prompt that opens an assistant turn;
- `turn_ids[t]` = index of the assistant turn the token belongs to (0, 1, ...), -1 elsewhere, so
  trajectory losses (DiaTool-DPO) can sum log-probabilities per turn.

No string search over the rendered text is involved. Tokenizing per segment equals tokenizing the
whole text whenever segment boundaries are also pre-tokenizer boundaries (true at special tokens and
newline/letter boundaries, which is where every format here cuts); the tests check this for each
format. Where a boundary falls inside what the tokenizer would merge (e.g. a message that itself
starts with newlines right after a header's "\\n\\n"), the per-segment ids are still what we train
on and what `prompt_ids` produces at inference, so training and generation agree.

Truncation is explicit: `truncation="drop"` drops an over-long example, `"drop_oldest_turns"`
removes whole history turns (a user message and everything up to the next one) from the front,
keeping system messages and tools, until it fits. Both are counted in a `TruncationReport`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from typing import Any, Iterable, Sequence

import numpy as np

from jaxtool.data.formats import ChatFormat, FormatError, Segment
from jaxtool.data.schema import Conversation
from jaxtool.errors import DataError

log = logging.getLogger(__name__)

TRUNCATION_POLICIES = ("drop", "drop_oldest_turns")


@dataclasses.dataclass
class TokenizedConversation:
    """One tokenized conversation. Arrays are int32, length n.

    input_ids  : token ids
    loss_mask  : 1 on trained (assistant) tokens, 0 elsewhere
    turn_ids   : assistant-turn index of each trained token, -1 elsewhere
    n_turns    : number of assistant turns kept
    turn_offset: assistant turns removed from the front by truncation (turn k here is turn
                 k + turn_offset of the original conversation)
    meta       : the conversation's meta (provenance), passed through
    """

    input_ids: np.ndarray
    loss_mask: np.ndarray
    turn_ids: np.ndarray
    n_turns: int
    turn_offset: int = 0
    meta: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def positions(self) -> np.ndarray:
        return np.arange(len(self), dtype=np.int32)

    @property
    def segment_ids(self) -> np.ndarray:
        """All ones: one example is one segment (packing renumbers them)."""
        return np.ones(len(self), dtype=np.int32)

    @property
    def n_trained(self) -> int:
        return int(self.loss_mask.sum())


@dataclasses.dataclass
class TruncationReport:
    """What tokenization kept, dropped (by reason) and shortened. `str(report)` prints a summary.

    on_bad_example: "error" raises on a conversation the format cannot express; "skip" counts it.
    """

    policy: str = "drop"
    max_length: int | None = None
    on_bad_example: str = "error"
    seen: int = 0
    kept: int = 0
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict = dataclasses.field(default_factory=dict)  # reason -> first detail
    truncated: int = 0  # examples that lost history turns
    turns_removed: int = 0  # history turns removed in total
    assistant_turns_removed: int = 0
    added_tokens: list = dataclasses.field(default_factory=list)

    def drop(self, reason: str, detail: str = "") -> None:
        self.dropped[reason] += 1
        self.examples.setdefault(reason, detail)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> dict:
        return {"seen": self.seen, "kept": self.kept, "dropped": dict(self.dropped), "truncated": self.truncated,
                "turns_removed": self.turns_removed, "assistant_turns_removed": self.assistant_turns_removed,
                "added_tokens": list(self.added_tokens), "policy": self.policy, "max_length": self.max_length}

    def __str__(self) -> str:
        lim = f"max_length={self.max_length}, " if self.max_length else ""
        lines = [f"tokenized {self.seen} conversations ({lim}truncation={self.policy}): "
                 f"{self.kept} kept, {self.n_dropped} dropped, {self.truncated} shortened "
                 f"({self.turns_removed} history turns removed)"]
        for reason, n in self.dropped.most_common():
            detail = self.examples.get(reason)
            lines.append(f"  {n:6d} × {reason}" + (f"  (first: {detail})" if detail else ""))
        if self.added_tokens:
            lines.append(f"  added {len(self.added_tokens)} special tokens to the tokenizer: {self.added_tokens}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# special tokens
# ----------------------------------------------------------------------------------------------

_VERIFIED: dict[int, tuple[Any, frozenset]] = {}


def _is_single_token(tokenizer, token: str) -> bool:
    ids = tokenizer.encode(token, add_special_tokens=False)
    return len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token


def ensure_special_tokens(tokenizer, tokens: Sequence[str], report: TruncationReport | None = None) -> list[str]:
    """Make every token in `tokens` a single, unsplittable token of `tokenizer`; add missing ones.

    Returns the tokens added (also recorded in `report.added_tokens` and logged): the model's
    embedding table must then grow to `len(tokenizer)`.
    """
    key = id(tokenizer)
    cached = _VERIFIED.get(key)
    if cached is not None and cached[0] is tokenizer and set(tokens) <= cached[1]:
        return []
    missing = [t for t in dict.fromkeys(tokens) if t and not _is_single_token(tokenizer, t)]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
        still = [t for t in missing if not _is_single_token(tokenizer, t)]
        if still:
            raise DataError(f"could not add {still} to the tokenizer as single tokens")
        log.warning("added %d special tokens %s to the tokenizer (vocab now %d): grow the model's embeddings",
                    len(missing), missing, len(tokenizer))
        if report is not None:
            report.added_tokens.extend(t for t in missing if t not in report.added_tokens)
    prev = cached[1] if cached is not None and cached[0] is tokenizer else frozenset()
    _VERIFIED[key] = (tokenizer, prev | frozenset(tokens))
    return missing


def auto_prefix_ids(tokenizer) -> list[int]:
    """Ids the tokenizer puts in front of every text by default (e.g. Llama-2's `<s>`); [] for most."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    n = len(with_special) - len(without)
    if n > 0 and with_special[n:n + len(without)] == without:
        return list(with_special[:n])
    return []


# ----------------------------------------------------------------------------------------------
# tokenization
# ----------------------------------------------------------------------------------------------

def control_markers(fmt: ChatFormat, tokenizer) -> tuple[str, ...]:
    """Strings that must not appear inside message text: the format's special tokens and token-like
    stop strings, and the tokenizer's special tokens. HF tokenizers turn such text into the control
    token itself, so a `<|im_end|>` inside a tool argument would teach the model to end its turn there."""
    marks = set(fmt.special_tokens)
    marks.update(s for s in fmt.stop_strings if s.startswith("<") and s.endswith(">"))
    marks.update(getattr(tokenizer, "all_special_tokens", ()) or ())
    return tuple(sorted(m for m in marks if m))


def find_control_text(conv: Conversation, markers: Sequence[str]) -> tuple[str, str] | None:
    """(marker, where) for the first marker found in any message text, tool argument or tool schema."""
    if not markers:
        return None
    for i, m in enumerate(conv.messages):
        texts = [("content", m.content or "")]
        texts += [(f"tool_calls[{j}]", c.name + json.dumps(dict(c.arguments), ensure_ascii=False))
                  for j, c in enumerate(m.tool_calls)]
        for field, text in texts:
            for mk in markers:
                if mk in text:
                    return mk, f"messages[{i}].{field}"
    for j, t in enumerate(conv.tools):
        spec = json.dumps(t.spec(), ensure_ascii=False)
        for mk in markers:
            if mk in spec:
                return mk, f"tools[{j}]"
    return None


def tokenize_segments(segments: Sequence[Segment], tokenizer, prefix_ids: Sequence[int] = ()) -> TokenizedConversation:
    """Ids, mask and turn ids of already-rendered segments (each tokenized on its own)."""
    texts = [s.text for s in segments]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    ids: list[int] = list(prefix_ids)
    mask: list[int] = [0] * len(prefix_ids)
    turns: list[int] = [-1] * len(prefix_ids)
    n_turns = set()
    for seg, seg_ids in zip(segments, encoded):
        ids.extend(seg_ids)
        if seg.trainable:
            mask.extend([1] * len(seg_ids))
            turns.extend([seg.turn] * len(seg_ids))
            if seg_ids:
                n_turns.add(seg.turn)
        else:
            mask.extend([0] * len(seg_ids))
            turns.extend([-1] * len(seg_ids))
    return TokenizedConversation(
        input_ids=np.asarray(ids, dtype=np.int32),
        loss_mask=np.asarray(mask, dtype=np.int32),
        turn_ids=np.asarray(turns, dtype=np.int32),
        n_turns=len(n_turns),
    )


def _prefix(fmt: ChatFormat, tokenizer) -> list[int]:
    return auto_prefix_ids(tokenizer) if fmt.prepend_bos else []


def _tokenize_once(conv: Conversation, fmt: ChatFormat, tokenizer) -> tuple[TokenizedConversation, list[Segment]]:
    segs = fmt.render(conv)
    ex = tokenize_segments(segs, tokenizer, _prefix(fmt, tokenizer))
    ex.meta = dict(conv.meta)
    return ex, segs


def history_turn_starts(conv: Conversation) -> list[int]:
    """Message indices where a history turn starts: the first non-system message, then every user
    message after it. Turn k spans [starts[k], starts[k+1])."""
    first = next((i for i, m in enumerate(conv.messages) if m.role != "system"), len(conv.messages))
    starts = [first]
    starts += [i for i, m in enumerate(conv.messages) if i > first and m.role == "user"]
    return starts


def drop_oldest_turns(conv: Conversation, n: int) -> Conversation:
    """`conv` without its first `n` history turns (system messages and tools kept)."""
    starts = history_turn_starts(conv)
    if n <= 0:
        return conv
    if n >= len(starts):
        cut = len(conv.messages)
    else:
        cut = starts[n]
    keep = [m for i, m in enumerate(conv.messages) if i < starts[0] or i >= cut]
    return conv.replace(messages=tuple(keep))


MAX_MESSAGE_CHARS = 1_000_000   # ~250k tokens: beyond any context window jaxtool trains
MAX_CHARS_PER_TOKEN = 64        # no tokenizer packs more characters into one token on real text


def _too_many_chars(conv: Conversation, max_length: int | None, truncation: str) -> str | None:
    """Why `conv` is too long to tokenize, judged from characters alone, or None. A message over
    `MAX_MESSAGE_CHARS`, or (with `max_length` and the "drop" policy) a conversation over
    `MAX_CHARS_PER_TOKEN * max_length` characters, cannot fit whatever the tokenizer."""
    total = 0
    for i, m in enumerate(conv.messages):
        n = len(m.content or "") + sum(len(str(c.arguments)) for c in m.tool_calls)
        if n > MAX_MESSAGE_CHARS:
            return f"message {i} has {n:,} characters > {MAX_MESSAGE_CHARS:,} (checked before tokenizing)"
        total += n
    if max_length is not None and truncation == "drop" and total > MAX_CHARS_PER_TOKEN * max_length:
        return (f"{total:,} characters cannot fit max_length {max_length} (> {MAX_CHARS_PER_TOKEN} characters "
                "per token; checked before tokenizing)")
    return None


def tokenize_conversation(conv: Conversation, fmt: ChatFormat, tokenizer, max_length: int | None = None,
                          truncation: str = "drop", report: TruncationReport | None = None
                          ) -> TokenizedConversation | None:
    """Tokenize `conv` in `fmt`. Returns None when the example is dropped (counted in `report`).

    max_length: longest allowed token count (None: no limit)
    truncation: "drop" — drop an over-long example; "drop_oldest_turns" — remove history turns
                from the front until it fits (dropped if even its last turn does not fit)
    report    : a `TruncationReport` to count into; without one, a conversation the format cannot
                express raises `DataError`
    """
    if truncation not in TRUNCATION_POLICIES:
        raise DataError(f"truncation must be one of {TRUNCATION_POLICIES}, got {truncation!r}")
    if max_length is not None and max_length < 2:
        raise DataError(f"max_length must be at least 2, got {max_length}")
    rep = report if report is not None else TruncationReport(policy=truncation, max_length=max_length)
    rep.seen += 1
    ensure_special_tokens(tokenizer, fmt.special_tokens, rep)
    too_long = _too_many_chars(conv, max_length, truncation)
    if too_long is not None:  # decided before tokenizing: a 50 MB message is never handed to the tokenizer
        rep.drop("too long", too_long)
        return None
    try:
        hit = find_control_text(conv, control_markers(fmt, tokenizer))
        if hit is not None:
            raise FormatError(fmt.name, "control token inside message text", f"{hit[0]!r} in {hit[1]}")
        ex, segs = _tokenize_once(conv, fmt, tokenizer)
    except DataError as e:
        reason = getattr(e, "reason", None) or type(e).__name__
        if report is None or report.on_bad_example == "error":
            raise
        rep.drop(reason, str(e))
        return None
    if max_length is None or len(ex) <= max_length:
        rep.kept += 1
        return ex
    if truncation == "drop":
        rep.drop("too long", f"{len(ex)} tokens > max_length {max_length}")
        return None
    return _drop_oldest_until_fits(conv, fmt, tokenizer, max_length, rep, ex, segs)


def _drop_oldest_until_fits(conv, fmt, tokenizer, max_length, rep, ex, segs):
    starts = history_turn_starts(conv)
    n_hist = len(starts)
    # Estimate how many turns to remove from per-message token counts, then verify by re-rendering
    # (a template may move text around when the first turn changes, e.g. Llama 3's tool block).
    seg_tokens = tokenizer([s.text for s in segs], add_special_tokens=False)["input_ids"]
    per_msg = collections.Counter()
    for s, ids in zip(segs, seg_tokens):
        per_msg[s.message] += len(ids)
    excess = len(ex) - max_length
    n, removed = 0, 0
    while n < n_hist - 1 and removed < excess:
        end = starts[n + 1]
        removed += sum(per_msg[i] for i in range(starts[n], end))
        n += 1
    n = max(n, 1)
    total_assistant = sum(m.role == "assistant" for m in conv.messages)
    while n < n_hist:
        shorter = drop_oldest_turns(conv, n)
        if not any(m.role == "assistant" for m in shorter.messages):
            break
        try:
            cand, _ = _tokenize_once(shorter, fmt, tokenizer)
        except DataError as e:  # e.g. the new first message cannot carry the tool block
            rep.drop(getattr(e, "reason", type(e).__name__), str(e))
            return None
        if len(cand) <= max_length:
            kept_assistant = sum(m.role == "assistant" for m in shorter.messages)
            cand.turn_offset = total_assistant - kept_assistant
            cand.meta = dict(conv.meta, dropped_history_turns=n)
            rep.kept += 1
            rep.truncated += 1
            rep.turns_removed += n
            rep.assistant_turns_removed += cand.turn_offset
            return cand
        n += 1
    rep.drop("too long even after dropping history", f"{len(ex)} tokens > max_length {max_length}")
    return None


def prompt_ids(conv: Conversation, fmt: ChatFormat, tokenizer) -> list[int]:
    """Token ids of `fmt.prompt(conv)`, tokenized segment by segment exactly as in training."""
    ensure_special_tokens(tokenizer, fmt.special_tokens)
    ex = tokenize_segments(fmt.prompt_segments(conv), tokenizer, _prefix(fmt, tokenizer))
    return ex.input_ids.tolist()


def tokenize_dataset(convs: Iterable[Conversation], fmt: ChatFormat, tokenizer, max_length: int | None = None,
                     truncation: str = "drop", report: TruncationReport | None = None) -> list[TokenizedConversation]:
    """Tokenize many conversations; dropped ones are counted in `report` (created if None)."""
    rep = report if report is not None else TruncationReport(policy=truncation, max_length=max_length)
    out = []
    for conv in convs:
        ex = tokenize_conversation(conv, fmt, tokenizer, max_length, truncation, rep)
        if ex is not None:
            out.append(ex)
    return out


def tokenize_pair(chosen: Conversation, rejected: Conversation, fmt: ChatFormat, tokenizer,
                  max_length: int | None = None, truncation: str = "drop", report: TruncationReport | None = None
                  ) -> tuple[TokenizedConversation, TokenizedConversation] | None:
    """A preference pair; dropped (None, counted once) when either side is dropped."""
    rep = report if report is not None else TruncationReport(policy=truncation, max_length=max_length)
    side = TruncationReport(policy=truncation, max_length=max_length, on_bad_example=rep.on_bad_example)
    side.added_tokens = rep.added_tokens
    c = tokenize_conversation(chosen, fmt, tokenizer, max_length, truncation, side)
    r = tokenize_conversation(rejected, fmt, tokenizer, max_length, truncation, side) if c is not None else None
    rep.seen += 1
    if c is None or r is None:
        for reason, n in side.dropped.items():
            rep.drop(f"pair: {reason}", side.examples.get(reason, ""))
        return None
    rep.kept += 1
    rep.truncated += int(side.truncated > 0)
    rep.turns_removed += side.turns_removed
    rep.assistant_turns_removed += side.assistant_turns_removed
    return c, r
