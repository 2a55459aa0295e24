"""Training state on a mesh: parameters (or LoRA adapters + frozen base), optimizer state and their
shardings, and the jitted steps — everything a run needs before its first step.

    setup = build_state(cfg, model, total_steps, max_turns)
    setup.state                       # TrainState(step, trainable, opt_state), placed on setup.mesh
    setup.train_step(state, batch, n_logits=...)   # jitted, state donated
    setup.eval_step(trainable, batch, n_logits=...)
    setup.reference_step(batch, n_logits=...)      # reference statistics of a PairBatch
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxtool import sharding
from jaxtool.config import TrainConfig
from jaxtool.models import lora, quant
from jaxtool.models.family import family_of
from jaxtool.models.run import RunOptions
from jaxtool.train import steps
from jaxtool.train.optim import make_optimizer


@dataclasses.dataclass
class TrainSetup:
    model_cfg: Any                 # architecture config
    run: RunOptions
    mesh: Any
    use_lora: bool
    state: steps.TrainState
    state_shardings: steps.TrainState
    frozen: Any                    # LoRA: the frozen base parameters (None for full fine-tuning)
    ref_params: Any                # online reference parameters (None when not needed)
    reference_params: Any          # the parameters a precomputed reference is computed from
    optimizer: Any
    schedule: Any
    num_trainable: int
    train_step: Callable = None
    eval_step: Callable = None
    reference_step: Callable = None


def optimizer_state_shardings(abstract_opt_state, trainable_shardings, mesh):
    """Optimizer moments take the sharding of the parameter they track (matched by the parameter's
    key path at the end of the moment's path); counters and scalars are replicated."""
    by_path = {}
    for path, sh in jax.tree_util.tree_flatten_with_path(trainable_shardings)[0]:
        by_path[tuple(str(getattr(k, "key", k)) for k in path)] = sh
    depth = max((len(k) for k in by_path), default=0)

    def pick(path, leaf):
        keys = tuple(str(getattr(k, "key", k)) for k in path if hasattr(k, "key"))
        for n in range(depth, 0, -1):
            sh = by_path.get(keys[-n:])
            if sh is not None and len(sh.spec) <= len(leaf.shape):
                return sh
        return sharding.replicated(mesh)

    return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)


def build_state(c: TrainConfig, model, total_steps: int, max_turns: int, mesh=None) -> TrainSetup:
    """Place the model on the configured mesh (`mesh`: the run's, built once by the trainer; else
    built here from `c.mesh`), split trainable / frozen, build the optimizer and its state (sharded
    like the parameters it tracks) and jit the steps (`steps.make_train_step` and its siblings)."""
    cfg = model.config
    run = model.run
    fam = family_of(cfg)
    if mesh is None:
        mesh = sharding.make_mesh(c.mesh.data, c.mesh.fsdp, c.mesh.tensor)
    params = jax.device_put(model.params, sharding.tree_shardings(fam.param_axes(cfg), model.params, mesh))
    if c.lora.enabled and c.lora.base_quant != "none":
        # QLoRA: the frozen projections stored int8 / NF4, sharded like the plain weights
        # (`quant.quantized_axes`), dequantised in each matmul
        quantize = lambda p: quant.quantize_params(p, c.lora.base_quant, fam.projections)  # noqa: E731
        abstract = jax.eval_shape(quantize, params)
        q_sh = sharding.tree_shardings(quant.quantized_param_axes(fam.param_axes(cfg), abstract), abstract, mesh)
        params = jax.jit(quantize, out_shardings=q_sh)(params)
    if c.lora.enabled:
        adapters = lora.init_adapters(cfg, c.lora.rank, c.lora.targets, jax.random.key(c.seed))
        a_sh = sharding.tree_shardings(lora.adapter_axes(adapters, cfg), adapters, mesh)
        trainable, frozen, n_train = jax.device_put(adapters, a_sh), params, lora.num_params(adapters)
    else:
        trainable, frozen, n_train = params, None, cfg.num_params()
    obj = c.loss.objective
    ref_params = None
    if obj.needs_reference and c.loss.reference == "online":
        # LoRA: the frozen base is the reference (no copy). Full fine-tuning: a frozen copy.
        ref_params = frozen if c.lora.enabled else jax.tree.map(jnp.copy, params)
    optimizer, schedule = make_optimizer(c.optim, total_steps)
    t_sh = jax.tree.map(lambda x: x.sharding, trainable)
    o_sh = optimizer_state_shardings(jax.eval_shape(optimizer.init, trainable), t_sh, mesh)
    opt_state = jax.jit(optimizer.init, out_shardings=o_sh)(trainable)
    rep = sharding.replicated(mesh)
    state = steps.TrainState(jax.device_put(jnp.zeros((), jnp.int32), rep), trainable, opt_state)
    setup = TrainSetup(model_cfg=cfg, run=run, mesh=mesh, use_lora=c.lora.enabled, state=state,
                       state_shardings=steps.TrainState(rep, t_sh, o_sh), frozen=frozen, ref_params=ref_params,
                       reference_params=lora.attach(frozen, None) if c.lora.enabled else trainable,
                       optimizer=optimizer, schedule=schedule, num_trainable=n_train)
    kw = dict(run=run, use_lora=c.lora.enabled, max_turns=max_turns)
    train = steps.make_train_step(cfg, c.loss, optimizer, grad_accum=c.optim.grad_accum, schedule=schedule,
                                  state_shardings=setup.state_shardings, **kw)
    evaluate = steps.make_eval_step(cfg, c.loss, **kw)
    reference = steps.make_reference_step(cfg, run=run, max_turns=max_turns)
    setup.train_step = lambda st, b, n_logits=None: train(st, b, setup.frozen, setup.ref_params, n_logits=n_logits)
    setup.eval_step = lambda tr, b, n_logits=None: evaluate(tr, b, setup.frozen, setup.ref_params, n_logits=n_logits)
    setup.reference_step = lambda b, n_logits=None: reference(setup.reference_params, b, n_logits=n_logits)
    return setup
