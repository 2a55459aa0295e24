"""Qwen2 / Qwen2.5 architecture config (HF `model_type: qwen2`): Llama's block with a bias on the
q/k/v projections (`qkv_bias`), default rope with theta 1e6, tied embeddings at the small sizes."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

from jaxtool.errors import ConfigError
from jaxtool.models.hf_config import HFConfigReader, hf_common
from jaxtool.models.llama.config import LlamaConfig


def refuse_sliding_window(r: HFConfigReader) -> None:
    """Qwen2/3 configs may switch on sliding-window attention for some layers; jaxtool's attention is
    full causal attention, so such a config is refused rather than run differently."""
    r.refuse("use_sliding_window", "sliding-window attention is not implemented; full attention only")
    layer_types = r.hf.get("layer_types") or []
    if not isinstance(layer_types, list) or any(t != "full_attention" for t in layer_types):
        raise ConfigError(f"{r.source}: layer_types={layer_types!r:.80} is not supported (full_attention only)")


def default_rope_only(r: HFConfigReader) -> None:
    _, kind, _, where = r.rope()
    if kind != "default":
        raise ConfigError(f"{r.source}: {where} rope type {kind!r:.80} is not supported for "
                          f"{r.hf.get('model_type')} (default rope only; YaRN long-context scaling is not implemented)")


@dataclasses.dataclass(frozen=True)
class Qwen2Config(LlamaConfig):
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    model_type: str = "qwen2"

    qkv_bias: ClassVar[bool] = True

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], source: str = "config.json", **overrides) -> "Qwen2Config":
        r = HFConfigReader(hf, source)
        r.expect("qwen2", "Qwen2")
        refuse_sliding_window(r)
        default_rope_only(r)
        return r.build(cls, r.decoder_fields(), overrides)

    def to_hf(self, dtype: str | None = None) -> dict:
        return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **hf_common(self, dtype),
                "use_sliding_window": False, "sliding_window": None, "max_window_layers": self.num_layers}


_Q25 = dict(vocab_size=151936, rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=32768,
            bos_token_id=151643, eos_token_id=151645, source_dtype="bfloat16")

# Values as published in each model's HF config.json (the -Instruct repositories: eos <|im_end|>).
PRESETS: dict[str, Qwen2Config] = {
    "qwen2.5-0.5b": Qwen2Config(hidden_size=896, intermediate_size=4864, num_layers=24, num_heads=14,
                                num_kv_heads=2, head_dim=64, tie_embeddings=True, **_Q25),
    "qwen2.5-1.5b": Qwen2Config(hidden_size=1536, intermediate_size=8960, num_layers=28, num_heads=12,
                                num_kv_heads=2, head_dim=128, tie_embeddings=True, **_Q25),
    "qwen2.5-7b": Qwen2Config(hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28,
                              num_kv_heads=4, tie_embeddings=False, head_dim=128, **{**_Q25, "vocab_size": 152064}),
}
