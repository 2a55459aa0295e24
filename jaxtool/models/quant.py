"""Weight-only quantised storage for frozen base weights (QLoRA-style fine-tuning).

    qparams = quantize_params(params, "nf4", family_of(cfg).projections)   # frozen base: the projections
    y = qmatmul(x, qparams["layers"]["w_up"][i], n_in=1)   # dequantise in x's dtype, then matmul
    w = materialize(leaf, jnp.bfloat16)              # a quantised or plain weight, in a compute dtype

Two formats, both dequantised to the compute dtype right before the matmul (XLA fuses the
dequantisation into the matmul's operand), so only the storage shrinks; LoRA adapters stay in
bf16/f32 on top (Hu et al. 2021; Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized
LLMs", arXiv:2305.14314):

* ``"int8"`` — symmetric per-output-channel absmax: s = max|w| over the input axes / 127,
  q = round(w / s) ∈ [-127, 127] (int8), w ≈ q·s. Error ≤ s/2 per element. ~1 byte/parameter
  (+ one float32 scale per output channel).
* ``"nf4"`` — QLoRA's 4-bit NormalFloat: the (per-leading-slice, row-major) flattened weight is
  cut into blocks of 64; each block is divided by its absmax c and every value is replaced by the
  index of the nearest of the 16 NF4 levels (`NF4_LEVELS`, QLoRA Appendix E: quantiles of N(0, 1)
  normalised to [-1, 1], with an exact 0); two 4-bit indices per byte (first value in the high
  nibble); w ≈ NF4[i]·c. ~0.5 byte/parameter + one float32 absmax per 64 (0.0625) — or, with
  `double_quant=True` (QLoRA §3 "Double Quantization"), the absmax values minus their mean are
  themselves quantised to 8 bits in blocks of 256 (int8 absmax here, where QLoRA uses an 8-bit
  float), ≈ 0.516 byte/parameter.

`QuantizedWeight` is a registered pytree (arrays: the packed data and scales; static: format,
shape, dtype), and every array keeps the weight's leading axes (e.g. the stacked `layers` axis),
so a `lax.scan` over stacked layers slices quantised weights like plain ones.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtool.errors import ConfigError

KINDS = ("int8", "nf4")
NF4_BLOCK = 64
DQ_BLOCK = 256

# QLoRA (Dettmers et al. 2023), Appendix E: the 16 NormalFloat-4 levels.
NF4_LEVELS = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
], dtype=np.float32)

# Which weights are projections, and their layout, is the model family's (`ModelFamily.projections`:
# name -> (input dims, dims without leading axes)); nothing here names a family's weights.
DEFAULT_SKIP = ("embed", "norm")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedWeight:
    """A quantised weight. Arrays (pytree children) keep the weight's leading axes:

    int8: data int8 [*shape] · scales float32 [*shape with the input axes = 1]
    nf4:  data uint8 [*lead, ceil(n/64)·32] (n = prod(shape)), scales float32 [*lead, ceil(n/64)]
          or, double-quantised, dq_codes int8 [*lead, nb] + dq_scales f32 [*lead, ceil(nb/256)]
          + dq_offset f32 [*lead, 1] (scales = dq_codes · dq_scales + dq_offset)
    Static: kind, shape (the per-slice shape after the leading axes), dtype (original), in_axes (the
    input axes, counted within `shape`).
    """

    data: jax.Array
    scales: jax.Array | None
    dq_codes: jax.Array | None = None
    dq_scales: jax.Array | None = None
    dq_offset: jax.Array | None = None
    kind: str = dataclasses.field(default="int8", metadata=dict(static=True))
    shape: tuple = dataclasses.field(default=(), metadata=dict(static=True))
    dtype: str = dataclasses.field(default="float32", metadata=dict(static=True))
    in_axes: tuple = dataclasses.field(default=(), metadata=dict(static=True))  # input axes within `shape`

    @property
    def nbytes(self) -> int:
        return sum(int(a.size) * a.dtype.itemsize for a in jax.tree.leaves(self))

    def full_shape(self) -> tuple:
        if self.kind == "int8":
            return tuple(self.data.shape)
        return tuple(self.data.shape[:-1]) + tuple(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.full_shape())


def is_quantized(x: Any) -> bool:
    return isinstance(x, QuantizedWeight)


# ============================================================================================
# quantise / dequantise one array
# ============================================================================================

def _safe(c):
    return jnp.where(c > 0, c, jnp.ones_like(c))


def quantize(w: jax.Array, kind: str, *, axis_in: Sequence[int] | int | None = None, n_lead: int = 0,
             double_quant: bool = False) -> QuantizedWeight:
    """Quantise one weight.

    kind: "int8" | "nf4".
    axis_in (int8): the input (contracted) axes; one scale per remaining (output) position. Default:
        axis n_lead (the first axis after the leading ones).
    n_lead: leading axes kept as axes (e.g. 1 for a stacked [L, ...] layer weight); nf4 blocks never
        cross them, so slicing a leading index of the result equals quantising that slice.
    double_quant (nf4): quantise the block absmax values again (QLoRA §3).
    """
    if kind not in KINDS:
        raise ConfigError(f"quantisation kind must be one of {KINDS}, got {kind!r}")
    w = jnp.asarray(w)
    if not jnp.issubdtype(w.dtype, jnp.floating):
        raise ConfigError(f"quantize: expected a float weight, got {w.dtype}")
    if not 0 <= n_lead < w.ndim:
        raise ConfigError(f"quantize: n_lead={n_lead} for a {w.ndim}-d weight")
    dtype = jnp.dtype(w.dtype).name
    if kind == "int8":
        if axis_in is None:
            axis_in = (n_lead,)
        axes = tuple(a % w.ndim for a in ((axis_in,) if isinstance(axis_in, int) else axis_in))
        data, scales = _int8(w, axes)
        return QuantizedWeight(data=data, scales=scales, kind="int8", shape=tuple(w.shape[n_lead:]), dtype=dtype,
                               in_axes=tuple(a - n_lead for a in axes))
    lead, inner = w.shape[:n_lead], w.shape[n_lead:]
    flat = w.reshape(lead + (-1,))
    data, scales = _nf4(flat)
    codes = dq_s = dq_o = None
    if double_quant:
        codes, dq_s, dq_o = _double_quant(scales)
        scales = None
    in_axes = tuple(a % w.ndim - n_lead for a in ((axis_in,) if isinstance(axis_in, int) else axis_in or ()))
    return QuantizedWeight(data=data, scales=scales, dq_codes=codes, dq_scales=dq_s, dq_offset=dq_o, kind="nf4",
                           shape=tuple(inner), dtype=dtype, in_axes=in_axes)


@functools.partial(jax.jit, static_argnums=1)
def _int8(w, axes):
    wf = w.astype(jnp.float32)
    s = jnp.max(jnp.abs(wf), axis=axes, keepdims=True) / 127.0
    q = jnp.clip(jnp.round(wf / _safe(s)), -127, 127).astype(jnp.int8)
    return q, s


def _nf4_indices(x):
    """Index of the nearest NF4 level for x in [-1, 1] (first of equals, like argmin)."""
    levels = jnp.asarray(NF4_LEVELS)
    mid = (levels[1:] + levels[:-1]) / 2
    i = jnp.searchsorted(mid, x)                       # nearest up to rounding at a midpoint …
    cand = jnp.clip(i[..., None] + jnp.arange(-1, 2), 0, 15)  # … so pick exactly among i-1, i, i+1
    d = jnp.abs(x[..., None] - levels[cand])
    return jnp.take_along_axis(cand, jnp.argmin(d, axis=-1)[..., None], axis=-1)[..., 0].astype(jnp.uint8)


@jax.jit
def _nf4_slice(flat):
    """flat [n] -> (packed uint8 [nb·32], absmax float32 [nb])."""
    n = flat.shape[0]
    nb = -(-n // NF4_BLOCK)
    x = jnp.pad(flat.astype(jnp.float32), (0, nb * NF4_BLOCK - n)).reshape(nb, NF4_BLOCK)
    c = jnp.max(jnp.abs(x), axis=1)
    idx = _nf4_indices(x / _safe(c)[:, None]).reshape(-1)
    packed = (idx[0::2] << 4) | idx[1::2]
    return packed.astype(jnp.uint8), c


def _nf4(flat):
    """flat [*lead, n]: per leading slice (one at a time, so big stacked weights need little memory)."""
    lead = flat.shape[:-1]
    if not lead:
        return _nf4_slice(flat)
    rows = flat.reshape(-1, flat.shape[-1])
    packed, c = jax.lax.map(_nf4_slice, rows)
    return packed.reshape(lead + packed.shape[1:]), c.reshape(lead + c.shape[1:])


@jax.jit
def _double_quant(c):
    """absmax values c [*lead, nb] -> (int8 codes, f32 scale per 256, f32 mean): c ≈ codes·s + mean."""
    nb = c.shape[-1]
    n2 = -(-nb // DQ_BLOCK)
    mean = jnp.mean(c, axis=-1, keepdims=True)
    centred = jnp.pad(c - mean, [(0, 0)] * (c.ndim - 1) + [(0, n2 * DQ_BLOCK - nb)])
    blocks = centred.reshape(c.shape[:-1] + (n2, DQ_BLOCK))
    s = jnp.max(jnp.abs(blocks), axis=-1) / 127.0
    codes = jnp.clip(jnp.round(blocks / _safe(s)[..., None]), -127, 127).astype(jnp.int8)
    return codes.reshape(c.shape[:-1] + (-1,))[..., :nb], s, mean


def nf4_block_scales(qw: QuantizedWeight) -> jax.Array:
    """The per-block absmax values (float32), rebuilt from the double quantisation when used."""
    if qw.scales is not None:
        return qw.scales
    codes = qw.dq_codes.astype(jnp.float32)
    nb = codes.shape[-1]
    s = jnp.repeat(qw.dq_scales, DQ_BLOCK, axis=-1)[..., :nb]
    return codes * s + qw.dq_offset


def dequantize(qw: QuantizedWeight, dtype=None) -> jax.Array:
    """The weight in `dtype` (default: the dtype it was quantised from): levels × scales in float32,
    rounded once to `dtype` (so the bf16 result is the float32 result rounded)."""
    dtype = jnp.dtype(dtype or qw.dtype)
    if qw.kind == "int8":
        return (qw.data.astype(jnp.float32) * qw.scales).astype(dtype)
    lead = qw.data.shape[:-1]
    hi = (qw.data >> 4).astype(jnp.int32)
    lo = (qw.data & 15).astype(jnp.int32)
    idx = jnp.stack([hi, lo], axis=-1).reshape(lead + (-1, NF4_BLOCK))     # [*lead, nb, 64]
    vals = jnp.take(jnp.asarray(NF4_LEVELS), idx, axis=0)
    w = (vals * nf4_block_scales(qw)[..., None]).astype(dtype).reshape(lead + (-1,))
    n = math.prod(qw.shape)
    return w[..., :n].reshape(lead + tuple(qw.shape))


def materialize(w, dtype) -> jax.Array:
    """A weight in the compute dtype: dequantised if quantised, else cast. (The hook for `proj`.)"""
    return dequantize(w, dtype) if is_quantized(w) else w.astype(dtype)


def qmatmul(x: jax.Array, w, n_in: int = 1, dtype=None) -> jax.Array:
    """x @ W contracting the last `n_in` dims of x with the first `n_in` dims of W (as one 2-D matmul,
    like llama's projections), W dequantised to `dtype` (default x's dtype) first."""
    dtype = dtype or x.dtype
    wd = materialize(w, dtype)
    lead, inner = x.shape[:-n_in], x.shape[-n_in:]
    out = wd.shape[n_in:]
    y = x.astype(dtype).reshape(-1, math.prod(inner)) @ wd.reshape(math.prod(inner), math.prod(out))
    return y.reshape(lead + out)


# ============================================================================================
# whole parameter trees
# ============================================================================================

def _leaf_name(path) -> str:
    for p in reversed(path):
        if isinstance(p, jax.tree_util.DictKey):
            return str(p.key)
    return ""


def quantize_params(params, kind: str, projections: Mapping[str, tuple[int, int]],
                    targets: Sequence[str] | None = None, skip: Sequence[str] = DEFAULT_SKIP,
                    double_quant: bool = False):
    """The same tree with every weight named in `targets` (default: every one of `projections`; no
    `skip` substring in its path) replaced by a `QuantizedWeight`; everything else (embeddings, norms,
    biases, LoRA adapters) unchanged.

    projections: the family's `ModelFamily.projections`, name -> (input dims, dims without leading
    axes). int8 scales are per output channel; leading axes (the stacked `layers` axis) are kept, so
    the tree still scans over layers."""
    if kind not in KINDS:
        raise ConfigError(f"lora.base_quant must be one of {KINDS}, got {kind!r}")
    targets = tuple(projections) if targets is None else tuple(targets)
    unknown = [t for t in targets if t not in projections]
    if unknown:
        raise ConfigError(f"quantize_params: unknown target weights {unknown}; known: {sorted(projections)}")

    def one(path, w):
        name = _leaf_name(path)
        where = "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)
        if name not in targets or any(s in where for s in skip) or is_quantized(w):
            return w
        n_in, base_ndim = projections[name]
        n_lead = w.ndim - base_ndim
        if n_lead < 0:
            raise ConfigError(f"quantize_params: {where} has shape {w.shape}, expected ≥ {base_ndim} dims")
        axes = tuple(range(n_lead, n_lead + n_in))
        return quantize(w, kind, axis_in=axes, n_lead=n_lead, double_quant=double_quant)

    return jax.tree_util.tree_map_with_path(one, params, is_leaf=is_quantized)


def quantized_axes(axes: tuple, qw: QuantizedWeight) -> QuantizedWeight:
    """Logical axis names for the arrays of `qw`, the quantised form of a weight whose axes are
    `axes` (e.g. ``("layers", "embed", "mlp")``), so a quantised base is sharded like the plain one
    (FSDP / tensor parallel) instead of replicated on every chip:

    int8   data: the weight's axes; scales: the same with the input axes unnamed (they have size 1).
    nf4    data and block scales: the leading axes (``layers``), then the flattened blocks named
           ``quant_blocks`` (split over ``fsdp`` × ``tensor`` where the block count divides: the
           packed bytes are gathered per layer like FSDP gathers weights, then dequantised and
           resharded to the matmul's layout by XLA); double-quantisation arrays: leading axes only.
    """
    n_lead = len(axes) - len(qw.shape)
    lead = tuple(axes[:n_lead])
    if qw.kind == "int8":
        in_axes = {n_lead + a for a in qw.in_axes}
        scales = tuple(None if i in in_axes else a for i, a in enumerate(axes))
        return dataclasses.replace(qw, data=tuple(axes), scales=scales)
    flat = lead + ("quant_blocks",)
    return dataclasses.replace(
        qw, data=flat, scales=None if qw.scales is None else flat,
        dq_codes=None if qw.dq_codes is None else flat,
        dq_scales=None if qw.dq_scales is None else lead + (None,),
        dq_offset=None if qw.dq_offset is None else lead + (None,))


def quantized_param_axes(axes_tree, qparams):
    """`axes_tree` (a model's `param_axes`) with every leaf that is quantised in `qparams` replaced by
    `quantized_axes`: a tree of axis-name tuples matching `qparams`' arrays, for
    `jaxtool.sharding.tree_shardings`."""
    is_axes = lambda v: isinstance(v, tuple) and all(isinstance(a, (str, type(None))) for a in v)  # noqa: E731

    def one(path, axes):
        q = _at(qparams, path)
        return quantized_axes(axes, q) if is_quantized(q) else axes

    return jax.tree_util.tree_map_with_path(one, axes_tree, is_leaf=is_axes)


def _at(tree, path):
    for p in path:
        tree = tree[p.key] if isinstance(p, jax.tree_util.DictKey) else tree[p.idx]
    return tree


def dequantize_params(params, dtype=None):
    """Every `QuantizedWeight` in the tree dequantised (to `dtype`, default its original dtype)."""
    return jax.tree.map(lambda x: dequantize(x, dtype) if is_quantized(x) else x, params, is_leaf=is_quantized)


def tree_nbytes(params) -> int:
    """Bytes held by a parameter tree (quantised weights counted by their stored arrays)."""
    return sum(int(a.size) * jnp.dtype(a.dtype).itemsize for a in jax.tree.leaves(params))


def bytes_per_param(qw: QuantizedWeight) -> float:
    return qw.nbytes / qw.size


__all__ = ["KINDS", "NF4_LEVELS", "NF4_BLOCK", "QuantizedWeight", "quantize", "dequantize", "materialize", "qmatmul",
           "quantize_params", "quantized_axes", "quantized_param_axes", "dequantize_params", "tree_nbytes", "bytes_per_param", "is_quantized",
           "nf4_block_scales"]
