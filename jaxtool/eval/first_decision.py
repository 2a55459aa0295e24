"""First-decision probabilities: how much probability a model puts on *opening a tool call* at the start
of its reply, teacher-forced, on each assistant turn of a set of dialogues.

DiaTool-DPO's three behaviours (Jung et al. 2025, §3: call / ask for a missing slot / reject what no
tool serves) are decided at the first tokens of the reply: a call turn opens a call, a slot-filling or
an out-of-tool turn opens text. Greedy accuracy only shows which side of 0.5 the decision fell on;
``P(call opener | history)`` shows how far training moved it — the quantity DiaTool-DPO's per-turn
preference pushes on, and a more sensitive read-out at small sizes than pass rates.

The *call opener* is the token sequence every call of the chat format starts with: the assistant
turn is rendered (and tokenized exactly as in training, `jaxtool.data.tokenize`) with calls to
several made-up function names, and the opener is their common token prefix after the prompt (e.g.
Hermes: ``<tool_call>`` + newline + ``{"name": "``; pythonic: ``[``). ``P(opener)`` is the product of
the teacher-forced token probabilities along it, so it is exactly the probability that a sampled
reply starts with a call.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jaxtool.data.schema import Conversation, Message, ToolCall
from jaxtool.errors import DataError

# made-up names with different first characters and lengths: their common prefix stops before the name
_PROBE_NAMES = ("aaaa", "zzzz", "Get_Q1", "x")


def call_opener(history: Conversation, fmt: Any, tokenizer: Any) -> tuple[list[int], list[int]]:
    """``(prompt_ids, opener_ids)`` for the assistant turn that follows `history` in `fmt`."""
    from jaxtool.data.tokenize import prompt_ids, tokenize_conversation

    prompt = list(prompt_ids(history, fmt, tokenizer))
    tails = []
    for name in _PROBE_NAMES:
        conv = history.replace(messages=tuple(history.messages) + (
            Message("assistant", None, tool_calls=(ToolCall(name, {}),)),))
        ids = tokenize_conversation(conv, fmt, tokenizer).input_ids.tolist()
        if ids[:len(prompt)] != prompt:
            raise DataError(f"{fmt.name}: the rendered call turn does not start with the generation prompt's "
                            "tokens; no call opener can be read off this format")
        tails.append(ids[len(prompt):])
    k = 0
    while all(len(t) > k for t in tails) and len({t[k] for t in tails}) == 1:
        k += 1
    if k == 0:
        raise DataError(f"{fmt.name}: calls to different functions share no first token; this format has no "
                        "call opener")
    return prompt, tails[0][:k]


def opener_probs(model: Any, rows: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 4,
                 bucket: int = 128) -> np.ndarray:
    """``P(opener | prompt)`` for each ``(prompt_ids, opener_ids)`` row with `model` (a `jaxtool.load_model`
    model). Rows are right-padded to a multiple of `bucket` (causal attention: padding after a row's
    tokens changes none of its log-probs); only the opener positions reach the output projection."""
    import jax
    import jax.numpy as jnp

    from jaxtool.train.steps import output_logps

    fam, cfg, run = model.family, model.config, model.run
    kmax = max((len(o) for _, o in rows), default=1)

    @jax.jit
    def logp(params, ids, pos, tgt, valid):
        h = fam.hidden_states(params, ids, cfg, run=run)                         # [B, S, D]
        hk = jnp.take_along_axis(h, pos[:, :, None], axis=1)                     # [B, K, D]
        return jnp.sum(jnp.where(valid, output_logps(params, hk, tgt, cfg, run), 0.0), axis=1)

    out = np.zeros(len(rows), np.float64)
    order = sorted(range(len(rows)), key=lambda i: -(len(rows[i][0]) + len(rows[i][1])))
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        longest = max(len(rows[i][0]) + len(rows[i][1]) for i in idx)
        S = -(-longest // bucket) * bucket
        ids = np.full((batch_size, S), pad, np.int32)
        pos = np.zeros((batch_size, kmax), np.int32)
        tgt = np.zeros((batch_size, kmax), np.int32)
        valid = np.zeros((batch_size, kmax), bool)
        for r, i in enumerate(idx):
            p, o = list(rows[i][0]), list(rows[i][1])
            ids[r, :len(p) + len(o)] = p + o
            n = len(o)
            pos[r, :n] = np.arange(len(p) - 1, len(p) - 1 + n)     # the logits at t predict token t + 1
            tgt[r, :n] = o
            valid[r, :n] = True
        lp = np.asarray(logp(model.params, jnp.asarray(ids), jnp.asarray(pos), jnp.asarray(tgt),
                             jnp.asarray(valid)))
        out[idx] = np.exp(lp[:len(idx)])
    return out


def first_decisions(conversations: Sequence[Conversation], model: Any, fmt: Any, batch_size: int = 4) -> list[dict]:
    """One record per assistant turn of `conversations` (the turns `jaxtool.eval.dialog` evaluates, same
    order): ``{"conv", "turn", "turn_type", "p_call"}``."""
    from jaxtool.eval.dialog import collect_turns

    turns = collect_turns(conversations)
    rows = [call_opener(t.history, fmt, model.tokenizer) for t in turns]
    probs = opener_probs(model, rows, batch_size=batch_size)
    return [{"conv": t.conv_index, "turn": t.index, "turn_type": t.turn_type, "p_call": float(p)}
            for t, p in zip(turns, probs)]
