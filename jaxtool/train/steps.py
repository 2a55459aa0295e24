"""Pure, jittable train/eval steps for every objective of the loss registry (`jaxtool.objectives`).

State is a `TrainState(step, trainable, opt_state)`: `trainable` is the full parameter tree, or the
LoRA adapter tree (then the frozen base parameters are a separate, non-differentiated argument and
carry no optimizer state).

One path for all objectives: the model gives token log-probs, `policy_stats` reduces them to what
the objective reads (per-token values for SFT; per-side sequence sums, lengths and per-turn sums for
preference objectives), the objective's pure `compute` returns one loss per unit (trained token or
pair) and the step sums them. Preference batches run chosen and rejected through the model in ONE
concatenated `[2B, L]` forward. Reference statistics come with the batch (`PairBatch.ref`,
precomputed once per dataset) or from a forward of frozen reference parameters inside the step
under `jax.lax.stop_gradient`.

Gradient accumulation splits the global batch into `grad_accum` micro-batches scanned in sequence;
losses are summed over micro-batches and divided once by the global unit count, so the update
equals the one of a single large batch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxtool import losses
from jaxtool.config import LossConfig
from jaxtool.data.batch import Batch, PairBatch
from jaxtool.models import lora
from jaxtool.models.family import family_of
from jaxtool.models.run import DEFAULT_RUN, RunOptions
from jaxtool.sharding import constrain


class TrainState(NamedTuple):
    step: jax.Array
    trainable: Any
    opt_state: Any


def _params(trainable, frozen, use_lora: bool):
    return lora.attach(frozen, trainable) if use_lora else trainable


def model_logps(params, batch: Batch, cfg, run: RunOptions = DEFAULT_RUN, n_logits: int | None = None):
    """The model forward to the log-probs [B, L] of the batch's targets (0 where not trained); the last
    step is `losses.logps_from_logits` (or its chunked form, `output_logps`).

    n_logits (static): when set, the output projection and softmax run only on each row's first
    `n_logits` trained positions (gathered per row, so batch sharding is kept); untrained positions
    get 0. With assistant tokens a fraction of each dialogue, this skips most of the vocabulary-sized
    work; `n_logits` must be ≥ the largest number of trained targets in a row (see `logits_budget`).
    """
    fam = family_of(cfg)
    h = fam.hidden_states(params, batch.inputs, cfg, positions=batch.positions, segment_ids=batch.segment_ids,
                          run=run)
    if n_logits is None:
        return output_logps(params, h, batch.targets, cfg, run)
    B, L = batch.targets.shape
    mask = batch.loss_mask > 0
    idx = constrain(jax.vmap(lambda m: jnp.nonzero(m, size=n_logits, fill_value=0)[0])(mask), ("batch", None))
    valid = jnp.arange(n_logits)[None, :] < jnp.sum(mask, axis=1, keepdims=True)           # [B, K]
    hk = constrain(jnp.take_along_axis(h, idx[:, :, None], axis=1), ("batch", None, "act_embed"))  # [B, K, D]
    tk = jnp.take_along_axis(batch.targets, idx, axis=1)
    lp = jnp.where(valid, output_logps(params, hk, tk, cfg, run), 0.0)
    # one-hot scatter back to [B, L] (a dense op: partitions along the batch like everything else)
    onehot = idx[:, :, None] == jnp.arange(L)[None, None, :]
    return constrain(jnp.einsum("bk,bkl->bl", lp, onehot.astype(lp.dtype)), ("batch", None))


def output_logps(params, h, targets, cfg, run: RunOptions = DEFAULT_RUN):
    """log softmax(final_norm(h) @ W_out)[targets], [B, N] float32 — in token chunks with a custom VJP
    when `run.logits_chunk` > 0, so no [tokens × vocab] logits (or their gradient) ever exist."""
    fam = family_of(cfg)
    if not run.logits_chunk:
        return losses.logps_from_logits(fam.unembed(params, h, cfg, run), targets)
    from jaxtool.ops.xent import chunked_token_logps

    w, transposed = fam.output_weight(params, cfg, run)
    hn = constrain(fam.final_norm(params, h, cfg), ("batch", None, "act_embed"))
    return chunked_token_logps(hn, w, targets, transposed=transposed, chunk_tokens=run.logits_chunk)


def logits_budget(loss_mask, multiple: int = 64) -> int | None:
    """Static `n_logits` for a host batch: the most trained targets in any row, rounded up to
    `multiple`; None (full logits) when that is most of the row anyway."""
    import numpy as np

    m = np.asarray(loss_mask)
    m = m.reshape(-1, m.shape[-1])
    most = int((m > 0).sum(axis=1).max()) if m.size else 0
    k = max(multiple, -(-most // multiple) * multiple)
    return None if k >= 0.75 * m.shape[-1] else k


def batch_logits_budget(batch: Batch | PairBatch) -> int | None:
    """`logits_budget` of a host batch (both sides of a pair)."""
    if isinstance(batch, PairBatch):
        budgets = [logits_budget(batch.chosen.loss_mask), logits_budget(batch.rejected.loss_mask)]
        return None if any(b is None for b in budgets) else max(budgets)
    return logits_budget(batch.loss_mask)


def sequence_stats(token_lp: jax.Array, batch: Batch, max_turns: int) -> dict:
    """What a preference objective reads from one side's token log-probs: sums, lengths, turns."""
    out = {"seq": losses.sequence_logps(token_lp, batch.loss_mask),
           "len": losses.sequence_lengths(batch.loss_mask)}
    if max_turns:
        out["turns"], out["turn_mask"] = losses.turn_logps(token_lp, batch.turn_ids, max_turns)
    return out


def _split_sides(stats: dict, B: int) -> dict:
    return {"chosen": jax.tree.map(lambda x: x[:B], stats), "rejected": jax.tree.map(lambda x: x[B:], stats)}


def pair_stats(params, batch: PairBatch, cfg, run: RunOptions, max_turns: int, n_logits: int | None = None) -> dict:
    """{"chosen": stats, "rejected": stats} of a preference batch in one [2B, L] forward."""
    both = batch.both()
    lp = model_logps(params, both, cfg, run, n_logits)
    return _split_sides(sequence_stats(lp, both, max_turns), batch.chosen.inputs.shape[0])


def pair_reference(params, batch: PairBatch, cfg, max_turns: int, n_logits: int | None = None,
                   run: RunOptions = DEFAULT_RUN) -> dict:
    """Reference statistics of a preference batch (no gradient)."""
    return jax.lax.stop_gradient(pair_stats(params, batch, cfg, run, max_turns, n_logits))


def _reference_from_batch(batch: PairBatch, max_turns: int) -> dict:
    ref = batch.ref
    out = {}
    for side in ("chosen", "rejected"):
        out[side] = {"seq": getattr(ref, f"{side}_seq")}
        if max_turns:
            out[side]["turns"] = getattr(ref, f"{side}_turns")
    return out


def _micro_loss(trainable, frozen, ref_params, micro, *, cfg, lc: LossConfig, use_lora: bool, max_turns: int,
                n_logits: int | None = None, run: RunOptions = DEFAULT_RUN):
    """Sum of per-unit losses of one micro-batch, its unit count and metric sums."""
    obj = lc.objective
    params = _params(trainable, frozen, use_lora)
    if obj.kind == "sft":
        lp = model_logps(params, micro, cfg, run, n_logits)
        per_token, metrics = obj.compute({"token_logps": lp, "loss_mask": micro.loss_mask}, None, lc.params)
        weight = (micro.loss_mask > 0).astype(jnp.float32)
        count = jnp.sum(weight)
        sums = {k: jnp.sum(v * weight) for k, v in metrics.items()}
        sums["tokens"] = count
        return jnp.sum(per_token * weight), (count, sums)
    turns = max_turns  # already `step_turns(lc, ...)`: 0 unless the objective reads per-turn sums
    pol = pair_stats(params, micro, cfg, run, turns, n_logits)
    ref = None
    if obj.needs_reference:
        ref = (_reference_from_batch(micro, turns) if micro.ref is not None
               else pair_reference(ref_params, micro, cfg, turns, n_logits, run))
    per_pair, metrics = obj.compute(pol, ref, lc.params)
    # pairs with no trained token on a side (empty padding rows) contribute nothing
    valid = ((pol["chosen"]["len"] > 0) & (pol["rejected"]["len"] > 0)).astype(jnp.float32)
    sums = {k: jnp.sum(v * valid) for k, v in metrics.items() if v.ndim == 1}
    sums["tokens"] = jnp.sum(micro.chosen.loss_mask) + jnp.sum(micro.rejected.loss_mask)
    return jnp.sum(per_pair * valid), (jnp.sum(valid), sums)


def step_turns(lc: LossConfig, max_turns: int) -> int:
    """How many per-turn sums the step computes: `max_turns` for an objective that reads them
    (`needs_turns`), else 0. The one place the objective's flag is read for the step's shape."""
    return int(max_turns) if lc.objective.needs_turns else 0


def _split_micro(batch, n: int):
    return jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), batch)


def train_step(state: TrainState, batch, frozen, ref_params, *, cfg, lc: LossConfig,
               optimizer: optax.GradientTransformation, use_lora: bool, max_turns: int, grad_accum: int,
               schedule=None, n_logits: int | None = None, run: RunOptions = DEFAULT_RUN):
    """One optimizer step on a global batch; returns (new state, metrics dict of scalars). Callers jit
    it through `make_train_step`."""
    kw = dict(cfg=cfg, lc=lc, use_lora=use_lora, max_turns=step_turns(lc, max_turns), n_logits=n_logits, run=run)
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
    metrics.update({k: v / denom for k, v in sums.items() if k != "tokens"})
    metrics["tokens"] = sums["tokens"]
    if schedule is not None:
        metrics["lr"] = schedule(state.step)
    return TrainState(state.step + 1, trainable, opt_state), metrics


def eval_step(trainable, batch, frozen, ref_params, *, cfg, lc: LossConfig, use_lora: bool, max_turns: int,
              n_logits: int | None = None, run: RunOptions = DEFAULT_RUN):
    """Loss sums and metric sums of a batch without updating (for held-out evaluation)."""
    loss, (count, sums) = _micro_loss(trainable, frozen, ref_params, batch, cfg=cfg, lc=lc, use_lora=use_lora,
                                      max_turns=step_turns(lc, max_turns), n_logits=n_logits, run=run)
    return {"loss_sum": loss, "count": count, **sums}


# ---------------------------------------------------------------------------------------------
# the one factory of jitted steps (trainer, bench, launch/memory_plan.py, launch/gpu_memory_check.py)
# ---------------------------------------------------------------------------------------------

def make_train_step(cfg, lc: LossConfig, optimizer: optax.GradientTransformation, *, run: RunOptions = DEFAULT_RUN,
                    use_lora: bool = False, max_turns: int = 0, grad_accum: int = 1, schedule=None,
                    state_shardings=None, donate: bool = True):
    """The jitted train step: `f(state, batch, frozen=None, ref_params=None, *, n_logits=None)` ->
    `(new state, metrics)`.

    `state` is donated (its buffers are reused for the new state) unless `donate=False`;
    `state_shardings` (a `TrainState` of shardings) pins where the new state lives; `n_logits` is
    static (one program per budget, see `logits_budget`). `max_turns` is cut to 0 here when the
    objective does not read per-turn sums (`step_turns`). The same function is lowered for memory
    plans (`f.lower(abstract_state, abstract_batch, ...)`) and called by the trainer and `bench`, so
    what is measured is what trains.
    """
    kw = dict(cfg=cfg, lc=lc, optimizer=optimizer, use_lora=use_lora, max_turns=step_turns(lc, max_turns),
              grad_accum=grad_accum, schedule=schedule, run=run)

    def step(state, batch, frozen=None, ref_params=None, *, n_logits=None):
        return train_step(state, batch, frozen, ref_params, n_logits=n_logits, **kw)

    out_sh = None if state_shardings is None else (state_shardings, None)
    return jax.jit(step, donate_argnums=(0,) if donate else (), out_shardings=out_sh, static_argnames=("n_logits",))


def make_eval_step(cfg, lc: LossConfig, *, run: RunOptions = DEFAULT_RUN, use_lora: bool = False, max_turns: int = 0):
    """The jitted `eval_step`: `f(trainable, batch, frozen=None, ref_params=None, *, n_logits=None)`."""
    kw = dict(cfg=cfg, lc=lc, use_lora=use_lora, max_turns=step_turns(lc, max_turns), run=run)

    def step(trainable, batch, frozen=None, ref_params=None, *, n_logits=None):
        return eval_step(trainable, batch, frozen, ref_params, n_logits=n_logits, **kw)

    return jax.jit(step, static_argnames=("n_logits",))


def make_reference_step(cfg, *, run: RunOptions = DEFAULT_RUN, max_turns: int = 0):
    """The jitted `pair_reference`: `f(reference_params, pair_batch, *, n_logits=None)` with `max_turns`
    per-turn sums (the width the reference column is stored at)."""
    return jax.jit(lambda p, b, n_logits=None: pair_reference(p, b, cfg, max_turns, n_logits, run),
                   static_argnames=("n_logits",))
