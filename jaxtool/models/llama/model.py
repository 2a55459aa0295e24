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
  rematerialised (`run.remat`).
* Every parameter and key activation has logical axis names (`param_axes`, `jaxtool.sharding`),
  so the same code runs on one CPU or a pod — the mesh decides the layout.
* The architecture (`cfg: LlamaConfig`) is separate from how a run computes (`run: RunOptions`:
  compute dtype, remat, LoRA scale, attention implementation). Parameters are cast to
  `run.compute_dtype` at each matmul, so float32 master weights with bfloat16 compute need no copy.
  Softmax, norms and log-probs are always float32.
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
    layers/bq          [L, H, Dh]    layers/bk, bv   [L, K, Dh]      (qkv_bias families: Qwen2)
    layers/q_norm      [L, Dh]       layers/k_norm   [L, Dh]         (qk_norm families: Qwen3)
    final_norm         [D]
    lm_head            [D, V]        (absent when embeddings are tied)
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxtool.models.llama.config import LlamaConfig
from jaxtool.models.quant import materialize
from jaxtool.models.run import DEFAULT_RUN, RunOptions
from jaxtool.ops.attention import attention, attention_chunk  # noqa: F401  (re-exported)
from jaxtool.sharding import constrain


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
    if cfg.qkv_bias:   # Qwen2
        axes["layers"].update(bq=("layers", "heads", "head_dim"), bk=("layers", "kv_heads", "head_dim"),
                              bv=("layers", "kv_heads", "head_dim"))
    if cfg.qk_norm:    # Qwen3
        axes["layers"].update(q_norm=("layers", "head_dim"), k_norm=("layers", "head_dim"))
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
    if cfg.qkv_bias:
        shapes["layers"].update(bq=(L, H, Dh), bk=(L, K, Dh), bv=(L, K, Dh))
    if cfg.qk_norm:
        shapes["layers"].update(q_norm=(L, Dh), k_norm=(L, Dh))
    if not cfg.tie_embeddings:
        shapes["lm_head"] = (D, V)
    return shapes


def abstract_params(cfg: LlamaConfig, dtype=jnp.float32) -> dict:
    """`jax.ShapeDtypeStruct`s of the parameters (no memory)."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, dtype), param_shapes(cfg),
                        is_leaf=lambda s: isinstance(s, tuple))


def init_params(cfg: LlamaConfig, key: jax.Array, std: float = 0.02, dtype=jnp.float32) -> dict:
    """Random parameters as HF initialises them: normal(0, 0.02) matrices, ones for norm weights,
    zeros for biases."""
    shapes = param_shapes(cfg)
    flat, treedef = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(shapes, is_leaf=lambda s: isinstance(s, tuple))[0]]
    keys = jax.random.split(key, len(flat))
    leaves = []
    for path, shape, k in zip(paths, flat, keys):
        name = str(path[-1].key)
        if name.endswith("norm"):
            leaves.append(jnp.ones(shape, dtype))
        elif name in BIASES.values():
            leaves.append(jnp.zeros(shape, dtype))
        else:
            leaves.append((std * jax.random.normal(k, shape, jnp.float32)).astype(dtype))
    return jax.tree.unflatten(treedef, leaves)


# ============================================================================================
# building blocks (pure functions of arrays)
# ============================================================================================

def _rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * y.astype(x.dtype)


# Recomputed in the backward pass from its input: differentiating the plain function would keep its
# float32 copy of x and the normalised float32 values for every layer (2 x [tokens, D] float32 per
# norm; 4 GiB of the Llama-3.2-1B step at 8 x 2048 with remat "none"), for an elementwise recompute.
_rms_norm_remat = jax.checkpoint(_rms_norm, static_argnums=(2,), policy=jax.checkpoint_policies.nothing_saveable)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """HF LlamaRMSNorm: normalise in float32, cast back to x's dtype, then scale. Under
    differentiation only x is kept for the backward pass (the float32 internals are recomputed)."""
    return _rms_norm_remat(x, weight, eps)


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
    # lax.dot_general, the op `@` lowers to (the same HLO), called here rather than inside jnp.matmul's
    # own jit: qwix's model-level API intercepts it and must see the weight operand as the caller's
    # array (jaxtool.models.nnx.LayeredLM)
    y = jax.lax.dot_general(x.reshape(-1, math.prod(inner)), w.reshape(math.prod(inner), math.prod(out)),
                            (((1,), (0,)), ((), ())))
    return y.reshape(lead + out)


def proj(x: jax.Array, p: Mapping[str, jax.Array], name: str, run: RunOptions) -> jax.Array:
    """x @ W (+ lora_scale · (x @ A) @ B when the layer carries adapters for W). W may be a
    `jaxtool.models.quant.QuantizedWeight` (int8 / NF4 frozen base, QLoRA)."""
    dtype = run.dtype
    n_in = PROJ_EINSUMS[name][0]
    y = _matmul(x, materialize(p[name], dtype), n_in)   # a quantised frozen base is dequantised here
    a = p.get(name + "_lora_a")
    if a is not None:
        low = _matmul(x, a.astype(dtype), n_in)
        y = y + jnp.asarray(run.lora_scale, dtype) * _matmul(low, p[name + "_lora_b"].astype(dtype), 1)
    return y


def _mlp(x: jax.Array, p: Mapping[str, jax.Array], run: RunOptions) -> jax.Array:
    """SwiGLU (Shazeer 2020): W_down(silu(x W_gate) * x W_up).

    The gated product and the down projection are one checkpointed function of (gate, up): the
    backward pass keeps only gate and up ([tokens, F] each) and recomputes silu(gate) * up (an
    elementwise op) for W_down's gradient. Differentiating the plain expression keeps six
    [tokens, F] arrays per layer (gate, up, sigmoid and silu of gate, their product and its
    transpose-ready copy): 24 of the 39 GiB of saved activations of the Llama-3.2-1B step at 8 x 2048
    with remat "none" (XLA:CPU's accounting), 8 GiB after."""
    gate = proj(x, p, "w_gate", run)
    up = proj(x, p, "w_up", run)
    down = {k: v for k, v in p.items() if k.startswith("w_down")}
    # run.swiglu_checkpoint=False: the same function without the checkpoint (whose trace would hide
    # W_down from qwix's model-level API; jaxtool.models.nnx.LayeredLM)
    return (_swiglu_down if run.swiglu_checkpoint else _swiglu_down_impl)(gate, up, down, run)


def _swiglu_down_impl(gate, up, down, run: RunOptions):
    h = constrain(jax.nn.silu(gate) * up, ("batch", "seq", "act_mlp"))
    return proj(h, down, "w_down", run)


_swiglu_down = jax.checkpoint(_swiglu_down_impl, static_argnums=(3,),
                              policy=jax.checkpoint_policies.nothing_saveable)


# The block's two hooks, switched on by the family's config (`LlamaConfig.qkv_bias`, `.qk_norm`):
# a bias added after a projection (Qwen2: q/k/v) and an RMSNorm over head_dim of each query and key
# head before rope (Qwen3, with its own eps = rms_norm_eps).
BIASES = {"wq": "bq", "wk": "bk", "wv": "bv"}
QK_NORMS = {"wq": "q_norm", "wk": "k_norm"}


def _qkv(x: jax.Array, p: Mapping[str, jax.Array], cos, sin, cfg: LlamaConfig, run: RunOptions):
    def head_proj(name):
        y = proj(x, p, name, run)
        if cfg.qkv_bias:
            y = y + p[BIASES[name]].astype(y.dtype)
        if cfg.qk_norm and name in QK_NORMS:
            y = rms_norm(y, p[QK_NORMS[name]], cfg.rms_norm_eps)
        return y

    q, k, v = head_proj("wq"), head_proj("wk"), head_proj("wv")
    q = constrain(apply_rope(q, cos, sin), ("batch", "seq", "act_heads", None))
    k = constrain(apply_rope(k, cos, sin), ("batch", "seq", "act_kv_heads", None))
    v = constrain(v, ("batch", "seq", "act_kv_heads", None))
    return q, k, v


# attend(q [B, S, H, Dh], k [B, S, K, Dh], v [B, S, K, Dh]) -> [B, S, H, Dh]: self-attention over the
# block's own tokens (training) or over a KV cache plus them (decoding).
Attend = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def block(x: jax.Array, p: Mapping[str, jax.Array], cos, sin, attend: Attend, cfg: LlamaConfig,
          run: RunOptions = DEFAULT_RUN) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """One transformer block (pre-norm attention + pre-norm SwiGLU), x [B, S, D].

    The one block body of training, prefill and decoding: only `attend` differs. Returns the new
    hidden states and the block's keys/values (what a KV cache stores)."""
    h = rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
    q, k, v = _qkv(h, p, cos, sin, cfg, run)
    x = x + proj(attend(q, k, v), p, "wo", run)
    x = constrain(x, ("batch", "seq", "act_embed"))
    h = rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
    x = x + _mlp(h, p, run)
    return constrain(x, ("batch", "seq", "act_embed")), (k, v)


def self_attend(run: RunOptions = DEFAULT_RUN, segment_ids: jax.Array | None = None) -> Attend:
    """Causal self-attention over a block's tokens, restricted to equal non-zero `segment_ids`
    (packed examples; 0 = padding) when given. The kernel is `run.attention` (`jaxtool.ops.attention`:
    cuDNN flash attention on GPU, splash on TPU, XLA elsewhere)."""
    return lambda q, k, v: attention(q, k, v, segment_ids=segment_ids, causal=True,
                                     packed=run.packed, impl=run.attention)


def _remat(fn, policy: str):
    if policy == "none":
        return fn
    pols = {
        "full": jax.checkpoint_policies.nothing_saveable,
        "dots": jax.checkpoint_policies.dots_saveable,
        # projection matmuls (no batch dims) kept; attention's batched score/value einsums recomputed
        "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    }
    return jax.checkpoint(fn, policy=pols[policy], prevent_cse=False)


def embed_tokens(params, tokens, cfg: LlamaConfig, run: RunOptions = DEFAULT_RUN) -> jax.Array:
    x = jnp.take(params["embed"], tokens, axis=0).astype(run.dtype)
    return constrain(x, ("batch", "seq", "act_embed"))


def final_norm(params, x: jax.Array, cfg: LlamaConfig) -> jax.Array:
    return rms_norm(x, params["final_norm"], cfg.rms_norm_eps)


def output_weight(params, cfg: LlamaConfig, run: RunOptions = DEFAULT_RUN) -> tuple[jax.Array, bool]:
    """The output projection in the compute dtype and whether it is stored transposed ([V, D], tied)."""
    if cfg.tie_embeddings:
        return params["embed"].astype(run.dtype), True
    return params["lm_head"].astype(run.dtype), False


def unembed(params, x: jax.Array, cfg: LlamaConfig, run: RunOptions = DEFAULT_RUN) -> jax.Array:
    """Final norm + output projection: [B, S, D] -> logits [B, S, V] in the compute dtype."""
    x = final_norm(params, x, cfg)
    w, transposed = output_weight(params, cfg, run)
    if transposed:
        logits = jnp.einsum("bsd,vd->bsv", x, w)
    else:
        logits = jnp.einsum("bsd,dv->bsv", x, w)
    return constrain(logits, ("batch", "seq", "act_vocab"))


def hidden_states(params, tokens: jax.Array, cfg: LlamaConfig, positions: jax.Array | None = None,
                  segment_ids: jax.Array | None = None, *, run: RunOptions = DEFAULT_RUN) -> jax.Array:
    """Last-layer hidden states before the final norm, [B, S, D]."""
    B, S = tokens.shape
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
    cos, sin = rope_tables(positions, rope_inv_freq(cfg))
    attend = self_attend(run, segment_ids if run.packed else None)
    x = embed_tokens(params, tokens, cfg, run)
    body = _remat(lambda h, p: (block(h, p, cos, sin, attend, cfg, run)[0], None), run.remat)
    if isinstance(params["layers"], (list, tuple)):
        # per-layer weights (`unstack_layers`), or per-layer callables that hand their own weights to
        # the block — `layer(run_block)` returns `run_block(weights)` — so that the block runs inside
        # the layer's call (jaxtool.models.nnx.LayeredLM: an nnx.Module per layer, where qwix's
        # model-level API finds the weights); `run.remat` applies to the weight dicts only
        for layer in params["layers"]:
            if callable(layer):
                x = layer(lambda p, h=x: block(h, p, cos, sin, attend, cfg, run)[0])
            else:
                x, _ = body(x, layer)
    elif run.scan_layers:
        x, _ = jax.lax.scan(body, x, params["layers"])
    else:
        for i in range(cfg.num_layers):
            x, _ = body(x, jax.tree.map(lambda a: a[i], params["layers"]))
    return x


def forward(params, tokens: jax.Array, cfg: LlamaConfig, positions: jax.Array | None = None,
            segment_ids: jax.Array | None = None, *, run: RunOptions = DEFAULT_RUN) -> jax.Array:
    """Logits [B, S, V] (compute dtype) for token ids [B, S].

    positions   : [B, S] rotary positions (default 0..S-1); restart per packed example.
    segment_ids : [B, S] packed-example ids, 0 = padding (default: one causal sequence per row).
    """
    return unembed(params, hidden_states(params, tokens, cfg, positions, segment_ids, run=run), cfg, run)


# ============================================================================================
# KV cache (incremental decoding)
# ============================================================================================

def init_cache(cfg: LlamaConfig, batch: int, max_len: int, dtype=None, per_layer: bool = False,
               run: RunOptions = DEFAULT_RUN) -> dict:
    """Empty cache: k, v [L, B, K, max_len, Dh] in the compute dtype (heads before positions, so
    attention reads each head's keys contiguously, with no transpose per step). per_layer=True: k, v
    are tuples of L arrays [B, K, max_len, Dh] (for `unstack_layers` params)."""
    dtype = dtype or run.dtype
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
                   cfg: LlamaConfig, prefill: bool = False, logits_at: jax.Array | None = None, *,
                   run: RunOptions = DEFAULT_RUN) -> tuple[jax.Array, dict]:
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
    x = embed_tokens(params, tokens, cfg, run)
    self_att = self_attend(run) if prefill else None
    cache_dtype = jax.tree.leaves(cache["k"])[0].dtype

    def body(h, layer):
        p, ck, cv = layer
        attend = self_att or (lambda q, k, v: cached_attention(q, ck, cv, k, v, start))
        h, (k, v) = block(h, p, cos, sin, attend, cfg, run)
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
    return unembed(params, x, cfg, run), new_cache


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
