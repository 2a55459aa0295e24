"""ROUGE-1, ROUGE-2 and ROUGE-L between a generated reply and a reference.

`rouge_n_apibank(hyp, ref, n)` — ROUGE-N as the `rouge` package (pltrdy/rouge 1.0.1, the scorer
API-Bank's evaluator calls) computes it: the texts are split into "sentences" at every "." as below,
the sentences' words are chained into one word list (so n-grams run across sentence boundaries), and
the n-grams are counted *distinct* (a set): P = |H ∩ R| / |H|, R = |H ∩ R| / |R| with H, R the sets
of hypothesis / reference n-grams, F = 2 P R / (P + R + 1e-8); an empty n-gram set gives 0.
Lin (2004), section 2, counts n-gram *occurrences* (clipped); the package's distinct-set counting
is what API-Bank's (and CALM's Table 3) numbers use, so it is the default here.
`tests/test_rouge_differential.py` checks all three against the installed `rouge` package.

ROUGE-L, two variants, both written from the definitions in Lin (2004), "ROUGE: A Package for Automatic
Evaluation of Summaries", section 3:

`rouge_l(hyp, ref)` — sentence-level ROUGE-L. Tokens are whitespace-separated words, compared as
they are (no lower-casing, no punctuation stripping; pass `lowercase=True` to fold case).
With LCS = length of the longest common subsequence of the two token lists::

    P = LCS / len(hyp)      R = LCS / len(ref)      F1 = 2 P R / (P + R)

`rouge_l_apibank(hyp, ref)` — the number API-Bank's evaluator reports. API-Bank scores replies with
`rouge.Rouge().get_scores(hyp, ref)[0]["rouge-l"]["f"]` from the `rouge` package (pltrdy/rouge 1.0.1),
whose ROUGE-L is Lin's *summary-level* variant with two particularities that change the number:

1. both texts are split into "sentences" at every ".", each sentence is whitespace-normalised and
   split on single spaces (case kept); empty pieces are dropped;
2. counts are over *distinct* words (`exclusive=True`): m and n are the numbers of distinct words in
   the reference and the hypothesis, and the union-LCS hit count is the number of distinct words in
   the union of the LCS word sets, accumulated over reference sentences (a word already counted for
   an earlier reference sentence is not counted again);
3. F = 2 P R / (P + R + 1e-8).

The LCS of two sentences is reconstructed by the usual back-trace that, on a tie, moves left in the
hypothesis (this decides *which* LCS's words are collected when several exist). An empty hypothesis
scores 0.0 (API-Bank's own loop assigns 0 to empty output instead of calling the scorer).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class RougeScore:
    precision: float
    recall: float
    f1: float


def lcs_table(x: Sequence, y: Sequence) -> list[list[int]]:
    """`t[i][j]` = length of the LCS of `x[:i]` and `y[:j]` (O(len(x)·len(y)) dynamic programme)."""
    t = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i in range(1, len(x) + 1):
        xi = x[i - 1]
        row, prev = t[i], t[i - 1]
        for j in range(1, len(y) + 1):
            row[j] = prev[j - 1] + 1 if xi == y[j - 1] else max(prev[j], row[j - 1])
    return t


def lcs_length(x: Sequence, y: Sequence) -> int:
    return lcs_table(x, y)[len(x)][len(y)]


def lcs_tokens(x: Sequence, y: Sequence) -> list:
    """One longest common subsequence (as elements of `x`), back-tracing from the end; on a tie
    between dropping the last element of `x` or of `y`, the one of `y` is dropped."""
    t = lcs_table(x, y)
    i, j, out = len(x), len(y), []
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1]:
            out.append(x[i - 1])
            i, j = i - 1, j - 1
        elif t[i - 1][j] > t[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return out[::-1]


def rouge_l(hyp: str, ref: str, *, lowercase: bool = False) -> RougeScore:
    """Sentence-level ROUGE-L over whitespace tokens (see module docstring)."""
    h = (hyp.lower() if lowercase else hyp).split()
    r = (ref.lower() if lowercase else ref).split()
    if not h or not r:
        return RougeScore(0.0, 0.0, 0.0)
    hits = lcs_length(r, h)
    p, rec = hits / len(h), hits / len(r)
    f = 0.0 if hits == 0 else 2 * p * rec / (p + rec)
    return RougeScore(p, rec, f)


def _sentences(text: str) -> list[list[str]]:
    """pltrdy-style sentence split: at '.', drop empty pieces, normalise spaces, split on ' '."""
    return [" ".join(piece.split()).split(" ") for piece in text.split(".") if len(piece) > 0]


def rouge_l_apibank(hyp: str, ref: str) -> RougeScore:
    """Summary-level, distinct-word ROUGE-L exactly as API-Bank's scorer computes it (module docstring)."""
    hs, rs = _sentences(hyp), _sentences(ref)
    if not hs or not rs:
        return RougeScore(0.0, 0.0, 0.0)
    m = len({w for s in rs for w in s})
    n = len({w for s in hs for w in s})
    union: set[str] = set()
    for r_sent in rs:
        for h_sent in hs:
            union.update(lcs_tokens(r_sent, h_sent))
    hits = len(union)
    rec, p = hits / m, hits / n
    return RougeScore(p, rec, 2.0 * (p * rec) / (p + rec + 1e-8))


def rouge_n_apibank(hyp: str, ref: str, n: int) -> RougeScore:
    """ROUGE-N (distinct n-grams over the chained sentences) as the `rouge` package computes it."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    hs, rs = _sentences(hyp), _sentences(ref)
    if not hs or not rs:
        return RougeScore(0.0, 0.0, 0.0)

    def grams(sents: list[list[str]]) -> set[tuple[str, ...]]:
        words = [w for s in sents for w in s]
        return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}

    h, r = grams(hs), grams(rs)
    overlap = len(h & r)
    p = overlap / len(h) if h else 0.0
    rec = overlap / len(r) if r else 0.0
    return RougeScore(p, rec, 2.0 * (p * rec) / (p + rec + 1e-8))
