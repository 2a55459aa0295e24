"""Tests for jaxtool.losses.

Expected values are written out by hand (arithmetic on literal numbers with `math`), taken from
PyTorch as an independent oracle (`token_logps`, `sft_loss`), or come from identities the papers
imply (ablations, limits, the DMPO regrouping). No expected value is computed with the function
under test.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtool import losses as L


def softplus(x: float) -> float:
    """-log sigma(-x) = log(1 + e^x), written out for the hand computations."""
    return math.log1p(math.exp(x))


def neg_log_sigmoid(x: float) -> float:
    """-log sigma(x) = log(1 + e^-x)."""
    return math.log1p(math.exp(-x))


# ---------------------------------------------------------------------------------------------
# token_logps / sequence_logps / turn_logps
# ---------------------------------------------------------------------------------------------

def test_token_logps_hand_values():
    # Row logits [0, ln 2, ln 3] -> softmax [1/6, 2/6, 3/6].
    logits = jnp.array([[[0.0, math.log(2.0), math.log(3.0)]] * 3])  # [1, 3, 3]
    targets = jnp.array([[0, 1, 2]])
    got = np.asarray(L.logps_from_logits(logits, targets))
    np.testing.assert_allclose(got, [[math.log(1 / 6), math.log(2 / 6), math.log(3 / 6)]], rtol=1e-6)
    assert got.dtype == np.float32


def test_token_logps_matches_torch_log_softmax():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(3, 7, 50)).astype(np.float32)
    targets = rng.integers(0, 50, size=(3, 7))
    expected = (
        torch.nn.functional.log_softmax(torch.from_numpy(logits), dim=-1)
        .gather(-1, torch.from_numpy(targets)[..., None])[..., 0]
        .numpy()
    )
    got = np.asarray(L.logps_from_logits(jnp.asarray(logits), jnp.asarray(targets)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_token_logps_bf16_logits_match_float32_reference():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    # Large offsets: a naive exp() in bf16 or f32 would overflow; a bf16 softmax would be coarse.
    logits32 = (rng.normal(scale=4.0, size=(2, 5, 300)) + 1000.0).astype(np.float32)
    logits_bf16 = jnp.asarray(logits32, dtype=jnp.bfloat16)
    targets = rng.integers(0, 300, size=(2, 5))
    # Reference: the exact bf16 values, upcast, through torch's float64 log_softmax.
    exact = np.asarray(logits_bf16.astype(jnp.float32)).astype(np.float64)
    expected = (
        torch.nn.functional.log_softmax(torch.from_numpy(exact), dim=-1)
        .gather(-1, torch.from_numpy(targets)[..., None])[..., 0]
        .numpy()
    )
    got = L.logps_from_logits(logits_bf16, jnp.asarray(targets))
    assert got.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-4)
    # A log-softmax computed in bf16 itself is visibly worse: the float32 path is doing real work.
    naive = jax.nn.log_softmax(logits_bf16, axis=-1)
    naive = np.take_along_axis(np.asarray(naive.astype(jnp.float32)), targets[..., None], -1)[..., 0]
    assert np.max(np.abs(naive - expected)) > 10 * np.max(np.abs(np.asarray(got) - expected))


def test_token_logps_ignore_index_targets_give_zero_not_nan():
    logits = jnp.zeros((1, 3, 4))
    targets = jnp.array([[-100, 2, 4]])  # -100 (ignore index) and 4 == V are out of range
    got = np.asarray(L.logps_from_logits(logits, targets))
    np.testing.assert_allclose(got, [[0.0, math.log(0.25), 0.0]], rtol=1e-6)


def test_sequence_logps_and_lengths_hand_values():
    tl = jnp.array([[-1.0, -2.0, -3.0, -4.0], [-0.5, jnp.nan, -1.5, jnp.inf]])
    for mask in (
        jnp.array([[0, 1, 1, 0], [1, 0, 1, 0]]),
        jnp.array([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]]),
        jnp.array([[False, True, True, False], [True, False, True, False]]),
    ):
        got = np.asarray(L.sequence_logps(tl, mask))
        np.testing.assert_allclose(got, [-2.0 - 3.0, -0.5 - 1.5])
        np.testing.assert_allclose(np.asarray(L.sequence_lengths(mask)), [2.0, 2.0])


def test_turn_logps_hand_values():
    tl = jnp.array([[-1.0, -2.0, -3.0, -4.0, -5.0, -6.0]])
    turn_ids = jnp.array([[-1, 0, 0, -1, 1, -1]])
    sums, present = L.turn_logps(tl, turn_ids, max_turns=3)
    np.testing.assert_allclose(np.asarray(sums), [[-2.0 - 3.0, -5.0, 0.0]])
    np.testing.assert_array_equal(np.asarray(present), [[True, True, False]])
    assert present.dtype == jnp.bool_


def test_turn_sums_agree_with_sequence_sum():
    rng = np.random.default_rng(2)
    tl = jnp.asarray(-rng.random((4, 40)).astype(np.float32) * 5)
    turn_ids = jnp.asarray(rng.integers(-1, 5, size=(4, 40)))
    sums, present = L.turn_logps(tl, turn_ids, max_turns=5)
    seq = L.sequence_logps(tl, turn_ids >= 0)
    np.testing.assert_allclose(np.asarray(sums.sum(-1)), np.asarray(seq), rtol=1e-6)
    # present == the turn occurs somewhere in the row
    for b in range(4):
        ids = set(np.asarray(turn_ids[b]).tolist())
        assert [t in ids for t in range(5)] == np.asarray(present[b]).tolist()


def test_turn_logps_refuses_to_drop_turns_eagerly():
    with pytest.raises(ValueError, match="max_turns=2"):
        L.turn_logps(jnp.zeros((1, 3)), jnp.array([[0, 1, 2]]), max_turns=2)
    with pytest.raises(ValueError, match="positive Python int"):
        L.turn_logps(jnp.zeros((1, 3)), jnp.array([[0, 1, 2]]), max_turns=0)


def test_turn_logps_under_jit():
    f = jax.jit(L.turn_logps, static_argnums=2)
    sums, present = f(jnp.array([[-1.0, -2.0, -3.0]]), jnp.array([[1, -1, 1]]), 2)
    np.testing.assert_allclose(np.asarray(sums), [[0.0, -4.0]])
    np.testing.assert_array_equal(np.asarray(present), [[False, True]])


# ---------------------------------------------------------------------------------------------
# sft_loss
# ---------------------------------------------------------------------------------------------

def test_sft_loss_hand_value():
    # Two trained tokens: probabilities 1/6 and 3/6 -> mean NLL = (ln 6 + ln 2) / 2.
    logits = jnp.array([[[0.0, math.log(2.0), math.log(3.0)]] * 3])
    targets = jnp.array([[0, 1, 2]])
    mask = jnp.array([[1, 0, 1]])
    np.testing.assert_allclose(float(L.sft_loss(logits, targets, mask)), (math.log(6) + math.log(2)) / 2, rtol=1e-6)


def test_sft_loss_and_grad_match_torch_cross_entropy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=2.0, size=(3, 6, 20)).astype(np.float32)
    targets = rng.integers(0, 20, size=(3, 6))
    mask = (rng.random((3, 6)) > 0.4).astype(np.int32)
    t_logits = torch.from_numpy(logits).requires_grad_(True)
    t_targets = torch.from_numpy(np.where(mask > 0, targets, -100))
    t_loss = torch.nn.functional.cross_entropy(t_logits.reshape(-1, 20), t_targets.reshape(-1), ignore_index=-100)
    t_loss.backward()
    loss, grad = jax.value_and_grad(L.sft_loss)(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask))
    np.testing.assert_allclose(float(loss), t_loss.item(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), t_logits.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_sft_loss_empty_mask_is_zero_with_finite_grad():
    logits = jnp.ones((2, 3, 5))
    targets = jnp.zeros((2, 3), dtype=jnp.int32)
    mask = jnp.zeros((2, 3))
    loss, grad = jax.value_and_grad(L.sft_loss)(logits, targets, mask)
    assert float(loss) == 0.0
    assert np.all(np.asarray(grad) == 0.0)


def test_sft_loss_and_count_accumulates_to_the_full_batch_mean():
    rng = np.random.default_rng(4)
    logits = jnp.asarray(rng.normal(size=(4, 5, 9)).astype(np.float32))
    targets = jnp.asarray(rng.integers(0, 9, size=(4, 5)))
    mask = jnp.asarray(rng.integers(0, 2, size=(4, 5)))
    s1, n1 = L.sft_loss_and_count(logits[:2], targets[:2], mask[:2])
    s2, n2 = L.sft_loss_and_count(logits[2:], targets[2:], mask[2:])
    assert float(n1 + n2) == float(mask.sum())
    np.testing.assert_allclose(float((s1 + s2) / (n1 + n2)), float(L.sft_loss(logits, targets, mask)), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# DPO / IPO / hinge
# ---------------------------------------------------------------------------------------------

# One example: policy chosen -10, rejected -12; reference chosen -11, rejected -11.5.
# chosen log-ratio = 1, rejected log-ratio = -0.5, h = 1.5.
DPO_IN = dict(
    policy_chosen=jnp.array([-10.0]),
    policy_rejected=jnp.array([-12.0]),
    ref_chosen=jnp.array([-11.0]),
    ref_rejected=jnp.array([-11.5]),
)


def test_dpo_sigmoid_hand_value_and_metrics():
    losses, m = L.dpo_loss(**DPO_IN, beta=0.1)
    np.testing.assert_allclose(np.asarray(losses), [neg_log_sigmoid(0.1 * 1.5)], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["rewards_chosen"]), [0.1 * 1.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["rewards_rejected"]), [0.1 * -0.5], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["reward_margin"]), [0.15], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(m["accuracy"]), [1.0])


def test_cdpo_label_smoothing_hand_value():
    losses, _ = L.dpo_loss(**DPO_IN, beta=0.5, label_smoothing=0.2)
    expected = 0.8 * neg_log_sigmoid(0.75) + 0.2 * neg_log_sigmoid(-0.75)
    np.testing.assert_allclose(np.asarray(losses), [expected], rtol=1e-6)


def test_ipo_hand_value():
    # (h - 1/(2 tau))^2 with tau = 0.25: (1.5 - 2)^2 = 0.25
    losses, _ = L.dpo_loss(**DPO_IN, beta=0.25, loss_type="ipo")
    np.testing.assert_allclose(np.asarray(losses), [0.25], rtol=1e-6)


def test_hinge_hand_values():
    losses, _ = L.dpo_loss(**DPO_IN, beta=0.4, loss_type="hinge")  # 1 - 0.6
    np.testing.assert_allclose(np.asarray(losses), [0.4], rtol=1e-6)
    losses, _ = L.dpo_loss(**DPO_IN, beta=1.0, loss_type="hinge")  # 1 - 1.5 < 0
    np.testing.assert_allclose(np.asarray(losses), [0.0])


def test_dpo_accuracy_is_strict_and_batched():
    losses, m = L.dpo_loss(
        jnp.array([-1.0, -2.0, -3.0]),
        jnp.array([-2.0, -2.0, -1.0]),
        jnp.zeros(3),
        jnp.zeros(3),
        beta=1.0,
    )
    assert losses.shape == (3,)
    np.testing.assert_array_equal(np.asarray(m["accuracy"]), [1.0, 0.0, 0.0])


def test_dpo_rejects_bad_options():
    with pytest.raises(ValueError, match="loss_type"):
        L.dpo_loss(**DPO_IN, beta=0.1, loss_type="kto")
    with pytest.raises(ValueError, match="label_smoothing"):
        L.dpo_loss(**DPO_IN, beta=0.1, loss_type="ipo", label_smoothing=0.1)


# ---------------------------------------------------------------------------------------------
# SimPO / ORPO
# ---------------------------------------------------------------------------------------------

def test_simpo_hand_value():
    # chosen: -6 over 3 tokens (mean -2); rejected: -12 over 4 tokens (mean -3); beta 2.5, gamma 0.5
    losses, m = L.simpo_loss(jnp.array([-6.0]), jnp.array([-12.0]), jnp.array([3]), jnp.array([4]), 2.5, 0.5)
    # z = 2.5 * (-2) - 2.5 * (-3) - 0.5 = 2.0
    np.testing.assert_allclose(np.asarray(losses), [neg_log_sigmoid(2.0)], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["rewards_chosen"]), [-5.0])
    np.testing.assert_allclose(np.asarray(m["rewards_rejected"]), [-7.5])
    np.testing.assert_allclose(np.asarray(m["reward_margin"]), [2.5])
    np.testing.assert_array_equal(np.asarray(m["accuracy"]), [1.0])


def test_simpo_zero_length_is_finite():
    losses, m = L.simpo_loss(jnp.array([0.0]), jnp.array([-3.0]), jnp.array([0]), jnp.array([3]), 2.0, 0.0)
    # chosen reward 0 (empty), rejected 2 * -1 = -2 -> -log sigma(2)
    np.testing.assert_allclose(np.asarray(losses), [neg_log_sigmoid(2.0)], rtol=1e-6)
    g = jax.grad(lambda c: L.simpo_loss(c, jnp.array([-3.0]), jnp.array([0]), jnp.array([3]), 2.0, 0.0)[0].sum())(
        jnp.array([0.0])
    )
    assert np.all(np.isfinite(np.asarray(g)))


def _log_odds(mean_logp: float) -> float:
    p = math.exp(mean_logp)
    return math.log(p / (1.0 - p))


def test_orpo_hand_value():
    # chosen: -2 over 4 tokens (mean -0.5); rejected: -6 over 3 tokens (mean -2); lambda 0.1
    losses, m = L.orpo_loss(jnp.array([-2.0]), jnp.array([-6.0]), jnp.array([4]), jnp.array([3]), 0.1)
    lo_c, lo_r = _log_odds(-0.5), _log_odds(-2.0)  # 0.43275..., -1.85407...
    expected = 0.5 + 0.1 * neg_log_sigmoid(lo_c - lo_r)
    np.testing.assert_allclose(np.asarray(losses), [expected], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["rewards_chosen"]), [lo_c], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["rewards_rejected"]), [lo_r], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["nll"]), [0.5], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["log_odds_ratio"]), [lo_c - lo_r], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(m["accuracy"]), [1.0])


def test_orpo_log_odds_stable_at_extremes():
    # mean log-prob -1e-3 (p close to 1) and -60 (p ~ 1e-26): naive log(1 - exp(x)) loses it.
    _, m = L.orpo_loss(jnp.array([-1e-3]), jnp.array([-60.0]), jnp.array([1]), jnp.array([1]), 1.0)
    expected_c = -1e-3 - math.log(-math.expm1(-1e-3))  # log-odds, from expm1 on the literal
    expected_r = -60.0 - math.log1p(-math.exp(-60.0))
    np.testing.assert_allclose(np.asarray(m["rewards_chosen"]), [expected_c], rtol=1e-4)
    np.testing.assert_allclose(np.asarray(m["rewards_rejected"]), [expected_r], rtol=1e-6)
    # p == 1 exactly: clamped, finite loss and gradient.
    f = lambda c: L.orpo_loss(c, jnp.array([-5.0]), jnp.array([2]), jnp.array([2]), 1.0)[0].sum()
    assert np.isfinite(float(f(jnp.array([0.0]))))
    assert np.all(np.isfinite(np.asarray(jax.grad(f)(jnp.array([0.0])))))


# ---------------------------------------------------------------------------------------------
# DMPO
# ---------------------------------------------------------------------------------------------

def test_dmpo_weights_hand_values():
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    w = np.asarray(L.dmpo_turn_weights(mask, 0.5))
    # T=3: gamma^t (1 - gamma^(3-t)) / (1 - gamma^3), 1 - 0.125 = 0.875
    #   t=0: 1 * 0.875 / 0.875 = 1; t=1: 0.5 * 0.75 / 0.875 = 3/7; t=2: 0.25 * 0.5 / 0.875 = 1/7
    # T=2: 1 - 0.25 = 0.75; t=0: 1; t=1: 0.5 * 0.5 / 0.75 = 1/3
    np.testing.assert_allclose(w, [[1.0, 3 / 7, 1 / 7, 0.0], [1.0, 1 / 3, 0.0, 0.0]], rtol=1e-6)
    # gamma = 1: (T - t) / T
    w1 = np.asarray(L.dmpo_turn_weights(mask, 1.0))
    np.testing.assert_allclose(w1, [[1.0, 2 / 3, 1 / 3, 0.0], [1.0, 1 / 2, 0.0, 0.0]], rtol=1e-6)


def test_dmpo_weights_are_the_regrouped_length_normalised_occupancy_sum():
    # DMPO's score of a trajectory: (1-g)/(1-g^T) * sum_t g^t * sum_{k<=t} x_k. Evaluate that double
    # sum directly in float64 and compare with sum_k phi(k, T) x_k.
    rng = np.random.default_rng(5)
    counts = (1, 2, 5)
    mask = jnp.asarray([[1] * T + [0] * (5 - T) for T in counts])
    for gamma in (0.3, 0.9, 0.99):
        w = np.asarray(L.dmpo_turn_weights(mask, gamma))
        for row, T in enumerate(counts):
            x = rng.normal(size=T)
            direct = (1 - gamma) / (1 - gamma**T) * sum(gamma**t * x[: t + 1].sum() for t in range(T))
            np.testing.assert_allclose((w[row, :T] * x).sum(), direct, rtol=2e-5, atol=1e-6)
            assert np.all(w[row, T:] == 0.0)


def test_dmpo_loss_hand_value():
    # gamma 0.5, beta 0.5. Chosen 3 turns with log-ratios (policy - ref) [-1, 2, 3]; rejected 2 turns [1, -2].
    pc = jnp.array([[-3.0, -1.0, 0.0, 99.0]])
    rc = jnp.array([[-2.0, -3.0, -3.0, 0.0]])
    pr = jnp.array([[-1.0, -4.0, 0.0, 0.0]])
    rr = jnp.array([[-2.0, -2.0, 0.0, 0.0]])
    mc = jnp.array([[1, 1, 1, 0]])
    mr = jnp.array([[1, 1, 0, 0]])
    losses, m = L.dmpo_loss(pc, rc, mc, pr, rr, mr, beta=0.5, gamma=0.5)
    r_c = 0.5 * (1.0 * -1 + 3 / 7 * 2 + 1 / 7 * 3)  # = 0.5 * 2/7 = 1/7
    r_r = 0.5 * (1.0 * 1 + 1 / 3 * -2)  # = 0.5 * 1/3 = 1/6
    np.testing.assert_allclose(np.asarray(losses), [neg_log_sigmoid(r_c - r_r)], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["rewards_chosen"]), [r_c], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["rewards_rejected"]), [r_r], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(m["accuracy"]), [0.0])


def test_dmpo_single_turn_is_dpo():
    rng = np.random.default_rng(6)
    pc, rc, pr, rr = (jnp.asarray(rng.normal(size=(5, 1)) * 3) for _ in range(4))
    one = jnp.ones((5, 1))
    dm, _ = L.dmpo_loss(pc, rc, one, pr, rr, one, beta=0.3, gamma=0.7)
    dp, _ = L.dpo_loss(pc[:, 0], pr[:, 0], rc[:, 0], rr[:, 0], beta=0.3)
    np.testing.assert_allclose(np.asarray(dm), np.asarray(dp), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# DiaTool-DPO
# ---------------------------------------------------------------------------------------------

# Chosen: 3 assistant turns, per-turn log-ratios [-1, 2, 3]; rejected: 2 turns, [1, -2]. Padded to 4.
DIA_PC = jnp.array([[-3.0, -1.0, 0.0, 7.0]])
DIA_RC = jnp.array([[-2.0, -3.0, -3.0, -7.0]])
DIA_MC = jnp.array([[1, 1, 1, 0]])
DIA_PR = jnp.array([[-1.0, -4.0, 5.0, 5.0]])
DIA_RR = jnp.array([[-2.0, -2.0, 1.0, 1.0]])
DIA_MR = jnp.array([[1, 1, 0, 0]])


def dia(beta=0.5, gamma=0.5, margin=2.0, **kw):
    return L.diatool_dpo_loss(DIA_PC, DIA_RC, DIA_MC, DIA_PR, DIA_RR, DIA_MR, beta, gamma, margin, **kw)


def test_diatool_weights_hand_values():
    w = np.asarray(L.diatool_turn_weights(jnp.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]), 0.5))
    # T=3: phi = (1 - 0.5^(3-t)) / 0.875 = [1, 6/7, 4/7], psi = 17/7 -> [7/17, 6/17, 4/17]
    # T=2: phi = (1 - 0.5^(2-t)) / 0.75 = [1, 2/3], psi = 5/3 -> [3/5, 2/5]
    np.testing.assert_allclose(
        w, [[7 / 17, 6 / 17, 4 / 17, 0.0], [3 / 5, 2 / 5, 0.0, 0.0], [0.0] * 4], rtol=1e-6
    )
    w_nopsi = np.asarray(L.diatool_turn_weights(jnp.array([[1, 1, 1]]), 0.5, use_psi=False))
    np.testing.assert_allclose(w_nopsi, [[1.0, 6 / 7, 4 / 7]], rtol=1e-6)
    w_nophi = np.asarray(L.diatool_turn_weights(jnp.array([[1, 1, 1, 0]]), 0.5, use_phi=False))
    np.testing.assert_allclose(w_nophi, [[1 / 3, 1 / 3, 1 / 3, 0.0]], rtol=1e-6)
    w_g1 = np.asarray(L.diatool_turn_weights(jnp.array([[1, 1, 1]]), 1.0, use_psi=False))
    np.testing.assert_allclose(w_g1, [[1.0, 2 / 3, 1 / 3]], rtol=1e-6)


def test_diatool_loss_hand_value():
    losses, m = dia()
    # R_c = 0.5 * (7*(-1) + 6*2 + 4*3) / 17 = 0.5 ; R_r = 0.5 * (3*1 + 2*(-2)) / 5 = -0.1
    # loss = -log sigma(0.5 - (-0.1) - 2.0) = -log sigma(-1.4)
    np.testing.assert_allclose(np.asarray(losses), [softplus(1.4)], rtol=1e-6)
    np.testing.assert_allclose(float(softplus(1.4)), 1.620417, rtol=1e-6)  # the number itself
    np.testing.assert_allclose(np.asarray(m["rewards_chosen"]), [0.5], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["rewards_rejected"]), [-0.1], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(m["reward_margin"]), [0.6], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(m["accuracy"]), [1.0])
    np.testing.assert_array_equal(np.asarray(m["chosen_turns"]), [3.0])
    np.testing.assert_array_equal(np.asarray(m["rejected_turns"]), [2.0])


def test_diatool_ablation_rows_hand_values():
    # psi off: weights beta*phi: R_c = 0.5*(-1 + 6/7*2 + 4/7*3) = 0.5*17/7; R_r = 0.5*(1 - 2/3*2) = -1/6
    losses, _ = dia(use_psi=False)
    np.testing.assert_allclose(np.asarray(losses), [neg_log_sigmoid(0.5 * 17 / 7 + 1 / 6 - 2.0)], rtol=1e-6)
    # phi off: turn means: R_c = 0.5 * 4/3; R_r = 0.5 * -1/2
    losses, _ = dia(use_phi=False)
    np.testing.assert_allclose(np.asarray(losses), [neg_log_sigmoid(0.5 * 4 / 3 + 0.25 - 2.0)], rtol=1e-6)
    # margin off
    losses, _ = dia(margin=0.0)
    np.testing.assert_allclose(np.asarray(losses), [neg_log_sigmoid(0.6)], rtol=1e-6)


def _random_turn_batch(seed, b=6, t_max=5, dtype=np.float32):
    rng = np.random.default_rng(seed)
    counts_c = rng.integers(1, t_max + 1, size=b)
    counts_r = rng.integers(1, t_max + 1, size=b)
    mc = (np.arange(t_max)[None] < counts_c[:, None]).astype(np.int32)
    mr = (np.arange(t_max)[None] < counts_r[:, None]).astype(np.int32)
    pc, rc, pr, rr = (-(rng.random((b, t_max)) * 20).astype(dtype) for _ in range(4))
    return tuple(jnp.asarray(a) for a in (pc, rc, mc, pr, rr, mr))


def test_diatool_without_phi_psi_margin_is_dpo_on_summed_assistant_logps():
    pc, rc, mc, pr, rr, mr = _random_turn_batch(7)
    got, gm = L.diatool_dpo_loss(pc, rc, mc, pr, rr, mr, 0.5, 0.5, 0.0, use_phi=False, use_psi=False)
    # DPO inputs: per-trajectory sums of the assistant-turn log-probs (numpy, masked by hand).
    s = lambda x, m: jnp.asarray((np.asarray(x) * np.asarray(m)).sum(-1))
    want, wm = L.dpo_loss(s(pc, mc), s(pr, mr), s(rc, mc), s(rr, mr), beta=0.5)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5)
    for k in ("rewards_chosen", "rewards_rejected", "reward_margin", "accuracy"):
        np.testing.assert_allclose(np.asarray(gm[k]), np.asarray(wm[k]), rtol=1e-5, atol=1e-6)


def test_diatool_single_turn_is_dpo_minus_margin():
    pc, rc, _, pr, rr, _ = _random_turn_batch(8, t_max=1)
    one = jnp.ones((6, 1))
    got, _ = L.diatool_dpo_loss(pc, rc, one, pr, rr, one, 0.7, 0.5, 1.5)
    h = (pc - rc - (pr - rr))[:, 0]
    want = [neg_log_sigmoid(0.7 * float(x) - 1.5) for x in np.asarray(h)]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_diatool_gamma_zero_equals_phi_off_and_gamma_one_is_the_limit():
    batch = _random_turn_batch(9)
    g0, _ = L.diatool_dpo_loss(*batch, 0.5, 0.0, 2.0)  # gamma^(T-t) = 0 for every t < T -> phi = 1
    nophi, _ = L.diatool_dpo_loss(*batch, 0.5, 0.5, 2.0, use_phi=False)
    np.testing.assert_allclose(np.asarray(g0), np.asarray(nophi), rtol=1e-6)
    g1, _ = L.diatool_dpo_loss(*batch, 0.5, 1.0, 2.0)
    near1, _ = L.diatool_dpo_loss(*batch, 0.5, 1.0 - 1e-4, 2.0)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(near1), rtol=1e-3)


def test_diatool_weights_sum_to_one_per_trajectory():
    _, _, mc, _, _, _ = _random_turn_batch(10)
    for gamma in (0.0, 0.5, 0.9, 1.0):
        w = np.asarray(L.diatool_turn_weights(mc, gamma))
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("loss_name", ["diatool", "dmpo"])
def test_padding_turns_contribute_nothing_even_nan(loss_name):
    pc, rc, mc, pr, rr, mr = _random_turn_batch(11)
    if loss_name == "diatool":
        fn = lambda pc, pr: L.diatool_dpo_loss(pc, rc, mc, pr, rr, mr, 0.5, 0.5, 2.0)[0].sum()
    else:
        fn = lambda pc, pr: L.dmpo_loss(pc, rc, mc, pr, rr, mr, 0.5, 0.9)[0].sum()
    base = float(fn(pc, pr))
    poison_c = jnp.where(mc > 0, pc, jnp.nan)
    poison_r = jnp.where(mr > 0, pr, jnp.inf)
    poisoned_rc = jnp.where(mc > 0, rc, -jnp.inf)
    if loss_name == "diatool":
        poisoned = float(L.diatool_dpo_loss(poison_c, poisoned_rc, mc, poison_r, rr, mr, 0.5, 0.5, 2.0)[0].sum())
    else:
        poisoned = float(L.dmpo_loss(poison_c, poisoned_rc, mc, poison_r, rr, mr, 0.5, 0.9)[0].sum())
    assert poisoned == pytest.approx(base, rel=1e-6)
    gc, gr = jax.grad(fn, argnums=(0, 1))(poison_c, poison_r)
    gc, gr = np.asarray(gc), np.asarray(gr)
    assert np.all(gc[np.asarray(mc) == 0] == 0.0) and np.all(gr[np.asarray(mr) == 0] == 0.0)
    assert np.all(np.isfinite(gc)) and np.all(np.isfinite(gr))
    # and every real turn does get a gradient (gamma < 1 keeps all weights > 0)
    assert np.all(gc[np.asarray(mc) == 1] != 0.0) and np.all(gr[np.asarray(mr) == 1] != 0.0)


def test_empty_trajectories_are_finite():
    z = jnp.zeros((1, 3))
    losses, m = L.diatool_dpo_loss(z, z, z, z, z, z, 0.5, 0.5, 2.0)
    np.testing.assert_allclose(np.asarray(losses), [neg_log_sigmoid(-2.0)], rtol=1e-6)
    losses, _ = L.dmpo_loss(z, z, z, z, z, z, 0.5, 0.5)
    np.testing.assert_allclose(np.asarray(losses), [math.log(2.0)], rtol=1e-6)
    g = jax.grad(lambda x: L.diatool_dpo_loss(x, z, z, z, z, z, 0.5, 1.0, 2.0)[0].sum())(z)
    assert np.all(np.asarray(g) == 0.0)


# ---------------------------------------------------------------------------------------------
# gradients vs central finite differences (float64)
# ---------------------------------------------------------------------------------------------

def _check_grad(fn, args, argnum, eps=1e-6, rtol=1e-6, atol=1e-9):
    """Compare jax.grad of a scalar fn with central differences, one coordinate at a time."""
    x = np.asarray(args[argnum], dtype=np.float64)
    steps = np.eye(x.size).reshape((x.size,) + x.shape) * eps  # one perturbed copy per coordinate

    def at(xi):
        a = list(args)
        a[argnum] = xi
        return fn(*a)

    # One compiled call: the autodiff gradient at x and the loss at every x +- eps e_i.
    both = jax.jit(lambda x0, xs: (jax.grad(at)(x0), jax.vmap(at)(xs)))
    analytic, values = both(jnp.asarray(x), jnp.asarray(np.concatenate([x + steps, x - steps])))
    analytic = np.asarray(analytic)
    values = np.asarray(values, dtype=np.float64)
    numeric = ((values[: x.size] - values[x.size :]) / (2 * eps)).reshape(x.shape)
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol)
    assert np.any(analytic != 0.0)


def test_gradients_match_finite_differences_float64():
    with jax.enable_x64(True):
        rng = np.random.default_rng(12)
        f64 = lambda *s: jnp.asarray(rng.normal(size=s))

        # sft_loss w.r.t. logits
        logits, targets = f64(2, 3, 5), jnp.asarray(rng.integers(0, 5, size=(2, 3)))
        mask = jnp.asarray([[1, 0, 1], [1, 1, 0]])
        _check_grad(lambda lg: L.sft_loss(lg, targets, mask), (logits,), 0)

        # DPO variants w.r.t. every input (stacked into one array: one compile per check)
        dpo_in = f64(4, 3) * 5  # policy_chosen, policy_rejected, ref_chosen, ref_rejected
        for lt, ls in (("sigmoid", 0.0), ("sigmoid", 0.1), ("ipo", 0.0), ("hinge", 0.0)):
            _check_grad(lambda x: L.dpo_loss(x[0], x[1], x[2], x[3], 0.1, lt, ls)[0].sum(), (dpo_in,), 0)

        # SimPO, ORPO w.r.t. the policy log-probs of chosen and rejected
        lc, lr = jnp.asarray([3.0, 5.0, 2.0]), jnp.asarray([4.0, 1.0, 6.0])
        seq = -jnp.abs(f64(2, 3)) * 4
        _check_grad(lambda x: L.simpo_loss(x[0], x[1], lc, lr, 2.5, 0.5)[0].sum(), (seq,), 0)
        _check_grad(lambda x: L.orpo_loss(x[0], x[1], lc, lr, 0.2)[0].sum(), (seq,), 0)

        # DMPO, DiaTool-DPO w.r.t. per-turn policy log-probs (T_c != T_r); padded coords must be 0
        pc, rc, mc, pr, rr, mr = _random_turn_batch(13, b=3, t_max=4, dtype=np.float64)
        turns = jnp.stack([pc, pr])
        _check_grad(lambda x: L.dmpo_loss(x[0], rc, mc, x[1], rr, mr, 0.5, 0.8)[0].sum(), (turns,), 0)
        _check_grad(lambda x: L.diatool_dpo_loss(x[0], rc, mc, x[1], rr, mr, 0.5, 0.5, 2.0)[0].sum(), (turns,), 0)

        # The full chain logits -> token_logps -> turn_logps -> diatool_dpo_loss
        lg_c, lg_r = f64(1, 6, 4), f64(1, 5, 4)
        tg_c, tg_r = jnp.asarray([[0, 1, 2, 3, 0, 1]]), jnp.asarray([[3, 2, 1, 0, 2]])
        tid_c, tid_r = jnp.asarray([[-1, 0, 0, -1, 1, 1]]), jnp.asarray([[0, -1, 1, 2, 2]])

        def chain(lc_):
            sc_, mc_ = L.turn_logps(L.logps_from_logits(lc_, tg_c), tid_c, 3)
            sr_, mr_ = L.turn_logps(L.logps_from_logits(lg_r, tg_r), tid_r, 3)
            ref_c, ref_r = jnp.zeros((1, 3)) - 1.0, jnp.zeros((1, 3)) - 2.0
            return L.diatool_dpo_loss(sc_, ref_c, mc_, sr_, ref_r, mr_, 0.5, 0.5, 2.0)[0].sum()

        _check_grad(chain, (lg_c,), 0)
        # targets with turn id -1 get no gradient at all
        g = np.asarray(jax.grad(chain)(lg_c))
        assert np.all(g[0, 0] == 0.0) and np.all(g[0, 3] == 0.0)


# ---------------------------------------------------------------------------------------------
# jit / vmap
# ---------------------------------------------------------------------------------------------

def test_losses_jit_and_vmap():
    pc, rc, mc, pr, rr, mr = _random_turn_batch(14)
    eager, _ = L.diatool_dpo_loss(pc, rc, mc, pr, rr, mr, 0.5, 0.5, 2.0)
    jitted = jax.jit(L.diatool_dpo_loss, static_argnames=("use_phi", "use_psi"))
    j, jm = jitted(pc, rc, mc, pr, rr, mr, 0.5, 0.5, 2.0, use_phi=True, use_psi=True)
    np.testing.assert_allclose(np.asarray(j), np.asarray(eager), rtol=1e-6)
    # vmap over examples: each call sees one trajectory pair of shape [T_max]
    v, vm = jax.vmap(lambda *a: L.diatool_dpo_loss(*a, 0.5, 0.5, 2.0))(pc, rc, mc, pr, rr, mr)
    np.testing.assert_allclose(np.asarray(v), np.asarray(eager), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(vm["reward_margin"]), np.asarray(jm["reward_margin"]), rtol=1e-6)
    # beta / gamma may be traced too (e.g. scheduled)
    traced = jax.jit(lambda b, g: L.diatool_dpo_loss(pc, rc, mc, pr, rr, mr, b, g, 2.0)[0])(0.5, 0.5)
    np.testing.assert_allclose(np.asarray(traced), np.asarray(eager), rtol=1e-6)
    traced1 = jax.jit(lambda g: L.dmpo_loss(pc, rc, mc, pr, rr, mr, 0.5, g)[0])(1.0)
    np.testing.assert_allclose(np.asarray(traced1), np.asarray(L.dmpo_loss(pc, rc, mc, pr, rr, mr, 0.5, 1.0)[0]))

    dm_e, _ = L.dmpo_loss(pc, rc, mc, pr, rr, mr, 0.5, 0.9)
    dm_v, _ = jax.vmap(lambda *a: L.dmpo_loss(*a, 0.5, 0.9))(pc, rc, mc, pr, rr, mr)
    np.testing.assert_allclose(np.asarray(dm_v), np.asarray(dm_e), rtol=1e-6)

    a, b, c, d = (pc[:, 0], pr[:, 0], rc[:, 0], rr[:, 0])
    for lt in L.DPO_LOSS_TYPES:
        e, _ = L.dpo_loss(a, b, c, d, 0.1, lt)
        jj, _ = jax.jit(L.dpo_loss, static_argnames="loss_type")(a, b, c, d, 0.1, loss_type=lt)
        vv, _ = jax.vmap(lambda *x: L.dpo_loss(*x, 0.1, lt))(a, b, c, d)
        np.testing.assert_allclose(np.asarray(jj), np.asarray(e), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(vv), np.asarray(e), rtol=1e-6)

    lens = jnp.asarray([3.0, 4.0, 1.0, 2.0, 5.0, 6.0])
    for fn, extra in ((L.simpo_loss, (2.5, 0.5)), (L.orpo_loss, (0.1,))):
        e, _ = fn(a, b, lens, lens[::-1], *extra)
        jj, _ = jax.jit(fn)(a, b, lens, lens[::-1], *extra)
        vv, _ = jax.vmap(lambda *x: fn(*x, *extra))(a, b, lens, lens[::-1])
        np.testing.assert_allclose(np.asarray(jj), np.asarray(e), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(vv), np.asarray(e), rtol=1e-6)

    rng = np.random.default_rng(15)
    logits = jnp.asarray(rng.normal(size=(2, 4, 7)).astype(np.float32))
    targets = jnp.asarray(rng.integers(0, 7, size=(2, 4)))
    mask = jnp.asarray([[1, 1, 0, 1], [0, 1, 1, 1]])
    np.testing.assert_allclose(
        float(jax.jit(L.sft_loss)(logits, targets, mask)), float(L.sft_loss(logits, targets, mask)), rtol=1e-6
    )
    per_example = jax.vmap(L.sft_loss)(logits, targets, mask)
    assert per_example.shape == (2,)
