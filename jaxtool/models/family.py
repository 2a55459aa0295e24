"""The model seam: what the rest of jaxtool needs from a model family, and the registry by
`model_type` (HF config.json's field).

Training, generation, conversion, checkpoints and LoRA reach a model only through a `ModelFamily`:

    fam = family_of(cfg)                      # or family_for_hf(config_json_dict)
    cfg = fam.config_from_hf(hf_dict)         # architecture (frozen, hashable)
    fam.param_axes(cfg), fam.param_shapes(cfg), fam.init_params(cfg, key)
    h = fam.hidden_states(params, tokens, cfg, positions, segment_ids, run=run)
    logits = fam.unembed(params, h, cfg, run)            # or fam.forward(...)
    cache = fam.init_cache(cfg, batch, max_len, run=run)
    logits, cache = fam.forward_cached(params, tokens, cache, start, cfg, run=run)
    fam.hf_name_table(cfg)                    # HF tensor names <-> parameter paths
    fam.lora_targets                          # names of the projections LoRA may adapt

Built in: Llama (Llama 3.x, SmolLM2; `jaxtool.models.llama`), Qwen2 / Qwen2.5 (`qwen2`) and Qwen3 dense
(`qwen3`). Qwen2 and Qwen3 reuse Llama's functions with the block's hooks (q/k/v bias, q/k norm) switched
on by their config class. A new family is a package with a `FAMILY` plus one line in `BUILTIN`
(see docs/models.md). Only `jaxtool.models` imports a family's package (tests/test_layering.py).
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping

from jaxtool.errors import ConfigError
from jaxtool.models.base import ModelFamily
from jaxtool.registry import Registry


FAMILIES: dict[str, ModelFamily] = {}

# The built-in families: model_type -> the package whose `FAMILY` registers it (imported on first use).
BUILTIN = {
    "llama": "jaxtool.models.llama",
    "qwen2": "jaxtool.models.qwen2",
    "qwen3": "jaxtool.models.qwen3",
}


def register(family: ModelFamily) -> ModelFamily:
    FAMILIES[family.name] = family
    return family


def _unknown(model_type, ranked: list[str]) -> str:
    close = difflib.get_close_matches(str(model_type), ranked, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"model_type={model_type!r} is not supported{hint}; jaxtool reads "
            f"{', '.join(f'{n} ({FAMILIES[n].about})' for n in sorted(FAMILIES))} models")


# the lookup (closest-name errors) through the shared helper; FAMILIES stays the public table
TABLE: Registry = Registry("model family", ConfigError, FAMILIES, message=_unknown)


def get_family(model_type: str, source: str = "model") -> ModelFamily:
    _load_builtin()
    return TABLE.get(model_type, source=source)


def family_of(cfg) -> ModelFamily:
    """The family of an architecture config (its `model_type`)."""
    return get_family(getattr(cfg, "model_type", "llama"))


def family_for_hf(hf: Any, source: str = "config.json") -> ModelFamily:
    """The family an HF config.json dict names."""
    if not isinstance(hf, Mapping):
        raise ConfigError(f"{source}: expected a JSON object of model settings, got {type(hf).__name__}")
    return get_family(hf.get("model_type"), source)


def preset(name: str, **overrides):
    """A published architecture by preset name, from any family (`llama3.1-8b`, `qwen2.5-7b`, `qwen3-8b`)."""
    _load_builtin()
    known = {k: fam for fam in FAMILIES.values() for k in fam.presets}
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown model preset {name!r}{hint}; known: {sorted(known)}")
    cfg = known[name].presets[name]
    return cfg.replace(**overrides) if overrides else cfg


def _load_builtin() -> None:
    import importlib

    for name, module in BUILTIN.items():
        if name not in FAMILIES:
            register(importlib.import_module(module).FAMILY)
