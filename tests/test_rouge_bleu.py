"""ROUGE-1/2/L against the `rouge` 1.0.1 package (the scorer API-Bank calls) and hand-worked values;
BLEU-4 against values computed by hand from the definition (SacreBLEU defaults: 13a, exp smoothing)."""

import math
import random

import pytest

from jaxtool.eval.bleu import corpus_bleu, sentence_bleu, tokenize_13a
from jaxtool.eval.rouge import rouge_l_apibank, rouge_n_apibank


def test_rouge_n_hand_worked():
    # hyp words: the cat sat on the mat -> distinct unigrams {the, cat, sat, on, mat} (5)
    # ref words: the cat is on the mat  -> {the, cat, is, on, mat} (5); overlap 4 -> P = R = 0.8
    s = rouge_n_apibank("the cat sat on the mat", "the cat is on the mat", 1)
    assert (s.precision, s.recall) == (pytest.approx(0.8), pytest.approx(0.8))
    assert s.f1 == pytest.approx(2 * 0.64 / (1.6 + 1e-8))
    # bigrams: hyp {the cat, cat sat, sat on, on the, the mat}; ref {the cat, cat is, is on, on the, the mat}
    s2 = rouge_n_apibank("the cat sat on the mat", "the cat is on the mat", 2)
    assert (s2.precision, s2.recall) == (pytest.approx(3 / 5), pytest.approx(3 / 5))
    # sentences are chained: "a b. c" has bigrams (a b), (b c)
    s3 = rouge_n_apibank("a b. c", "b c", 2)
    assert (s3.precision, s3.recall) == (pytest.approx(1 / 2), pytest.approx(1.0))
    assert rouge_n_apibank("", "x y", 1).f1 == 0.0
    assert rouge_n_apibank("x", "x y", 2).f1 == 0.0  # no hypothesis bigram


def test_rouge_matches_the_rouge_package():
    """Differential: every metric of `rouge.Rouge().get_scores` on random texts with periods,
    repeats and case differences (the package raises on empty texts; API-Bank scores those 0)."""
    try:
        from rouge import Rouge
    except ImportError:
        pytest.skip("the `rouge` package (1.0.1) is not installed: pip install 'rouge==1.0.1' "
                    "(it is in setup.py's test extra)")
    rng = random.Random(7)
    vocab = ["the", "The", "cat", "sat", "on", "mat", "a", "is", "33", "33.0", "ok", "AI", "x"]
    scorer = Rouge()
    n = 0
    for _ in range(400):
        def text():
            words = [rng.choice(vocab) for _ in range(rng.randint(1, 14))]
            for i in range(1, len(words)):
                if rng.random() < 0.12:
                    words[i - 1] += "."
            return " ".join(words)
        hyp, ref = text(), text()
        if not [p for p in hyp.split(".") if p.strip()] or not [p for p in ref.split(".") if p.strip()]:
            continue
        want = scorer.get_scores(hyp, ref)[0]
        for key, got in (("rouge-1", rouge_n_apibank(hyp, ref, 1)), ("rouge-2", rouge_n_apibank(hyp, ref, 2)),
                         ("rouge-l", rouge_l_apibank(hyp, ref))):
            assert got.f1 == pytest.approx(want[key]["f"], abs=1e-9), (key, hyp, ref)
            assert got.precision == pytest.approx(want[key]["p"], abs=1e-9), (key, hyp, ref)
            assert got.recall == pytest.approx(want[key]["r"], abs=1e-9), (key, hyp, ref)
        n += 1
    assert n > 300


def test_tokenize_13a():
    assert tokenize_13a("Hello, world. It costs 3.50 pounds-ish (yes)!") == \
        ["Hello", ",", "world", ".", "It", "costs", "3.50", "pounds-ish", "(", "yes", ")", "!"]
    assert tokenize_13a("at 10-12 &amp; more") == ["at", "10", "-", "12", "&", "more"]


def test_bleu_hand_worked():
    # the cat sat on a mat / the cat sat on the mat: p1 5/6, p2 3/5, p3 2/4, p4 1/3, BP 1
    assert sentence_bleu("the cat sat on a mat", "the cat sat on the mat") == \
        pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    # exp smoothing: p1 3/4, p2 1/3, p3 0 -> 1/(2*2), p4 0 -> 1/(4*1); BP exp(1 - 5/4)
    assert sentence_bleu("a b c d", "a b x d y") == \
        pytest.approx(100 * math.exp(1 - 5 / 4) * (3 / 4 * 1 / 3 * 1 / 4 * 1 / 4) ** 0.25)
    # an order without any hypothesis n-gram gives 0
    assert sentence_bleu("the cat", "the cat sat") == 0.0
    # corpus statistics are summed, not averaged: (5+2)/(6+2), (3+1)/(5+1), 2/4, 1/3
    assert corpus_bleu(["the cat sat on a mat", "hello there"], ["the cat sat on the mat", "hello there"]) == \
        pytest.approx(100 * (7 / 8 * 4 / 6 * 2 / 4 * 1 / 3) ** 0.25)
    assert corpus_bleu(["x"], ["x"]) == 0.0 and corpus_bleu([""], ["a b"]) == 0.0
    with pytest.raises(ValueError):
        corpus_bleu(["a"], [])
