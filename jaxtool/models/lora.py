"""LoRA adapters (Hu et al. 2021) for the stacked layer parameters of any model family.

W x becomes W x + (alpha / r) · B A x for each targeted projection. Adapters are a separate pytree
`{"layers": {"wq_lora_a": [L, D, r], "wq_lora_b": [L, r, H, Dh], ...}}`; `attach(params, adapters)`
puts them next to their weights so the family's `forward` applies them (without ever forming W + BA);
`merge(params, adapters, scale)` folds them into plain weights for export. The base parameters
stay frozen: the trainer differentiates and optimises only the adapter tree.

Initialisation as in the paper / PEFT: A uniform(±1/sqrt(fan_in)), B zero, so the adapted model
starts exactly equal to the base model.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxtool.errors import ConfigError
from jaxtool.models.family import family_of


def targets_of(cfg) -> tuple[str, ...]:
    """The projections this model family lets LoRA adapt."""
    return family_of(cfg).lora_targets


def check_targets(targets, cfg=None) -> tuple[str, ...]:
    """The projections to adapt: `targets`, or every one the family allows when empty."""
    allowed = targets_of(cfg) if cfg is not None else family_of(None).lora_targets
    if not targets:
        return tuple(allowed)
    bad = [t for t in targets if t not in allowed]
    if bad:
        raise ConfigError(f"lora.targets: {bad}; choose from {list(allowed)} (or leave it empty for all)")
    return tuple(targets)


def init_adapters(cfg, rank: int, targets, key: jax.Array, dtype=jnp.float32) -> dict:
    if rank < 1:
        raise ConfigError(f"lora.rank must be >= 1, got {rank}")
    targets = check_targets(targets, cfg)
    fam = family_of(cfg)
    layers = {}
    for name, k in zip(targets, jax.random.split(key, len(targets))):
        a_shape, b_shape = fam.lora_shapes(cfg, name, rank)
        fan_in = math.prod(a_shape[1:-1])
        bound = 1.0 / math.sqrt(fan_in)
        layers[f"{name}_lora_a"] = jax.random.uniform(k, a_shape, dtype, -bound, bound)
        layers[f"{name}_lora_b"] = jnp.zeros(b_shape, dtype)
    return {"layers": layers}


def adapter_axes(adapters: dict, cfg) -> dict:
    """Logical axes of the adapters: A keeps its weight's input axes, B its output axes; the rank
    axis is `lora_rank`."""
    w_axes = family_of(cfg).param_axes(cfg)["layers"]
    out = {}
    for key, arr in adapters["layers"].items():
        name, part = key.rsplit("_lora_", 1)
        ax = w_axes[name]
        n_in = len(arr.shape) - 2 if part == "a" else len(ax) - len(arr.shape) + 1
        out[key] = (ax[0], *ax[1:1 + n_in], "lora_rank") if part == "a" else (ax[0], "lora_rank", *ax[1 + n_in:])
    return {"layers": out}


def attach(params: dict, adapters: dict | None) -> dict:
    """params with the adapter arrays added to the layer dict (for the family's `forward`)."""
    if not adapters:
        return params
    return {**params, "layers": {**params["layers"], **adapters["layers"]}}


def _ab(a: jax.Array, b: jax.Array) -> jax.Array:
    # a [L, *in, r], b [L, r, *out] -> [L, *in, *out], batched over L
    return jax.vmap(lambda x, y: jnp.tensordot(x, y, axes=1))(a.astype(jnp.float32), b.astype(jnp.float32))


def merge(params: dict, adapters: dict | None, scale: float) -> dict:
    """Plain parameters with W ← W + scale · A B for every adapted weight (for export / serving)."""
    if not adapters:
        return params
    layers = dict(params["layers"])
    names = {k.rsplit("_lora_", 1)[0] for k in adapters["layers"]}
    for name in names:
        w = layers[name]
        layers[name] = (w.astype(jnp.float32) + scale * _ab(adapters["layers"][f"{name}_lora_a"],
                                                              adapters["layers"][f"{name}_lora_b"])).astype(w.dtype)
    return {**params, "layers": layers}


def num_params(adapters: dict) -> int:
    return int(sum(x.size for x in jax.tree.leaves(adapters)))
