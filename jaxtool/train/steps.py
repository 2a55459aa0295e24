"""Pure, jittable train/eval steps for SFT and preference training.

State is a `TrainState(step, trainable, opt_state)`: `trainable` is the full parameter tree, or the
LoRA adapter tree (then the frozen base parameters are a separate, non-differentiated argument and
carry no optimizer state).

Preference steps run chosen and rejected through the model in ONE concatenated `[2B, L]` forward.
Reference log-probs come either with the batch (`batch["ref"]`, precomputed in one pass before
training) or from a forward of frozen reference parameters inside the step under
`jax.lax.stop_gradient` (no gradient, no optimizer state).

Gradient accumulation splits the global batch into `grad_accum` micro-batches scanned in sequence;
losses are summed over micro-batches and divided once by the global count (target tokens for SFT,
pairs for preference losses), so the update equals the one of a single large batch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxtool import losses
from jaxtool.config import LossConfig
from jaxtool.models import llama, lora
from jaxtool.sharding import constrain

TURN_LOSSES = ("dmpo", "diatool_dpo")
DPO_FAMILY = {"dpo": "sigmoid", "ipo": "ipo", "hinge": "hinge"}


class TrainState(NamedTuple):
    step: jax.Array
    trainable: Any
    opt_state: Any


def _params(trainable, frozen, use_lora: bool):
    return lora.attach(frozen, trainable) if use_lora else trainable


def _token_logps(params, batch, cfg: llama.LlamaConfig, n_logits: int | None = None):
    """Log-probs [B, L] of the targets (0 where not trained).

    n_logits (static): when set, the output projection and softmax run only on each row's first
    `n_logits` trained positions (gathered per row, so batch sharding is kept); untrained positions
    get 0. With assistant tokens a fraction of each dialogue, this skips most of the vocabulary-sized
    work; `n_logits` must be ≥ the largest number of trained targets in a row (see `logits_budget`).
    """
    h = llama.hidden_states(params, batch["inputs"], cfg, positions=batch["positions"],
                            segment_ids=batch["segment_ids"])
    if n_logits is None:
        return losses.token_logps(llama.unembed(params, h, cfg), batch["targets"])
    B, L = batch["targets"].shape
    mask = batch["loss_mask"] > 0
    idx = constrain(jax.vmap(lambda m: jnp.nonzero(m, size=n_logits, fill_value=0)[0])(mask), ("batch", None))
    valid = jnp.arange(n_logits)[None, :] < jnp.sum(mask, axis=1, keepdims=True)           # [B, K]
    hk = constrain(jnp.take_along_axis(h, idx[:, :, None], axis=1), ("batch", None, "act_embed"))  # [B, K, D]
    tk = jnp.take_along_axis(batch["targets"], idx, axis=1)
    lp = jnp.where(valid, losses.token_logps(llama.unembed(params, hk, cfg), tk), 0.0)
    # one-hot scatter back to [B, L] (a dense op: partitions along the batch like everything else)
    onehot = idx[:, :, None] == jnp.arange(L)[None, None, :]
    return constrain(jnp.einsum("bk,bkl->bl", lp, onehot.astype(lp.dtype)), ("batch", None))


def logits_budget(loss_mask, multiple: int = 64) -> int | None:
    """Static `n_logits` for a host batch: the most trained targets in any row, rounded up to
    `multiple`; None (full logits) when that is most of the row anyway."""
    import numpy as np

    m = np.asarray(loss_mask)
    m = m.reshape(-1, m.shape[-1])
    most = int((m > 0).sum(axis=1).max()) if m.size else 0
    k = max(multiple, -(-most // multiple) * multiple)
    return None if k >= 0.75 * m.shape[-1] else k


def _concat(chosen: dict, rejected: dict) -> dict:
    return {k: jnp.concatenate([chosen[k], rejected[k]], axis=0) for k in losses_keys(chosen)}


def losses_keys(batch: dict) -> list[str]:
    return [k for k in ("inputs", "targets", "loss_mask", "turn_ids", "positions", "segment_ids") if k in batch]


def reference_values(token_lp: jax.Array, batch: dict, max_turns: int) -> dict:
    """What a preference loss needs from one side's token log-probs: sequence sums, lengths, turns."""
    out = {"seq": losses.sequence_logps(token_lp, batch["loss_mask"]),
           "len": losses.sequence_lengths(batch["loss_mask"])}
    if max_turns:
        out["turns"], out["turn_mask"] = losses.turn_logps(token_lp, batch["turn_ids"], max_turns)
    return out


def pair_reference(params, batch: dict, cfg: llama.LlamaConfig, max_turns: int, n_logits: int | None = None) -> dict:
    """Reference log-probs of a preference batch: {"chosen": {...}, "rejected": {...}}."""
    B = batch["chosen"]["inputs"].shape[0]
    both = _concat(batch["chosen"], batch["rejected"])
    lp = jax.lax.stop_gradient(_token_logps(params, both, cfg, n_logits))
    vals = reference_values(lp, both, max_turns)
    return {"chosen": jax.tree.map(lambda x: x[:B], vals), "rejected": jax.tree.map(lambda x: x[B:], vals)}


def preference_losses(lc: LossConfig, pol: dict, ref: dict | None) -> tuple[jax.Array, dict]:
    """Dispatch to the configured loss. pol/ref: {"chosen": values, "rejected": values}."""
    c, r = pol["chosen"], pol["rejected"]
    t = lc.type
    if t in DPO_FAMILY:
        return losses.dpo_loss(c["seq"], r["seq"], ref["chosen"]["seq"], ref["rejected"]["seq"], lc.beta,
                               loss_type=DPO_FAMILY[t], label_smoothing=lc.label_smoothing)
    if t == "simpo":
        return losses.simpo_loss(c["seq"], r["seq"], c["len"], r["len"], lc.beta, lc.gamma)
    if t == "orpo":
        return losses.orpo_loss(c["seq"], r["seq"], c["len"], r["len"], lc.lam)
    if t == "dmpo":
        return losses.dmpo_loss(c["turns"], ref["chosen"]["turns"], c["turn_mask"], r["turns"],
                                ref["rejected"]["turns"], r["turn_mask"], lc.beta, lc.gamma)
    if t == "diatool_dpo":
        return losses.diatool_dpo_loss(c["turns"], ref["chosen"]["turns"], c["turn_mask"], r["turns"],
                                       ref["rejected"]["turns"], r["turn_mask"], lc.beta, lc.gamma, lc.margin,
                                       use_phi=lc.use_phi, use_psi=lc.use_psi)
    raise ValueError(f"not a preference loss: {t!r}")


def needs_reference(lc: LossConfig) -> bool:
    return lc.type in DPO_FAMILY or lc.type in TURN_LOSSES


def _micro_loss(trainable, frozen, ref_params, micro, *, cfg, lc: LossConfig, use_lora: bool, max_turns: int,
                n_logits: int | None = None):
    """Sum of per-unit losses of one micro-batch, its unit count and metric sums."""
    params = _params(trainable, frozen, use_lora)
    if lc.type == "sft":
        lp = _token_logps(params, micro, cfg, n_logits)
        mask = micro["loss_mask"].astype(jnp.float32)
        nll = -jnp.sum(lp * mask)
        count = jnp.sum(mask)
        return nll, (count, {"nll_sum": nll, "tokens": count})
    B = micro["chosen"]["inputs"].shape[0]
    both = _concat(micro["chosen"], micro["rejected"])
    lp = _token_logps(params, both, cfg, n_logits)
    vals = reference_values(lp, both, max_turns)
    pol = {"chosen": jax.tree.map(lambda x: x[:B], vals), "rejected": jax.tree.map(lambda x: x[B:], vals)}
    ref = None
    if needs_reference(lc):
        ref = micro["ref"] if "ref" in micro else pair_reference(ref_params, micro, cfg, max_turns, n_logits)
    per_pair, metrics = preference_losses(lc, pol, ref)
    # pairs with no trained token on a side (empty padding rows) contribute nothing
    valid = ((pol["chosen"]["len"] > 0) & (pol["rejected"]["len"] > 0)).astype(jnp.float32)
    sums = {k: jnp.sum(v * valid) for k, v in metrics.items() if v.ndim == 1}
    sums["tokens"] = jnp.sum(both["loss_mask"])
    return jnp.sum(per_pair * valid), (jnp.sum(valid), sums)


def _split_micro(batch, n: int):
    return jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), batch)


def train_step(state: TrainState, batch, frozen, ref_params, *, cfg: llama.LlamaConfig, lc: LossConfig,
               optimizer: optax.GradientTransformation, use_lora: bool, max_turns: int, grad_accum: int,
               schedule=None, n_logits: int | None = None):
    """One optimizer step on a global batch; returns (new state, metrics dict of scalars)."""
    kw = dict(cfg=cfg, lc=lc, use_lora=use_lora, max_turns=max_turns, n_logits=n_logits)
    grad_fn = jax.value_and_grad(_micro_loss, has_aux=True)

    def body(g_acc, mb):
        (loss, (count, sums)), g = grad_fn(state.trainable, frozen, ref_params, mb, **kw)
        return jax.tree.map(jnp.add, g_acc, g), (loss, count, sums)

    if grad_accum == 1:
        (loss_sum, (count, sums)), grads = grad_fn(state.trainable, frozen, ref_params, batch, **kw)
    else:
        zeros = jax.tree.map(jnp.zeros_like, state.trainable)
        grads, (loss_sum, count, sums) = jax.lax.scan(body, zeros, _split_micro(batch, grad_accum))
        loss_sum, count = jnp.sum(loss_sum), jnp.sum(count)
        sums = jax.tree.map(lambda x: jnp.sum(x, axis=0), sums)
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    metrics = {"loss": loss_sum / denom, "grad_norm": optax.tree.norm(grads), "count": count}
    metrics.update({k: v / denom for k, v in sums.items() if k not in ("tokens", "nll_sum")})
    metrics["tokens"] = sums["tokens"]
    if schedule is not None:
        metrics["lr"] = schedule(state.step)
    return TrainState(state.step + 1, trainable, opt_state), metrics


def eval_step(trainable, batch, frozen, ref_params, *, cfg, lc: LossConfig, use_lora: bool, max_turns: int,
              n_logits: int | None = None):
    """Loss sums and metric sums of a batch without updating (for held-out evaluation)."""
    loss, (count, sums) = _micro_loss(trainable, frozen, ref_params, batch, cfg=cfg, lc=lc, use_lora=use_lora,
                                      max_turns=max_turns, n_logits=n_logits)
    return {"loss_sum": loss, "count": count, **{k: v for k, v in sums.items()}}
