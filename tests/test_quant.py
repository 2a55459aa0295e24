"""jaxtool.models.quant: int8 (per-output-channel absmax) and NF4 (QLoRA, Dettmers et al. 2023)
weight-only storage. References written here: the NF4 levels rebuilt from the paper's construction
(normal quantiles), a numpy NF4 block quantiser, the int8 error bound; storage bytes per parameter;
scanning quantised stacked layers; a tiny Llama whose projections are quantised."""

from statistics import NormalDist

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxtool.errors import ConfigError
from jaxtool.models import llama
from jaxtool.models import quant as Q


def _w(shape, seed=0, std=0.02):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * std, jnp.float32)


def test_nf4_levels_are_the_papers_normal_quantiles():
    """QLoRA §3: 2^(k-1) quantiles of N(0, 1) for the negative half and 2^(k-1)+1 for the positive
    half (sharing the exact zero), at probabilities that stop short of 0/1 by
    δ = ½(1/(2·15) + 1/(2·16)), normalised to [-1, 1]."""
    delta = 0.5 * (1 / 30 + 1 / 32)
    nd = NormalDist()
    pos = [nd.inv_cdf(p) for p in np.linspace(1 - delta, 0.5, 9)[:-1]]
    neg = [-nd.inv_cdf(p) for p in np.linspace(1 - delta, 0.5, 8)[:-1]]
    levels = np.sort(np.array(pos + [0.0] + neg))
    levels /= np.abs(levels).max()
    np.testing.assert_allclose(Q.NF4_LEVELS, levels, atol=1e-6)
    assert Q.NF4_LEVELS[7] == 0.0 and len(set(Q.NF4_LEVELS.tolist())) == 16


def nf4_reference(w: np.ndarray):
    """numpy NF4: flatten, blocks of 64 (zero-padded), absmax per block, nearest level (first of
    equals), dequantised values and the 4-bit indices."""
    flat = np.asarray(w, np.float32).reshape(-1)
    n = flat.size
    nb = -(-n // 64)
    x = np.zeros(nb * 64, np.float32)
    x[:n] = flat
    x = x.reshape(nb, 64)
    c = np.abs(x).max(axis=1)
    norm = x / np.where(c > 0, c, 1)[:, None]
    idx = np.argmin(np.abs(norm[..., None] - Q.NF4_LEVELS), axis=-1)
    deq = (Q.NF4_LEVELS[idx] * c[:, None]).reshape(-1)[:n].reshape(w.shape)
    return deq.astype(np.float32), idx.reshape(-1)


@pytest.mark.parametrize("shape", [(96, 64), (7, 30)])   # 30·7 = 210: last block padded
def test_nf4_equals_reference_quantiser(shape):
    w = np.array(_w(shape, seed=1, std=1.0))
    w[0, :] = 0.0                                     # a zero row -> (part of) an all-zero block
    qw = Q.quantize(jnp.asarray(w), "nf4")
    deq, idx = nf4_reference(w)
    np.testing.assert_array_equal(np.asarray(Q.dequantize(qw)), deq)
    data = np.asarray(qw.data)                        # two indices per byte, first in the high nibble
    assert data.dtype == np.uint8 and data.size == -(-w.size // 64) * 32
    np.testing.assert_array_equal(data, (idx[0::2] << 4) | idx[1::2])


def test_int8_error_bound_and_per_output_channel_scales():
    w = _w((3, 48, 80), seed=2)                       # [L, in, out]
    qw = Q.quantize(w, "int8", axis_in=1, n_lead=1)
    assert qw.data.dtype == jnp.int8 and qw.scales.shape == (3, 1, 80)
    absmax = np.abs(np.asarray(w)).max(axis=1, keepdims=True)
    err = np.abs(np.asarray(Q.dequantize(qw)) - np.asarray(w))
    assert np.all(err <= absmax / 127 / 2 * (1 + 1e-6))
    assert np.abs(np.asarray(qw.data)).max() == 127   # each channel's absmax hits ±127


def test_double_quantised_nf4_scales():
    w = _w((2, 128, 256), seed=3)
    plain = Q.quantize(w, "nf4", n_lead=1)
    dq = Q.quantize(w, "nf4", n_lead=1, double_quant=True)
    assert dq.scales is None and dq.dq_codes.dtype == jnp.int8
    c, c_dq = np.asarray(plain.scales), np.asarray(Q.nf4_block_scales(dq))
    spread = np.abs(c - c.mean(axis=-1, keepdims=True)).max()
    assert np.abs(c - c_dq).max() <= spread / 127 / 2 * (1 + 1e-5)
    np.testing.assert_array_equal(np.asarray(plain.data), np.asarray(dq.data))


def test_bytes_per_parameter():
    L, D, F = 2, 256, 256
    w = _w((L, D, F))
    int8 = Q.quantize(w, "int8", axis_in=1, n_lead=1)
    nf4 = Q.quantize(w, "nf4", n_lead=1)
    nf4dq = Q.quantize(w, "nf4", n_lead=1, double_quant=True)
    assert Q.bytes_per_param(int8) == pytest.approx(1 + 4 / D)                 # int8 + f32 scale / channel
    assert Q.bytes_per_param(nf4) == pytest.approx(0.5 + 4 / 64)               # 4 bit + f32 absmax / 64
    assert Q.bytes_per_param(nf4dq) == pytest.approx(0.5 + 1 / 64 + 4 / (64 * 256) + 4 / (D * F), rel=1e-3)
    assert w.nbytes / int8.nbytes > 3.9 and w.nbytes / nf4.nbytes > 7.1


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_qmatmul_in_a_scan_over_stacked_layers(kind):
    """The leading layers axis scans: layer i of the quantised stack is the quantised layer i, and
    a scan of qmatmuls equals matmuls with each dequantised layer."""
    L, D, F = 3, 64, 32
    w = _w((L, D, F), seed=4)
    qw = Q.quantize(w, kind, axis_in=1, n_lead=1)
    x = _w((5, D), seed=5, std=1.0)
    ys = jax.jit(lambda x, q: jax.lax.scan(lambda c, qi: (c, Q.qmatmul(x, qi)), 0, q)[1])(x, qw)
    deq = Q.dequantize(qw)
    np.testing.assert_allclose(np.asarray(ys), np.stack([np.asarray(x @ deq[i]) for i in range(L)]), atol=1e-6)
    one = Q.quantize(w[1], kind, axis_in=0)
    for a, b in zip(jax.tree.leaves(jax.tree.map(lambda a: a[1], qw)), jax.tree.leaves(one)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    bf = Q.dequantize(qw, jnp.bfloat16)              # bf16 = the float32 dequantisation, rounded once
    np.testing.assert_array_equal(np.asarray(bf), np.asarray(deq.astype(jnp.bfloat16)))


@pytest.fixture(scope="module")
def tiny_llama():
    cfg = llama.preset("tiny")
    params = llama.init_params(cfg, jax.random.PRNGKey(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 24)))
    run = jax.jit(lambda p: llama.forward(p, tokens, cfg))
    return params, run, np.asarray(run(params))


@pytest.mark.parametrize("kind,tol", [("int8", 0.01), ("nf4", 0.15)])
def test_tiny_llama_with_quantised_frozen_weights(tiny_llama, kind, tol):
    """Quantise the projections of a tiny random Llama (embeddings and norms untouched) and run the
    model on the dequantised weights. Stated tolerance, as the RMS of the logit error over the RMS
    of the logits: int8 < 0.01, nf4 < 0.15 (measured here 0.0053 and 0.085; a Llama with other
    random weights is at 1.4)."""
    params, run, ref = tiny_llama
    qp = Q.quantize_params(params, kind, llama.FAMILY.projections)
    for name in llama.FAMILY.projections:
        assert Q.is_quantized(qp["layers"][name]), name
    assert not Q.is_quantized(qp["embed"]) and not Q.is_quantized(qp["layers"]["attn_norm"])
    assert not Q.is_quantized(qp["lm_head"])
    got = np.asarray(run(Q.dequantize_params(qp)))
    rms = lambda a: float(np.sqrt(np.mean(np.square(a))))
    rel = rms(got - ref) / rms(ref)
    assert 0 < rel < tol, f"{kind}: logit RMS error {rel:.4f} of the logits' RMS"
    assert Q.tree_nbytes(qp) < Q.tree_nbytes(params)


def test_bad_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="int8"):
        Q.quantize(_w((4, 4)), "int4")
    with pytest.raises(ConfigError, match="base_quant"):
        Q.quantize_params({"layers": {}}, "fp8", llama.FAMILY.projections)
    with pytest.raises(ConfigError, match="float"):
        Q.quantize(jnp.zeros((4, 4), jnp.int32), "int8")
