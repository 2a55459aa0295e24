"""Token log-probs and cross-entropy of a linear output layer without full-vocabulary logits.

    logps = chunked_token_logps(hidden, w, targets)            # [..., N] float32
    logps = chunked_token_logps(hidden, embed, targets, transposed=True)   # tied embeddings [V, D]

The value is `log softmax(hidden @ w)[target]` = `logit[target] - logsumexp(logits)`, exactly what
`jaxtool.losses.logps_from_logits(hidden @ w, targets)` computes, but the [tokens × vocab] logits never
exist at once, in the forward pass or the backward pass:

* forward: the tokens are split into chunks (`chunk_tokens` tokens each, along the axis before D,
  every chunk keeping all leading axes — so a batch axis sharded over devices stays sharded); per
  chunk the logits are formed, reduced to (logit[target], logsumexp) and dropped. Only the
  logsumexp per token (float32, [..., N]) is kept for the backward pass.
* backward (`jax.custom_vjp`): per chunk the logits are recomputed, turned into
  d logits = g · (onehot(target) − softmax) (the gradient of log-softmax), and immediately
  contracted into d hidden (that chunk's rows) and d w (accumulated in float32 over chunks).
* `chunk_vocab` (optional) also splits the vocabulary, with an online logsumexp (running max and
  rescaled sum, Milakov & Gimelshein 2018, "Online normalizer calculation for softmax") in the
  forward pass; the peak is then one [chunk_tokens × chunk_vocab] block.

This is the "recompute instead of store" idea of memory-efficient cross-entropy kernels (e.g.
Wijmans et al. 2024, "Cut Your Losses in Large-Vocabulary Language Models"), written with
`lax.scan` so XLA fuses each chunk; the peak is a few [chunk × V] float32 blocks plus the float32
d w accumulator ([D, V], the size of w's gradient anyway).

Inputs may be bf16: matmuls run in the input dtype with float32 accumulation (so the logits are
*more* precise than a bf16 `hidden @ w` rounded to bf16), softmax and sums in float32. Targets
outside [0, V) (e.g. -100 ignore-index) give log-prob 0 and no gradient, as `losses.logps_from_logits`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

DEFAULT_CHUNK_TOKENS = 1024


def _acc_dtype(dtype):
    return jnp.promote_types(dtype, jnp.float32)


def _logits(h, w, transposed: bool, acc):
    """h [..., c, D] · w ([D, V], or [V, D] when transposed) -> [..., c, V] in `acc`."""
    return jax.lax.dot_general(h, w, (((h.ndim - 1,), (1 if transposed else 0,)), ((), ())),
                               preferred_element_type=acc)


def _vocab_slice(w, start, size, transposed: bool):
    axis = 0 if transposed else 1
    return jax.lax.dynamic_slice_in_dim(w, start, size, axis=axis)


def _chunk_forward(h, w, t, transposed: bool, chunk_vocab: int | None):
    """One token chunk: (logp, lse), each [..., c] float32."""
    acc = _acc_dtype(h.dtype)
    V = w.shape[0 if transposed else 1]
    valid = (t >= 0) & (t < V)
    safe = jnp.where(valid, t, 0)
    if chunk_vocab is None or chunk_vocab >= V:
        logits = _logits(h, w, transposed, acc)
        picked = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
        lse = jax.nn.logsumexp(logits, axis=-1)
    else:
        cv = chunk_vocab
        nv = -(-V // cv)
        col = jnp.arange(cv)

        def body(carry, j):
            m, s, picked = carry
            start = jnp.minimum(j * cv, V - cv)            # the last block is shifted back to fit ...
            gcol = start + col
            fresh = gcol >= j * cv                          # ... and its already-counted columns masked
            logits = _logits(h, _vocab_slice(w, start, cv, transposed), transposed, acc)
            logits = jnp.where(fresh, logits, -jnp.inf)
            m_new = jnp.maximum(m, jnp.max(logits, axis=-1))
            s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[..., None]), axis=-1)
            hit = fresh & (gcol == safe[..., None])
            picked = picked + jnp.sum(jnp.where(hit, logits, 0.0), axis=-1)
            return (m_new, s, picked), None

        shape = t.shape
        init = (jnp.full(shape, -jnp.inf, acc), jnp.zeros(shape, acc), jnp.zeros(shape, acc))
        (m, s, picked), _ = jax.lax.scan(body, init, jnp.arange(nv))
        lse = m + jnp.log(s)
    logp = jnp.where(valid, picked - lse, 0.0)
    return logp, lse


def _chunk_backward(h, w, t, lse, g, dw, transposed: bool, chunk_vocab: int | None):
    """One token chunk's contribution: (d h [..., c, D] in h's dtype, dw + this chunk's d w)."""
    acc = _acc_dtype(h.dtype)
    V = w.shape[0 if transposed else 1]
    valid = (t >= 0) & (t < V)
    g = jnp.where(valid, g, 0.0).astype(acc)
    lead = tuple(range(h.ndim - 1))  # all token axes of the chunk

    def grads(w_blk, gcol, keep):
        logits = _logits(h, w_blk, transposed, acc)
        p = jnp.exp(logits - lse[..., None])
        onehot = (gcol == t[..., None]).astype(acc)
        dlog = (onehot - p) * g[..., None]
        if keep is not None:
            dlog = jnp.where(keep, dlog, 0.0)
        dlog = dlog.astype(h.dtype)  # matmuls in the compute dtype, f32 accumulation
        # d h = dlog · wᵀ
        dh = jax.lax.dot_general(dlog, w_blk, (((dlog.ndim - 1,), (0 if transposed else 1,)), ((), ())),
                                 preferred_element_type=acc)
        # d w = hᵀ · dlog over every token axis ([D, v], or [v, D] when transposed)
        if transposed:
            dwb = jax.lax.dot_general(dlog, h, ((lead, lead), ((), ())), preferred_element_type=acc)
        else:
            dwb = jax.lax.dot_general(h, dlog, ((lead, lead), ((), ())), preferred_element_type=acc)
        return dh, dwb

    if chunk_vocab is None or chunk_vocab >= V:
        dh, dwb = grads(w, jnp.arange(V), None)
        return dh.astype(h.dtype), dw + dwb
    cv = chunk_vocab
    nv = -(-V // cv)
    col = jnp.arange(cv)
    axis = 0 if transposed else 1

    def body(carry, j):
        dh, dw = carry
        start = jnp.minimum(j * cv, V - cv)
        gcol = start + col
        keep = gcol >= j * cv
        dh_j, dw_j = grads(_vocab_slice(w, start, cv, transposed), gcol, keep)
        cur = jax.lax.dynamic_slice_in_dim(dw, start, cv, axis=axis)
        dw = jax.lax.dynamic_update_slice_in_dim(dw, cur + dw_j, start, axis=axis)
        return (dh + dh_j, dw), None

    (dh, dw), _ = jax.lax.scan(body, (jnp.zeros(h.shape, acc), dw), jnp.arange(nv))
    return dh.astype(h.dtype), dw


@functools.lru_cache(maxsize=None)
def _chunked_fn(transposed: bool, chunk_vocab: int | None):
    """custom_vjp over chunked inputs hc [n, ..., c, D], w, tc [n, ..., c] -> logp [n, ..., c]."""

    def forward_all(hc, w, tc):
        return jax.lax.map(lambda xs: _chunk_forward(xs[0], w, xs[1], transposed, chunk_vocab), (hc, tc))

    @jax.custom_vjp
    def f(hc, w, tc):
        return forward_all(hc, w, tc)[0]

    def fwd(hc, w, tc):
        logp, lse = forward_all(hc, w, tc)
        return logp, (hc, w, tc, lse)

    def bwd(res, g):
        hc, w, tc, lse = res
        dw0 = jnp.zeros(w.shape, _acc_dtype(w.dtype))

        def body(dw, xs):
            h, t, l, gg = xs
            dh, dw = _chunk_backward(h, w, t, l, gg, dw, transposed, chunk_vocab)
            return dw, dh

        dw, dhc = jax.lax.scan(body, dw0, (hc, tc, lse, g))
        return dhc, dw.astype(w.dtype), None

    f.defvjp(fwd, bwd)
    return f


def chunked_token_logps(hidden: jax.Array, w: jax.Array, targets: jax.Array, *, transposed: bool = False,
                        chunk_tokens: int = DEFAULT_CHUNK_TOKENS, chunk_vocab: int | None = None) -> jax.Array:
    """`log softmax(hidden @ w)[targets]` without materialising the logits; see the module docstring.

    hidden  [..., N, D] (any float dtype; the leading axes, e.g. batch, are kept in every chunk)
    w       [D, V], or [V, D] with transposed=True (tied input embeddings)
    targets [..., N] int; outside [0, V) -> 0.0 (and no gradient)
    chunk_tokens (static): tokens per chunk, all leading axes together (a chunk spans
        max(1, chunk_tokens // prod(leading)) positions of the N axis).
    chunk_vocab (static): vocabulary entries per block (None: the whole vocabulary per chunk).
    Returns [..., N] float32 (float64 for float64 inputs).
    """
    if hidden.ndim < 2 or w.ndim != 2 or targets.shape != hidden.shape[:-1]:
        raise ValueError(f"chunked_token_logps: hidden [..., N, D], w 2-D, targets [..., N]; got hidden "
                         f"{hidden.shape}, w {w.shape}, targets {targets.shape}")
    D = hidden.shape[-1]
    if w.shape[1 if transposed else 0] != D:
        raise ValueError(f"chunked_token_logps: w {w.shape} does not contract with hidden dim {D} "
                         f"(transposed={transposed})")
    if chunk_tokens < 1 or (chunk_vocab is not None and chunk_vocab < 1):
        raise ValueError(f"chunked_token_logps: chunk sizes must be positive, got {chunk_tokens}, {chunk_vocab}")
    lead, N = hidden.shape[:-2], hidden.shape[-2]
    if N == 0:
        return jnp.zeros(targets.shape, _acc_dtype(hidden.dtype))
    c = max(1, min(N, chunk_tokens // max(1, math.prod(lead))))
    n = -(-N // c)
    pad = n * c - N
    targets = targets.astype(jnp.int32)
    if pad:
        hidden = jnp.pad(hidden, [(0, 0)] * len(lead) + [(0, pad), (0, 0)])
        targets = jnp.pad(targets, [(0, 0)] * len(lead) + [(0, pad)], constant_values=-1)
    k = len(lead)
    hc = jnp.moveaxis(hidden.reshape(lead + (n, c, D)), k, 0)      # [n, ..., c, D]
    tc = jnp.moveaxis(targets.reshape(lead + (n, c)), k, 0)        # [n, ..., c]
    cv = None if chunk_vocab is None else int(chunk_vocab)
    logp = _chunked_fn(bool(transposed), cv)(hc, w, tc)            # [n, ..., c]
    logp = jnp.moveaxis(logp, 0, k).reshape(lead + (n * c,))
    return logp[..., :N]


def chunked_cross_entropy(hidden: jax.Array, w: jax.Array, targets: jax.Array, loss_mask: jax.Array | None = None,
                          **kw) -> tuple[jax.Array, jax.Array]:
    """(summed negative log-likelihood over trained tokens, number of trained tokens), float32.

    loss_mask [..., N] (bool/int/float; default: every target in [0, V)). Keyword arguments as
    `chunked_token_logps`. Divide the two for the mean token cross-entropy."""
    lp = chunked_token_logps(hidden, w, targets, **kw)
    if loss_mask is None:
        V = w.shape[0 if kw.get("transposed") else 1]
        loss_mask = (targets >= 0) & (targets < V)
    m = jnp.asarray(loss_mask).astype(lp.dtype)
    return -jnp.sum(lp * m), jnp.sum(m)


__all__ = ["chunked_token_logps", "chunked_cross_entropy", "DEFAULT_CHUNK_TOKENS"]
