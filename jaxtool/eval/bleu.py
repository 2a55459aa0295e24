"""BLEU-4 (Papineni et al. 2002) with SacreBLEU's defaults, written from their definitions.

`corpus_bleu(hyps, refs)` is the number SacreBLEU's `corpus_bleu(hyps, [refs]).score` reports with
its defaults (Post 2018, "A Call for Clarity in Reporting BLEU Scores"; sacrebleu `BLEU`:
`tokenize="13a"`, `smooth_method="exp"`, one reference per hypothesis), on a 0-100 scale:

- tokenisation `13a` (`tokenize_13a`, mteval-v13a's rules): drop `<skipped>`, join `-\\n`, turn
  newlines into spaces, unescape `&quot; &amp; &lt; &gt;`, then put spaces around punctuation
  characters, around `.`/`,` except between digits, and after a `-` that follows a digit; case kept;
- n-gram matches are clipped by the reference counts and summed over the corpus (n = 1..4), as are the
  hypothesis length c and the reference length r;
- smoothing `exp` (mteval's): the k-th order whose match count is 0 gets precision
  1 / (2^k · total n-grams of that order) instead of 0; an order with no n-grams at all makes the
  score 0;
- brevity penalty exp(1 − r / c) when c < r (0 when c = 0); BLEU = BP · exp(mean of log precisions).

The MultiWOZ evaluator (`jaxtool.eval.multiwoz_e2e`) uses it as Tomiinek/MultiWOZ_Evaluation's
`get_bleu` does (SacreBLEU corpus BLEU over all system turns); API-Bank's responses report it beside
ROUGE (`jaxtool.eval.apibank`). `sentence_bleu` is the same computation on one pair.
"""

from __future__ import annotations

import collections
import math
import re
from typing import Sequence

_PUNCT = re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])")
_PERIOD_COMMA_AFTER = re.compile(r"([^0-9])([\.,])")
_PERIOD_COMMA_BEFORE = re.compile(r"([\.,])([^0-9])")
_DASH = re.compile(r"([0-9])(-)")


def tokenize_13a(line: str) -> list[str]:
    """mteval-v13a tokenisation (module docstring)."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    line = _PUNCT.sub(r" \1 ", line)
    line = _PERIOD_COMMA_AFTER.sub(r"\1 \2 ", line)
    line = _PERIOD_COMMA_BEFORE.sub(r" \1 \2", line)
    line = _DASH.sub(r"\1 \2 ", line)
    return line.split()


def _ngrams(tokens: Sequence[str], n: int) -> collections.Counter:
    return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu_stats(hyp: str, ref: str, max_order: int = 4) -> tuple[int, int, list[int], list[int]]:
    """(hypothesis length, reference length, clipped matches per order, hypothesis n-grams per order)."""
    h, r = tokenize_13a(hyp), tokenize_13a(ref)
    correct, total = [], []
    for n in range(1, max_order + 1):
        hc, rc = _ngrams(h, n), _ngrams(r, n)
        correct.append(sum(min(c, rc[g]) for g, c in hc.items()))
        total.append(max(0, len(h) - n + 1))
    return len(h), len(r), correct, total


def _score(sys_len: int, ref_len: int, correct: Sequence[int], total: Sequence[int]) -> float:
    max_order = len(correct)
    precisions = [0.0] * max_order
    smooth = 1.0
    for k in range(max_order):
        if total[k] == 0:
            break
        if correct[k] == 0:
            smooth *= 2
            precisions[k] = 100.0 / (smooth * total[k])
        else:
            precisions[k] = 100.0 * correct[k] / total[k]
    if sys_len == 0 or min(precisions) <= 0:
        return 0.0
    bp = 1.0 if sys_len >= ref_len else math.exp(1 - ref_len / sys_len)
    return bp * math.exp(sum(math.log(p) for p in precisions) / max_order)


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], max_order: int = 4) -> float:
    """Corpus BLEU on a 0-100 scale (module docstring); one reference per hypothesis."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    sys_len = ref_len = 0
    correct, total = [0] * max_order, [0] * max_order
    for h, r in zip(hyps, refs):
        c, rl, cor, tot = bleu_stats(h, r, max_order)
        sys_len += c
        ref_len += rl
        correct = [a + b for a, b in zip(correct, cor)]
        total = [a + b for a, b in zip(total, tot)]
    return _score(sys_len, ref_len, correct, total)


def sentence_bleu(hyp: str, ref: str, max_order: int = 4) -> float:
    return corpus_bleu([hyp], [ref], max_order)
