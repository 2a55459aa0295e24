"""Batched multi-turn rollouts with a jitted KV-cache decoder.

    trajs = rollout(params, cfg, prompts, fmt=fmt, tokenizer=tok, group_size=G, make_env=...)

Every prompt is repeated for its G rows and all rows decode together in one `lax.while_loop` (the model reached only through
`family_of(cfg).forward_cached`). A row's assistant turn ends at a stop id (the format's end of turn
/ EOS). Then, on the host, the turn's text is parsed by the chat format; when it calls tools and the
row has an environment, the calls run in it (`ToolEnv.step`) and the results are rendered by the
chat format *as the tool message only* (plus the next assistant header), tokenized, and fed to the
row's cache at its current position — decoding continues from the cached prefix, nothing is
re-encoded. Environment tokens are recorded with `sampled=0` and never trained.

The trajectory keeps the ids exactly as they were fed to the model: the update step trains these ids
(no re-rendering of the chat template between rollout and update, the most reported bug of RL
frameworks for tool use). Finish reasons (counted by the caller): "answer" (a turn with no call, or
a single-turn row's calls), "max_turns", "length" (the turn or the response budget ran out, so a
call may never have closed), "env_error" (the environment raised).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtool import sharding
from jaxtool.data.schema import Conversation, Message
from jaxtool.models.family import family_of
from jaxtool.models.run import DEFAULT_RUN, RunOptions
from jaxtool.sample.generate import Sampling, sample_token


@dataclasses.dataclass
class Trajectory:
    prompt_index: int                  # which prompt (task) of the batch
    prompt_ids: list[int]
    ids: list[int] = dataclasses.field(default_factory=list)        # response: sampled + environment tokens, as fed
    sampled: list[int] = dataclasses.field(default_factory=list)    # 1 where the policy sampled the token
    logps: list[float] = dataclasses.field(default_factory=list)    # the sampler's log-prob (0 on env tokens)
    turn_ids: list[int] = dataclasses.field(default_factory=list)   # assistant turn of each sampled token, -1 else
    texts: list[str] = dataclasses.field(default_factory=list)      # each assistant turn's text (stop cut)
    replies: list[Any] = dataclasses.field(default_factory=list)    # each turn parsed by the format (`Reply`)
    results: list[list[Any]] = dataclasses.field(default_factory=list)  # tool results after each turn
    finish: str = ""
    finished_turn: bool = False        # the last turn ended with a stop id
    env: Any = None
    error: str = ""

    @property
    def num_turns(self) -> int:
        return len(self.texts)

    @property
    def num_sampled(self) -> int:
        return int(sum(self.sampled))


class _State(NamedTuple):
    cache: dict
    last_logits: jax.Array     # [B, V]
    pos: jax.Array             # [B] next cache slot
    done: jax.Array            # [B]
    toks: jax.Array            # [B, N] this turn's sampled tokens
    lps: jax.Array             # [B, N]
    n: jax.Array               # [B] tokens sampled this turn
    key: jax.Array


@functools.partial(jax.jit, static_argnames=("cfg", "run"), donate_argnums=(2,))
def _feed(params, chunk, cache, start, lens, *, cfg, run):
    """Append tokens chunk [B, T] (row b: its first lens[b]) at start[b]; logits after the last one."""
    fam = family_of(cfg)
    logits, cache = fam.forward_cached(params, chunk, cache, start, cfg, logits_at=jnp.maximum(lens - 1, 0), run=run)
    return logits[:, 0].astype(jnp.float32), cache


@functools.partial(jax.jit, static_argnames=("cfg", "sampling", "run"), donate_argnums=(1,))
def _decode(params, st: _State, stop_ids, cap, *, cfg, sampling, run):
    fam = family_of(cfg)
    N = st.toks.shape[1]
    rows = jnp.arange(st.pos.shape[0])

    def cond(s):
        return ~jnp.all(s.done)

    def body(s):
        key, sub = jax.random.split(s.key)
        tok, lp = sample_token(s.last_logits, sub, sampling)
        active = ~s.done
        slot = jnp.minimum(s.n, N - 1)
        toks = s.toks.at[rows, slot].set(jnp.where(active, tok, s.toks[rows, slot]))
        lps = s.lps.at[rows, slot].set(jnp.where(active, lp, s.lps[rows, slot]))
        hit = jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)
        logits, cache = fam.forward_cached(params, tok[:, None], s.cache, jnp.minimum(s.pos, cap - 1), cfg, run=run)
        a = active.astype(jnp.int32)
        n, pos = s.n + a, s.pos + a
        done = s.done | (active & (hit | (n >= N) | (pos >= cap)))
        last = jnp.where(active[:, None], logits[:, 0].astype(jnp.float32), s.last_logits)
        return _State(cache, last, pos, done, toks, lps, n, key)

    return jax.lax.while_loop(cond, body, st)


def _bucket(n: int, m: int) -> int:
    return max(m, -(-n // m) * m)


def tool_suffix_text(fmt, reply, results: Sequence[Any]) -> str:
    """The text between the end of an assistant turn that made `reply.tool_calls` and the next
    assistant turn's body: the chat format's rendering of the tool messages only (plus what the
    format writes after an assistant turn, e.g. ChatML's newline, and the next generation prompt).
    Rendered from a stand-in conversation; only the segments after the assistant body are kept."""
    calls = tuple(reply.tool_calls)
    msgs = [Message("user", "."), Message("assistant", reply.content, tool_calls=calls)]
    for c, r in zip(calls, results):
        msgs.append(Message("tool", r.content, name=r.name or c.name))
    conv = Conversation(tuple(msgs))
    segs = fmt.render(conv)
    last = max(i for i, s in enumerate(segs) if s.trainable)
    return "".join(s.text for s in segs[last + 1:]) + fmt.generation_prompt(conv)


def rollout(params, cfg, prompts: Sequence[Sequence[int]], *, fmt, tokenizer, group_size: int,
            make_env: Callable[[int], Any] | None = None, sampling: Sampling = Sampling(temperature=1.0),
            stop_ids: Sequence[int] = (), max_turn_tokens: int = 64, max_response_tokens: int = 256,
            max_turns: int = 1, seed: int = 0, run: RunOptions = DEFAULT_RUN, pad_id: int = 0,
            length_multiple: int = 32) -> list[Trajectory]:
    """G trajectories per prompt (rows p*G .. p*G+G-1 answer prompt p), in one decode batch.

    make_env(p) -> a fresh, reset `ToolEnv` for one trajectory of prompt p, or None (single-turn: the
    first assistant turn is the whole response). max_turns bounds assistant turns per trajectory;
    max_turn_tokens bounds one turn; max_response_tokens bounds all response tokens (sampled + env)."""
    fam = family_of(cfg)
    P, G = len(prompts), int(group_size)
    B = P * G
    lens = np.array([len(p) for p in prompts], np.int32)
    if P == 0:
        return []
    if lens.min() < 1:
        raise ValueError("every prompt needs at least one token")
    Lp = _bucket(int(lens.max()), length_multiple)
    cap = Lp + _bucket(max_response_tokens, length_multiple) + length_multiple  # + a tool chunk's padding
    # the prompts enter through the same program that appends tool tokens (one compiled shape when
    # the buckets agree); each prompt is repeated for its G rows
    arr = np.full((B, Lp), pad_id, np.int32)
    for b in range(B):
        arr[b, :lens[b // G]] = prompts[b // G]
    per_layer = isinstance(params["layers"], (list, tuple))
    cache = fam.init_cache(cfg, B, cap, per_layer=per_layer, run=run)
    last, cache = _feed(params, jnp.asarray(arr), cache, jnp.zeros((B,), jnp.int32),
                        jnp.asarray(np.repeat(lens, G)), cfg=cfg, run=run)
    trajs = [Trajectory(b // G, list(prompts[b // G])) for b in range(B)]
    for b, t in enumerate(trajs):
        t.env = make_env(b // G) if make_env is not None else None
    stop_arr = jnp.asarray(np.array(sorted(set(int(s) for s in stop_ids)) or [-1], np.int32))
    stop_set = set(int(s) for s in stop_ids)
    N = _bucket(max_turn_tokens, 8)
    pos = np.repeat(lens, G).astype(np.int32)
    live = np.ones(B, bool)
    key = jax.random.key(seed)
    turn = 0
    while True:
        # a row's turn budget: its own turn limit and what is left of the response budget
        room = np.array([max_response_tokens - len(t.ids) for t in trajs])
        st = _State(cache, last, jnp.asarray(pos), jnp.asarray(~live | (room <= 0)), jnp.zeros((B, N), jnp.int32),
                    jnp.zeros((B, N), jnp.float32), jnp.asarray(np.maximum(N - np.minimum(room, max_turn_tokens), 0)
                                                                .astype(np.int32)), key)
        offset = np.asarray(st.n)
        st = _decode(params, st, stop_arr, jnp.int32(cap), cfg=cfg, sampling=sampling, run=run)
        cache, last, key = st.cache, st.last_logits, st.key
        # whole on every process (a multi-process mesh: gathered; every process runs the same host loop)
        toks, lps, n, pos = sharding.to_host((st.toks, st.lps, st.n, st.pos))
        pos = pos.copy()
        feeds: dict[int, list[int]] = {}
        for b in np.nonzero(live)[0]:
            t = trajs[b]
            new = toks[b, offset[b]:n[b]].tolist()
            new_lp = lps[b, offset[b]:n[b]].tolist()
            t.ids += new
            t.sampled += [1] * len(new)
            t.logps += new_lp
            t.turn_ids += [turn] * len(new)
            closed = bool(new) and new[-1] in stop_set
            body = new[:-1] if closed else new
            text = fmt.cut_at_stop(tokenizer.decode(body, skip_special_tokens=False))
            reply = fmt.parse(text)
            t.texts.append(text)
            t.replies.append(reply)
            t.finished_turn = closed
            if not closed:
                t.finish = "length"
            elif not reply.tool_calls or t.env is None:
                t.finish = "answer"
            elif turn + 1 >= max_turns:
                t.finish = "max_turns"
            else:
                try:
                    results = t.env.step(list(reply.tool_calls))
                except Exception as e:  # an environment bug must not end the run: counted
                    t.finish, t.error = "env_error", f"{type(e).__name__}: {e}"
                else:
                    t.results.append(list(results))
                    suffix = tokenizer.encode(tool_suffix_text(fmt, reply, results), add_special_tokens=False)
                    if len(t.ids) + len(suffix) + 1 > max_response_tokens:
                        t.finish = "length"
                    else:
                        feeds[b] = suffix
            if t.finish:
                live[b] = False
        if not feeds:
            break
        T = _bucket(max(len(s) for s in feeds.values()), length_multiple)
        chunk = np.full((B, T), pad_id, np.int32)
        flen = np.zeros(B, np.int32)
        for b, s in feeds.items():
            chunk[b, :len(s)] = s
            flen[b] = len(s)
            t = trajs[b]
            t.ids += s
            t.sampled += [0] * len(s)
            t.logps += [0.0] * len(s)
            t.turn_ids += [-1] * len(s)
        fed = np.zeros(B, bool)
        fed[list(feeds)] = True
        # rows not fed (finished) write padding at slot 0: never read again
        start = np.where(fed, pos, 0).astype(np.int32)
        new_last, cache = _feed(params, jnp.asarray(chunk), cache, jnp.asarray(start), jnp.asarray(flen), cfg=cfg,
                                run=run)
        last = jnp.where(jnp.asarray(fed)[:, None], new_last, last)
        pos = pos + flen
        turn += 1
    return trajs


__all__ = ["Trajectory", "rollout", "tool_suffix_text"]
