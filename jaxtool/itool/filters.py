"""App. B's filters of iTool's preference pairs (Zeng et al. 2025): drop a pair whose two steps are
too similar, whose Q gap is too small, or whose chosen step's Q is too low."""

from __future__ import annotations

import difflib
from typing import Callable, Sequence

from jaxtool.itool.pairs import Pair

def token_similarity(a: Sequence[int], b: Sequence[int]) -> float:
    """difflib's ratio of two token-id sequences: 2·matches / (len a + len b), 1.0 when equal."""
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, list(a), list(b), autojunk=False).ratio()


FILTER_REASONS = ("similar", "small_q_gap", "low_chosen_q")


def filter_pairs(pairs: Sequence[Pair], max_similarity: float = 0.95, min_q_gap: float = 0.1,
                 min_chosen_q: float = 0.3, similarity_fn: Callable[[Pair], float] | None = None
                 ) -> tuple[list[Pair], dict]:
    """App. B: drop a pair whose two steps are more than `max_similarity` similar, whose
    ΔQ = Q(chosen) − Q(rejected) is below `min_q_gap`, or whose chosen Q is below `min_chosen_q`.
    Each dropped pair is counted under its first failing reason, in that order; `similarity_fn(pair)`
    (e.g. on decoded text) replaces the default token-level `token_similarity`.
    Returns (kept pairs, {"kept": n, "similar": n, "small_q_gap": n, "low_chosen_q": n})."""
    counts = {"kept": 0, **{r: 0 for r in FILTER_REASONS}}
    kept = []
    for p in pairs:
        sim = similarity_fn(p) if similarity_fn is not None else token_similarity(p.chosen_ids, p.rejected_ids)
        if sim > max_similarity:
            counts["similar"] += 1
        elif p.q_gap < min_q_gap:
            counts["small_q_gap"] += 1
        elif p.q_chosen < min_chosen_q:
            counts["low_chosen_q"] += 1
        else:
            counts["kept"] += 1
            kept.append(p)
    return kept, counts

