"""LoRA adapters (Hu et al. 2021) for the stacked Llama parameters.

W x becomes W x + (alpha / r) · B A x for each targeted projection. Adapters are a separate pytree
`{"layers": {"wq_lora_a": [L, D, r], "wq_lora_b": [L, r, H, Dh], ...}}`; `attach(params, adapters)`
puts them next to their weights so `llama.forward` applies them (without ever forming W + BA);
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
from jaxtool.models.llama import PROJ_EINSUMS, LlamaConfig

TARGETS = tuple(PROJ_EINSUMS)


def _shapes(cfg: LlamaConfig, name: str, r: int):
    L, D, H, K, Dh, F = (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                         cfg.intermediate_size)
    return {
        "wq": ((L, D, r), (L, r, H, Dh)),
        "wk": ((L, D, r), (L, r, K, Dh)),
        "wv": ((L, D, r), (L, r, K, Dh)),
        "wo": ((L, H, Dh, r), (L, r, D)),
        "w_gate": ((L, D, r), (L, r, F)),
        "w_up": ((L, D, r), (L, r, F)),
        "w_down": ((L, F, r), (L, r, D)),
    }[name]


_AXES = {
    "wq": (("layers", "embed", "lora_rank"), ("layers", "lora_rank", "heads", "head_dim")),
    "wk": (("layers", "embed", "lora_rank"), ("layers", "lora_rank", "kv_heads", "head_dim")),
    "wv": (("layers", "embed", "lora_rank"), ("layers", "lora_rank", "kv_heads", "head_dim")),
    "wo": (("layers", "heads", "head_dim", "lora_rank"), ("layers", "lora_rank", "embed")),
    "w_gate": (("layers", "embed", "lora_rank"), ("layers", "lora_rank", "mlp")),
    "w_up": (("layers", "embed", "lora_rank"), ("layers", "lora_rank", "mlp")),
    "w_down": (("layers", "mlp", "lora_rank"), ("layers", "lora_rank", "embed")),
}


def check_targets(targets) -> tuple[str, ...]:
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise ConfigError(f"lora.targets: {bad or 'empty'}; choose from {list(TARGETS)}")
    return tuple(targets)


def init_adapters(cfg: LlamaConfig, rank: int, targets, key: jax.Array, dtype=jnp.float32) -> dict:
    if rank < 1:
        raise ConfigError(f"lora.rank must be >= 1, got {rank}")
    targets = check_targets(targets)
    layers = {}
    for name, k in zip(targets, jax.random.split(key, len(targets))):
        a_shape, b_shape = _shapes(cfg, name, rank)
        fan_in = math.prod(a_shape[1:-1])
        bound = 1.0 / math.sqrt(fan_in)
        layers[f"{name}_lora_a"] = jax.random.uniform(k, a_shape, dtype, -bound, bound)
        layers[f"{name}_lora_b"] = jnp.zeros(b_shape, dtype)
    return {"layers": layers}


def adapter_axes(adapters: dict) -> dict:
    out = {}
    for key in adapters["layers"]:
        name, part = key.rsplit("_lora_", 1)
        out[key] = _AXES[name][0 if part == "a" else 1]
    return {"layers": out}


def attach(params: dict, adapters: dict | None) -> dict:
    """params with the adapter arrays added to the layer dict (for `llama.forward`)."""
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
