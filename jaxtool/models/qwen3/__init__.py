"""The Qwen3 dense family (HF `model_type: qwen3`): Llama's functions with the block's q/k-norm hook
switched on by `Qwen3Config` — no model code of its own (see `jaxtool.models.qwen2` for the pattern)."""

import dataclasses

from jaxtool.models.llama import FAMILY as _LLAMA
from jaxtool.models.qwen3.config import PRESETS, Qwen3Config

FAMILY = dataclasses.replace(_LLAMA, name="qwen3", config_cls=Qwen3Config, presets=PRESETS,
                             about="Qwen3 dense")

__all__ = ["FAMILY", "PRESETS", "Qwen3Config"]
