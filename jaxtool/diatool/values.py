"""Finding an argument value inside a user utterance — the basis of the `rules` augmenter (which
removes values) and of the `llm` augmenter's checks (a removed value must be gone, an answered one
present).

Surface variants searched, case-insensitively:

- strings: the stripped string; a string that is a number also gets the number variants below;
- integers: ``1500``, and for |n| >= 1000 also ``1,500`` and ``1 500``;
- floats: ``2.5`` (Python's shortest repr), ``2.50`` (two decimals), ``1,234.5`` (thousands
  separator); an integral float ``3.0`` is searched as ``3`` and ``3.0`` (and its integer variants);
- booleans, null, and empty strings cannot be located (a sentence rarely spells them out);
- lists / objects: each scalar element / leaf separately (`mentions_any`, `mentions_all`);
  `find_spans` locates scalars only.

Boundaries: a match may not be glued to an ASCII letter or digit on a side where the match itself
ends in one (so ``5`` is not found in ``15`` or ``5th``, ``Rome`` not in ``Romeo``), nor continue a
number through ``.``/``,`` (``5`` is not found in ``5.5``). Non-ASCII neighbours are allowed, so a
Korean noun followed by its particle (``서울에서``) is found.

Removal (`find_spans`) widens a match over a pair of quotes wrapping it (``"Paris"``, ``'Paris'``,
“Paris”, ‘Paris’, 「Paris」) and, for numbers, over a currency sign right before it (``$100``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterator

_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "`": "`", "「": "」", "«": "»"}
_CURRENCY = "$€£¥₩₹"
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")


def _int_variants(n: int) -> list[str]:
    out = [str(n)]
    if abs(n) >= 1000:
        out += [f"{n:,}", f"{n:,}".replace(",", " ")]
    return out


def _float_variants(x: float) -> list[str]:
    if not math.isfinite(x):
        return []
    if x.is_integer():
        return _int_variants(int(x)) + [repr(x)]
    out = [repr(x), f"{x:.2f}"]
    if abs(x) >= 1000:
        out.append(f"{x:,}")
    return list(dict.fromkeys(out))


def value_variants(value: Any) -> list[str] | None:
    """Surface strings to search for a scalar value, longest first; None = not locatable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        out = _int_variants(value)
    elif isinstance(value, float):
        out = _float_variants(value)
    elif isinstance(value, str):
        v = value.strip()
        if not v:
            return None
        out = [v]
        if _NUMBER.fullmatch(v):
            num = float(v)
            out += _int_variants(int(num)) if num.is_integer() and "." not in v else _float_variants(num)
    else:
        return None
    out = [o for o in dict.fromkeys(out) if o]
    return sorted(out, key=len, reverse=True) or None


def _ascii_alnum(ch: str) -> bool:
    return bool(ch) and ch.isascii() and ch.isalnum()


def _boundary_ok(text: str, s: int, e: int) -> bool:
    before = text[s - 1] if s > 0 else ""
    after = text[e] if e < len(text) else ""
    if _ascii_alnum(text[s]) and _ascii_alnum(before):
        return False
    if _ascii_alnum(text[e - 1]) and _ascii_alnum(after):
        return False
    if text[s].isdigit() and before in (".", ",") and s >= 2 and text[s - 2].isdigit():
        return False
    if text[e - 1].isdigit() and after in (".", ",") and e + 1 < len(text) and text[e + 1].isdigit():
        return False
    return True


def find_spans(text: str, value: Any) -> list[tuple[int, int, str]]:
    """Non-overlapping occurrences of scalar `value` in `text` as ``(start, end, surface)``, sorted.

    ``start:end`` covers wrapping quotes / a currency sign (what removal should cut); `surface` is
    the matched variant as written in the text (what a user would repeat when answering).
    """
    variants = value_variants(value)
    if not variants:
        return []
    numeric = isinstance(value, (int, float)) or bool(_NUMBER.fullmatch(str(value).strip()))
    spans: list[tuple[int, int, str]] = []
    for var in variants:
        for m in re.finditer(re.escape(var), text, flags=re.IGNORECASE):
            s, e = m.span()
            if not _boundary_ok(text, s, e) or any(s < te and ts < e for ts, te, _ in spans):
                continue
            surface = text[s:e]
            if s > 0 and e < len(text) and _QUOTES.get(text[s - 1]) == text[e]:
                s, e = s - 1, e + 1
            elif numeric and s > 0 and text[s - 1] in _CURRENCY:
                s -= 1
            spans.append((s, e, surface))
    return sorted(spans)


def scalar_leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from scalar_leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from scalar_leaves(v)
    else:
        yield value


def checkable(value: Any) -> bool:
    """Whether any part of `value` can be looked for in text."""
    return any(value_variants(v) for v in scalar_leaves(value))


def mentions_any(text: str, value: Any) -> bool:
    """Some locatable part of `value` occurs in `text` (False when nothing is locatable)."""
    return any(find_spans(text, v) for v in scalar_leaves(value) if value_variants(v))


def mentions_all(text: str, value: Any) -> bool:
    """Every locatable part of `value` occurs in `text` (True when nothing is locatable)."""
    return all(find_spans(text, v) for v in scalar_leaves(value) if value_variants(v))


def remove_spans(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Cut ``(start, end, replacement)`` spans out of `text` (non-overlapping). An empty replacement
    also drops one neighbouring space so no double space is left."""
    out = text
    for s, e, rep in sorted(spans, reverse=True):
        if not rep:
            if s > 0 and out[s - 1] == " " and (e >= len(out) or out[e] in " ,.!?;:"):
                s -= 1
            elif e < len(out) and out[e] == " ":
                e += 1
        out = out[:s] + rep + out[e:]
    return out
