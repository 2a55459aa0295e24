"""iTool's replay buffer (Zeng et al. 2025, §3.2): which queries each iteration searches.

The buffer starts as a random half of the training examples (`init_fraction` 0.5, seeded). At every
iteration the current policy scores every example in it by the **generation perplexity of its gold
response** (Eq. 4),

    PPL(y | x) = exp( -1/|y| · Σ_t log p_θ(y_t | x, y_<t) ),

where x is the prompt (tools + messages before the gold turn, through the chat format's generation
prompt) and y the gold assistant turn's trained tokens — its text and its end-of-turn marker, the
exact loss mask of `jaxtool.data.tokenize` restricted to that turn. The `select_fraction` (0.1)
highest-perplexity examples — ceil(fraction × size), ties broken by id — are the queries the
iteration's search runs on. Examples stay in the buffer: the next iteration re-scores them all with
the updated policy (iTool's released code re-scores the buffer each iteration the same way).

Scoring is batched: rows right-padded to a multiple of `length_multiple`, the output layer and
log-softmax run only at the gold positions (`n_logits`, a static bound rounded up to 64), one
jitted forward per batch shape.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import random
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtool.models.family import family_of


# ------------------------------------------------------------------------------------------------
# gold-response tokens
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class GoldTokens:
    """Token ids of prompt + gold answer; `mask` marks the gold answer's trained tokens."""

    ids: np.ndarray        # [n] int32
    mask: np.ndarray       # [n] int32, 1 on the gold turn's trained tokens
    prompt_len: int        # tokens before the gold turn's first trained token

    @property
    def prompt_ids(self) -> list[int]:
        return self.ids[:self.prompt_len].tolist()

    @property
    def gold_ids(self) -> list[int]:
        return self.ids[self.mask > 0].tolist()


def gold_tokens(example, fmt, tokenizer, max_length: int | None = None) -> tuple[GoldTokens | None, str | None]:
    """(GoldTokens, None), or (None, reason) when the example cannot be tokenized within `max_length`."""
    from jaxtool.data.tokenize import TruncationReport, tokenize_conversation

    rep = TruncationReport(policy="drop", max_length=max_length, on_bad_example="skip")
    tc = tokenize_conversation(example.conversation, fmt, tokenizer, max_length, "drop", rep)
    if tc is None:
        reason = next(iter(rep.dropped), "not tokenizable")
        return None, reason
    last = int(tc.turn_ids.max())
    mask = ((tc.turn_ids == last) & (tc.loss_mask > 0)).astype(np.int32)
    if mask.sum() == 0 or mask[0]:
        return None, "empty gold answer"
    start = int(np.argmax(mask))
    return GoldTokens(tc.input_ids.astype(np.int32), mask, start), None


# ------------------------------------------------------------------------------------------------
# perplexity (Eq. 4)
# ------------------------------------------------------------------------------------------------

def response_nll(params, cfg, inputs: jax.Array, targets: jax.Array, mask: jax.Array,
                 n_logits: int, run=None) -> tuple[jax.Array, jax.Array]:
    """(Σ −log p(target), number of targets) per row over the positions where `mask` is 1.

    inputs, targets, mask: [B, L] (targets = inputs shifted left by one). The output layer runs only
    on each row's first `n_logits` masked positions (static; ≥ the most masked positions of a row).
    """
    kw = {} if run is None else {"run": run}
    fam = family_of(cfg)                                                          # the model seam
    h = fam.hidden_states(params, inputs, cfg, **kw)                            # [B, L, D]
    m = mask > 0
    idx = jax.vmap(lambda r: jnp.nonzero(r, size=n_logits, fill_value=0)[0])(m)  # [B, K]
    valid = jnp.arange(n_logits)[None, :] < jnp.sum(m, axis=1, keepdims=True)
    hk = jnp.take_along_axis(h, idx[:, :, None], axis=1)
    logp = jax.nn.log_softmax(fam.unembed(params, hk, cfg, **kw).astype(jnp.float32), axis=-1)
    tk = jnp.take_along_axis(targets, idx, axis=1)
    lp = jnp.take_along_axis(logp, tk[:, :, None], axis=-1)[:, :, 0]
    return -jnp.sum(jnp.where(valid, lp, 0.0), axis=1), jnp.sum(valid, axis=1)


@functools.partial(jax.jit, static_argnums=(1, 5, 6))
def _response_nll_jit(params, cfg, inputs, targets, mask, n_logits, run):
    return response_nll(params, cfg, inputs, targets, mask, n_logits, run)


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def perplexities(params, cfg, items: Sequence[GoldTokens], *, batch_size: int = 8,
                 length_multiple: int = 64, pad_id: int = 0, run=None) -> np.ndarray:
    """Gold-response perplexity of every item (Eq. 4), in the items' order."""
    out = np.zeros(len(items), np.float64)
    order = sorted(range(len(items)), key=lambda i: -len(items[i].ids))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        L = _round_up(max(len(items[i].ids) - 1 for i in rows), length_multiple)
        inputs = np.full((batch_size, L), pad_id, np.int32)
        targets = np.zeros((batch_size, L), np.int32)
        mask = np.zeros((batch_size, L), np.int32)
        for b, i in enumerate(rows):
            ids, m = items[i].ids, items[i].mask
            n = len(ids) - 1
            inputs[b, :n], targets[b, :n], mask[b, :n] = ids[:-1], ids[1:], m[1:]
        k = _round_up(int(mask.sum(axis=1).max()), 64)
        nll, cnt = jax.device_get(_response_nll_jit(params, cfg, jnp.asarray(inputs), jnp.asarray(targets),
                                                    jnp.asarray(mask), min(k, L), run))
        for b, i in enumerate(rows):
            out[i] = math.exp(min(float(nll[b]) / max(int(cnt[b]), 1), 700.0))
    return out


# ------------------------------------------------------------------------------------------------
# the buffer
# ------------------------------------------------------------------------------------------------

def initial_buffer(ids: Sequence[str], fraction: float, seed: int) -> list[str]:
    """A random `fraction` of `ids` (at least one when there are any), in sorted order."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"buffer.init_fraction must be in (0, 1], got {fraction}")
    pool = sorted(ids)
    k = min(len(pool), max(1, round(fraction * len(pool)))) if pool else 0
    return sorted(random.Random(seed).sample(pool, k))


def select_top(ppl: dict[str, float], fraction: float) -> list[str]:
    """The ceil(fraction × n) ids of highest perplexity, highest first (ties by id)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"buffer.select_fraction must be in (0, 1], got {fraction}")
    k = math.ceil(fraction * len(ppl) - 1e-9) if ppl else 0
    return [i for i, _ in sorted(ppl.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def write_json(path: str, obj) -> None:
    """Write JSON atomically (a half-written file is never left under `path`)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, ensure_ascii=False, default=str)
    os.replace(tmp, path)


def score_buffer(model, examples_by_id: dict, buffer_ids: Sequence[str], fmt, *, select_fraction: float,
                 max_length: int | None, batch_size: int = 8, length_multiple: int = 64) -> dict:
    """Score the buffer with `model` (a `jaxtool.api.Model`) and select the iteration's queries.

    Returns the buffer state saved as `buffer.json`: perplexity per id, the selected ids, and the
    examples that could not be scored, counted by reason."""
    toks, ok_ids, dropped = [], [], {}
    for i in buffer_ids:
        gt, reason = gold_tokens(examples_by_id[i], fmt, model.tokenizer, max_length)
        if gt is None:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        toks.append(gt)
        ok_ids.append(i)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    ppl = perplexities(model.params, model.config, toks, batch_size=batch_size, length_multiple=length_multiple,
                       pad_id=pad, run=getattr(model, "run", None)) if toks else np.zeros(0)
    scores = {i: float(p) for i, p in zip(ok_ids, ppl)}
    selected = select_top(scores, select_fraction)
    return {"size": len(buffer_ids), "scored": len(scores), "not_scored": dropped,
            "select_fraction": select_fraction, "selected": selected,
            "perplexity": dict(sorted(scores.items(), key=lambda kv: -kv[1])),
            "mean_perplexity": float(np.mean(list(scores.values()))) if scores else None}
