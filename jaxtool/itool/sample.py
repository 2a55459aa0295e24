"""The "without MCTS" ablation of iTool (Zeng et al. 2025, ablation table): instead of a tree search,
sample `n` (4) complete responses per query from the policy and pair the most likely one (chosen)
with the least likely one (rejected).

Likelihood is the policy's length-normalised log-likelihood of the sampled response, the mean of
the model's token log-probs (log_softmax of the raw logits at temperature 1, as `jaxtool.sample`
returns them) — the same length normalisation SimPO's reward uses. Each pair is a root-level pair
(empty prefix, depth 0); its "Q values" are those mean log-probs. The outcome verdict of every
sample is still taken (and counted), so the iteration summary shows how often samples were right.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass
class SampledPair:
    query: int                 # index into the queries given
    prefix: list[int]          # always [] here (root-level pair)
    chosen: list[int]
    rejected: list[int]
    q_chosen: float
    q_rejected: float
    depth: int = 0
    outcomes: tuple = ()       # outcome value of each of the n samples


def sample_pairs(params, cfg, prompts: Sequence[Sequence[int]], *, n: int = 4, temperature: float = 1.0,
                 top_p: float = 1.0, max_new_tokens: int = 256, stop_ids: Sequence[int] = (),
                 batch_queries: int = 2, seed: int = 0, pad_id: int = 0, outcome=None, mesh=None, run=None
                 ) -> list[SampledPair]:
    """One (most likely, least likely) pair per query from `n` samples each.

    `outcome(query, token_ids) -> float`, when given, judges every sample (for the summary)."""
    from jaxtool.sample.generate import Sampling, generate_ids

    if n < 2:
        raise ValueError(f"sample.n must be at least 2 to form a pair, got {n}")
    sampling = Sampling(temperature=temperature, top_p=top_p)
    out: list[SampledPair] = []
    for start in range(0, len(prompts), batch_queries):
        qs = list(range(start, min(start + batch_queries, len(prompts))))
        rows = [list(prompts[q]) for q in qs for _ in range(n)]
        rows += [rows[-1]] * (batch_queries * n - len(rows))  # fixed batch shape: filler rows, discarded
        res = generate_ids(params, cfg, rows, max_new_tokens=max_new_tokens, sampling=sampling, stop_ids=stop_ids,
                           seed=seed + start, pad_id=pad_id, mesh=mesh, **({} if run is None else {"run": run}))
        for k, q in enumerate(qs):
            toks = res.tokens[k * n:(k + 1) * n]
            lps = res.logprobs[k * n:(k + 1) * n]
            like = np.array([float(np.mean(lp)) if lp else -np.inf for lp in lps])
            hi, lo = int(np.argmax(like)), int(np.argmin(like))
            outs = tuple(float(outcome(q, t)) for t in toks) if outcome is not None else ()
            out.append(SampledPair(q, [], list(toks[hi]), list(toks[lo]), float(like[hi]), float(like[lo]), 0, outs))
    return out
