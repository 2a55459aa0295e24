"""GRPO / Dr. GRPO / DAPO losses against numbers worked out by hand in this file."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtool import losses, objectives


def test_group_advantages_by_hand():
    # group [1, 0, 0, 0]: mean 0.25, centred [.75, -.25, -.25, -.25], sum of squares 0.75
    r = jnp.array([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    sample = losses.group_advantages(r, 4, ddof=1, eps=0.0)        # std = sqrt(0.75 / 3) = 0.5
    np.testing.assert_allclose(sample[:4], [1.5, -0.5, -0.5, -0.5], rtol=1e-6)
    pop = losses.group_advantages(r, 4, ddof=0, eps=0.0)           # std = sqrt(0.75 / 4)
    s = math.sqrt(0.75 / 4)
    np.testing.assert_allclose(pop[:4], [0.75 / s, -0.25 / s, -0.25 / s, -0.25 / s], rtol=1e-6)
    # a zero-variance group: advantage 0 (not NaN) with the default eps
    np.testing.assert_array_equal(losses.group_advantages(r, 4)[4:], [0, 0, 0, 0])
    # Dr. GRPO: centred only
    np.testing.assert_allclose(losses.group_advantages(r, 4, scale=False)[:4], [0.75, -0.25, -0.25, -0.25])


def test_clipped_surrogate_by_hand():
    old = jnp.zeros((1, 3))
    lp = jnp.log(jnp.array([[1.5, 0.5, 1.1]]))                     # ratios 1.5, 0.5, 1.1
    # A = +1: min(r, clip(r, .8, 1.2)) = [1.2, 0.5, 1.1]
    loss, m = losses.grpo_token_loss(lp, old, jnp.ones((1, 3)), None, eps_low=0.2, beta=0.0)
    np.testing.assert_allclose(loss, [[-1.2, -0.5, -1.1]], rtol=1e-6)
    np.testing.assert_array_equal(m["clipped"], [[1, 0, 0]])
    # A = -1: min(-r, -clip(r)) = [-1.5, -0.8, -1.1]
    loss, m = losses.grpo_token_loss(lp, old, -jnp.ones((1, 3)), None, eps_low=0.2, beta=0.0)
    np.testing.assert_allclose(loss, [[1.5, 0.8, 1.1]], rtol=1e-6)
    np.testing.assert_array_equal(m["clipped"], [[0, 1, 0]])
    # DAPO clip-higher: upper bound 1.28
    loss, _ = losses.grpo_token_loss(lp, old, jnp.ones((1, 3)), None, eps_low=0.2, eps_high=0.28, beta=0.0)
    np.testing.assert_allclose(loss, [[-1.28, -0.5, -1.1]], rtol=1e-6)


def test_k3_kl_and_its_gradient_by_hand():
    lp, ref = jnp.log(jnp.array([[0.5]])), jnp.log(jnp.array([[0.25]]))
    # pi_ref/pi = 0.5: 0.5 - log 0.5 - 1
    want = 0.5 - math.log(0.5) - 1.0
    np.testing.assert_allclose(losses.k3_kl(lp, ref), [[want]], rtol=1e-6)
    # on-policy (old = current), A = 2, beta = 0.1: loss = -(1 * 2 - 0.1 * kl)
    f = lambda x: losses.grpo_token_loss(x, jax.lax.stop_gradient(x), jnp.full((1, 1), 2.0), ref, beta=0.1)[0].sum()
    np.testing.assert_allclose(f(lp), -(2.0 - 0.1 * want), rtol=1e-6)
    # d/dlogp: -A * ratio + beta * (1 - pi_ref/pi) = -2 + 0.1 * 0.5
    np.testing.assert_allclose(jax.grad(f)(lp), [[-2.0 + 0.05]], rtol=1e-5)
    # beta = 0 ignores the reference entirely
    g = lambda x: losses.grpo_token_loss(x, jax.lax.stop_gradient(x), jnp.full((1, 1), 2.0), ref, beta=0.0)[0].sum()
    np.testing.assert_allclose(jax.grad(g)(lp), [[-2.0]], rtol=1e-6)


def test_aggregations_by_hand():
    per_tok = jnp.array([[1.0, 2.0, 9.0], [4.0, 9.0, 9.0], [9.0, 9.0, 9.0]])
    mask = jnp.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]])           # the last row has no response token
    agg = lambda mode, c=1.0: float(jnp.sum(losses.grpo_token_weights(mask, mode, c) * per_tok))
    assert agg("sequence_mean") == pytest.approx((3 / 2 + 4 / 1) / 2)   # GRPO: mean of per-row means
    assert agg("token_mean") == pytest.approx(7 / 3)                   # DAPO: mean over all tokens
    assert agg("constant", 4.0) == pytest.approx((3 / 4 + 4 / 4) / 2)  # Dr. GRPO: sums / C, mean over rows
    with pytest.raises(ValueError):
        losses.grpo_token_weights(mask, "bogus")


def test_grpo_loss_scalar_and_metrics():
    lp = jnp.log(jnp.array([[1.5, 1.0], [1.0, 1.0]]))
    loss, m = losses.grpo_loss(lp, jnp.zeros((2, 2)), jnp.ones((2, 2)), jnp.array([[1, 1], [1, 0]]), beta=0.0)
    # row 0: (-1.2 - 1) / 2, row 1: -1; mean over rows
    assert float(loss) == pytest.approx(((-1.2 - 1.0) / 2 - 1.0) / 2, rel=1e-6)
    assert float(m["clip_fraction"]) == pytest.approx(1 / 3)


def test_registered_variants():
    assert objectives.get("grpo").kind == "rl"
    assert objectives.make_hparams("dapo").eps_high == 0.28 and objectives.make_hparams("dapo").aggregation == "token_mean"
    dr = objectives.make_hparams("dr_grpo")
    assert dr.aggregation == "constant" and dr.scale_advantages is False and dr.beta == 0.0
    assert objectives.make_hparams("grpo").beta == 0.04
