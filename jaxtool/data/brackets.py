"""One quote-aware bracket scanner for call text written by models and datasets.

BFCL's Java/JavaScript decoder (`jaxtool.eval.bfcl.decode`) splits an argument list at top-level
commas; the ToolACE reader (`jaxtool.data.sources.toolace`) finds the parenthesis that closes a
call. Both walk the text the same way: characters inside a quoted string (a backslash escapes the
next character) are skipped, `(`, `[`, `{` open a level that only the matching closer ends.
Nothing is evaluated.
"""

from __future__ import annotations

from typing import Iterator, Sequence

PAIRS = {"(": ")", "[": "]", "{": "}"}
PY_QUOTES = ("'", '"')
JS_QUOTES = ("'", '"', "`")   # JavaScript's template literals too


class Unbalanced(Exception):
    """A closer that does not match the open bracket (internal to this module)."""


def spans(text: str, start: int = 0, quotes: Sequence[str] = PY_QUOTES) -> Iterator[tuple[int, int, str]]:
    """(begin, end, kind) runs that cover `text[start:]` in order: kind "text" outside quotes,
    "quoted" for a string literal from its opening to its closing quote (a backslash inside escapes
    the next character), "unclosed" for a quote never closed (it runs to the end)."""
    i = begin = start
    while i < len(text):
        if text[i] not in quotes:
            i += 1
            continue
        if i > begin:
            yield begin, i, "text"
        quote, j = text[i], i + 1
        while j < len(text) and text[j] != quote:
            j += 2 if text[j] == "\\" else 1
        if j >= len(text):
            yield i, len(text), "unclosed"
            return
        yield i, j + 1, "quoted"
        i = begin = j + 1
    if begin < len(text):
        yield begin, len(text), "text"


def _walk(text: str, start: int, quotes: Sequence[str]) -> Iterator[tuple[int, str, int]]:
    """(index, char, depth after the char) for every character outside quotes, from `start`.
    Raises `Unbalanced` on a closer without its opener; a quote left open ends the walk with
    depth -1 reported at index len(text)."""
    stack: list[str] = []
    for begin, end, kind in spans(text, start, quotes):
        if kind == "unclosed":
            yield len(text), "", -1
            return
        if kind == "quoted":
            continue
        for i in range(begin, end):
            ch = text[i]
            if ch in PAIRS:
                stack.append(PAIRS[ch])
            elif ch in ")]}":
                if not stack or stack.pop() != ch:
                    raise Unbalanced(i)
            yield i, ch, len(stack)
    yield len(text), "", len(stack)


def split_top_level(text: str, sep: str = ",", quotes: Sequence[str] = JS_QUOTES) -> list[str] | None:
    """`text` split at `sep` outside brackets and quotes; None when brackets or quotes do not balance."""
    parts, begin = [], 0
    try:
        for i, ch, depth in _walk(text, 0, quotes):
            if i == len(text):
                if depth != 0:
                    return None
            elif ch == sep and depth == 0:
                parts.append(text[begin:i])
                begin = i + 1
    except Unbalanced:
        return None
    parts.append(text[begin:])
    return parts


def matching_close(text: str, open_at: int, quotes: Sequence[str] = PY_QUOTES) -> int:
    """Index of the bracket that closes the one at `open_at`; -1 when it is never closed or a
    closer does not match its opener."""
    if open_at >= len(text) or text[open_at] not in PAIRS:
        return -1
    try:
        for i, ch, depth in _walk(text, open_at, quotes):
            if i < len(text) and depth == 0 and ch in ")]}":
                return i
    except Unbalanced:
        return -1
    return -1


__all__ = ["JS_QUOTES", "PAIRS", "PY_QUOTES", "matching_close", "split_top_level"]
