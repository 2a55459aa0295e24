"""The Llama family (Llama 3 / 3.1 / 3.2 / 3.3, SmolLM2): architecture config, pure-function model,
HF tensor-name table. `from jaxtool.models import llama; llama.forward(params, tokens, cfg, run=run)`.
"""

from jaxtool.models.base import ModelFamily
from jaxtool.models.llama.config import LEGACY_RUN_KEYS, PRESETS, LlamaConfig, RopeScaling, preset
from jaxtool.models.llama.hf import Entry, hf_name_table
from jaxtool.models.llama.model import (PROJ_EINSUMS, Attend, abstract_params, apply_rope, attention,
                                        attention_chunk, block, cache_axes, cached_attention, embed_tokens,
                                        final_norm, forward, forward_cached, hidden_states, init_cache,
                                        init_params, output_weight, param_axes, param_shapes, proj,
                                        rms_norm, rope_inv_freq, rope_tables, self_attend, unembed,
                                        unstack_layers)
from jaxtool.models.run import DEFAULT_RUN, DTYPES, REMAT_POLICIES, RunOptions


def lora_shapes(cfg: LlamaConfig, name: str, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(A, B) shapes of the LoRA adapter of projection `name` (stacked over layers)."""
    shape = param_shapes(cfg)["layers"][name]
    n_in = PROJ_EINSUMS[name][0]
    L, ins, outs = shape[0], shape[1:1 + n_in], shape[1 + n_in:]
    return (L, *ins, rank), (L, rank, *outs)


# name -> (input dims, dims without the stacked layer axis) of every projection weight
PROJECTIONS = {name: (n_in, len(eq.split("->")[0].split(",")[1])) for name, (n_in, eq) in PROJ_EINSUMS.items()}

FAMILY = ModelFamily(
    name="llama", config_cls=LlamaConfig, param_axes=param_axes, param_shapes=param_shapes,
    init_params=init_params, abstract_params=abstract_params, hidden_states=hidden_states,
    final_norm=final_norm, output_weight=output_weight, unembed=unembed, forward=forward,
    init_cache=init_cache, cache_axes=cache_axes, forward_cached=forward_cached, hf_name_table=hf_name_table,
    lora_targets=tuple(PROJ_EINSUMS), lora_shapes=lora_shapes, projections=PROJECTIONS, presets=PRESETS,
    about="Llama 3.x, SmolLM2")
