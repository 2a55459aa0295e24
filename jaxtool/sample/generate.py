"""Batched generation: jitted prefill + KV-cache decode in `lax.while_loop`, as separable pure steps.

    prefill(params, cfg, prompts, prompt_lens, cache)     -> DecodeState   (one forward over the prompts)
    sample_token(logits, key, sampling)                    -> (token, model log-prob)
    decode(params, cfg, state, sampling, num_steps)        -> DecodeState   (up to num_steps new tokens)

Prompts are right-padded [B, P] with per-row lengths; row b's first new token is written at cache
slot prompt_lens[b] (overwriting its padding), so rows of different lengths decode together with no
attention mask. A row stops at an EOS/stop token id; multi-token stop strings are checked on the
host between decode chunks (`generate_ids`), so the device loop never waits on the host per token.
A tree search reuses prefill / sample_token / decode directly: `select_rows` / `fork_rows` copy rows
of a decode state or cache (expanding a node = forking its cache row to K children, no re-prefill).

Log-probs returned are the model's: log_softmax of the raw logits at temperature 1 (not the
temperature/top-k/top-p-shaped sampling distribution) — what confidence scores and preference
losses need.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtool.models.family import family_of
from jaxtool.models.run import DEFAULT_RUN, RunOptions


@dataclasses.dataclass(frozen=True)
class Sampling:
    """temperature 0 = greedy. top_k 0 = off. top_p 1.0 = off. Static (part of the jit key)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


class DecodeState(NamedTuple):
    cache: dict                 # KV cache {"k", "v"}: [L, B, K, S, Dh] (per-layer: L arrays [B, K, S, Dh])
    last_logits: jax.Array      # [B, V] logits predicting the next token
    pos: jax.Array              # [B] cache slot of the next token
    done: jax.Array             # [B] bool
    tokens: jax.Array           # [B, N] generated tokens (pad where not generated)
    logprobs: jax.Array         # [B, N]
    num_new: jax.Array          # [B] tokens generated so far per row
    step: jax.Array             # scalar: decode steps taken
    key: jax.Array


def sample_token(logits: jax.Array, key: jax.Array, sampling: Sampling) -> tuple[jax.Array, jax.Array]:
    """Pick one token per row from logits [B, V]; return (tokens [B], model log-probs [B])."""
    logits = logits.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    if sampling.greedy:
        tok = jnp.argmax(logits, axis=-1)
    else:
        scaled = logits / sampling.temperature
        if sampling.top_k > 0 or sampling.top_p < 1.0:
            srt = jnp.sort(scaled, axis=-1)[:, ::-1]
            cutoff = jnp.full(scaled.shape[:1], -jnp.inf)
            if sampling.top_k > 0:
                k = min(sampling.top_k, scaled.shape[-1])
                cutoff = jnp.maximum(cutoff, srt[:, k - 1])
            if sampling.top_p < 1.0:
                probs = jax.nn.softmax(srt, axis=-1)
                before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly before each sorted token
                keep = before < sampling.top_p               # the top token is always kept
                last_kept = jnp.max(jnp.where(keep, jnp.arange(srt.shape[-1]), 0), axis=-1)
                cutoff = jnp.maximum(cutoff, jnp.take_along_axis(srt, last_kept[:, None], axis=-1)[:, 0])
            scaled = jnp.where(scaled >= cutoff[:, None], scaled, -jnp.inf)
        tok = jax.random.categorical(key, scaled, axis=-1)
    return tok.astype(jnp.int32), jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]


def prefill(params, cfg, prompts: jax.Array, prompt_lens: jax.Array, cache: dict,
            max_new_tokens: int, key: jax.Array, run: RunOptions = DEFAULT_RUN) -> DecodeState:
    """Run the right-padded prompts [B, P] through the model, filling the cache."""
    B = prompts.shape[0]
    logits, cache = family_of(cfg).forward_cached(params, prompts, cache, jnp.zeros((B,), jnp.int32), cfg,
                                                   prefill=True, logits_at=prompt_lens - 1, run=run)
    last = logits[:, 0]
    return DecodeState(
        cache=cache, last_logits=last.astype(jnp.float32), pos=prompt_lens.astype(jnp.int32),
        done=jnp.zeros((B,), bool), tokens=jnp.zeros((B, max_new_tokens), jnp.int32),
        logprobs=jnp.zeros((B, max_new_tokens), jnp.float32), num_new=jnp.zeros((B,), jnp.int32),
        step=jnp.zeros((), jnp.int32), key=key)


def decode(params, cfg, state: DecodeState, sampling: Sampling, num_steps: jax.Array,
           stop_ids: jax.Array, pad_id: int = 0, run: RunOptions = DEFAULT_RUN) -> DecodeState:
    """Decode up to `num_steps` more tokens (fewer if every row is done or the buffer is full)."""
    max_new = state.tokens.shape[1]
    end = jnp.minimum(state.step + num_steps, max_new)

    def cond(s: DecodeState):
        return (s.step < end) & ~jnp.all(s.done)

    def body(s: DecodeState):
        key, sub = jax.random.split(s.key)
        tok, lp = sample_token(s.last_logits, sub, sampling)
        tok = jnp.where(s.done, pad_id, tok)
        active = ~s.done
        tokens = s.tokens.at[:, s.step].set(tok)
        logprobs = s.logprobs.at[:, s.step].set(jnp.where(active, lp, 0.0))
        hit_stop = jnp.any(tok[:, None] == stop_ids[None, :], axis=-1) & active
        logits, cache = family_of(cfg).forward_cached(params, tok[:, None], s.cache, s.pos, cfg, run=run)
        return DecodeState(
            cache=cache, last_logits=logits[:, 0].astype(jnp.float32),
            pos=s.pos + active.astype(jnp.int32), done=s.done | hit_stop, tokens=tokens, logprobs=logprobs,
            num_new=s.num_new + active.astype(jnp.int32), step=s.step + 1, key=key)

    return jax.lax.while_loop(cond, body, state)


@functools.partial(jax.jit, static_argnums=(1, 5, 7), donate_argnums=(4,))
def _prefill_jit(params, cfg, prompts, prompt_lens, cache, max_new_tokens, key, run):
    return prefill(params, cfg, prompts, prompt_lens, cache, max_new_tokens, key, run)


@functools.partial(jax.jit, static_argnums=(1, 3, 6, 7), donate_argnums=(2,))
def _decode_jit(params, cfg, state, sampling, num_steps, stop_ids, pad_id, run):
    return decode(params, cfg, state, sampling, num_steps, stop_ids, pad_id, run)


def _rows(x, idx):
    return jnp.take(x, idx, axis=0)


def select_rows(state: DecodeState, idx: jax.Array) -> DecodeState:
    """The decode state of rows `idx` [R] (repeats allowed): cache rows, logits, positions, buffers.

    The cache's batch axis is 1 for stacked caches ([L, B, K, S, Dh]) and 0 for per-layer ones."""
    cache = fork_cache(state.cache, idx)
    return state._replace(cache=cache, last_logits=_rows(state.last_logits, idx), pos=_rows(state.pos, idx),
                          done=_rows(state.done, idx), tokens=_rows(state.tokens, idx),
                          logprobs=_rows(state.logprobs, idx), num_new=_rows(state.num_new, idx))


def fork_cache(cache: dict, idx: jax.Array) -> dict:
    """Cache rows `idx` [R] gathered into a new cache of batch R (e.g. `jnp.repeat(leaf, K)` forks
    every leaf's prefix to K children without re-running the prefix)."""
    def take(c):
        if isinstance(c, (tuple, list)):
            return tuple(jnp.take(x, idx, axis=0) for x in c)
        return jnp.take(c, idx, axis=1)
    return {n: take(c) for n, c in cache.items()}


def fork_rows(state: DecodeState, k: int) -> DecodeState:
    """Each row repeated k times in place (row b -> rows b·k .. b·k+k-1), cache included."""
    B = state.pos.shape[0]
    return select_rows(state, jnp.repeat(jnp.arange(B), k))


def _bucket(n: int, multiple: int) -> int:
    return max(multiple, int(math.ceil(n / multiple)) * multiple)


@dataclasses.dataclass
class GenerateOutput:
    tokens: list[list[int]]          # new tokens per row (stop token included when one was hit)
    logprobs: list[list[float]]
    finish_reasons: list[str]        # "eos" | "stop" | "length"


def generate_ids(params, cfg, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 128,
                 sampling: Sampling = Sampling(), stop_ids: Sequence[int] = (), stop_check=None, seed: int = 0,
                 pad_id: int = 0, chunk: int = 32, length_multiple: int = 64, mesh=None,
                 run: RunOptions = DEFAULT_RUN) -> GenerateOutput:
    """Generate continuations of token-id prompts (one batch; callers split large sets).

    stop_ids   : token ids that end a row (EOS, end-of-turn); included in the output.
    stop_check : optional host callback `(row, new_token_ids) -> bool` run after each decode chunk
                 (multi-token stop strings); a row it flags is finished as "stop".
    Shapes are bucketed (prompt length to `length_multiple`, new tokens to `chunk`) so repeated
    calls reuse compiled programs.
    """
    from jaxtool import sharding

    B = len(prompts)
    if B == 0:
        return GenerateOutput([], [], [])
    lens = np.array([len(p) for p in prompts], np.int32)
    if lens.min() < 1:
        raise ValueError("every prompt needs at least one token")
    P = _bucket(int(lens.max()), length_multiple)
    N = _bucket(max_new_tokens, chunk)
    arr = np.full((B, P), pad_id, np.int32)
    for i, p in enumerate(prompts):
        arr[i, :len(p)] = p
    stop_arr = jnp.asarray(np.array(sorted(set(stop_ids)) or [-1], np.int32))
    per_layer = isinstance(params["layers"], (list, tuple))  # the family's `unstack_layers` params
    cache = family_of(cfg).init_cache(cfg, B, P + N, per_layer=per_layer, run=run)
    with sharding.use_mesh(mesh):
        if mesh is not None:
            cache = jax.device_put(cache, sharding.tree_shardings(family_of(cfg).cache_axes(cfg, per_layer), cache, mesh))
            arr_dev, lens_dev = sharding.shard_batch((arr, lens), mesh)
        else:
            arr_dev, lens_dev = jnp.asarray(arr), jnp.asarray(lens)
        state = _prefill_jit(params, cfg, arr_dev, lens_dev, cache, N, jax.random.key(seed), run)
        stopped = np.zeros(B, bool)
        while True:
            state = _decode_jit(params, cfg, state, sampling, jnp.int32(chunk), stop_arr, pad_id, run)
            step = int(state.step)
            done = np.asarray(state.done)
            if stop_check is not None:
                toks, num = np.asarray(state.tokens), np.asarray(state.num_new)
                flag = np.array([not done[i] and not stopped[i] and stop_check(i, toks[i, :num[i]].tolist())
                                 for i in range(B)])
                if flag.any():
                    stopped |= flag
                    state = state._replace(done=jnp.asarray(done | flag))
                    done = done | flag
            if done.all() or step >= max_new_tokens:
                break
    toks, lps, num = np.asarray(state.tokens), np.asarray(state.logprobs), np.asarray(state.num_new)
    stop_set = set(stop_ids)
    out_t, out_l, reasons = [], [], []
    for i in range(B):
        n = min(int(num[i]), max_new_tokens)
        t = toks[i, :n].tolist()
        out_t.append(t)
        out_l.append(lps[i, :n].tolist())
        if stopped[i]:
            reasons.append("stop")
        elif t and t[-1] in stop_set:
            reasons.append("eos")
        else:
            reasons.append("length")
    return GenerateOutput(out_t, out_l, reasons)
