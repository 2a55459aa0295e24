"""The Qwen2 / Qwen2.5 family (HF `model_type: qwen2`): Llama's functions with the block's q/k/v-bias
hook switched on by `Qwen2Config` — no model code of its own. HF tensor names, LoRA targets, the
quantised base, sharding axes and the KV cache all come from the shared block and its name table."""

import dataclasses

from jaxtool.models.llama import FAMILY as _LLAMA
from jaxtool.models.qwen2.config import PRESETS, Qwen2Config

FAMILY = dataclasses.replace(_LLAMA, name="qwen2", config_cls=Qwen2Config, presets=PRESETS,
                             about="Qwen2, Qwen2.5")

__all__ = ["FAMILY", "PRESETS", "Qwen2Config"]
