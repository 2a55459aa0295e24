"""From trajectories to a training batch, and the jitted GRPO-family update.

`trajectory_batch` lays each trajectory out as one row: inputs = prompt ids + response ids exactly
as the rollout fed them (no re-rendering, no re-tokenising), targets shifted by one, and
`loss_mask` 1 only on targets the policy sampled (prompt, tool/environment tokens and padding are
attended to but not trained). Per-token advantages and the aggregation weights
(`losses.grpo_token_weights`) are computed on the host over the whole rollout batch.

The update reuses the train-state code (`jaxtool.train.state.build_state`: mesh, LoRA split,
optimizer and its sharding) and the model seam through `jaxtool.train.steps.model_logps`
(`family_of(cfg)`); the objective's pure `compute` comes from the loss registry (kind "rl").
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtool import losses
from jaxtool.data.batch import Batch
from jaxtool.models import lora
from jaxtool.train import steps


def _bucket(n: int, m: int) -> int:
    return max(m, -(-n // m) * m)


def trajectory_batch(trajs: Sequence, pad_id: int = 0, length_multiple: int = 32) -> Batch:
    """One row per trajectory (see the module doc); turn_ids carry each trained token's assistant turn."""
    rows = [list(t.prompt_ids) + list(t.ids) for t in trajs]
    L = _bucket(max(len(r) for r in rows) - 1, length_multiple)
    B = len(rows)
    inputs = np.full((B, L), pad_id, np.int32)
    targets = np.full((B, L), pad_id, np.int32)
    mask = np.zeros((B, L), np.int32)
    turn = np.full((B, L), -1, np.int32)
    seg = np.zeros((B, L), np.int32)
    for b, (t, r) in enumerate(zip(trajs, rows)):
        n = len(r) - 1
        inputs[b, :n] = r[:-1]
        targets[b, :n] = r[1:]
        seg[b, :n] = 1
        p = len(t.prompt_ids)
        # response token j sits at index p + j of the row; it is predicted at position p + j - 1
        mask[b, p - 1:p - 1 + len(t.ids)] = t.sampled
        turn[b, p - 1:p - 1 + len(t.ids)] = t.turn_ids
    positions = np.broadcast_to(np.arange(L, dtype=np.int32), (B, L)).copy()
    return Batch(inputs, targets, mask, turn, positions, seg, np.arange(B, dtype=np.int32))


def token_advantages(batch: Batch, adv_seq: np.ndarray | None = None, adv_turn: np.ndarray | None = None) -> np.ndarray:
    """[B, L] advantages on trained tokens: a sequence-level value per row, or per assistant turn
    (adv_turn [B, T], indexed by each token's turn id)."""
    m = np.asarray(batch.loss_mask) > 0
    if adv_turn is not None:
        t = np.clip(np.asarray(batch.turn_ids), 0, adv_turn.shape[1] - 1)
        out = np.take_along_axis(np.asarray(adv_turn, np.float32), t, axis=1)
    else:
        out = np.broadcast_to(np.asarray(adv_seq, np.float32)[:, None], m.shape)
    return np.where(m, out, 0.0).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("cfg", "run", "use_lora"))
def policy_logps(trainable, frozen, batch: Batch, *, cfg, run, use_lora: bool):
    """Per-token log-probs [B, L] of the batch's targets under the policy (no gradient)."""
    params = lora.attach(frozen, trainable) if use_lora else trainable
    return jax.lax.stop_gradient(steps.model_logps(params, batch, cfg, run))


def _loss(trainable, frozen, batch, old_lp, ref_lp, adv, weights, *, cfg, run, use_lora, obj, hp):
    params = lora.attach(frozen, trainable) if use_lora else trainable
    lp = steps.model_logps(params, batch, cfg, run)
    if old_lp is None:  # one update per rollout: the sampling policy is the current one (ratio 1)
        old_lp = jax.lax.stop_gradient(lp)
    pol = {"token_logps": lp, "old_logps": old_lp, "advantages": adv, "weights": weights,
           "loss_mask": batch.loss_mask}
    per_tok, m = obj.compute(pol, None if ref_lp is None else {"token_logps": ref_lp}, hp)
    tok = (batch.loss_mask > 0).astype(jnp.float32)
    sums = {k: jnp.sum(v * tok) for k, v in m.items()}   # metric sums and the token count: micro-batches add up
    sums["_tokens"] = jnp.sum(tok)
    return jnp.sum(weights * per_tok), sums


def _interleave(tree, n: int):
    """[B, ...] -> [n, B/n, ...], micro-batch m holding rows m, m + n, m + 2n, ... (a batch sharded in
    contiguous row blocks over devices gives every micro-batch rows on every device)."""
    return jax.tree.map(lambda x: jnp.swapaxes(x.reshape((x.shape[0] // n, n) + x.shape[1:]), 0, 1), tree)


def make_update(optimizer: optax.GradientTransformation, *, cfg, run, use_lora: bool, obj, hp, state_shardings=None,
                micro_batches: int = 1):
    """A jitted `(state, frozen, batch, old_lp, ref_lp, adv, weights) -> (state, metrics)`: one
    optimizer step on one rollout batch (state donated).

    micro_batches > 1 (`optim.grad_accum`): the rows are split into that many micro-batches whose
    gradients are summed in a `lax.scan` before the one optimizer step. The aggregation weights are
    computed over the whole rollout batch beforehand (`aggregation_weights`), so the summed loss is
    exactly the whole-batch loss and the step equals the unsplit one up to float summation order."""
    grad_fn = jax.value_and_grad(_loss, has_aux=True)
    kw = dict(cfg=cfg, run=run, use_lora=use_lora, obj=obj, hp=hp)

    def grads(trainable, frozen, batch, old_lp, ref_lp, adv, weights):
        if micro_batches == 1:
            return grad_fn(trainable, frozen, batch, old_lp, ref_lp, adv, weights, **kw)
        xs = _interleave((batch, old_lp, ref_lp, adv, weights), micro_batches)

        def body(carry, x):
            (l, s), g = grad_fn(trainable, frozen, *x, **kw)
            acc_l, acc_s, acc_g = carry
            return (acc_l + l, jax.tree.map(jnp.add, acc_s, s), jax.tree.map(jnp.add, acc_g, g)), None

        (l0, s0), _ = jax.eval_shape(lambda: grad_fn(trainable, frozen, *jax.tree.map(lambda x: x[0], xs), **kw))
        zeros = lambda t: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), t)  # noqa: E731
        (loss, sums, g), _ = jax.lax.scan(body, (jnp.zeros((), l0.dtype), zeros(s0), zeros(trainable)), xs)
        return (loss, sums), g

    def update(state: steps.TrainState, frozen, batch, old_lp, ref_lp, adv, weights):
        (loss, sums), g = grads(state.trainable, frozen, batch, old_lp, ref_lp, adv, weights)
        n = jnp.maximum(sums.pop("_tokens"), 1.0)
        m = {k: v / n for k, v in sums.items()}
        updates, opt_state = optimizer.update(g, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        m = {**m, "loss": loss, "grad_norm": optax.tree.norm(g)}
        return steps.TrainState(state.step + 1, trainable, opt_state), m

    return jax.jit(update, donate_argnums=(0,),
                   out_shardings=(state_shardings, None) if state_shardings is not None else None)


def aggregation_weights(batch: Batch, hp, max_new_tokens: int) -> np.ndarray:
    """`losses.grpo_token_weights` over the whole rollout batch (Dr. GRPO's constant defaults to the
    response budget)."""
    const = hp.norm_constant or float(max_new_tokens)
    return np.asarray(losses.grpo_token_weights(jnp.asarray(batch.loss_mask), hp.aggregation, const))


__all__ = ["trajectory_batch", "token_advantages", "policy_logps", "make_update", "aggregation_weights"]
