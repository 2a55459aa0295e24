"""Qwen3 dense architecture config (HF `model_type: qwen3`): Llama's block with an RMSNorm over
head_dim on every query and key head before rope (`qk_norm`), no q/k/v bias, and a head_dim that
need not be hidden_size / heads (e.g. 1024 / 16 heads with head_dim 128 for Qwen3-0.6B)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

from jaxtool.models.hf_config import HFConfigReader, hf_common
from jaxtool.models.llama.config import LlamaConfig
from jaxtool.models.qwen2.config import default_rope_only, refuse_sliding_window


@dataclasses.dataclass(frozen=True)
class Qwen3Config(LlamaConfig):
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    model_type: str = "qwen3"

    qk_norm: ClassVar[bool] = True

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], source: str = "config.json", **overrides) -> "Qwen3Config":
        r = HFConfigReader(hf, source)
        r.expect("qwen3", "Qwen3")
        r.refuse("attention_bias", "Qwen3 dense has no q/k/v bias")
        refuse_sliding_window(r)
        default_rope_only(r)
        return r.build(cls, r.decoder_fields(), overrides)

    def to_hf(self, dtype: str | None = None) -> dict:
        return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", **hf_common(self, dtype),
                "attention_bias": False, "use_sliding_window": False, "sliding_window": None,
                "max_window_layers": self.num_layers}


_Q3 = dict(vocab_size=151936, head_dim=128, num_heads=16, num_kv_heads=8, rms_norm_eps=1e-6, rope_theta=1000000.0,
           max_position_embeddings=40960, bos_token_id=151643, eos_token_id=151645, source_dtype="bfloat16")

# Values as published in each model's HF config.json.
PRESETS: dict[str, Qwen3Config] = {
    "qwen3-0.6b": Qwen3Config(hidden_size=1024, intermediate_size=3072, num_layers=28, tie_embeddings=True, **_Q3),
    "qwen3-1.7b": Qwen3Config(hidden_size=2048, intermediate_size=6144, num_layers=28, tie_embeddings=True, **_Q3),
    "qwen3-8b": Qwen3Config(hidden_size=4096, intermediate_size=12288, num_layers=36, tie_embeddings=False,
                            **{**_Q3, "num_heads": 32}),
}
