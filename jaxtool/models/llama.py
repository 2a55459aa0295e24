"""Llama 3 / 3.1 / 3.2 / 3.3 and SmolLM2 as pure JAX functions of a parameter pytree.

Numerically this is Hugging Face's `LlamaForCausalLM` (tested logit-for-logit against it):
RMSNorm computed in float32 then cast back, SwiGLU MLP, grouped-query attention with softmax in
float32, rotary embeddings in HF's split-half (`rotate_half`) layout with `rope_scaling` of type
`llama3`, tied or untied output embeddings.

Design
------
* Parameters are a plain nested dict of arrays (see `init_params`); the model is a pure function
  `forward(params, tokens, cfg, ...)`. The transformer blocks are stacked on a leading `layers` axis
  and run with `jax.lax.scan`, so compile time does not grow with depth; each block can be
  rematerialised (`cfg.remat`).
* Every parameter and key activation has logical axis names (`param_axes`, `jaxtool.sharding`),
  so the same code runs on one CPU or a pod — the mesh decides the layout.
* `cfg.param_dtype` (storage) is separate from `cfg.dtype` (compute): e.g. float32 params with
  bfloat16 matmuls. Softmax, norms and log-probs are always float32.
* Packed sequences: `segment_ids` (1, 2, … per packed example, 0 = padding) stop attention across
  examples; `positions` restart per example. Causality is by token index.
* Incremental decoding: `init_cache` + `forward_cached(params, tokens, cache, start, cfg)` writes
  the new keys/values of each row at its own offset `start[b]` and attends to cache slots
  `≤ start[b] + t`. Prefill (start = 0, T = prompt length) and decode (T = 1) are the same function.

Parameter layout (L = layers, D = hidden, H = heads, K = KV heads, Dh = head dim, F = MLP, V = vocab)::

    embed              [V, D]
    layers/attn_norm   [L, D]        layers/mlp_norm [L, D]
    layers/wq          [L, D, H, Dh] layers/wk, wv   [L, D, K, Dh]   layers/wo [L, H, Dh, D]
    layers/w_gate      [L, D, F]     layers/w_up     [L, D, F]       layers/w_down [L, F, D]
    final_norm         [D]
    lm_head            [D, V]        (absent when embeddings are tied)
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxtool.errors import ConfigError
from jaxtool.sharding import constrain

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


# ============================================================================================
# config
# ============================================================================================

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
    """Architecture (what HF config.json describes) plus run-time choices (dtypes, remat).

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
    # run-time choices (not part of the architecture)
    param_dtype: str = "float32"
    dtype: str = "float32"
    remat: str = "none"
    scan_layers: bool = True
    lora_scale: float = 1.0        # alpha / rank, applied when LoRA adapters are present in params
    source_dtype: str = "float32"  # dtype of the checkpoint this came from (kept for export)

    def __post_init__(self):
        if self.hidden_size <= 0 or self.num_layers <= 0 or self.num_heads <= 0 or self.vocab_size <= 0:
            raise ConfigError(f"model config: sizes must be positive ({self})")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"model config: num_heads={self.num_heads} is not a multiple of "
                              f"num_kv_heads={self.num_kv_heads}")
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"model config: remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
        for field in ("param_dtype", "dtype"):
            if getattr(self, field) not in DTYPES:
                raise ConfigError(f"model config: {field} must be one of {list(DTYPES)}, got {getattr(self, field)!r}")

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    @property
    def params_dtype(self):
        return DTYPES[self.param_dtype]

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
        model_type = hf.get("model_type")
        archs = hf.get("architectures") or []
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

        rope = dict(hf.get("rope_parameters") or {})
        legacy = hf.get("rope_scaling") or {}
        theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
        scaling_src = rope if rope.get("rope_type", "default") not in ("default", None) else legacy
        rope_type = scaling_src.get("rope_type", scaling_src.get("type", "default")) if scaling_src else "default"
        scaling = None
        if rope_type == "llama3":
            try:
                scaling = RopeScaling(
                    factor=float(scaling_src["factor"]),
                    low_freq_factor=float(scaling_src["low_freq_factor"]),
                    high_freq_factor=float(scaling_src["high_freq_factor"]),
                    original_max_position_embeddings=int(scaling_src["original_max_position_embeddings"]),
                )
            except KeyError as e:
                raise ConfigError(f"{source}: llama3 rope scaling lacks {e.args[0]!r}") from None
        elif rope_type not in ("default", None):
            raise ConfigError(f"{source}: rope type {rope_type!r} is not supported (default or llama3)")
        heads = int(need("num_attention_heads"))
        hidden = int(need("hidden_size"))
        eos = hf.get("eos_token_id")
        if isinstance(eos, list):
            eos = tuple(int(e) for e in eos)
        dtype = hf.get("torch_dtype") or hf.get("dtype") or "float32"
        kw = dict(
            vocab_size=int(need("vocab_size")),
            hidden_size=hidden,
            intermediate_size=int(need("intermediate_size")),
            num_layers=int(need("num_hidden_layers")),
            num_heads=heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(hf.get("head_dim") or hidden // heads),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            rope_scaling=scaling,
            max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=eos,
            pad_token_id=hf.get("pad_token_id"),
            source_dtype=dtype if dtype in DTYPES else "float32",
        )
        kw.update(overrides)
        return cls(**kw)

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


# ============================================================================================
# parameters
# ============================================================================================

def param_axes(cfg: LlamaConfig) -> dict:
    """Logical axis names of every parameter (same tree structure as `init_params`)."""
    axes = {
        "embed": ("vocab", "embed"),
        "layers": {
            "attn_norm": ("layers", "norm"),
            "wq": ("layers", "embed", "heads", "head_dim"),
            "wk": ("layers", "embed", "kv_heads", "head_dim"),
            "wv": ("layers", "embed", "kv_heads", "head_dim"),
            "wo": ("layers", "heads", "head_dim", "embed"),
            "mlp_norm": ("layers", "norm"),
            "w_gate": ("layers", "embed", "mlp"),
            "w_up": ("layers", "embed", "mlp"),
            "w_down": ("layers", "mlp", "embed"),
        },
        "final_norm": ("norm",),
    }
    if not cfg.tie_embeddings:
        axes["lm_head"] = ("embed", "vocab")
    return axes


def param_shapes(cfg: LlamaConfig) -> dict:
    L, D, H, K, Dh, F, V = (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                            cfg.intermediate_size, cfg.vocab_size)
    shapes = {
        "embed": (V, D),
        "layers": {
            "attn_norm": (L, D), "wq": (L, D, H, Dh), "wk": (L, D, K, Dh), "wv": (L, D, K, Dh),
            "wo": (L, H, Dh, D), "mlp_norm": (L, D), "w_gate": (L, D, F), "w_up": (L, D, F), "w_down": (L, F, D),
        },
        "final_norm": (D,),
    }
    if not cfg.tie_embeddings:
        shapes["lm_head"] = (D, V)
    return shapes


def abstract_params(cfg: LlamaConfig) -> dict:
    """`jax.ShapeDtypeStruct`s of the parameters (no memory)."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, cfg.params_dtype), param_shapes(cfg),
                        is_leaf=lambda s: isinstance(s, tuple))


def init_params(cfg: LlamaConfig, key: jax.Array, std: float = 0.02) -> dict:
    """Random parameters as HF initialises them: normal(0, 0.02) matrices, ones for norm weights."""
    shapes = param_shapes(cfg)
    flat, treedef = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(shapes, is_leaf=lambda s: isinstance(s, tuple))[0]]
    keys = jax.random.split(key, len(flat))
    leaves = []
    for path, shape, k in zip(paths, flat, keys):
        name = str(path[-1].key)
        if name.endswith("norm"):
            leaves.append(jnp.ones(shape, cfg.params_dtype))
        else:
            leaves.append((std * jax.random.normal(k, shape, jnp.float32)).astype(cfg.params_dtype))
    return jax.tree.unflatten(treedef, leaves)


# ============================================================================================
# building blocks (pure functions of arrays)
# ============================================================================================

def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """HF LlamaRMSNorm: normalise in float32, cast back to x's dtype, then scale."""
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * y.astype(x.dtype)


def rope_inv_freq(cfg: LlamaConfig) -> np.ndarray:
    """Inverse frequencies [head_dim/2] (float32), with llama3 scaling applied when configured."""
    dim = cfg.head_dim
    inv = (1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))))
    inv = inv.astype(np.float32)
    rs = cfg.rope_scaling
    if rs is None:
        return inv
    low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor
    high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor
    wavelen = (2 * math.pi / inv).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, inv / rs.factor, inv).astype(np.float32)
    smooth = ((rs.original_max_position_embeddings / wavelen - rs.low_freq_factor)
              / (rs.high_freq_factor - rs.low_freq_factor)).astype(np.float32)
    smoothed = ((1 - smooth) * scaled / rs.factor + smooth * scaled).astype(np.float32)
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_tables(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape [B, S, head_dim] (float32), HF's `cat(freqs, freqs)` layout."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, S, N, Dh] rotated in the split-half layout: x·cos + rotate_half(x)·sin."""
    half = x.shape[-1] // 2
    rot = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos = cos[:, :, None, :].astype(x.dtype)
    sin = sin[:, :, None, :].astype(x.dtype)
    return x * cos + rot * sin


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, chunk: int | None = None,
              heads_first: bool = False) -> jax.Array:
    """Grouped-query attention.

    q [B, S, H, Dh]; k, v [B, T, K, Dh] (or [B, K, T, Dh] with heads_first); mask [B, S, T] bool
    (True = may attend).
    The G = H/K query heads sharing a KV head are folded into the query axis ([B, K, G·S, Dh]), so
    each KV head is one batched matmul and K/V are never repeated. Scores in the compute dtype,
    softmax in float32 (as HF).

    chunk: for causal self-attention (S == T), queries are processed in blocks of `chunk` that only
    look at keys up to the block's end — the upper triangle is never computed. The mask still
    applies inside each block, so padding and packed segments work unchanged.
    """
    B, S, H, Dh = q.shape
    if heads_first:  # k, v already [B, K, T, Dh] (the KV-cache layout)
        kk, vv = k, v
    else:
        kk, vv = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, T, Dh]
    K, T = kk.shape[1], kk.shape[2]
    G = H // K
    scale = jnp.asarray(Dh ** -0.5, q.dtype)
    neg = jnp.finfo(jnp.float32).min

    def block(q_blk, m_blk, t_end):  # q_blk [B, C, H, Dh], m_blk [B, C, t_end]
        C = q_blk.shape[1]
        qg = q_blk.reshape(B, C, K, G, Dh).transpose(0, 2, 3, 1, 4).reshape(B, K, G * C, Dh)
        s = jnp.einsum("bkqd,bktd->bkqt", qg, kk[:, :, :t_end]) * scale
        m = jnp.broadcast_to(m_blk[:, None, None], (B, 1, G, C, t_end)).reshape(B, 1, G * C, t_end)
        s = jnp.where(m, s.astype(jnp.float32), neg)
        pr = jax.nn.softmax(s, axis=-1).astype(v.dtype)
        o = jnp.einsum("bkqt,bktd->bkqd", pr, vv[:, :, :t_end])
        return o.reshape(B, K, G, C, Dh).transpose(0, 3, 1, 2, 4).reshape(B, C, H, Dh)

    if not chunk or S != T or S <= chunk or S % chunk:
        return block(q, mask, T)
    return jnp.concatenate([block(q[:, i:i + chunk], mask[:, i:i + chunk, :i + chunk], i + chunk)
                            for i in range(0, S, chunk)], axis=1)


def attention_chunk(seq_len: int) -> int:
    """Query block size for causal training attention (≤ 32 blocks per layer)."""
    return max(128, -(-seq_len // 32))


# Each projection as (number of input dims of the weight, its einsum for documentation). Weights
# keep their head-split layout (wq [D, H, Dh], wo [H, Dh, D]) for sharding; the matmul itself is
# done on 2-D views ([tokens, in] @ [in, out]), which XLA's CPU backend differentiates much faster
# than the equivalent multi-dimensional einsum. LoRA adapters live next to their weight in the layer
# dict as "<name>_lora_a" [.., in.., r] / "<name>_lora_b" [.., r, out..] (see jaxtool.models.lora).
PROJ_EINSUMS = {
    "wq": (1, "bsd,dhk->bshk"),
    "wk": (1, "bsd,dhk->bshk"),
    "wv": (1, "bsd,dhk->bshk"),
    "wo": (2, "bshk,hkd->bsd"),
    "w_gate": (1, "bsd,df->bsf"),
    "w_up": (1, "bsd,df->bsf"),
    "w_down": (1, "bsf,fd->bsd"),
}


def _matmul(x: jax.Array, w: jax.Array, n_in: int) -> jax.Array:
    """Contract the last n_in dims of x with the first n_in dims of w, as one 2-D matmul."""
    lead, inner = x.shape[:-n_in], x.shape[-n_in:]
    out = w.shape[n_in:]
    y = x.reshape(-1, math.prod(inner)) @ w.reshape(math.prod(inner), math.prod(out))
    return y.reshape(lead + out)


def proj(x: jax.Array, p: Mapping[str, jax.Array], name: str, cfg: "LlamaConfig") -> jax.Array:
    """x @ W (+ lora_scale · (x @ A) @ B when the layer carries adapters for W)."""
    dtype = cfg.compute_dtype
    n_in = PROJ_EINSUMS[name][0]
    y = _matmul(x, p[name].astype(dtype), n_in)
    a = p.get(name + "_lora_a")
    if a is not None:
        low = _matmul(x, a.astype(dtype), n_in)
        y = y + jnp.asarray(cfg.lora_scale, dtype) * _matmul(low, p[name + "_lora_b"].astype(dtype), 1)
    return y


def _mlp(x: jax.Array, p: Mapping[str, jax.Array], cfg: "LlamaConfig") -> jax.Array:
    gate = proj(x, p, "w_gate", cfg)
    up = proj(x, p, "w_up", cfg)
    h = constrain(jax.nn.silu(gate) * up, ("batch", "seq", "act_mlp"))
    return proj(h, p, "w_down", cfg)


def _qkv(x: jax.Array, p: Mapping[str, jax.Array], cos, sin, cfg: "LlamaConfig"):
    q = proj(x, p, "wq", cfg)
    k = proj(x, p, "wk", cfg)
    v = proj(x, p, "wv", cfg)
    q = constrain(apply_rope(q, cos, sin), ("batch", "seq", "act_heads", None))
    k = constrain(apply_rope(k, cos, sin), ("batch", "seq", "act_kv_heads", None))
    v = constrain(v, ("batch", "seq", "act_kv_heads", None))
    return q, k, v


def block(x: jax.Array, p: Mapping[str, jax.Array], cos, sin, mask, cfg: LlamaConfig) -> jax.Array:
    """One transformer block (pre-norm attention + pre-norm SwiGLU), x [B, S, D]."""
    h = rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
    q, k, v = _qkv(h, p, cos, sin, cfg)
    attn = attention(q, k, v, mask, chunk=attention_chunk(x.shape[1]))
    x = x + proj(attn, p, "wo", cfg)
    x = constrain(x, ("batch", "seq", "act_embed"))
    h = rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
    x = x + _mlp(h, p, cfg)
    return constrain(x, ("batch", "seq", "act_embed"))


def _remat(fn, policy: str):
    if policy == "none":
        return fn
    pols = {
        "full": jax.checkpoint_policies.nothing_saveable,
        "dots": jax.checkpoint_policies.dots_saveable,
        "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    }
    return jax.checkpoint(fn, policy=pols[policy], prevent_cse=False)


def make_mask(segment_ids: jax.Array | None, B: int, S: int) -> jax.Array:
    """[B, S, S] causal mask, restricted to equal non-zero segments when `segment_ids` is given."""
    idx = jnp.arange(S)
    causal = idx[:, None] >= idx[None, :]
    if segment_ids is None:
        return jnp.broadcast_to(causal, (B, S, S))
    same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] != 0)
    return causal[None] & same


def embed_tokens(params, tokens, cfg: LlamaConfig) -> jax.Array:
    x = jnp.take(params["embed"], tokens, axis=0).astype(cfg.compute_dtype)
    return constrain(x, ("batch", "seq", "act_embed"))


def unembed(params, x: jax.Array, cfg: LlamaConfig) -> jax.Array:
    """Final norm + output projection: [B, S, D] -> logits [B, S, V] in the compute dtype."""
    x = rms_norm(x, params["final_norm"], cfg.rms_norm_eps)
    if cfg.tie_embeddings:
        logits = jnp.einsum("bsd,vd->bsv", x, params["embed"].astype(cfg.compute_dtype))
    else:
        logits = jnp.einsum("bsd,dv->bsv", x, params["lm_head"].astype(cfg.compute_dtype))
    return constrain(logits, ("batch", "seq", "act_vocab"))


def hidden_states(params, tokens: jax.Array, cfg: LlamaConfig, positions: jax.Array | None = None,
                  segment_ids: jax.Array | None = None) -> jax.Array:
    """Last-layer hidden states before the final norm, [B, S, D]."""
    B, S = tokens.shape
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
    cos, sin = rope_tables(positions, rope_inv_freq(cfg))
    mask = make_mask(segment_ids, B, S)
    x = embed_tokens(params, tokens, cfg)
    body = _remat(lambda h, p: (block(h, p, cos, sin, mask, cfg), None), cfg.remat)
    if cfg.scan_layers:
        x, _ = jax.lax.scan(body, x, params["layers"])
    else:
        for i in range(cfg.num_layers):
            x, _ = body(x, jax.tree.map(lambda a: a[i], params["layers"]))
    return x


def forward(params, tokens: jax.Array, cfg: LlamaConfig, positions: jax.Array | None = None,
            segment_ids: jax.Array | None = None) -> jax.Array:
    """Logits [B, S, V] (compute dtype) for token ids [B, S].

    positions   : [B, S] rotary positions (default 0..S-1); restart per packed example.
    segment_ids : [B, S] packed-example ids, 0 = padding (default: one causal sequence per row).
    """
    return unembed(params, hidden_states(params, tokens, cfg, positions, segment_ids), cfg)


# ============================================================================================
# KV cache (incremental decoding)
# ============================================================================================

def init_cache(cfg: LlamaConfig, batch: int, max_len: int, dtype=None, per_layer: bool = False) -> dict:
    """Empty cache: k, v [L, B, K, max_len, Dh] in the compute dtype (heads before positions, so
    attention reads each head's keys contiguously, with no transpose per step). per_layer=True: k, v
    are tuples of L arrays [B, K, max_len, Dh] (for `unstack_layers` params)."""
    dtype = dtype or cfg.compute_dtype
    if per_layer:
        shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
        return {n: tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)) for n in ("k", "v")}
    shape = (cfg.num_layers, batch, cfg.num_kv_heads, max_len, cfg.head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def cache_axes(cfg: LlamaConfig | None = None, per_layer: bool = False) -> dict:
    if per_layer:
        ax = ("batch", "act_kv_heads", "cache_seq", None)
        return {n: tuple(ax for _ in range(cfg.num_layers)) for n in ("k", "v")}
    ax = ("layers", "batch", "act_kv_heads", "cache_seq", None)
    return {"k": ax, "v": ax}


def cached_attention(q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, k_new: jax.Array, v_new: jax.Array,
                     start: jax.Array) -> jax.Array:
    """Attention of T new tokens over a row's cached keys (slots < start[b]) and, causally, over
    themselves — without copying the cache: the two score blocks share one float32 softmax.

    q [B, T, H, Dh]; k_cache, v_cache [B, K, S, Dh]; k_new, v_new [B, T, K, Dh]; start [B].
    """
    B, T, H, Dh = q.shape
    K, S = k_cache.shape[1], k_cache.shape[2]
    G = H // K
    scale = jnp.asarray(Dh ** -0.5, q.dtype)
    neg = jnp.finfo(jnp.float32).min
    qg = q.reshape(B, T, K, G, Dh).transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, Dh)
    kn, vn = k_new.transpose(0, 2, 1, 3), v_new.transpose(0, 2, 1, 3)                 # [B, K, T, Dh]
    s_old = jnp.einsum("bkqd,bksd->bkqs", qg, k_cache.astype(q.dtype)) * scale
    s_new = jnp.einsum("bkqd,bktd->bkqt", qg, kn) * scale
    old_ok = (jnp.arange(S)[None, :] < start[:, None])[:, None, None, :]             # [B, 1, 1, S]
    causal = jnp.tile(jnp.arange(T)[:, None] >= jnp.arange(T)[None, :], (G, 1))       # [G*T, T]
    s_old = jnp.where(old_ok, s_old.astype(jnp.float32), neg)
    s_new = jnp.where(causal[None, None], s_new.astype(jnp.float32), neg)
    m = jnp.maximum(jnp.max(s_old, axis=-1, keepdims=True), jnp.max(s_new, axis=-1, keepdims=True))
    p_old, p_new = jnp.exp(s_old - m), jnp.exp(s_new - m)
    denom = jnp.sum(p_old, axis=-1, keepdims=True) + jnp.sum(p_new, axis=-1, keepdims=True)
    dtype = v_new.dtype
    o = (jnp.einsum("bkqs,bksd->bkqd", (p_old / denom).astype(dtype), v_cache.astype(dtype))
         + jnp.einsum("bkqt,bktd->bkqd", (p_new / denom).astype(dtype), vn))
    return o.reshape(B, K, G, T, Dh).transpose(0, 3, 1, 2, 4).reshape(B, T, H, Dh)


def forward_cached(params, tokens: jax.Array, cache: Mapping[str, jax.Array], start: jax.Array,
                   cfg: LlamaConfig, prefill: bool = False, logits_at: jax.Array | None = None
                   ) -> tuple[jax.Array, dict]:
    """Run tokens [B, T] whose row b starts at cache offset start[b]; return (logits [B, T, V], cache).

    Token t of row b attends to the row's cached slots < start[b] and to new tokens ≤ t; then the
    new keys/values are written into the cache at start[b] + (0..T-1), in place when the caller
    donates the cache. Right-padded prompts need no mask: a row's padding sits after its real
    tokens and is overwritten as decoding proceeds.

    prefill=True (static): the rows' caches are empty (start = 0); attention is plain causal
    self-attention over the new tokens (chunked for long prompts) and the cache is not read.
    logits_at [B]: return logits [B, 1, V] of that position of each row only (e.g. the last prompt
    token), skipping the output projection everywhere else.
    """
    B, T = tokens.shape
    start = start.astype(jnp.int32)
    positions = start[:, None] + jnp.arange(T, dtype=jnp.int32)[None, :]
    cos, sin = rope_tables(positions, rope_inv_freq(cfg))
    x = embed_tokens(params, tokens, cfg)
    self_mask = make_mask(None, B, T) if prefill else None
    cache_dtype = jax.tree.leaves(cache["k"])[0].dtype

    def body(h, layer):
        p, ck, cv = layer
        hn = rms_norm(h, p["attn_norm"], cfg.rms_norm_eps)
        q, k, v = _qkv(hn, p, cos, sin, cfg)
        if prefill:
            attn = attention(q, k, v, self_mask, chunk=attention_chunk(T))
        else:
            attn = cached_attention(q, ck, cv, k, v, start)
        h = h + proj(attn, p, "wo", cfg)
        hn = rms_norm(h, p["mlp_norm"], cfg.rms_norm_eps)
        h = h + _mlp(hn, p, cfg)
        return h, (k.transpose(0, 2, 1, 3).astype(cache_dtype), v.transpose(0, 2, 1, 3).astype(cache_dtype))

    # Row b's new entries go to slots start[b] + (0..T-1): one scatter, in place when the cache is
    # donated (no per-row update_slice under vmap: that transposes the whole cache every step).
    b_idx = jnp.broadcast_to(jnp.arange(B)[:, None], (B, T))
    t_idx = positions

    def write_stacked(c, new):  # c [L, B, K, S, Dh], new [L, B, K, T, Dh]
        return c.at[:, b_idx, :, t_idx, :].set(new.transpose(1, 3, 0, 2, 4), unique_indices=True)

    def write_layer(c, new):    # c [B, K, S, Dh], new [B, K, T, Dh]
        return c.at[b_idx, :, t_idx, :].set(new.transpose(0, 2, 1, 3), unique_indices=True)

    if isinstance(params["layers"], (list, tuple)):  # per-layer weights and caches (`unstack_layers`)
        ks, vs = [], []
        for p, ck, cv in zip(params["layers"], cache["k"], cache["v"]):  # the scan body, unrolled
            x, (k, v) = body(x, (p, ck, cv))
            ks.append(write_layer(ck, k))
            vs.append(write_layer(cv, v))
        new_cache = {"k": tuple(ks), "v": tuple(vs)}
    else:
        x, (ks, vs) = jax.lax.scan(body, x, (params["layers"], cache["k"], cache["v"]))
        new_cache = {"k": write_stacked(cache["k"], ks), "v": write_stacked(cache["v"], vs)}
    if logits_at is not None:
        x = jnp.take_along_axis(x, logits_at.astype(jnp.int32)[:, None, None], axis=1)
    return unembed(params, x, cfg), new_cache


def unstack_layers(params: dict) -> dict:
    """The same parameters with `layers` as a tuple of per-layer dicts (a one-time copy).

    `forward_cached` and `generate_ids` then run the layers as an unrolled loop over separate
    buffers (with a per-layer cache, `init_cache(..., per_layer=True)`). Inside `lax.scan`, XLA's
    CPU backend copies each layer's weight and cache slices out of the stacked arrays on every
    step; unstacked, batch-1 decoding of the SmolLM2 shape measured 34 vs 44 ms/token here, but
    batch 8 was slower (74 vs 65 ms) and prefill compiles unrolled, so it is opt-in. (Accelerators
    read the slices in place; keep the stacked layout there.)
    """
    L = jax.tree.leaves(params["layers"])[0].shape[0]
    layers = tuple(jax.tree.map(lambda a, i=i: a[i], params["layers"]) for i in range(L))
    return {**params, "layers": layers}
