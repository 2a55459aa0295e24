"""jaxtool.ops.xent.chunked_token_logps against the full-logits computation it replaces
(`losses.logps_from_logits(hidden @ w, targets)`): values and gradients w.r.t. hidden and w, tied and
untied, token counts not divisible by the chunk, vocabulary chunks that do and do not divide V,
leading batch axes, ignore-index targets; and XLA's own memory accounting (compile only) showing
that the [tokens × vocab] float32 logits and their gradient never exist."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxtool import losses
from jaxtool.ops.xent import chunked_cross_entropy, chunked_token_logps


def _data(lead, N, D, V, seed=0, dtype=jnp.float32):
    r = np.random.default_rng(seed)
    h = jnp.asarray(r.normal(size=lead + (N, D)), dtype)
    w = jnp.asarray(r.normal(size=(D, V)) * 0.3, dtype)
    t = r.integers(0, V, size=lead + (N,))
    t.reshape(-1)[[2, 5]] = -100          # ignore-index positions: log-prob 0, no gradient
    g = jnp.asarray(r.normal(size=lead + (N,)), jnp.float32)
    return h, w, jnp.asarray(t), g


def _ref(h, w, t, tied):
    return losses.logps_from_logits(h @ (w.T if tied else w), t)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("lead,chunk_tokens,chunk_vocab", [
    ((), 8, None),        # N = 37 not divisible by 8
    ((), 8, 32),          # vocabulary blocks of 32 (101 = 3·32 + 5: last block shifted back)
    ((3,), 12, 101),      # leading batch axis; one vocabulary block = V
    ((2,), 1000, 7),      # one token chunk, many small vocabulary blocks
])
def test_equals_full_logits_and_gradients(tied, lead, chunk_tokens, chunk_vocab):
    N, D, V = 37, 16, 101
    h, w, t, g = _data(lead, N, D, V, seed=len(lead) + (chunk_vocab or 0))
    w_in = w.T if tied else w   # tied: the [V, D] embedding
    ours = lambda h, w: chunked_token_logps(h, w, t, transposed=tied, chunk_tokens=chunk_tokens,
                                            chunk_vocab=chunk_vocab)
    ref = lambda h, w: _ref(h, w, t, tied)
    a, b = jax.jit(ours)(h, w_in), jax.jit(ref)(h, w_in)
    assert a.shape == t.shape and a.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(a).reshape(-1)[[2, 5]] == 0.0)
    grad = lambda f: jax.jit(jax.grad(lambda h, w: jnp.sum(f(h, w) * g), argnums=(0, 1)))(h, w_in)
    for x, y in zip(grad(ours), grad(ref)):
        scale = float(jnp.max(jnp.abs(y)))
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5 * scale)


def test_ignored_targets_get_no_gradient_and_cross_entropy_sums():
    N, D, V = 20, 8, 30
    h, w, t, _ = _data((), N, D, V)
    dh = jax.jit(jax.grad(lambda h: jnp.sum(chunked_token_logps(h, w, t, chunk_tokens=6))))(h)
    assert np.all(np.asarray(dh)[[2, 5]] == 0.0) and np.any(np.asarray(dh)[0] != 0.0)
    mask = jnp.asarray(np.random.default_rng(1).random(N) < 0.6)
    nll, count = jax.jit(lambda h, w: chunked_cross_entropy(h, w, t, mask, chunk_tokens=6))(h, w)
    ref = _ref(h, w, t, False)
    np.testing.assert_allclose(float(nll), float(-jnp.sum(ref * mask)), rtol=1e-5)
    assert float(count) == float(jnp.sum(mask))


def test_bfloat16_inputs_close_to_float32():
    """bf16 hidden and weights: matmuls in bf16 with float32 accumulation, softmax in float32 —
    within bf16 rounding of the float32 result; gradients come back in bf16."""
    N, D, V = 40, 32, 64
    h, w, t, g = _data((), N, D, V, seed=4)
    hb, wb = h.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    f = lambda h, w: chunked_token_logps(h, w, t, chunk_tokens=16)
    a = jax.jit(f)(hb, wb)
    b = _ref(hb.astype(jnp.float32), wb.astype(jnp.float32), t, False)   # same bf16 inputs, f32 math
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-2, atol=2e-2)
    dh, dw = jax.jit(jax.grad(lambda h, w: jnp.sum(f(h, w) * g), argnums=(0, 1)))(hb, wb)
    assert dh.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16


def _temp_gib(f, dtype, N, D, V):
    shapes = (jax.ShapeDtypeStruct((N, D), dtype), jax.ShapeDtypeStruct((D, V), dtype),
              jax.ShapeDtypeStruct((N,), jnp.int32))
    step = jax.jit(jax.grad(lambda h, w, t: jnp.sum(f(h, w, t)), argnums=(0, 1)))
    return step.lower(*shapes).compile().memory_analysis().temp_size_in_bytes / 2 ** 30


def test_memory_never_holds_full_logits():
    """Llama-3.2-1B output layer at 8 × 2048 tokens (N 16384, D 2048, V 128256), float32, value and
    gradients w.r.t. hidden and w, compile only. One [N, V] float32 array is 7.8 GiB; the full-logits
    path needs ~15.7 GiB of temporaries (logits + their gradient). Chunked (1024 tokens) measured
    1.48 GiB here: a few [1024 × V] float32 blocks (0.49 GiB each) in flight."""
    N, D, V = 8 * 2048, 2048, 128256
    full = _temp_gib(lambda h, w, t: losses.logps_from_logits(h @ w, t), jnp.float32, N, D, V)
    ours = _temp_gib(lambda h, w, t: chunked_token_logps(h, w, t), jnp.float32, N, D, V)
    assert full > 2 * N * V * 4 / 2 ** 30 * 0.9      # the reference really holds logits + gradient
    assert ours < 2.0, f"chunked log-probs need {ours:.2f} GiB of temporaries"
