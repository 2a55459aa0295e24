"""Bootstrap confidence intervals for dialogue-flow scores, resampling whole dialogues.

The turns of one held-out dialogue are not independent (the same tools, the same user, one
trajectory family built from one seed), so the unit resampled is the dialogue — a *cluster*
bootstrap: draw `n` dialogues with replacement, pool their turns, recompute the score; repeat `B`
times; the 95% interval is the 2.5th and 97.5th percentile of the `B` scores (percentile method,
Efron & Tibshirani 1993, ch. 13).

All arms are evaluated on the same turns, so one set of draws serves every arm and the
*difference* between two arms is bootstrapped per draw as well (a paired comparison: an interval
for "DiaTool-DPO minus SFT-only" that excludes 0 is evidence of a difference at that level, two
overlapping marginal intervals are not evidence of none).

Scores (as `jaxtool.eval.dialog.summarise`): per turn type the pass rate; ``micro`` = passed turns /
all turns; ``macro`` = mean of the per-type pass rates over the types present in the resample.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

TYPES = ("call", "slot", "relevance", "completion")
METRICS = TYPES + ("micro", "macro")


def counts(records: Sequence[Mapping], unit_of: Mapping[int, str], units: Sequence[str],
           value: str = "passed") -> np.ndarray:
    """``[n_units, n_types, 2]``: passed and total turns of each turn type per dialogue.
    `unit_of` maps a record's ``conv`` index to its dialogue id; `units` fixes the order.
    `value`: the record field summed in the first column (``passed``, or a per-turn number such as
    ``p_call``: then the "rate" of a type is the mean of that number over its turns, float sums)."""
    pos = {u: i for i, u in enumerate(units)}
    out = np.zeros((len(units), len(TYPES), 2), np.int64 if value == "passed" else np.float64)
    for r in records:
        t = TYPES.index(r["turn_type"])
        u = pos[unit_of[r["conv"]]]
        out[u, t, 0] += bool(r["passed"]) if value == "passed" else float(r[value])
        out[u, t, 1] += 1
    return out


def scores(c: np.ndarray) -> dict[str, np.ndarray]:
    """Scores from summed counts ``[..., n_types, 2]`` (leading axes = draws); NaN where a type has
    no turn. Macro averages the types present."""
    passed, total = c[..., 0].astype(np.float64), c[..., 1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(total > 0, passed / np.maximum(total, 1), np.nan)
        out = {t: rate[..., i] for i, t in enumerate(TYPES)}
        out["micro"] = passed.sum(-1) / total.sum(-1)
        present = total > 0
        out["macro"] = np.where(present, np.nan_to_num(rate), 0.0).sum(-1) / present.sum(-1)
    return out


def draws(n_units: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n_units]`` dialogue indices drawn with replacement (shared by all arms)."""
    return np.random.default_rng(seed).integers(0, n_units, size=(n_boot, n_units))


def resampled(c: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Per-draw scores: `c` ``[n_units, n_types, 2]``, `idx` ``[n_boot, n_units]`` -> ``{metric: [n_boot]}``."""
    return scores(c[idx].sum(axis=1))


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def summarize_arms(arm_counts: Mapping[str, np.ndarray], *, n_boot: int = 2000, seed: int = 0,
                   baselines: Sequence[str] = (), level: float = 0.95) -> dict:
    """Point estimates and intervals of every metric for every arm, plus paired differences of every
    arm against each baseline arm: ``{"arms": {arm: {metric: {"value", "lo", "hi"}}},
    "differences": {"arm - baseline": {metric: {...}}}, "n_units", "n_boot", "level"}``."""
    names = list(arm_counts)
    n_units = next(iter(arm_counts.values())).shape[0]
    for a, c in arm_counts.items():
        if c.shape[0] != n_units or not np.array_equal(c[..., 1], arm_counts[names[0]][..., 1]):
            raise ValueError(f"arm {a!r} was not evaluated on the same turns as {names[0]!r}")
    idx = draws(n_units, n_boot, seed)
    point = {a: scores(c.sum(axis=0)) for a, c in arm_counts.items()}
    boot = {a: resampled(c, idx) for a, c in arm_counts.items()}
    out: dict = {"n_units": int(n_units), "n_boot": int(n_boot), "level": level, "arms": {}, "differences": {}}
    for a in names:
        out["arms"][a] = {}
        for m in METRICS:
            lo, hi = interval(boot[a][m], level)
            out["arms"][a][m] = {"value": float(point[a][m]), "lo": lo, "hi": hi}
    for k, b in enumerate(baselines):
        for a in names:
            if a == b or a in baselines[:k]:   # each pair once: "dpo - sft", not also "sft - dpo"
                continue
            d = {}
            for m in METRICS:
                lo, hi = interval(boot[a][m] - boot[b][m], level)
                d[m] = {"value": float(point[a][m] - point[b][m]), "lo": lo, "hi": hi}
            out["differences"][f"{a} - {b}"] = d
    return out
