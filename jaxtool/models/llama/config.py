"""Llama architecture config: HF config.json in and out, and the published presets."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

from jaxtool.errors import ConfigError
from jaxtool.models.run import DTYPES

# `from_hf` refuses configs whose sizes exceed this many parameters (16× Llama 3.1 405B)
MAX_PARAMS = 2 ** 43

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
        published (`rope_scaling` + top-level `rope_theta`) layouts both read correctly."""
        if not isinstance(hf, Mapping):
            raise ConfigError(f"{source}: expected a JSON object of model settings, got {type(hf).__name__}")
        model_type = hf.get("model_type")
        archs = hf.get("architectures") or []
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            raise ConfigError(f"{source}: 'architectures' must be a list of class names, got {archs!r:.80}")
        if model_type != "llama" or (archs and not any(a.startswith("Llama") for a in archs)):
            raise ConfigError(f"{source}: model_type={model_type!r}, architectures={archs}: "
                              "jaxtool reads Llama-architecture models only (model_type 'llama')")
        for flag in ("attention_bias", "mlp_bias"):
            if hf.get(flag):
                raise ConfigError(f"{source}: {flag}=true is not supported (Llama 3 has no biases)")
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"{source}: hidden_act={act!r}; only 'silu' (SwiGLU) is supported")

        def need(key):
            if key not in hf:
                raise ConfigError(f"{source}: missing key {key!r}")
            return hf[key]

        def size(key, value, minimum=1):  # an integer setting, as transformers' own config types it
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{source}: {key} must be an integer, got {value!r:.80}")
            if value < minimum:
                raise ConfigError(f"{source}: {key} must be >= {minimum}, got {value}")
            return value

        def number(key, value, positive=True):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{source}: {key} must be a finite number, got {value!r:.80}")
            if positive and value <= 0:
                raise ConfigError(f"{source}: {key} must be > 0, got {value}")
            return float(value)

        def token_id(key, value):
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{source}: {key} must be a token id (an integer >= 0) or null, got {value!r:.80}")
            return value

        def mapping(key, value):
            if value is None:
                return {}
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {key} must be an object or null, got {value!r:.80}")
            return dict(value)

        rope = mapping("rope_parameters", hf.get("rope_parameters"))
        legacy = mapping("rope_scaling", hf.get("rope_scaling"))
        theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
        scaling_src = rope if rope.get("rope_type", "default") not in ("default", None) else legacy
        rope_type = scaling_src.get("rope_type", scaling_src.get("type", "default")) if scaling_src else "default"
        scaling = None
        if rope_type == "llama3":
            where = "rope_parameters" if scaling_src is rope else "rope_scaling"
            try:
                scaling = RopeScaling(
                    factor=number(f"{where}.factor", scaling_src["factor"]),
                    low_freq_factor=number(f"{where}.low_freq_factor", scaling_src["low_freq_factor"]),
                    high_freq_factor=number(f"{where}.high_freq_factor", scaling_src["high_freq_factor"]),
                    original_max_position_embeddings=size(f"{where}.original_max_position_embeddings",
                                                          scaling_src["original_max_position_embeddings"]),
                )
            except KeyError as e:
                raise ConfigError(f"{source}: llama3 rope scaling lacks {e.args[0]!r}") from None
        elif rope_type not in ("default", None):
            raise ConfigError(f"{source}: rope type {rope_type!r:.80} is not supported (default or llama3)")
        heads = size("num_attention_heads", need("num_attention_heads"))
        hidden = size("hidden_size", need("hidden_size"))
        kv_heads = size("num_key_value_heads", hf.get("num_key_value_heads") or heads)
        if heads % kv_heads:
            raise ConfigError(f"{source}: num_attention_heads={heads} is not a multiple of "
                              f"num_key_value_heads={kv_heads}")
        eos = hf.get("eos_token_id")
        if isinstance(eos, list):
            eos = tuple(token_id(f"eos_token_id[{i}]", e) for i, e in enumerate(eos))
        else:
            eos = token_id("eos_token_id", eos)
        tie = hf.get("tie_word_embeddings", False)
        if not isinstance(tie, bool):
            raise ConfigError(f"{source}: tie_word_embeddings must be true or false, got {tie!r:.80}")
        dtype = hf.get("torch_dtype") or hf.get("dtype") or "float32"
        kw = dict(
            vocab_size=size("vocab_size", need("vocab_size")),
            hidden_size=hidden,
            intermediate_size=size("intermediate_size", need("intermediate_size")),
            num_layers=size("num_hidden_layers", need("num_hidden_layers")),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=size("head_dim", hf.get("head_dim") or (hidden // heads)),
            rms_norm_eps=number("rms_norm_eps", hf.get("rms_norm_eps", 1e-6)),
            rope_theta=number("rope_theta", theta),
            rope_scaling=scaling,
            max_position_embeddings=size("max_position_embeddings", hf.get("max_position_embeddings", 2048)),
            tie_embeddings=tie,
            bos_token_id=token_id("bos_token_id", hf.get("bos_token_id")),
            eos_token_id=eos,
            pad_token_id=token_id("pad_token_id", hf.get("pad_token_id")),
            source_dtype=dtype if isinstance(dtype, str) and dtype in DTYPES else "float32",
        )
        kw.update(overrides)
        cfg = cls(**kw)
        if cfg.num_params() > MAX_PARAMS:  # sizes no real model has (a typo, a corrupted file)
            raise ConfigError(f"{source}: these sizes make {cfg.num_params():.3g} parameters, more than "
                              f"{MAX_PARAMS:.3g}: check vocab_size, hidden_size, intermediate_size, "
                              "num_hidden_layers and head_dim")
        return cfg

    def to_hf(self, dtype: str | None = None) -> dict:
        """An HF `config.json` dict (transformers 4.x layout, which transformers 5 also reads)."""
        eos = list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id
        d = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None if self.rope_scaling is None else {
                "rope_type": "llama3",
                "factor": self.rope_scaling.factor,
                "low_freq_factor": self.rope_scaling.low_freq_factor,
                "high_freq_factor": self.rope_scaling.high_freq_factor,
                "original_max_position_embeddings": self.rope_scaling.original_max_position_embeddings,
            },
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "initializer_range": 0.02,
            "pretraining_tp": 1,
            "use_cache": True,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "torch_dtype": dtype or self.source_dtype,
        }
        if self.pad_token_id is not None:
            d["pad_token_id"] = self.pad_token_id
        return d

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


