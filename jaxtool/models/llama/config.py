"""Llama architecture config: HF config.json in and out, and the published presets."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, Mapping

from jaxtool.errors import ConfigError
from jaxtool.models.hf_config import MAX_PARAMS, HFConfigReader, hf_common  # noqa: F401  (MAX_PARAMS re-exported)
from jaxtool.models.run import DTYPES

# keys of the pre-RunOptions LlamaConfig that were run choices; ignored when reading old metadata
LEGACY_RUN_KEYS = ("param_dtype", "dtype", "remat", "scan_layers", "lora_scale")



@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """`rope_scaling` of type "llama3" (Llama 3.1+): long-context frequency interpolation."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int
    rope_type: str = "llama3"


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """The architecture, as HF config.json describes it — nothing about how a run computes with it
    (compute dtype, remat, LoRA scale, attention kernel: `jaxtool.models.RunOptions`).

    Frozen and hashable, so it can be a static argument of `jax.jit`.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 8192
    tie_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    source_dtype: str = "float32"  # HF `torch_dtype` of the checkpoint this came from (export default)
    model_type: str = "llama"      # the model family (jaxtool.models.family)

    # The shared block's hooks (`jaxtool.models.llama.model.block`), fixed per family (class-level,
    # not fields: a family is one architecture). Qwen2 sets qkv_bias, Qwen3 qk_norm.
    qkv_bias: ClassVar[bool] = False   # bias on the q/k/v projections (bq [H, Dh], bk/bv [K, Dh])
    qk_norm: ClassVar[bool] = False    # RMSNorm over head_dim on each query and key head, before rope

    def __post_init__(self):
        if self.hidden_size <= 0 or self.num_layers <= 0 or self.num_heads <= 0 or self.vocab_size <= 0:
            raise ConfigError(f"model config: sizes must be positive ({self})")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"model config: num_heads={self.num_heads} is not a multiple of "
                              f"num_kv_heads={self.num_kv_heads}")
        if self.source_dtype not in DTYPES:
            raise ConfigError(f"model config: source_dtype must be one of {list(DTYPES)}, got {self.source_dtype!r}")

    @property
    def eos_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        return (self.eos_token_id,) if isinstance(self.eos_token_id, int) else tuple(self.eos_token_id)

    def replace(self, **kw) -> "LlamaConfig":
        return dataclasses.replace(self, **kw)

    def num_params(self) -> int:
        D, F, V, L = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_layers
        attn = D * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
        if self.qkv_bias:
            attn += self.head_dim * (self.num_heads + 2 * self.num_kv_heads)
        if self.qk_norm:
            attn += 2 * self.head_dim
        per_layer = attn + 3 * D * F + 2 * D
        return V * D * (1 if self.tie_embeddings else 2) + L * per_layer + D

    def flops_per_token(self, seq_len: int, training: bool = True) -> float:
        """Model FLOPs per token (matmuls incl. attention scores; ×3 for forward+backward)."""
        D, F, V, L = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_layers
        H, K, Dh = self.num_heads, self.num_kv_heads, self.head_dim
        per_layer = 2 * D * Dh * (2 * H + 2 * K) + 2 * 3 * D * F + 2 * 2 * H * Dh * seq_len / 2
        fwd = L * per_layer + 2 * D * V
        return fwd * (3 if training else 1)

    # -- HF config.json -----------------------------------------------------------------------
    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], source: str = "config.json", **overrides) -> "LlamaConfig":
        """From an HF Llama `config.json` dict: transformers 5 (`rope_parameters`) and 4.x / Llama 3.1
        published (`rope_scaling` + top-level `rope_theta`) layouts both read correctly. The checks
        every family shares are `jaxtool.models.hf_config`'s; here only what is Llama's own."""
        r = HFConfigReader(hf, source)
        r.expect("llama", "Llama")
        for flag in ("attention_bias", "mlp_bias"):
            r.refuse(flag, "Llama 3 has no biases")
        kw = r.decoder_fields()
        kw["rope_scaling"] = llama3_rope_scaling(r)
        return r.build(cls, kw, overrides)

    def to_hf(self, dtype: str | None = None) -> dict:
        """An HF `config.json` dict (transformers 4.x layout, which transformers 5 also reads)."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            **hf_common(self, dtype),
            "rope_scaling": None if self.rope_scaling is None else {
                "rope_type": "llama3",
                "factor": self.rope_scaling.factor,
                "low_freq_factor": self.rope_scaling.low_freq_factor,
                "high_freq_factor": self.rope_scaling.high_freq_factor,
                "original_max_position_embeddings": self.rope_scaling.original_max_position_embeddings,
            },
            "attention_bias": False,
            "mlp_bias": False,
            "pretraining_tp": 1,
        }

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        return json.dumps(d, indent=2)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LlamaConfig":
        d = dict(d)
        if d.get("rope_scaling"):
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        if isinstance(d.get("eos_token_id"), list):
            d["eos_token_id"] = tuple(d["eos_token_id"])
        for legacy in LEGACY_RUN_KEYS:  # run choices stored in configs written before RunOptions
            d.pop(legacy, None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"model config: unknown keys {sorted(unknown)}")
        return cls(**d)


def llama3_rope_scaling(r: HFConfigReader) -> RopeScaling | None:
    """The `rope_scaling` of type "llama3" a config names, None for default rope, else an error."""
    _, kind, src, where = r.rope()
    if kind == "default":
        return None
    if kind != "llama3":
        raise ConfigError(f"{r.source}: rope type {kind!r:.80} is not supported (default or llama3)")
    try:
        return RopeScaling(
            factor=r.number(f"{where}.factor", src["factor"]),
            low_freq_factor=r.number(f"{where}.low_freq_factor", src["low_freq_factor"]),
            high_freq_factor=r.number(f"{where}.high_freq_factor", src["high_freq_factor"]),
            original_max_position_embeddings=r.size(f"{where}.original_max_position_embeddings",
                                                    src["original_max_position_embeddings"]),
        )
    except KeyError as e:
        raise ConfigError(f"{r.source}: llama3 rope scaling lacks {e.args[0]!r}") from None


_L3_SCALING_8 = RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)
_L3_SCALING_32 = RopeScaling(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)
_L3 = dict(vocab_size=128256, rope_theta=500000.0, rms_norm_eps=1e-5, max_position_embeddings=131072,
           bos_token_id=128000, eos_token_id=(128001, 128008, 128009), source_dtype="bfloat16")

# Values as published in each model's HF config.json.
PRESETS: dict[str, LlamaConfig] = {
    "tiny": LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                        num_kv_heads=2, head_dim=16, rope_theta=10000.0, max_position_embeddings=512,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "smollm2-135m": LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                                num_heads=9, num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5, rope_theta=100000.0,
                                max_position_embeddings=8192, tie_embeddings=True, bos_token_id=1,
                                eos_token_id=2, pad_token_id=2, source_dtype="bfloat16"),
    "llama3.2-1b": LlamaConfig(hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32,
                               num_kv_heads=8, head_dim=64, rope_scaling=_L3_SCALING_32, tie_embeddings=True, **_L3),
    "llama3.2-3b": LlamaConfig(hidden_size=3072, intermediate_size=8192, num_layers=28, num_heads=24,
                               num_kv_heads=8, head_dim=128, rope_scaling=_L3_SCALING_32, tie_embeddings=True, **_L3),
    "llama3.1-8b": LlamaConfig(hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
                               num_kv_heads=8, head_dim=128, rope_scaling=_L3_SCALING_8, **_L3),
    "llama3.3-70b": LlamaConfig(hidden_size=8192, intermediate_size=28672, num_layers=80, num_heads=64,
                                num_kv_heads=8, head_dim=128, rope_scaling=_L3_SCALING_8, **_L3),
    "llama3.1-405b": LlamaConfig(hidden_size=16384, intermediate_size=53248, num_layers=126, num_heads=128,
                                 num_kv_heads=8, head_dim=128, rope_scaling=_L3_SCALING_8, **_L3),
}


def preset(name: str, **overrides) -> LlamaConfig:
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown model preset {name!r}{hint}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


