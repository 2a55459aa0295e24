"""Advantages from per-turn rewards, group by group (rows g*G .. g*G+G-1 answer one prompt).

* `sequence` (GRPO, DeepSeekMath §4.1.2 outcome supervision): R_i = sum of the trajectory's turn
  rewards; A_i = (R_i - mean_g R) / std_g R (Dr. GRPO: no std), the same for every token of i.
* `turn` (credit per assistant turn, in the spirit of DiaTool-DPO's per-turn weights and of
  DeepSeekMath §4.1.3 process supervision): each turn k of trajectory i gets the discounted return
  to go G_{i,k} = sum_{k' >= k} gamma^(k'-k) r_{i,k'}, normalised by the mean and std of all
  (trajectory, turn) returns of its group (the pooled statistics of §4.1.3); the tokens of turn k
  get A_{i,k}.

A group whose trajectories all have the same total reward has no signal: counted as
"zero-variance group" (its sequence-level advantages are 0; it still contributes the KL term).
"""

from __future__ import annotations

import numpy as np


def _norm(x: np.ndarray, scale: bool, ddof: int, eps: float) -> np.ndarray:
    c = x - x.mean()
    if scale:
        n = max(x.size - ddof, 1)
        c = c / (np.sqrt((c**2).sum() / n) + eps)
    return c


def compute_advantages(turn_rewards: list[list[float]], group_size: int, *, mode: str = "sequence",
                       scale: bool = True, ddof: int = 1, gamma: float = 1.0, eps: float = 1e-6):
    """(adv_seq [N] or None, adv_turn [N, T] or None, zero-variance group count)."""
    N, G = len(turn_rewards), int(group_size)
    totals = np.array([sum(r) for r in turn_rewards], np.float64)
    zero = int(sum(np.ptp(totals[g:g + G]) == 0 for g in range(0, N, G)))
    if mode == "sequence":
        adv = np.concatenate([_norm(totals[g:g + G], scale, ddof, eps) for g in range(0, N, G)])
        return adv.astype(np.float32), None, zero
    if mode != "turn":
        raise ValueError(f"advantage must be 'sequence' or 'turn', got {mode!r}")
    T = max(len(r) for r in turn_rewards)
    rtg = np.zeros((N, T))
    for i, r in enumerate(turn_rewards):
        acc = 0.0
        for k in range(len(r) - 1, -1, -1):
            acc = r[k] + gamma * acc
            rtg[i, k] = acc
    out = np.zeros((N, T), np.float32)
    for g in range(0, N, G):
        cells = [(i, k) for i in range(g, g + G) for k in range(len(turn_rewards[i]))]
        vals = _norm(np.array([rtg[c] for c in cells]), scale, ddof, eps)
        for (i, k), v in zip(cells, vals):
            out[i, k] = v
    return None, out, zero


__all__ = ["compute_advantages"]
