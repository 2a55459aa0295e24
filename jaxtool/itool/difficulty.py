"""iTool's easy → medium → hard split of the training set (Zeng et al. 2025, §3.1).

The paper splits the tool-use data evenly into three levels "by (1) the number of candidate tools,
(2) the string length of the toolset, (3) the number of tool calls in the answer" without saying
how the three combine. Here they combine by **rank sum**:

    score(x) = Σ_c  rank_c(x) / n        c ∈ {n_tools, toolset_chars, n_calls}

where `rank_c` is x's 1-based rank among the n examples on criterion c (tied values share their
average rank). Examples are sorted by (score, id) and cut into three consecutive groups whose sizes
differ by at most one (the first `n mod 3` groups get the extra example). Each criterion weighs the
same, whatever its scale, and the split is

- deterministic: it depends on the examples' criteria and ids only, not on their order;
- monotone: an example at least as hard on every criterion and harder on one (it *dominates*)
  has a strictly larger score, so it never lands in an easier level.

A lexicographic order was the other candidate; it lets the toolset length (almost always distinct)
decide nearly everything and the call count almost nothing. `DifficultySplit.summary()` records the
thresholds the split produced: each level's score range and each criterion's min / median / max.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

CRITERIA = ("n_tools", "toolset_chars", "n_calls")
LEVELS = ("easy", "medium", "hard")


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing the average of the ranks they span: `scipy.stats.rankdata`
    (method "average"; scipy comes with jax)."""
    from scipy.stats import rankdata

    return rankdata(np.asarray(values, dtype=np.float64), method="average").astype(np.float64)


def criteria_of(example) -> tuple[int, int, int]:
    return (example.n_tools, example.toolset_chars, example.n_calls)


@dataclasses.dataclass
class DifficultySplit:
    levels: dict[str, list]           # level -> examples, in (score, id) order
    scores: dict[str, float]          # example id -> rank-sum score
    criteria: dict[str, tuple]        # example id -> (n_tools, toolset_chars, n_calls)

    def level_of(self, example_id: str) -> str:
        for name, exs in self.levels.items():
            if any(e.id == example_id for e in exs):
                return name
        raise KeyError(example_id)

    def summary(self) -> dict:
        """Per level: size, score range, and min / median / max of each criterion."""
        out = {"method": "rank sum of (n_tools, toolset_chars, n_calls), cut into even thirds", "levels": {}}
        for name, exs in self.levels.items():
            entry: dict = {"n": len(exs)}
            if exs:
                sc = [self.scores[e.id] for e in exs]
                entry["score"] = [round(min(sc), 4), round(max(sc), 4)]
                for k, crit in enumerate(CRITERIA):
                    vals = np.array([self.criteria[e.id][k] for e in exs], np.float64)
                    entry[crit] = {"min": float(vals.min()), "median": float(np.median(vals)), "max": float(vals.max())}
            out["levels"][name] = entry
        return out


def split_by_difficulty(examples: Sequence, criteria: Callable = criteria_of) -> DifficultySplit:
    """Split `examples` (objects with `.id`) into even easy / medium / hard thirds by rank sum."""
    n = len(examples)
    crit = {e.id: tuple(criteria(e)) for e in examples}
    if len(crit) != n:
        raise ValueError("example ids must be unique")
    if n == 0:
        return DifficultySplit({name: [] for name in LEVELS}, {}, {})
    table = np.array([crit[e.id] for e in examples], np.float64).reshape(n, len(CRITERIA))
    score = sum(average_ranks(table[:, k]) for k in range(table.shape[1])) / n
    scores = {e.id: float(s) for e, s in zip(examples, score)}
    ordered = sorted(examples, key=lambda e: (scores[e.id], e.id))
    sizes = [n // 3 + (1 if k < n % 3 else 0) for k in range(3)]
    levels, start = {}, 0
    for name, size in zip(LEVELS, sizes):
        levels[name] = ordered[start:start + size]
        start += size
    return DifficultySplit(levels, scores, crit)
