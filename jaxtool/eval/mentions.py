"""Text tests the offline dialogue judge is built from: "does this reply refer to that parameter?",
"does it ask something?", "does it mention a value from the tool result?".

They must work for Korean (FunctionChat-Bench) and English (DiaTool-DPO builder data, API-Bank), so
they rely on plain substring / word-boundary matching, not on a tokenizer or a language model:

- Latin-script words match on word boundaries, case-insensitively (`date` does not match `update`),
  allowing a plural `s`/`es`.
- Hangul words match as substrings, because Korean attaches particles to the noun
  (`도착` is found in `도착지를`). Before matching, one trailing particle is stripped from a Hangul
  description word when at least two syllables remain (`위치를` -> `위치`).

What these tests cannot catch: paraphrases and synonyms (`어디로 가시나요?` does not mention
`도착 위치`), negation (`I don't need your city` mentions `city`), and values rewritten into another
form than the ones listed in `value_variants` (e.g. a price converted to another currency).
"""

from __future__ import annotations

import ast
import datetime as _dt
import json
import math
import re
from typing import Any, Iterable, Mapping

_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)

# One trailing particle/ending stripped from Hangul description words (longest first).
KOREAN_PARTICLES = (
    "에서는", "에서", "으로", "에게", "께서", "부터", "까지", "이나", "이라", "라는",
    "은", "는", "이", "가", "을", "를", "의", "에", "로", "와", "과", "도", "만", "나",
)

# Description words too generic to identify a parameter.
STOPWORDS = frozenset("""
a an the of for to in on at and or with by from as is are be being been that this these those which
who whom whose it its into about e g eg etc i.e ie such if else than then can may must should will
would not no yes format value values user users string number integer boolean object array list
specified specify given optional required default example examples name names type types e.g id
정보 등 예 예시 예를 사용자 사용자의 표현 그대로 추출 추출하세요 추출하여 형식 경우 또는 및 특정 해당 값 입력
""".split())

# Surface forms that turn a reply into a question or a request for information.
REQUEST_MARKERS = (
    "?", "？",
    "알려", "말씀", "주세요", "주시", "주실", "까요", "나요", "인가요", "습니까", "십니까", "필요",
    "please", "could you", "can you", "would you", "what", "which", "when", "where", "who", "how",
    "provide", "tell me", "let me know", "specify", "need",
)

# Tool-result leaf values that carry no content a reply could be checked against.
STATUS_WORDS = frozenset({"success", "successful", "ok", "done", "true", "false", "none", "null",
                          "성공", "완료"})


def is_hangul(word: str) -> bool:
    return bool(_HANGUL.search(word))


def words(text: str) -> list[str]:
    """Lower-cased letter/digit runs of `text` (underscores split words)."""
    return [w.lower() for w in _WORD.findall(text or "")]


def strip_particle(word: str) -> str:
    if not is_hangul(word):
        return word
    for p in KOREAN_PARTICLES:
        if word.endswith(p) and len(word) - len(p) >= 2:
            return word[: -len(p)]
    return word


def description_terms(description: str) -> set[str]:
    """Content words of a parameter description: particles stripped, stopwords and very short
    words dropped (Latin < 3 letters, Hangul < 2 syllables)."""
    out = set()
    for w in words(description):
        w = strip_particle(w)
        if w in STOPWORDS or w.isdigit():
            continue
        if (is_hangul(w) and len(w) >= 2) or (not is_hangul(w) and len(w) >= 3):
            out.add(w)
    return out


def name_variants(name: str) -> set[str]:
    """`stock_name` -> {"stock_name", "stock name", "stockname"}; camelCase is split the same way."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ").lower().split()
    out = {name.lower(), " ".join(spaced), "".join(spaced)}
    return {v for v in out if len(v) >= 3}


def contains_term(text: str, term: str) -> bool:
    """Is `term` in `text`? Hangul: substring; otherwise whole word(s), case-insensitive, plural allowed."""
    if not term:
        return False
    low = (text or "").lower()
    if is_hangul(term):
        return term in low
    pattern = r"(?<![^\W_])" + r"\s+".join(re.escape(p) for p in term.split()) + r"(?:s|es)?(?![^\W_])"
    return re.search(pattern, low) is not None


def asks_something(text: str) -> bool:
    """Does the reply read as a question or a request (see REQUEST_MARKERS)?"""
    low = (text or "").lower()
    return any(contains_term(low, m) if m.isascii() and m.isalpha() else m in low for m in REQUEST_MARKERS)


# --------------------------------------------------------------------------------------------
# parameters referred to by a text
# --------------------------------------------------------------------------------------------

def parameter_terms(parameters: Mapping[str, Mapping[str, Any]],
                    other_descriptions: Iterable[str] = ()) -> dict[str, set[str]]:
    """For each parameter of ONE tool: its name variants plus the description words that no other
    parameter of the tool uses, nor any text in `other_descriptions` (e.g. the parameter descriptions
    of the other tools offered). A word shared by `출발 위치` and `도착 위치` says nothing about which
    one is meant."""
    desc = {p: description_terms(str((spec or {}).get("description", ""))) for p, spec in parameters.items()}
    outside: set[str] = set()
    for d in other_descriptions:
        outside |= description_terms(d)
    out = {}
    for p in parameters:
        others = set(outside)
        for q, d in desc.items():
            if q != p:
                others |= d
        out[p] = name_variants(p) | (desc[p] - others)
    return out


def referred_parameters(text: str, parameters: Mapping[str, Mapping[str, Any]],
                        only: Iterable[str] | None = None, other_descriptions: Iterable[str] = ()) -> set[str]:
    """Names of the parameters (optionally restricted to `only`) that `text` refers to by name or by
    a distinctive description word (see `parameter_terms`)."""
    terms = parameter_terms(parameters, other_descriptions)
    keep = set(only) if only is not None else set(terms)
    return {p for p, ts in terms.items() if p in keep and any(contains_term(text, t) for t in ts)}


# --------------------------------------------------------------------------------------------
# values of a tool result mentioned by a reply
# --------------------------------------------------------------------------------------------

def parse_tool_content(content: str) -> Any:
    """A tool result as data: JSON, else a Python literal (FunctionChat writes `None`), else the text.
    `ast.literal_eval` only builds literals; nothing is executed."""
    if content is None:
        return None
    try:
        return json.loads(content)
    except (json.JSONDecodeError, TypeError):
        pass
    try:
        return ast.literal_eval(content)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return content


def leaf_values(obj: Any) -> list[Any]:
    """Scalar leaves of nested dicts/lists (dict keys are not values)."""
    if isinstance(obj, Mapping):
        return [v for x in obj.values() for v in leaf_values(x)]
    if isinstance(obj, (list, tuple)):
        return [v for x in obj for v in leaf_values(x)]
    return [obj]


def informative_values(tool_contents: Iterable[str]) -> list[Any]:
    """Leaf values of the tool results a completion should convey: no booleans/None, no status words,
    strings of at least 2 characters. A tool result that is plain text contributes its content words."""
    out: list[Any] = []
    for content in tool_contents:
        data = parse_tool_content(content)
        leaves = leaf_values(data) if not isinstance(data, str) else sorted(description_terms(data))
        for v in leaves:
            if v is None or isinstance(v, bool):
                continue
            if isinstance(v, str):
                s = v.strip()
                if len(s) < 2 or s.lower() in STATUS_WORDS:
                    continue
                out.append(s)
            elif isinstance(v, (int, float)) and math.isfinite(v):
                out.append(v)
    return out


def _number_forms(x: float) -> set[str]:
    forms = set()
    if float(x).is_integer():
        i = int(x)
        forms |= {str(i), f"{i:,}"}
    if isinstance(x, float):
        forms |= {repr(x), f"{x:,}"}
        for nd in (1, 2):
            r = round(x, nd)
            forms.add(f"{r:.{nd}f}".rstrip("0").rstrip("."))
    return {f for f in forms if f}


def value_variants(value: Any) -> set[str]:
    """Surface forms a reply may use for a tool-result value:
    numbers: integer and thousands-separated forms, float with 1-2 decimals (`33.0` -> `33`);
    ISO dates `YYYY-MM-DD`: also `M월 D일`, `M/D`, `<Month> D`, `D <Month>`;
    times `HH:MM[:SS]`: also `HH:MM`, `H시 M분` (24 h and 12 h), `H시` on the hour;
    other strings: the string itself (compared without whitespace, case-insensitively)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number_forms(value)
    s = str(value).strip()
    forms = {s}
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::\d{2})?)?", s)
    if m:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if 1 <= mo <= 12:
            month = _dt.date(2000, mo, 1).strftime("%B")
            forms |= {f"{mo}월 {d}일", f"{mo}/{d}", f"{month} {d}", f"{d} {month}"}
        if m.group(4):
            forms |= _time_forms(int(m.group(4)), int(m.group(5)))
    t = re.fullmatch(r"(\d{1,2}):(\d{2})(?::\d{2})?", s)
    if t:
        forms |= _time_forms(int(t.group(1)), int(t.group(2)))
    return forms


def _time_forms(h: int, mi: int) -> set[str]:
    forms = {f"{h:02d}:{mi:02d}", f"{h}:{mi:02d}"}
    for hh in {h, h - 12 if h > 12 else h}:
        forms.add(f"{hh}시 {mi}분" if mi else f"{hh}시")
    return forms


def mentions_value(text: str, value: Any) -> bool:
    """Does `text` contain one of `value_variants(value)`? Forms are compared case-insensitively and
    without whitespace; a form that starts/ends with a digit must not be part of a longer number."""
    low = (text or "").lower()
    compact = re.sub(r"\s+", "", low)
    for form in value_variants(value):
        f = re.sub(r"\s+", "", form.lower())
        if not f:
            continue
        numeric = re.fullmatch(r"[\d.,:/]+", f) is not None
        hay = low if numeric else compact  # keep spaces around bare numbers so "4 8" is not "48"
        pre = r"(?<![\d.,])" if f[0].isdigit() else ""
        post = r"(?![\d]|[.,]\d)" if f[-1].isdigit() else ""
        if re.search(pre + re.escape(f) + post, hay):
            return True
    return False
