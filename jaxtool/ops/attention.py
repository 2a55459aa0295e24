"""Grouped-query attention with one signature and a kernel per backend.

    out = attention(q, k, v, segment_ids=seg, causal=True, impl="auto")

q [B, S, H, Dh]; k, v [B, T, K, Dh] with K dividing H (GQA, Ainslie et al. 2023: query head h reads
KV head h // (H/K)); out [B, S, H, Dh] in v's dtype. softmax(q·kᵀ / √Dh + mask) · v (Vaswani et al.
2017), the softmax always in float32.

Implementations (`impl`):

* ``"xla"`` — plain XLA, every backend. The G = H/K query heads sharing a KV head are folded into
  the query axis ([B, K, G·S, Dh]) so each KV head is one batched matmul and K/V are never repeated;
  scores in the compute dtype, softmax in float32 (as transformers' Llama). Causal self-attention is
  computed in query blocks of `chunk` (`attention_chunk`) that only look at keys up to the block's
  end, so the upper triangle is never computed. It materialises each block's float32 scores and
  probabilities (and keeps them for the backward pass): the CPU path and the fallback.
* ``"cudnn"`` — `jax.nn.dot_product_attention(..., implementation="cudnn")`: cuDNN's fused flash
  attention (Dao 2023, FlashAttention-2) on NVIDIA GPUs (Ampere or newer), bf16/fp16 inputs, GQA
  native, causal via `is_causal` (masked blocks are skipped). Packed rows (several examples per
  row) are NOT supported through that public API on jax 0.10/0.11: a boolean mask is turned into an
  additive bias whose gradient cuDNN only supports at batch size 1 (jax-ml/jax#30593), and the
  segment-offset ("ragged") layout is private API. So packed batches fall back to "xla" under
  "auto", and forcing "cudnn" on them is an error. Padding-only rows (``packed=False``: each row
  holds one example from position 0, then padding) need no mask under causal attention: a real
  token never sees a later (padding) key, so only `is_causal` is passed.
* ``"splash"`` — the Pallas TPU splash-attention kernel shipped with JAX
  (`jax.experimental.pallas.ops.tpu.splash_attention`): block-sparse causal mask, GQA, and segment
  ids natively (so packed rows too). On a multi-device mesh it runs under `shard_map` (batch over
  the data axes, heads over `tensor` when both head counts divide). Off TPU it runs in Pallas
  interpret mode (slow; that is how the CPU tests check it). Needs S = T, S a multiple of 128.
* ``"auto"`` — chosen at trace time: cudnn on a CUDA GPU for bf16/fp16 inputs it supports, splash
  on TPU where it applies, xla otherwise (CPU, float32, packed batches on GPU, explicit masks).

Masks: `causal` (query i sees keys ≤ i, self-attention) AND `segment_ids` [B, S] (1, 2, … per
packed example, 0 = padding; a query sees keys of its own non-zero segment) AND an optional
explicit `mask` [B, S, T] bool (True = may attend; "xla" only). Outputs at padding positions
(segment 0) are unspecified and differ between implementations; they are never used.

The kernel actually used is reported: the first time each (requested, chosen, reason) occurs in a
process, `attention` logs it (logger `jaxtool.ops.attention`; a WARNING when `auto` on a GPU/TPU
falls back to "xla", naming why, e.g. packed segment ids; INFO otherwise), and `resolutions()` lists
them for run headers and `jaxtool bench` rows.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp

from jaxtool.errors import ConfigError

IMPLS = ("auto", "xla", "cudnn", "splash")

log = logging.getLogger(__name__)

# (requested, chosen, reason) -> number of traces, in first-seen order (`resolutions()`)
_RESOLVED: dict[tuple[str, str, str], int] = {}


def _report(requested: str, chosen: str, why: str, backend: str) -> None:
    key = (requested, chosen, why)
    first = key not in _RESOLVED
    _RESOLVED[key] = _RESOLVED.get(key, 0) + 1
    if not first:
        return
    if requested == "auto" and chosen == "xla" and backend in ("gpu", "tpu"):
        log.warning("attention: auto resolved to xla, not the fused kernel of this %s (%s)", backend.upper(),
                    why.split(": ", 1)[-1])
    else:
        log.info("attention: %s resolved to %s (%s)", requested, chosen, why)


def resolutions() -> list[dict]:
    """The attention kernels this process has traced: `[{"requested", "kernel", "reason", "traces"}]`
    in first-seen order."""
    return [{"requested": r, "kernel": c, "reason": w, "traces": n} for (r, c, w), n in _RESOLVED.items()]


def reset_resolutions() -> None:
    """Forget the kernels seen so far (a benchmark does this before each configuration)."""
    _RESOLVED.clear()


def describe_resolutions(items: list[dict] | None = None) -> str:
    """One line: e.g. "xla (auto on cpu)" or "cudnn (auto on GPU); xla (auto on GPU: packed ...)"."""
    items = resolutions() if items is None else items
    return "; ".join(f"{r['kernel']} ({r['reason']})" for r in items) or "none traced"


def attention_chunk(seq_len: int) -> int:
    """Query block size for causal self-attention on the "xla" path (≤ 32 blocks per layer)."""
    return max(128, -(-seq_len // 32))


# ============================================================================================
# dispatch
# ============================================================================================

def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, segment_ids: jax.Array | None = None,
              causal: bool = True, packed: bool = True, mask: jax.Array | None = None, impl: str = "auto",
              chunk: int | None = None, heads_first: bool = False) -> jax.Array:
    """Grouped-query attention; see the module docstring.

    q [B, S, H, Dh]; k, v [B, T, K, Dh] (or [B, K, T, Dh] with `heads_first`, the KV-cache layout).
    segment_ids [B, S] int (self-attention, S = T): 0 = padding.
    causal (static): query i sees keys ≤ i (needs S = T unless impl="xla" with an explicit mask).
    packed (static): False promises every row holds one example starting at position 0 followed by
        padding (what a padded, unpacked batch is), which lets cuDNN drop the segment mask. True
        (the safe default) allows any segment layout.
    mask [B, S, T] bool, optional, ANDed with the rest ("xla" only).
    impl (static): "auto" | "xla" | "cudnn" | "splash".
    chunk (static, "xla" only): causal query block size; default `attention_chunk(S)`.
    """
    if heads_first:
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    _check_shapes(q, k, v, segment_ids, mask, causal)
    backend = jax.default_backend()
    chosen, why = resolve_impl(impl, q, k, segment_ids=segment_ids, causal=causal, packed=packed, mask=mask,
                               backend=backend)
    _report(impl, chosen, why, backend)
    if chosen == "xla":
        return xla_attention(q, k, v, segment_ids=segment_ids, causal=causal, mask=mask, chunk=chunk)
    if chosen == "cudnn":
        return cudnn_attention(q, k, v, segment_ids=segment_ids, causal=causal, packed=packed)
    return splash_attention(q, k, v, segment_ids=segment_ids, causal=causal)


def resolve_impl(impl: str, q, k, *, segment_ids=None, causal: bool = True, packed: bool = True,
                 mask=None, backend: str | None = None) -> tuple[str, str]:
    """(implementation, reason) that `attention` uses for these arguments on `backend` (default: JAX's
    default backend). A forced implementation that cannot serve raises ConfigError naming why."""
    if impl not in IMPLS:
        raise ConfigError(f"attention implementation must be one of {IMPLS}, got {impl!r}")
    backend = backend or jax.default_backend()
    if impl == "xla":
        return "xla", "forced"
    if impl == "cudnn":
        problem = _cudnn_problem(q, k, segment_ids, causal, packed, mask, backend)
        if problem:
            raise ConfigError(f"attention implementation 'cudnn' cannot run here: {problem}")
        return "cudnn", "forced"
    if impl == "splash":
        problem = _splash_problem(q, k, mask, causal)
        if problem:
            raise ConfigError(f"attention implementation 'splash' cannot run here: {problem}")
        return "splash", "forced" if backend == "tpu" else "forced (Pallas interpret mode off TPU)"
    # auto
    if backend == "gpu":
        problem = _cudnn_problem(q, k, segment_ids, causal, packed, mask, backend)
        return ("xla", f"auto on GPU: {problem}") if problem else ("cudnn", "auto on GPU")
    if backend == "tpu":
        problem = _splash_problem(q, k, mask, causal)
        return ("xla", f"auto on TPU: {problem}") if problem else ("splash", "auto on TPU")
    return "xla", f"auto on {backend}"


def _check_shapes(q, k, v, segment_ids, mask, causal):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"attention: q, k, v must be [B, S, H, Dh] / [B, T, K, Dh], got {q.shape}, {k.shape}, {v.shape}")
    B, S, H, Dh = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != Dh:
        raise ValueError(f"attention: k {k.shape} and v {v.shape} do not fit q {q.shape}")
    if H % k.shape[2]:
        raise ValueError(f"attention: {H} query heads are not a multiple of {k.shape[2]} KV heads")
    T = k.shape[1]
    if segment_ids is not None and (segment_ids.shape != (B, S) or S != T):
        raise ValueError(f"attention: segment_ids {segment_ids.shape} needs self-attention with shape ({B}, {S}) "
                         f"(q has {S} positions, k {T})")
    if mask is not None and mask.shape != (B, S, T):
        raise ValueError(f"attention: mask must be [B, S, T] = {(B, S, T)}, got {mask.shape}")
    if causal and S != T and mask is None:
        raise ValueError(f"attention: causal needs self-attention (S = T), got S={S}, T={T}")


def _cuda_capability() -> tuple[int, int] | None:
    try:
        dev = jax.devices("gpu")[0]
    except RuntimeError:
        return None
    cc = getattr(dev, "compute_capability", None)
    if cc is None:
        return None
    try:
        if "rocm" in str(dev.client.platform_version).lower():
            return None
        major, minor = (int(x) for x in str(cc).split(".")[:2])
    except Exception:  # noqa: BLE001 - an unexpected device object: treat as no cuDNN
        return None
    return major, minor


def _cudnn_problem(q, k, segment_ids, causal, packed, mask, backend) -> str | None:
    if backend != "gpu":
        return f"backend is {backend}, cuDNN needs a CUDA GPU"
    cc = _cuda_capability()
    if cc is None:
        return "no CUDA device with a compute capability (ROCm?)"
    if cc < (8, 0):
        return f"compute capability {cc[0]}.{cc[1]} < 8.0 (cuDNN flash attention needs Ampere or newer)"
    if q.dtype not in (jnp.bfloat16, jnp.float16):
        return f"dtype {q.dtype} (cuDNN flash attention takes bfloat16/float16)"
    Dh = q.shape[-1]
    if Dh % 8 or Dh > (256 if cc >= (9, 0) else 128):
        return f"head dim {Dh} (must be a multiple of 8, ≤ 128; ≤ 256 on Hopper+)"
    if mask is not None:
        return "an explicit mask (only segment ids / causal are passed to cuDNN)"
    if segment_ids is not None and packed:
        return "packed segments (several examples per row) are not supported through jax.nn.dot_product_attention"
    if causal and q.shape[1] != k.shape[1]:
        return "causal attention with S != T"
    return None


def _splash_problem(q, k, mask, causal) -> str | None:
    try:
        from jax.experimental.pallas.ops.tpu import splash_attention  # noqa: F401
    except ImportError as e:  # moved/removed in a later JAX
        return f"the Pallas splash kernel does not import on jax {jax.__version__} ({e})"
    S, T = q.shape[1], k.shape[1]
    if mask is not None:
        return "an explicit mask (splash takes causal + segment ids)"
    if S != T:
        return f"S={S} != T={T}"
    if S % 128:
        return f"sequence length {S} is not a multiple of 128"
    return None


# ============================================================================================
# xla
# ============================================================================================

def _block_mask(segment_ids, mask, causal, q0: int, q1: int, t_end: int):
    """Boolean mask [B or 1, q1 - q0, t_end] (True = may attend) for queries q0..q1-1 over keys
    0..t_end-1, or None when nothing is masked."""
    m = None
    if causal:
        m = ((q0 + jnp.arange(q1 - q0))[:, None] >= jnp.arange(t_end)[None, :])[None]
    if segment_ids is not None:
        sq, sk = segment_ids[:, q0:q1], segment_ids[:, :t_end]
        same = (sq[:, :, None] == sk[:, None, :]) & (sk[:, None, :] != 0)
        m = same if m is None else m & same
    if mask is not None:
        mb = mask[:, q0:q1, :t_end]
        m = mb if m is None else m & mb
    return m


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, segment_ids: jax.Array | None = None,
                  causal: bool = True, mask: jax.Array | None = None, chunk: int | None = None) -> jax.Array:
    """The plain-XLA implementation (k, v [B, T, K, Dh]); see the module docstring."""
    B, S, H, Dh = q.shape
    kk, vv = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, T, Dh]
    K, T = kk.shape[1], kk.shape[2]
    G = H // K
    scale = jnp.asarray(Dh ** -0.5, q.dtype)
    neg = jnp.finfo(jnp.float32).min

    def block(q_blk, q0, t_end):  # q_blk [B, C, H, Dh]
        C = q_blk.shape[1]
        qg = q_blk.reshape(B, C, K, G, Dh).transpose(0, 2, 3, 1, 4).reshape(B, K, G * C, Dh)
        s = jnp.einsum("bkqd,bktd->bkqt", qg, kk[:, :, :t_end]) * scale
        s = s.astype(jnp.float32)
        m = _block_mask(segment_ids, mask, causal, q0, q0 + C, t_end)
        if m is not None:
            mb = m.shape[0]
            m = jnp.broadcast_to(m[:, None, None], (mb, 1, G, C, t_end)).reshape(mb, 1, G * C, t_end)
            s = jnp.where(m, s, neg)
        pr = jax.nn.softmax(s, axis=-1).astype(v.dtype)
        o = jnp.einsum("bkqt,bktd->bkqd", pr, vv[:, :, :t_end])
        return o.reshape(B, K, G, C, Dh).transpose(0, 3, 1, 2, 4).reshape(B, C, H, Dh)

    # Flash-attention-style memory: each block's float32 scores and probabilities are recomputed in
    # the backward pass instead of being stored for it (only q, k, v and the output are kept), so a
    # layer's attention residuals are O(S·Dh), not O(S²). Costs one more score matmul per block.
    block = jax.checkpoint(block, static_argnums=(1, 2), policy=jax.checkpoint_policies.nothing_saveable)
    if chunk is None:
        chunk = attention_chunk(S)
    if not causal or S != T or not chunk or S <= chunk or S % chunk:
        return block(q, 0, T)
    return jnp.concatenate([block(q[:, i:i + chunk], i, i + chunk) for i in range(0, S, chunk)], axis=1)


# ============================================================================================
# cuDNN (jax.nn.dot_product_attention)
# ============================================================================================

def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, segment_ids: jax.Array | None = None,
                    causal: bool = True, packed: bool = True) -> jax.Array:
    """cuDNN flash attention through `jax.nn.dot_product_attention` (k, v [B, T, K, Dh])."""
    kw = {}
    if segment_ids is not None:
        if packed:
            raise ConfigError("cuDNN attention: packed segments are not supported (use impl='xla' or 'auto')")
        if not causal:  # padding-only rows: keys past each row's length are masked by length
            lengths = jnp.maximum(jnp.sum(segment_ids != 0, axis=1), 1).astype(jnp.int32)
            kw["key_value_seq_lengths"] = lengths
        # causal + padding-only rows: a real token never sees a later (padding) key, so nothing to pass
    return jax.nn.dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5, is_causal=causal,
                                        implementation="cudnn", **kw)


# ============================================================================================
# Pallas splash attention (TPU)
# ============================================================================================

def _splash_block(S: int) -> int:
    for b in (512, 256, 128):
        if S % b == 0:
            return b
    raise ValueError(f"splash attention: sequence length {S} is not a multiple of 128")


def _splash_local(q, k, v, segment_ids, causal: bool, interpret: bool, block: int | None = None):
    """Splash attention on local (unsharded) arrays: q [B, S, H, Dh], k, v [B, S, K, Dh]."""
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    B, S, H, Dh = q.shape
    blk = block or _splash_block(S)
    if S % blk:
        raise ValueError(f"splash attention: block {blk} does not divide sequence length {S}")
    sizes = sa.BlockSizes(block_q=blk, block_kv=blk, block_kv_compute=blk, block_q_dkv=blk, block_kv_dkv=blk,
                          block_kv_dkv_compute=blk, block_q_dq=blk, block_kv_dq=blk)
    base = sa.CausalMask((S, S)) if causal else sa.FullMask((S, S))
    kernel = sa.make_splash_mha(sa.MultiHeadMask([base] * H), block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                interpret=interpret)
    qt = (q * jnp.asarray(Dh ** -0.5, q.dtype)).transpose(0, 2, 1, 3)  # [B, H, S, Dh]; splash does not scale
    kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    if segment_ids is None:
        o = jax.vmap(lambda a, b, c: kernel(a, b, c))(qt, kt, vt)
    else:
        seg = segment_ids.astype(jnp.int32)
        o = jax.vmap(lambda a, b, c, s: kernel(a, b, c, segment_ids=sa.SegmentIds(q=s, kv=s)))(qt, kt, vt, seg)
    return o.transpose(0, 2, 1, 3).astype(v.dtype)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, segment_ids: jax.Array | None = None,
                     causal: bool = True, interpret: bool | None = None, block: int | None = None) -> jax.Array:
    """Pallas splash attention (k, v [B, S, K, Dh]); under a multi-device `jaxtool.sharding.use_mesh`
    mesh it runs per shard with `shard_map` (batch split like activations, heads over `tensor` when
    both q and kv head counts divide by it). interpret: default True off TPU. block: the q/kv tile
    (default the largest of 512/256/128 dividing S)."""
    from jaxtool.sharding import current_mesh, logical_to_spec

    if interpret is None:
        interpret = jax.default_backend() != "tpu"
    mesh = current_mesh()
    if mesh is None or mesh.size == 1:
        return _splash_local(q, k, v, segment_ids, causal, interpret, block)
    from jax.sharding import PartitionSpec as P

    qs = logical_to_spec(("batch", None, "act_heads", None), mesh, shape=q.shape)
    ks = logical_to_spec(("batch", None, "act_kv_heads", None), mesh, shape=k.shape)
    if qs[2] != ks[2]:  # heads split only when q and kv heads split the same way (h // G stays local)
        qs, ks = P(qs[0], None, None, None), P(ks[0], None, None, None)
    seg_spec = P(qs[0], None)

    def local(qq, kk, vv, ss):
        return _splash_local(qq, kk, vv, ss, causal, interpret, block)

    if segment_ids is None:
        return jax.shard_map(lambda a, b, c: local(a, b, c, None), mesh=mesh, in_specs=(qs, ks, ks),
                             out_specs=qs, check_vma=False)(q, k, v)
    return jax.shard_map(local, mesh=mesh, in_specs=(qs, ks, ks, seg_spec), out_specs=qs,
                         check_vma=False)(q, k, v, segment_ids)


def flops(B: int, S: int, H: int, Dh: int, causal: bool = True) -> float:
    """Matmul FLOPs of one forward (QKᵀ and PV), counting only the causal half when causal."""
    f = 4.0 * B * S * S * H * Dh
    return f / 2 if causal else f


__all__ = ["IMPLS", "attention", "attention_chunk", "resolve_impl", "xla_attention", "cudnn_attention",
           "splash_attention", "flops", "resolutions", "reset_resolutions", "describe_resolutions"]
