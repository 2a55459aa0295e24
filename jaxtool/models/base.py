"""The model seam's interface: what the rest of jaxtool needs from a model family (see
`jaxtool.models.family` for the registry and how it is used)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    name: str                          # HF `model_type`
    config_cls: type                   # the architecture config (frozen dataclass, `from_hf`/`to_hf`/`from_dict`)
    param_axes: Callable               # cfg -> pytree of logical axis-name tuples
    param_shapes: Callable             # cfg -> pytree of shape tuples
    init_params: Callable              # (cfg, key, std=, dtype=) -> params
    abstract_params: Callable          # (cfg, dtype) -> pytree of ShapeDtypeStruct
    hidden_states: Callable            # (params, tokens, cfg, positions, segment_ids, *, run) -> [B, S, D]
    final_norm: Callable               # (params, h, cfg) -> normed h
    output_weight: Callable            # (params, cfg, run) -> (W, transposed)
    unembed: Callable                  # (params, h, cfg, run) -> logits
    forward: Callable                  # (params, tokens, cfg, positions, segment_ids, *, run) -> logits
    init_cache: Callable               # (cfg, batch, max_len, dtype=, per_layer=, run=) -> cache
    cache_axes: Callable               # (cfg, per_layer) -> logical axes of the cache
    forward_cached: Callable           # (params, tokens, cache, start, cfg, prefill=, logits_at=, *, run) -> (logits, cache)
    hf_name_table: Callable            # cfg -> list of entries (hf_name, path, layer, hf_shape, to_ours, to_hf)
    lora_targets: tuple[str, ...]      # adaptable projection names
    lora_shapes: Callable              # (cfg, name, rank) -> (shape of A, shape of B)
    # projection weights: name -> (input dims, dims without leading axes), e.g. wo [H, Dh, D] = (2, 3);
    # what a quantised base (`jaxtool.models.quant.quantize_params`) needs to know of each weight
    projections: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    presets: Mapping[str, Any] = dataclasses.field(default_factory=dict)   # name -> config (published sizes)
    about: str = ""                    # the models it covers, for messages ("Llama 3.x, SmolLM2")

    def config_from_hf(self, hf: Mapping[str, Any], source: str = "config.json", **overrides):
        return self.config_cls.from_hf(hf, source=source, **overrides)
