"""The policy as the search's environment (`DecodeEnv`): steps are decoded from forked KV caches,
R = O + C (Eq. 6–7). The model is reached only through its family (`family_of(cfg)`), so any
registered family decodes with its own forward pass."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxtool.models.family import family_of
from jaxtool.models.run import RunOptions
from jaxtool.sample.generate import Sampling, fork_cache, sample_token
from jaxtool.sample.mcts.config import MCTSConfig, StepRules
from jaxtool.sample.mcts.tree import ChildBatch, NodeEval, Tree, _get

def option_logprobs(logits: jax.Array, option_ids, normalize: bool = True) -> jax.Array:
    """Log-probabilities [R, 4] of the options A/B/C/D at the answer position: renormalised over the
    four option tokens (normalize) or the model's full-vocabulary log-probs of those tokens."""
    logits = logits.astype(jnp.float32)
    ids = jnp.asarray(option_ids, jnp.int32)
    if normalize:
        return jax.nn.log_softmax(logits[:, ids], axis=-1)
    return jax.nn.log_softmax(logits, axis=-1)[:, ids]


def self_eval_score(logp: jax.Array, key: jax.Array, weights, samples: int) -> jax.Array:
    """Eq. 7 from option log-probs [R, 4]: samples = 0, Σ_o w_o·p_o; samples = k, the mean weight of
    k option letters drawn from p (the paper's average over samples; its expectation is the former)."""
    w = jnp.asarray(weights, jnp.float32)
    if samples == 0:
        return jnp.sum(jnp.exp(logp) * w, axis=-1)
    draws = jax.random.categorical(key, logp[:, None, :], axis=-1, shape=(logp.shape[0], samples))
    return jnp.mean(w[draws], axis=-1)


class _Rows(NamedTuple):
    """Working rows of decoding: one context (prompt + partial response) each."""
    cache: dict           # {"k", "v"} [L, R, K, S, Dh]
    logits: jax.Array     # [R, V] next-token logits (float32)
    ctx: jax.Array        # [R] context length = next cache slot
    resp: jax.Array       # [R, Tmax] response tokens (-1 past resp_len)
    resp_len: jax.Array   # [R]
    query: jax.Array      # [R] query index


class _EnvState(NamedTuple):
    prompt_kv: dict       # {"k", "v"} [L, B, K, P, Dh]
    step_kv: dict         # {"k", "v"} [L, B, M, K, T, Dh]
    stats: jax.Array      # [3] float32: forward tokens executed, useful tokens decoded, outcome checks


class DecodeEnv:
    """The policy as an environment: steps are decoded from forked KV caches, R = O + C."""

    def __init__(self, params, cfg, run: RunOptions, mcts: MCTSConfig, rules: StepRules, prompts: jax.Array,
                 prompt_lens: jax.Array, suffix: jax.Array, suffix_lens: jax.Array, option_ids: tuple,
                 outcome_fn: Callable, cache_len: int):
        self.params, self.cfg, self.run, self.mcts, self.rules = params, cfg, run, mcts, rules
        self.family = family_of(cfg)
        self.prompts, self.lens = prompts, prompt_lens.astype(jnp.int32)
        self.suffix, self.suffix_lens = suffix, suffix_lens.astype(jnp.int32)
        self.option_ids = jnp.asarray(option_ids, jnp.int32)
        self.outcome_fn = outcome_fn
        self.S = cache_len
        self.step_tokens = mcts.max_step_tokens
        V = cfg.vocab_size
        self.eos_table = jnp.zeros((V,), bool).at[jnp.asarray(rules.eos_ids, jnp.int32)].set(True)
        ends = rules.step_end_ids or (rules.eos_ids[0],)
        self.end_table = jnp.zeros((V,), bool).at[jnp.asarray(ends, jnp.int32)].set(True)
        if rules.step_end_seqs:
            K = max(len(s) for s in rules.step_end_seqs)
            self.seqs = jnp.asarray([(-1,) * (K - len(s)) + s for s in rules.step_end_seqs], jnp.int32)
        else:
            self.seqs = None
        self.sampling = Sampling(temperature=float(mcts.temperature))
        if rules.arg_table:  # the argument guard (StepRules.arg_table): identity for unlisted tokens
            import numpy as np

            t = np.asarray(rules.arg_table, np.int64)
            tq = np.broadcast_to(np.arange(6) // 2, (V, 6)).copy()
            td = np.zeros((V, 6), np.int64)
            ok = t[:, 0] < V
            tq[t[ok, 0]], td[t[ok, 0]] = t[ok, 1:7], t[ok, 7:13]
            self.arg_q, self.arg_d = jnp.asarray(tq, jnp.int32), jnp.asarray(td, jnp.int32)
        else:
            self.arg_q = self.arg_d = None

    # -- the argument guard (§3.2: a step is a sentence or a whole call) ----------------------------
    def _arg_step(self, tok, q, depth):
        s = q * 2 + (depth > 0).astype(jnp.int32)
        return self.arg_q[tok, s], jnp.maximum(depth + self.arg_d[tok, s], 0)

    def _soft_end(self, tok, arg, active, guard: bool = True):
        """Whether `tok` ends a step by the step rules' token table — with the guard, only outside
        every bracket and string after it (a sentence end or newline inside a call's arguments is
        not a boundary) — and the (quote, depth) state after it (unchanged for inactive rows)."""
        soft = self.end_table[tok]
        if not guard:
            return soft, arg
        q, d = self._arg_step(tok, *arg)
        arg = (jnp.where(active, q, arg[0]), jnp.where(active, d, arg[1]))
        return soft & (q == 0) & (d == 0), arg

    def _arg_state(self, resp, resp_len):
        """(quote state, bracket depth) per row after its response so far."""
        R = resp.shape[0]

        def f(c, col):
            q, d = c
            tok, t = col
            nq, nd = self._arg_step(jnp.clip(tok, 0), q, d)
            live = t < resp_len
            return (jnp.where(live, nq, q), jnp.where(live, nd, d)), None

        cols = (resp.T, jnp.arange(resp.shape[1]))
        (q, d), _ = jax.lax.scan(f, (jnp.zeros((R,), jnp.int32), jnp.zeros((R,), jnp.int32)), cols)
        return q, d

    # -- model calls -------------------------------------------------------------------------
    def _fwd(self, tokens, cache, start, logits_at=None):
        return self.family.forward_cached(self.params, tokens, cache, start, self.cfg, logits_at=logits_at, run=self.run)

    def _decode(self, rows: _Rows, done: jax.Array, key: jax.Array, step: bool, stats: jax.Array):
        """Sample until each row ends (a step, or the response when step=False); returns
        (rows, n new tokens, sum of their log-probs, stats)."""
        mcts, Tmax = self.mcts, self.mcts.max_total_tokens
        R = rows.ctx.shape[0]
        limit = mcts.max_step_tokens if step else Tmax
        Kw = self.seqs.shape[1] if (step and self.seqs is not None) else 1
        guard = step and self.arg_q is not None
        arg = self._arg_state(rows.resp, rows.resp_len) if guard else (jnp.zeros((R,), jnp.int32),) * 2
        init = (jnp.int32(0), rows, done | (rows.resp_len >= Tmax), jnp.zeros((R,), jnp.int32),
                jnp.zeros((R,), jnp.float32), jnp.full((R, Kw), -2, jnp.int32), key, stats, arg)

        def cond(c):
            return (c[0] < limit) & ~jnp.all(c[2])

        def body(c):
            i, rw, done, n, lp_sum, window, key, stats, arg = c
            key, sub = jax.random.split(key)
            tok, lp = sample_token(rw.logits, sub, self.sampling)
            active = ~done
            tok = jnp.where(active, tok, 0)
            col = jnp.where(active, rw.resp_len, Tmax)
            resp = rw.resp.at[jnp.arange(R), col].set(tok, mode="drop")
            ends = (self.eos_table[tok] | (rw.resp_len + 1 >= Tmax))
            if step:
                soft, arg = self._soft_end(tok, arg, active, guard)
                ends = ends | soft | (n + 1 >= mcts.max_step_tokens)
                if self.seqs is not None:
                    window = jnp.concatenate([window[:, 1:], tok[:, None]], axis=1)
                    hit = (self.seqs[None] == window[:, None]) | (self.seqs[None] == -1)
                    ends = ends | jnp.any(jnp.all(hit, axis=-1), axis=-1)
            logits, cache = self._fwd(tok[:, None], rw.cache, rw.ctx)
            a = active.astype(jnp.int32)
            new_logits = jnp.where(active[:, None], logits[:, 0].astype(jnp.float32), rw.logits)
            rw = rw._replace(cache=cache, logits=new_logits,
                             ctx=rw.ctx + a, resp=resp, resp_len=rw.resp_len + a)
            stats = stats + jnp.array([R, jnp.sum(a), 0], jnp.float32)
            return (i + 1, rw, done | (ends & active), n + a, lp_sum + jnp.where(active, lp, 0.0), window, key, stats,
                    arg)

        _, rows, _, n, lp_sum, _, _, stats, _ = jax.lax.while_loop(cond, body, init)
        return rows, n, lp_sum, stats

    def _self_eval(self, rows: _Rows, key: jax.Array) -> jax.Array:
        """Eq. 7: one forward over the evaluation suffix on each row's cache; C per row."""
        suffix = self.suffix[rows.query]
        logits, _ = self._fwd(suffix, rows.cache, rows.ctx, logits_at=self.suffix_lens[rows.query] - 1)
        return self_eval_score(option_logprobs(logits[:, 0], self.option_ids, self.mcts.eval_normalize), key,
                               self.mcts.eval_weights, self.mcts.eval_samples)

    def _response_len(self, resp, resp_len):
        """Response length without a final end-of-turn token."""
        last = jnp.take_along_axis(resp, jnp.clip(resp_len - 1, 0)[:, None], axis=1)[:, 0]
        return resp_len - ((resp_len > 0) & self.eos_table[jnp.clip(last, 0)]).astype(jnp.int32)

    def _terminal(self, rows: _Rows, n_new: jax.Array) -> jax.Array:
        """A row whose last new token is an end-of-turn, or whose response reached max_total_tokens."""
        last = jnp.take_along_axis(rows.resp, jnp.clip(rows.resp_len - 1, 0)[:, None], axis=1)[:, 0]
        return (self.eos_table[jnp.clip(last, 0)] & (n_new > 0)) | (rows.resp_len >= self.mcts.max_total_tokens)

    def _evaluate(self, rows: _Rows, terminal: jax.Array, key: jax.Array, stats: jax.Array):
        """(O, C, stats) of each row's context: Eq. 6–7 (simulation for O of non-terminal rows:
        `MCTSConfig.simulation_mode`)."""
        R, S = rows.ctx.shape[0], self.mcts.simulations
        k_eval, k_roll = jax.random.split(key)
        resp, lens, query, need = rows.resp, self._response_len(rows.resp, rows.resp_len), rows.query, terminal
        steps_mode = self.mcts.simulation_mode == "steps"
        if S > 0 and steps_mode:
            # Table 5 / the text above it: at most S simulation steps from the new node (one rollout);
            # its outcome counts only when it reached a complete response
            ro, done = rows, terminal
            for k in jax.random.split(k_roll, S):
                ro, n, _, stats = self._decode(ro, done, k, True, stats)
                done = done | self._terminal(ro, n)
            resp = jnp.concatenate([resp, ro.resp], axis=0)
            lens = jnp.concatenate([lens, self._response_len(ro.resp, ro.resp_len)])
            query = jnp.concatenate([query, ro.query])
            need = jnp.concatenate([need, done & ~terminal])
        elif S > 0:
            idx = jnp.repeat(jnp.arange(R), S)
            ro = _Rows(fork_cache(rows.cache, idx), rows.logits[idx], rows.ctx[idx], rows.resp[idx],
                       rows.resp_len[idx], rows.query[idx])
            ro, _, _, stats = self._decode(ro, terminal[idx], k_roll, False, stats)
            resp = jnp.concatenate([resp, ro.resp], axis=0)
            lens = jnp.concatenate([lens, self._response_len(ro.resp, ro.resp_len)])
            query = jnp.concatenate([query, ro.query])
            need = jnp.concatenate([need, ~terminal[idx]])
        C = self._self_eval(rows, k_eval)
        stats = stats + jnp.array([R * self.suffix.shape[1], 0, jnp.sum(need)], jnp.float32)
        o = self.outcome_fn(query, resp, lens, need).astype(jnp.float32)
        if S > 0 and steps_mode:
            O = jnp.where(terminal, o[:R], o[R:])
        elif S > 0:
            O = jnp.where(terminal, o[:R], jnp.mean(o[R:].reshape(R, S), axis=1))
        else:
            O = jnp.where(terminal, o[:R], 0.0)
        return O, C, stats

    # -- environment protocol --------------------------------------------------------------
    def init(self, key):
        cfg, mcts = self.cfg, self.mcts
        B, P = self.prompts.shape
        cache = self.family.init_cache(cfg, B, self.S, run=self.run)
        logits, cache = self.family.forward_cached(self.params, self.prompts, cache, jnp.zeros((B,), jnp.int32), cfg,
                                             prefill=True, logits_at=self.lens - 1, run=self.run)
        prompt_kv = {n: c[:, :, :, :P] for n, c in cache.items()}
        k = cache["k"]
        step_kv = {n: jnp.zeros((k.shape[0], B, mcts.capacity, k.shape[2], mcts.max_step_tokens, k.shape[4]), k.dtype)
                   for n in ("k", "v")}
        empty = jnp.full((B, mcts.max_total_tokens), -1, jnp.int32)
        rows = _Rows(cache, logits[:, 0].astype(jnp.float32), self.lens, empty,
                     jnp.zeros((B,), jnp.int32), jnp.arange(B, dtype=jnp.int32))
        stats = jnp.array([B * P, 0, 0], jnp.float32)
        terminal = jnp.zeros((B,), bool)
        O, C, stats = self._evaluate(rows, terminal, key, stats)
        return _EnvState(prompt_kv, step_kv, stats), NodeEval(O, C, terminal)

    def _ancestors(self, tree: Tree, leaf):
        """Nodes from the leaf up to (not including) the root, [B, depth] (-1 past the root)."""
        out, a = [], leaf
        for _ in range(self.mcts.depth):
            ok = a > 0
            out.append(jnp.where(ok, a, -1))
            a = jnp.where(ok, _get(tree.parent, a), 0)
        return jnp.stack(out, axis=1)

    def _assemble(self, state: _EnvState, tree: Tree, leaf):
        """The leaf's context: working cache [L, B, K, S, Dh] = prompt KV + the path's step KVs,
        and its response tokens [B, Tmax]."""
        B, P = self.prompts.shape
        T, Tmax = self.mcts.max_step_tokens, self.mcts.max_total_tokens
        nodes = self._ancestors(tree, leaf)                                   # [B, D]
        D = nodes.shape[1]
        b = jnp.arange(B)[:, None, None]
        ns = jnp.clip(nodes, 0)[:, :, None]                                   # [B, D, 1]
        t = jnp.arange(T)[None, None, :]                                      # [1, 1, T]
        length = tree.length[b, ns]
        off = tree.resp_len[b, ns] - length                                   # response offset of each step
        valid = (nodes[:, :, None] >= 0) & (t < length)                       # [B, D, T]
        dest = jnp.where(valid, off + t, Tmax)                                # response column
        bb = jnp.broadcast_to(b, (B, D, T)).reshape(B, D * T)
        nn = jnp.broadcast_to(ns, (B, D, T)).reshape(B, D * T)
        tt = jnp.broadcast_to(t, (B, D, T)).reshape(B, D * T)
        dest = dest.reshape(B, D * T)
        resp = jnp.full((B, Tmax), -1, jnp.int32).at[bb, dest].set(tree.tokens[bb, nn, tt], mode="drop")
        slot = jnp.where(dest < Tmax, self.lens[:, None] + dest, self.S)
        cache = {}
        for name in ("k", "v"):
            pk = state.prompt_kv[name]
            c = jnp.pad(pk, ((0, 0), (0, 0), (0, 0), (0, self.S - P), (0, 0)))
            src = state.step_kv[name][:, bb, nn, :, tt, :]                  # [B, D*T, L, K, Dh]
            cache[name] = c.at[:, bb, :, slot, :].set(src, mode="drop")
        return cache, resp, _get(tree.resp_len, leaf)

    def expand(self, state: _EnvState, tree: Tree, leaf, new_ids, active, key):
        mcts = self.mcts
        B, P = self.prompts.shape
        W, T, Tmax = mcts.width, mcts.max_step_tokens, mcts.max_total_tokens
        cache, resp, resp_len = self._assemble(state, tree, leaf)
        ctx = self.lens + resp_len
        last_resp = jnp.take_along_axis(resp, jnp.clip(resp_len - 1, 0)[:, None], axis=1)[:, 0]
        last_prompt = jnp.take_along_axis(self.prompts, (self.lens - 1)[:, None], axis=1)[:, 0]
        last = jnp.where(resp_len > 0, last_resp, last_prompt)
        logits, cache = self._fwd(last[:, None], cache, ctx - 1)             # re-feed: next-token logits
        stats = state.stats + jnp.array([B, 0, 0], jnp.float32)
        idx = jnp.repeat(jnp.arange(B), W)
        rows = _Rows(fork_cache(cache, idx), logits[idx, 0].astype(jnp.float32), ctx[idx], resp[idx], resp_len[idx],
                     idx.astype(jnp.int32))
        k_step, k_eval = jax.random.split(key)
        R = B * W
        done0 = ~active[idx]
        rows, n, lp_sum, stats = self._decode(rows, done0, k_step, True, stats)
        last_tok = jnp.take_along_axis(rows.resp, jnp.clip(rows.resp_len - 1, 0)[:, None], axis=1)[:, 0]
        terminal = (self.eos_table[jnp.clip(last_tok, 0)] & (n > 0)) | (rows.resp_len >= Tmax)
        # the children's step tokens and step KV (cache slots ctx0 .. ctx0 + n - 1)
        t = jnp.arange(T)[None, :]
        ctx0 = ctx[idx]
        col = jnp.clip(resp_len[idx][:, None] + t, 0, Tmax - 1)
        step_tok = jnp.where(t < n[:, None], jnp.take_along_axis(rows.resp, col, axis=1), -1)
        slots = jnp.clip(ctx0[:, None] + t, 0, self.S - 1)                  # [R, T]
        r_idx = jnp.broadcast_to(jnp.arange(R)[:, None], (R, T))
        ids = jnp.where(active[:, None], new_ids, mcts.capacity)             # [B, W]
        bw = jnp.broadcast_to(jnp.arange(B)[:, None], (B, W))
        step_kv = {}
        for name in ("k", "v"):
            g = rows.cache[name][:, r_idx, :, slots, :]                     # [R, T, L, K, Dh]
            g = g.reshape(B, W, *g.shape[1:]).transpose(3, 0, 1, 4, 2, 5)  # [L, B, W, K, T, Dh]
            step_kv[name] = state.step_kv[name].at[:, bw, ids].set(g, mode="drop")
        O, C, stats = self._evaluate(rows, terminal, k_eval, stats)
        nf = jnp.maximum(n, 1).astype(jnp.float32)
        prior = jnp.exp(lp_sum / nf) if mcts.prior == "mean" else jnp.exp(lp_sum)
        ch = ChildBatch(prior.reshape(B, W), lp_sum.reshape(B, W), O.reshape(B, W), C.reshape(B, W),
                        terminal.reshape(B, W), step_tok.reshape(B, W, T), n.reshape(B, W))
        return _EnvState(state.prompt_kv, step_kv, stats), ch

