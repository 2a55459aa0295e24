"""A user-written NNX training loop on the module equals jaxtool's train step (issue 29).

The user's side: `nnx.Optimizer(model, tx, wrt=nnx.Param)`, `nnx.value_and_grad` of a loss they write
themselves from the module's logits (token-mean NLL over the trained targets: log_softmax of the full
logits, in the test), `nnx.jit`. jaxtool's side: `train.steps.make_train_step` with the SFT objective
(chunked log-probs, `jaxtool.objectives` "sft") and the trainer's optimizer (`train.optim.make_optimizer`:
global-norm clip, AdamW with weight decay on matrices only, the LR schedule). Same initial parameters,
same batch, two steps: same losses and the same parameters after each step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtool.config import LossConfig, OptimConfig
from jaxtool.data.batch import Batch
from jaxtool.models import preset
from jaxtool.models.nnx import CausalLM
from jaxtool.train import steps
from jaxtool.train.optim import make_optimizer


def _batch(cfg, B=2, L=12, seed=0):
    rng = np.random.RandomState(seed)
    mask = (rng.rand(B, L) > 0.4).astype(np.int32)
    return Batch(inputs=rng.randint(0, cfg.vocab_size, (B, L)).astype(np.int32),
                 targets=rng.randint(0, cfg.vocab_size, (B, L)).astype(np.int32), loss_mask=mask,
                 turn_ids=np.where(mask > 0, 0, -1).astype(np.int32),
                 positions=np.tile(np.arange(L, dtype=np.int32), (B, 1)), segment_ids=np.ones((B, L), np.int32))


def user_loss(model, b):
    """What a user writes: mean negative log-likelihood of the trained targets."""
    logits = model(b.inputs, b.positions, b.segment_ids).astype(jnp.float32)
    lp = jnp.take_along_axis(jax.nn.log_softmax(logits), b.targets[..., None], axis=-1)[..., 0]
    w = b.loss_mask.astype(jnp.float32)
    return -jnp.sum(lp * w) / jnp.sum(w)


@pytest.mark.slow   # two train-step compiles (~20 s of CPU here)
def test_nnx_loop_equals_jaxtool_train_step():
    cfg = dataclasses.replace(preset("tiny"), num_layers=1)
    model = CausalLM(cfg, rngs=nnx.Rngs(0))
    p0 = jax.tree.map(jnp.copy, model.pure_params())
    # a linear decay over 4 steps (the 2nd step's LR is 3/4 of the 1st), clipping that bites, decay on
    # matrices only: a wrong schedule count, clip or mask moves a parameter by >= 1e-3 (lr * 0.1)
    oc = OptimConfig(lr=1e-2, weight_decay=0.1, schedule="linear", grad_clip=0.5, eps=1e-3)
    tx, _ = make_optimizer(oc, 4)
    batches = [jax.tree.map(jnp.asarray, _batch(cfg, seed=s)) for s in (0, 1)]

    train = steps.make_train_step(cfg, LossConfig(type="sft"), tx, donate=False)
    state = steps.TrainState(jnp.zeros((), jnp.int32), p0, tx.init(p0))
    want_loss, want_params, grad_norms = [], [], []
    for b in batches:
        state, metrics = train(state, b)
        want_loss.append(float(metrics["loss"]))
        grad_norms.append(float(metrics["grad_norm"]))
        want_params.append(state.trainable)
    assert min(grad_norms) > oc.grad_clip   # the clip is active in both steps

    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, b):
        loss, grads = nnx.value_and_grad(user_loss)(model, b)
        opt.update(model, grads)
        return loss

    for b, wl, wp in zip(batches, want_loss, want_params):
        assert float(step(model, opt, b)) == pytest.approx(wl, rel=1e-5)
        got = model.pure_params()
        for path, g in jax.tree_util.tree_leaves_with_path(got):
            w = dict(jax.tree_util.tree_leaves_with_path(wp))[path]
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-6, rtol=0,
                                       err_msg=jax.tree_util.keystr(path))
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(p0)))
    assert moved > 1e-3
