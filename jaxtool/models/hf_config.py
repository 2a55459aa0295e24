"""Reading an HF `config.json` dict: the checks and fields every decoder family shares.

A family's `Config.from_hf` names what is its own (its `model_type`, the flags it refuses, its rope
variants) and takes the rest from here:

    r = HFConfigReader(hf, source)
    r.expect("qwen2", "Qwen2")             # model_type and architectures class prefix
    r.refuse("use_sliding_window", "...")  # a flag this family does not implement
    kw = r.decoder_fields()                # sizes, heads, head_dim, eps, rope theta, ids, tying, dtype
    cfg = r.build(Qwen2Config, kw, overrides)   # + the parameter-count sanity bound

Every error is a `ConfigError` naming the file and the key.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from jaxtool.errors import ConfigError
from jaxtool.models.run import DTYPES

# `build` refuses configs whose sizes exceed this many parameters (16× Llama 3.1 405B)
MAX_PARAMS = 2 ** 43


class HFConfigReader:
    def __init__(self, hf: Any, source: str = "config.json"):
        if not isinstance(hf, Mapping):
            raise ConfigError(f"{source}: expected a JSON object of model settings, got {type(hf).__name__}")
        self.hf, self.source = hf, source

    # -- typed getters --------------------------------------------------------------------------
    def need(self, key: str):
        if key not in self.hf:
            raise ConfigError(f"{self.source}: missing key {key!r}")
        return self.hf[key]

    def size(self, key: str, value, minimum: int = 1) -> int:
        """An integer setting, as transformers' own config types it."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.source}: {key} must be an integer, got {value!r:.80}")
        if value < minimum:
            raise ConfigError(f"{self.source}: {key} must be >= {minimum}, got {value}")
        return value

    def number(self, key: str, value, positive: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{self.source}: {key} must be a finite number, got {value!r:.80}")
        if positive and value <= 0:
            raise ConfigError(f"{self.source}: {key} must be > 0, got {value}")
        return float(value)

    def token_id(self, key: str, value):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{self.source}: {key} must be a token id (an integer >= 0) or null, got {value!r:.80}")
        return value

    def mapping(self, key: str, value) -> dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self.source}: {key} must be an object or null, got {value!r:.80}")
        return dict(value)

    def flag(self, key: str, default: bool = False) -> bool:
        v = self.hf.get(key, default)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise ConfigError(f"{self.source}: {key} must be true or false, got {v!r:.80}")
        return v

    # -- family identity and refusals -------------------------------------------------------------
    def expect(self, model_type: str, arch_prefix: str) -> None:
        """config.json names this family: `model_type` and (when listed) an `architectures` class of it."""
        archs = self.hf.get("architectures") or []
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            raise ConfigError(f"{self.source}: 'architectures' must be a list of class names, got {archs!r:.80}")
        got = self.hf.get("model_type")
        if got != model_type or (archs and not any(a.startswith(arch_prefix) for a in archs)):
            raise ConfigError(f"{self.source}: model_type={got!r}, architectures={archs}: this reader takes "
                              f"model_type {model_type!r} ({arch_prefix}* architectures) only")

    def refuse(self, key: str, why: str) -> None:
        """A truthy `key` (a feature the family's model does not implement) is an error."""
        if self.hf.get(key):
            raise ConfigError(f"{self.source}: {key}={self.hf[key]!r:.80} is not supported ({why})")

    # -- rope -----------------------------------------------------------------------------------
    def rope(self) -> tuple[float, str, dict, str]:
        """(rope_theta, rope type, the scaling dict, the key it came from): transformers 5
        (`rope_parameters`) and 4.x (`rope_scaling` + top-level `rope_theta`) layouts both."""
        rope = self.mapping("rope_parameters", self.hf.get("rope_parameters"))
        legacy = self.mapping("rope_scaling", self.hf.get("rope_scaling"))
        theta = self.number("rope_theta", rope.get("rope_theta", self.hf.get("rope_theta", 10000.0)))
        src, where = (rope, "rope_parameters") if rope.get("rope_type", "default") not in ("default", None) \
            else (legacy, "rope_scaling")
        kind = src.get("rope_type", src.get("type", "default")) if src else "default"
        return theta, kind or "default", src, where

    # -- the fields every decoder family has -------------------------------------------------------
    def decoder_fields(self) -> dict:
        """Sizes, heads, head_dim, norm epsilon, rope theta, token ids, tying and source dtype, under
        `LlamaConfig`'s field names (rope scaling is the family's: see `rope`)."""
        hf, size = self.hf, self.size
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"{self.source}: hidden_act={act!r}; only 'silu' (SwiGLU) is supported")
        heads = size("num_attention_heads", self.need("num_attention_heads"))
        hidden = size("hidden_size", self.need("hidden_size"))
        kv_heads = size("num_key_value_heads", hf.get("num_key_value_heads") or heads)
        if heads % kv_heads:
            raise ConfigError(f"{self.source}: num_attention_heads={heads} is not a multiple of "
                              f"num_key_value_heads={kv_heads}")
        eos = hf.get("eos_token_id")
        if isinstance(eos, list):
            eos = tuple(self.token_id(f"eos_token_id[{i}]", e) for i, e in enumerate(eos))
        else:
            eos = self.token_id("eos_token_id", eos)
        dtype = hf.get("torch_dtype") or hf.get("dtype") or "float32"
        return dict(
            vocab_size=size("vocab_size", self.need("vocab_size")),
            hidden_size=hidden,
            intermediate_size=size("intermediate_size", self.need("intermediate_size")),
            num_layers=size("num_hidden_layers", self.need("num_hidden_layers")),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=size("head_dim", hf.get("head_dim") or (hidden // heads)),
            rms_norm_eps=self.number("rms_norm_eps", hf.get("rms_norm_eps", 1e-6)),
            rope_theta=self.rope()[0],
            max_position_embeddings=size("max_position_embeddings", hf.get("max_position_embeddings", 2048)),
            tie_embeddings=self.flag("tie_word_embeddings", False),
            bos_token_id=self.token_id("bos_token_id", hf.get("bos_token_id")),
            eos_token_id=eos,
            pad_token_id=self.token_id("pad_token_id", hf.get("pad_token_id")),
            source_dtype=dtype if isinstance(dtype, str) and dtype in DTYPES else "float32",
        )

    def build(self, cls, kw: dict, overrides: Mapping[str, Any]):
        """`cls(**kw, **overrides)`, refusing sizes no real model has (a typo, a corrupted file)."""
        cfg = cls(**{**kw, **overrides})
        if cfg.num_params() > MAX_PARAMS:
            raise ConfigError(f"{self.source}: these sizes make {cfg.num_params():.3g} parameters, more than "
                              f"{MAX_PARAMS:.3g}: check vocab_size, hidden_size, intermediate_size, "
                              "num_hidden_layers and head_dim")
        return cfg


def hf_common(cfg, dtype: str | None = None) -> dict:
    """The `config.json` keys every decoder family writes the same way (transformers 4.x layout,
    which transformers 5 also reads); a family's `to_hf` adds its own."""
    eos = list(cfg.eos_token_id) if isinstance(cfg.eos_token_id, tuple) else cfg.eos_token_id
    d = {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": eos,
        "torch_dtype": dtype or cfg.source_dtype,
    }
    if cfg.pad_token_id is not None:
        d["pad_token_id"] = cfg.pad_token_id
    return d
