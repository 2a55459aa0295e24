"""Model families behind one seam (`jaxtool.models.family`): Llama, Qwen2, Qwen3; run choices in `RunOptions`."""

from jaxtool.models.family import FAMILIES, ModelFamily, family_for_hf, family_of, get_family, preset, register
from jaxtool.models.run import DEFAULT_RUN, RunOptions

__all__ = ["FAMILIES", "ModelFamily", "RunOptions", "DEFAULT_RUN", "family_for_hf", "family_of", "get_family",
           "preset", "register"]
