"""Pure training losses: SFT, DPO / IPO / hinge, SimPO, ORPO, DMPO and DiaTool-DPO.

Every function here is a pure function of arrays. None of them calls a model: the train step runs
the model, turns logits into log-probabilities with `logps_from_logits`, reduces them with
`sequence_logps` (whole responses) or `turn_logps` (one sum per assistant turn), and hands those to a
loss. All of them work under `jax.jit`, `jax.vmap` and `jax.grad`: there is no Python control flow on
array values, and the switches (`loss_type`, `use_phi`, `use_psi`, `max_turns`) are static.

Conventions (the data pipeline produces these; see `jaxtool.data.tokenize`):

- `logits[b, i]` predicts `targets[b, i]` (targets are already shifted by one).
- `loss_mask[b, i]` is 1 (or True) where target `i` is trained, 0 elsewhere; int, float or bool.
- `turn_ids[b, i]` is the index 0..T-1 of the assistant turn that target `i` belongs to, -1 where the
  target is not trained. Turn 0 is the first assistant turn of the dialogue.
- Log-probabilities are natural-log and float32 whatever the logits dtype.

Every preference loss returns `(losses, metrics)`: `losses` has one value per example (shape `[B]`;
the trainer averages), `metrics` is a dict of `[B]` arrays holding at least `rewards_chosen`,
`rewards_rejected`, `reward_margin` (chosen minus rejected) and `accuracy` (1.0 where the chosen
reward is strictly larger). Metrics carry no gradient. What "reward" means differs per loss and is
stated in each docstring.

References:

- DPO: Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
  Reward Model", Eq. 7.
- cDPO (label smoothing): Mitchell 2023, "A note on DPO with noisy preferences".
- IPO: Azar et al. 2024, "A General Theoretical Paradigm to Understand Learning from Human
  Preferences", Eq. 17.
- Hinge: SLiC-HF, Zhao et al. 2023 ("SLiC-HF: Sequence Likelihood Calibration with Human Feedback"),
  calibration loss with the margin written as 1/beta.
- SimPO: Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
  Eq. 6; used by iTool (Zeng et al. 2025) as its Eq. 10-11.
- ORPO: Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model",
  Eq. 6-7.
- DMPO: Shi et al. 2024, "Direct Multi-Turn Preference Optimization for Language Agents" (EMNLP).
- DiaTool-DPO: Jung et al. 2025, "DiaTool-DPO: Multi-Turn Direct Preference Optimization for
  Tool-Augmented Large Language Models" (SIGDIAL), Eq. 1.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "logps_from_logits",
    "sequence_logps",
    "sequence_lengths",
    "turn_logps",
    "sft_loss",
    "sft_token_nll",
    "sft_loss_and_count",
    "dpo_loss",
    "simpo_loss",
    "orpo_loss",
    "dmpo_turn_weights",
    "dmpo_loss",
    "diatool_turn_weights",
    "diatool_dpo_loss",
    "DPO_LOSS_TYPES",
]

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# log-probabilities
# ---------------------------------------------------------------------------------------------

def logps_from_logits(logits: Array, targets: Array) -> Array:
    """Log-probability of each target token given the logits: `log softmax(logits)[..., target]`.

    (Named for what it does; `jaxtool.train.steps.model_logps` is the model forward that ends in it.)

    Shapes: `logits [B, L, V]` (any float dtype, bf16 included), `targets [B, L]` int -> `[B, L]`
    float32 (float64 if the logits are float64). Any leading shape works; the vocabulary is the
    last axis of `logits`.

    Computed as `logit[target] - logsumexp(logits)` in float32, so neither a float32 copy of the
    full log-softmax nor a one-hot over the vocabulary is materialised (XLA fuses the upcast into
    the reduction). `logsumexp` subtracts the row maximum, so large logits do not overflow.

    A target outside `[0, V)` (e.g. the `-100` ignore-index some pipelines put on untrained
    positions) yields 0.0 instead of a NaN from an out-of-range gather; such positions must be
    masked out by `loss_mask` / `turn_ids` anyway (a *trained* out-of-range target would silently
    count as log-prob 0, so validating token ids is the data pipeline's job).
    """
    logits = jnp.asarray(logits)
    vocab = logits.shape[-1]
    targets = jnp.asarray(targets)
    valid = (targets >= 0) & (targets < vocab)
    safe_targets = jnp.where(valid, targets, 0)
    wide = logits.astype(_at_least_f32(logits.dtype))
    picked = jnp.take_along_axis(wide, safe_targets[..., None], axis=-1)[..., 0]
    normaliser = jax.nn.logsumexp(wide, axis=-1)
    return jnp.where(valid, picked - normaliser, 0.0)


token_logps = logps_from_logits  # the old name, kept for code written against it; use `logps_from_logits`


def _at_least_f32(dtype) -> jnp.dtype:
    """float32 for bf16/f16/f32 inputs; float64 stays float64 (used by the float64 gradient tests)."""
    return jnp.promote_types(dtype, jnp.float32)


def _as_bool(mask: Array) -> Array:
    mask = jnp.asarray(mask)
    return mask if mask.dtype == jnp.bool_ else mask > 0


def sequence_logps(token_logps: Array, loss_mask: Array) -> Array:
    """Summed log-probability of the trained tokens of each sequence: `log pi(y | x)`.

    Shapes: `token_logps [B, L]`, `loss_mask [B, L]` (int/float/bool) -> `[B]` float32. Positions with
    `loss_mask == 0` contribute exactly zero (selected away, so a NaN or inf there cannot leak).
    """
    mask = _as_bool(loss_mask)
    return jnp.sum(jnp.where(mask, token_logps, 0.0), axis=-1)


def sequence_lengths(loss_mask: Array) -> Array:
    """Number of trained tokens per sequence, `|y|`, as float32: `[B, L] -> [B]`.

    The length that SimPO and ORPO divide summed log-probabilities by.
    """
    return jnp.sum(_as_bool(loss_mask), axis=-1).astype(jnp.float32)


def turn_logps(token_logps: Array, turn_ids: Array, max_turns: int) -> tuple[Array, Array]:
    """Summed log-probability of each assistant turn: `log pi(a_t | s_t)` for t = 0..max_turns-1.

    Shapes: `token_logps [B, L]`, `turn_ids [B, L]` int (-1 = not trained) -> `(sums [B, T],
    present [B, T] bool)` with `T = max_turns` (a static Python int). `present[b, t]` is True when
    turn t of example b has at least one trained token; absent turns have sum 0.

    `sums.sum(-1)` equals `sequence_logps(token_logps, turn_ids >= 0)`. The reduction is an
    elementwise select and sum (no matmul), so it is exact float32 on every backend.

    A turn id >= `max_turns` would be dropped; when `turn_ids` is a concrete array (outside `jit`)
    this raises `ValueError` instead. Inside `jit` the caller must size `max_turns` from the data.
    """
    if not isinstance(max_turns, int) or max_turns < 1:
        raise ValueError(f"turn_logps: max_turns must be a positive Python int, got {max_turns!r}")
    if not isinstance(turn_ids, jax.core.Tracer):
        # Concrete ids (also a constant closed over inside jit): check on the host with numpy.
        host_ids = np.asarray(turn_ids)
        top = int(host_ids.max()) if host_ids.size else -1
        if top >= max_turns:
            raise ValueError(
                f"turn_logps: turn id {top} found but max_turns={max_turns}; "
                f"turns >= max_turns would be silently dropped (raise max_turns to at least {top + 1})"
            )
    turn_ids = jnp.asarray(turn_ids)
    turns = jnp.arange(max_turns, dtype=turn_ids.dtype)
    in_turn = turn_ids[..., :, None] == turns  # [B, L, T]
    sums = jnp.sum(jnp.where(in_turn, token_logps[..., :, None], 0.0), axis=-2)
    present = jnp.any(in_turn, axis=-2)
    return sums, present


# ---------------------------------------------------------------------------------------------
# supervised fine-tuning
# ---------------------------------------------------------------------------------------------

def sft_token_nll(token_logps: Array, loss_mask: Array) -> Array:
    """Per-token negative log-likelihood `-log pi(target | prefix)` where trained, 0 elsewhere.

    Shapes: `token_logps [B, L]` (from `logps_from_logits`), `loss_mask [B, L]` -> `[B, L]` in the log-probs
    dtype (float32, or float64 under x64). The
    SFT objective's per-unit loss (one unit per trained token)."""
    return jnp.where(_as_bool(loss_mask), -token_logps, jnp.zeros((), token_logps.dtype))


def sft_loss_and_count(logits: Array, targets: Array, loss_mask: Array) -> tuple[Array, Array]:
    """Summed negative log-likelihood over the trained tokens and the number of those tokens.

    Shapes: `logits [B, L, V]`, `targets [B, L]`, `loss_mask [B, L]` -> `(nll_sum [], count [])`,
    both float32. For gradient accumulation over micro-batches add the sums and the counts
    separately and divide once at the end; that gives exactly the token mean of the full batch.
    """
    total = jnp.sum(sft_token_nll(logps_from_logits(logits, targets), loss_mask))
    count = jnp.sum(_as_bool(loss_mask)).astype(jnp.float32)
    return total, count


def sft_loss(logits: Array, targets: Array, loss_mask: Array) -> Array:
    """Token-mean negative log-likelihood of the trained targets of the whole batch (scalar).

    `L_SFT = -(1 / N) * sum_{b,i} loss_mask[b,i] * log pi(targets[b,i] | prefix)` with `N` the number
    of trained tokens in the batch. Shapes: `logits [B, L, V]`, `targets [B, L]`, `loss_mask [B, L]`
    -> `[]` float32. With no trained token at all the loss is 0.0 (and its gradient zero), not NaN.
    """
    total, count = sft_loss_and_count(logits, targets, loss_mask)
    return total / jnp.maximum(count, 1.0)


# ---------------------------------------------------------------------------------------------
# single-sequence preference losses
# ---------------------------------------------------------------------------------------------

def _pair_metrics(rewards_chosen: Array, rewards_rejected: Array, **extra: Array) -> dict[str, Array]:
    rc = jax.lax.stop_gradient(rewards_chosen)
    rr = jax.lax.stop_gradient(rewards_rejected)
    metrics = {
        "rewards_chosen": rc,
        "rewards_rejected": rr,
        "reward_margin": rc - rr,
        "accuracy": (rc > rr).astype(jnp.float32),
    }
    metrics.update({k: jax.lax.stop_gradient(v) for k, v in extra.items()})
    return metrics


def dpo_loss(
    policy_chosen: Array,
    policy_rejected: Array,
    ref_chosen: Array,
    ref_rejected: Array,
    beta: float,
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """DPO and its IPO / hinge variants on summed sequence log-probabilities.

    Inputs are `[B]` summed log-probabilities `log pi(y | x)` of the chosen (`y_w`) and rejected
    (`y_l`) responses under the policy and the frozen reference. With the log-ratio difference

        h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)]

    the per-example loss is, by `loss_type` (static):

    - `"sigmoid"` — DPO, Rafailov et al. 2023 Eq. 7: `-log sigma(beta * h)`. With
      `label_smoothing = eps > 0` it is conservative DPO (cDPO), which treats each label as flipped
      with probability eps: `-(1 - eps) log sigma(beta h) - eps log sigma(-beta h)`.
    - `"ipo"` — IPO, Azar et al. 2024 Eq. 17: `(h - 1 / (2 tau))^2` with `tau = beta`. The paper's
      `h` uses the summed log-probabilities as given here (some libraries feed per-token averages
      instead; pass those in if that is what you want).
    - `"hinge"` — SLiC-HF style calibration hinge: `max(0, 1 - beta * h)`.

    Reward (metrics): the DPO implicit reward `beta * (log pi(y|x) - log pi_ref(y|x))` for each of
    chosen and rejected. Returns `(losses [B], metrics)`.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"dpo_loss: loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    if loss_type != "sigmoid" and isinstance(label_smoothing, (int, float)) and label_smoothing != 0:
        raise ValueError(
            f"dpo_loss: label_smoothing={label_smoothing} only applies to loss_type='sigmoid' (cDPO), "
            f"not {loss_type!r}"
        )
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    h = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * h) - label_smoothing * (
            jax.nn.log_sigmoid(-beta * h)
        )
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:  # hinge
        losses = jax.nn.relu(1.0 - beta * h)
    metrics = _pair_metrics(beta * chosen_ratio, beta * rejected_ratio)
    return losses, metrics


def _safe_mean(total: Array, length: Array) -> Array:
    """`total / length`, and 0.0 where `length == 0` (no NaN, no gradient blow-up)."""
    length = jnp.asarray(length).astype(_at_least_f32(jnp.result_type(total)))
    nonzero = length > 0
    return jnp.where(nonzero, total / jnp.where(nonzero, length, 1.0), 0.0)


def simpo_loss(
    policy_chosen: Array,
    policy_rejected: Array,
    chosen_lengths: Array,
    rejected_lengths: Array,
    beta: float,
    gamma: float,
) -> tuple[Array, dict[str, Array]]:
    """SimPO, Meng et al. 2024 Eq. 6 (iTool's preference loss, its Eq. 10-11).

        L = -log sigma( beta/|y_w| * log pi(y_w|x) - beta/|y_l| * log pi(y_l|x) - gamma )

    Reference-free: the reward is the length-normalised log-likelihood `beta/|y| * log pi(y|x)`
    (SimPO Eq. 4) and `gamma` is the target reward margin. Inputs: `[B]` summed policy
    log-probabilities and `[B]` response lengths `|y|` in trained tokens (`sequence_lengths`).
    A zero length gives reward 0 rather than NaN.

    Reward (metrics): `beta * log pi(y|x) / |y|`. Returns `(losses [B], metrics)`.
    """
    reward_chosen = beta * _safe_mean(policy_chosen, chosen_lengths)
    reward_rejected = beta * _safe_mean(policy_rejected, rejected_lengths)
    losses = -jax.nn.log_sigmoid(reward_chosen - reward_rejected - gamma)
    return losses, _pair_metrics(reward_chosen, reward_rejected)


def _log1mexp(x: Array) -> Array:
    """`log(1 - exp(x))` for `x < 0`, accurate near 0 and for very negative x (Maechler 2012)."""
    return jnp.where(x > -0.6931471805599453, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


# Average log-probabilities are clamped just below 0 before taking log(1 - p): at exactly p = 1 the
# odds are infinite. The clamp only bites when the policy gives the response probability 1 to
# float32 precision.
_MAX_MEAN_LOGP = -1e-6


def orpo_loss(
    policy_chosen: Array,
    policy_rejected: Array,
    chosen_lengths: Array,
    rejected_lengths: Array,
    lam: float,
) -> tuple[Array, dict[str, Array]]:
    """ORPO, Hong et al. 2024 Eq. 6-7: `L = L_SFT + lam * L_OR`, reference-free.

    With the length-normalised likelihood `P(y|x) = exp(log pi(y|x) / |y|)` and
    `odds(y|x) = P / (1 - P)`:

        L_SFT = -log pi(y_w|x) / |y_w|                       (mean NLL of the chosen response)
        L_OR  = -log sigma( log odds(y_w|x) - log odds(y_l|x) )                          (Eq. 7)

    `log odds = m - log(1 - exp(m))` with `m` the mean log-probability, evaluated with a stable
    `log1mexp`. Inputs: `[B]` summed policy log-probabilities and `[B]` lengths in trained tokens.
    `L_SFT` is per example (the paper's per-sequence average); TRL instead averages the NLL over all
    chosen tokens of the batch, which weights long responses more.

    Reward (metrics): the log-odds `log odds(y|x)`. Extra metrics: `nll` (L_SFT) and
    `log_odds_ratio` (the argument of sigma). Returns `(losses [B], metrics)`.
    """
    mean_chosen = _safe_mean(policy_chosen, chosen_lengths)
    mean_rejected = _safe_mean(policy_rejected, rejected_lengths)
    mc = jnp.minimum(mean_chosen, _MAX_MEAN_LOGP)
    mr = jnp.minimum(mean_rejected, _MAX_MEAN_LOGP)
    log_odds_chosen = mc - _log1mexp(mc)
    log_odds_rejected = mr - _log1mexp(mr)
    log_odds_ratio = log_odds_chosen - log_odds_rejected
    nll = -mean_chosen
    losses = nll - lam * jax.nn.log_sigmoid(log_odds_ratio)
    metrics = _pair_metrics(log_odds_chosen, log_odds_rejected, nll=nll, log_odds_ratio=log_odds_ratio)
    return losses, metrics


# ---------------------------------------------------------------------------------------------
# multi-turn (per-turn) preference losses
# ---------------------------------------------------------------------------------------------

def _turn_index_and_count(turn_mask: Array, dtype=jnp.float32) -> tuple[Array, Array, Array]:
    """Turn index t (0-based rank among present turns), the trajectory's turn count T, and the mask.

    `turn_mask [B, T_max]` -> `(t [B, T_max], T [B, 1], present [B, T_max] bool)`, t and T as `dtype`.
    For the usual prefix mask (turns 0..T-1 present) t is just the position; a gap in the mask is
    skipped (the turn after the gap gets the next index).
    """
    present = _as_bool(turn_mask)
    t = (jnp.cumsum(present, axis=-1) - 1).astype(dtype)
    count = jnp.sum(present, axis=-1, keepdims=True).astype(dtype)
    return t, count, present


def _one_minus_pow_ratio(t: Array, count: Array, present: Array, gamma) -> Array:
    """`(1 - gamma^(T - t)) / (1 - gamma^T)` on present turns, its gamma -> 1 limit `(T - t) / T`
    when gamma == 1, and 0 on absent turns or empty trajectories."""
    gamma = jnp.asarray(gamma, dtype=t.dtype)
    ok = present & (count > 0)
    remaining = jnp.where(ok, count - t, 1.0)  # >= 1 on present turns
    total = jnp.where(ok, count, 1.0)
    is_one = gamma == 1.0
    g = jnp.where(is_one, 0.5, gamma)  # any value != 1 keeps the unused branch finite
    discounted = (1.0 - g**remaining) / (1.0 - g**total)
    linear = remaining / total
    return jnp.where(ok, jnp.where(is_one, linear, discounted), 0.0)


def dmpo_turn_weights(turn_mask: Array, gamma, dtype=jnp.float32) -> Array:
    """DMPO per-turn weights `phi(t, T) = gamma^t (1 - gamma^(T - t)) / (1 - gamma^T)`.

    `turn_mask [B, T_max]` -> `[B, T_max]` of `dtype`, 0 on absent turns; `gamma = 1` gives the
    limit `(T - t) / T`. Derivation (Shi et al. 2024, Sec. 3): the length-normalised Bradley-Terry
    score of a trajectory, `(1 - gamma) / (1 - gamma^T) * sum_t gamma^t r(s_t, a_t)`, with the
    occupancy-measure reward `r(s_t, a_t) = beta * sum_{k<=t} log[pi(a_k|s_k) / pi_ref(a_k|s_k)]
    + beta log Z`, has the `log Z` terms cancel and regroups (swap the two sums, use
    `sum_{t=k}^{T-1} gamma^t = (gamma^k - gamma^T) / (1 - gamma)`) to
    `beta * sum_k phi(k, T) * log[pi(a_k|s_k) / pi_ref(a_k|s_k)]`. These are the weights the
    authors' released trainer puts on each turn (swt-user/DMPO,
    `fastchat/train/dmpo_trainer_efficient.py`).
    """
    t, count, present = _turn_index_and_count(turn_mask, dtype)
    lead = jnp.where(present, jnp.asarray(gamma, dtype) ** jnp.where(present, t, 0.0), 0.0)
    return lead * _one_minus_pow_ratio(t, count, present, gamma)


def _trajectory_reward(
    weights: Array, policy_turns: Array, ref_turns: Array, turn_mask: Array, beta
) -> Array:
    """`beta * sum_t weights[t] * (policy_turns[t] - ref_turns[t])` over present turns -> `[B]`.

    Absent turns are selected away before the product, so a NaN/inf in padding cannot reach the
    loss or its gradient (0 * NaN would)."""
    present = _as_bool(turn_mask)
    log_ratio = jnp.where(present, policy_turns, 0.0) - jnp.where(present, ref_turns, 0.0)
    return beta * jnp.sum(weights * log_ratio, axis=-1)


def _turns_dtype(*arrays: Array) -> jnp.dtype:
    return _at_least_f32(jnp.result_type(*arrays))


def dmpo_loss(
    policy_chosen_turns: Array,
    ref_chosen_turns: Array,
    chosen_turn_mask: Array,
    policy_rejected_turns: Array,
    ref_rejected_turns: Array,
    rejected_turn_mask: Array,
    beta: float,
    gamma: float,
) -> tuple[Array, dict[str, Array]]:
    """DMPO (Shi et al. 2024): multi-turn DPO with a state-action occupancy constraint and
    length-normalised Bradley-Terry scores.

        L = -log sigma( beta * sum_{t<T_w} phi(t, T_w) log[pi(a^w_t|s^w_t) / pi_ref(a^w_t|s^w_t)]
                      - beta * sum_{t<T_l} phi(t, T_l) log[pi(a^l_t|s^l_t) / pi_ref(a^l_t|s^l_t)] )

    with `phi(t, T) = gamma^t (1 - gamma^(T - t)) / (1 - gamma^T)` (see `dmpo_turn_weights`).
    Each trajectory uses its own turn count (`T_w != T_l` is the normal case). Per-turn inputs are
    `[B, T_max]` summed log-probabilities of the assistant turns (`turn_logps`) and bool/int turn
    masks. Absent turns contribute exactly nothing, to the loss and to its gradient.

    Reward (metrics): `beta * sum_t phi(t, T) * (per-turn log-ratio)` for each trajectory.
    Returns `(losses [B], metrics)`.
    """
    dtype = _turns_dtype(policy_chosen_turns, ref_chosen_turns, policy_rejected_turns, ref_rejected_turns)
    w_c = dmpo_turn_weights(chosen_turn_mask, gamma, dtype)
    w_r = dmpo_turn_weights(rejected_turn_mask, gamma, dtype)
    reward_chosen = _trajectory_reward(w_c, policy_chosen_turns, ref_chosen_turns, chosen_turn_mask, beta)
    reward_rejected = _trajectory_reward(
        w_r, policy_rejected_turns, ref_rejected_turns, rejected_turn_mask, beta
    )
    losses = -jax.nn.log_sigmoid(reward_chosen - reward_rejected)
    return losses, _pair_metrics(reward_chosen, reward_rejected)


def diatool_turn_weights(
    turn_mask: Array, gamma, use_phi: bool = True, use_psi: bool = True, dtype=jnp.float32
) -> Array:
    """DiaTool-DPO per-turn weights `phi(t, T) / psi(T)` (without beta).

    `phi(t, T) = (1 - gamma^(T - t)) / (1 - gamma^T)` for turns t = 0..T-1 (1 at the first turn,
    decreasing to `(1 - gamma) / (1 - gamma^T)` at the last), `psi(T) = sum_{t<T} phi(t, T)`.
    `use_phi=False` sets phi = 1 on every present turn; `use_psi=False` sets psi = 1. psi is always
    the sum of the phi in use, so with phi = 1 and psi on, each turn weighs 1/T. `gamma = 1` gives the
    limit `phi = (T - t) / T`. `turn_mask [B, T_max]` -> `[B, T_max]` of `dtype`, 0 on absent turns
    and for empty trajectories.
    """
    t, count, present = _turn_index_and_count(turn_mask, dtype)
    if use_phi:
        phi = _one_minus_pow_ratio(t, count, present, gamma)
    else:
        phi = present.astype(dtype)
    if use_psi:
        psi = jnp.sum(phi, axis=-1, keepdims=True)
        return jnp.where(psi > 0, phi / jnp.where(psi > 0, psi, 1.0), 0.0)
    return phi


def diatool_dpo_loss(
    policy_chosen_turns: Array,
    ref_chosen_turns: Array,
    chosen_turn_mask: Array,
    policy_rejected_turns: Array,
    ref_rejected_turns: Array,
    rejected_turn_mask: Array,
    beta: float,
    gamma: float,
    margin: float,
    use_phi: bool = True,
    use_psi: bool = True,
) -> tuple[Array, dict[str, Array]]:
    """DiaTool-DPO trajectory loss (Jung et al. 2025, Eq. 1).

        R(tau) = sum_{t<T} beta * phi(t, T) / psi(T) * log[pi(a_t|s_t) / pi_ref(a_t|s_t)]
        L      = -log sigma( R(tau_w) - R(tau_l) - rho )

    over the assistant turns a_t of the chosen trajectory tau_w (T_w turns) and the rejected one
    tau_l (T_l turns; T_w != T_l is normal, and the user turns differ after the first). Each
    trajectory's own turn count sets `phi(t, T) = (1 - gamma^(T - t)) / (1 - gamma^T)` and
    `psi(T) = sum_{t<T} phi(t, T)` (see `diatool_turn_weights`); turn t = 0 is the first assistant
    turn. `rho = margin` is subtracted inside the sigmoid and is not scaled by beta.

    Ablations (the paper's Table 3 rows), all static switches:
    `use_phi=False` (phi = 1), `use_psi=False` (psi = 1), `margin=0` (no rho). With all three the
    loss is exactly DPO on the summed assistant-turn log-probabilities,
    `-log sigma(beta * [(sum_t log-ratio_w) - (sum_t log-ratio_l)])`.

    Difference from DMPO (`dmpo_loss`): DMPO's per-turn weight carries an extra `gamma^t` factor and
    no psi normalisation; here the weights of each trajectory are normalised to sum to beta.

    Inputs: `[B, T_max]` summed assistant-turn log-probabilities (`turn_logps`) of policy and
    reference for both trajectories, and `[B, T_max]` bool/int turn masks. Absent turns contribute
    exactly nothing, to the loss and to its gradient (NaN/inf padding included).

    Reward (metrics): the weighted per-turn sum `R(tau)` of each trajectory. Extra metrics:
    `chosen_turns`, `rejected_turns` (T_w, T_l). Returns `(losses [B], metrics)`.

    Provenance: the placement of beta, phi, psi and rho follows the project's specification of
    Eq. 1; the paper's full text and the trainer in kakao/diatool-dpo (only its README, which names
    `gamma` and `margin` and the recipe beta 0.5, gamma 0.5, margin 2.0) could not be read here to
    cross-check it.
    """
    dtype = _turns_dtype(policy_chosen_turns, ref_chosen_turns, policy_rejected_turns, ref_rejected_turns)
    w_c = diatool_turn_weights(chosen_turn_mask, gamma, use_phi=use_phi, use_psi=use_psi, dtype=dtype)
    w_r = diatool_turn_weights(rejected_turn_mask, gamma, use_phi=use_phi, use_psi=use_psi, dtype=dtype)
    reward_chosen = _trajectory_reward(w_c, policy_chosen_turns, ref_chosen_turns, chosen_turn_mask, beta)
    reward_rejected = _trajectory_reward(
        w_r, policy_rejected_turns, ref_rejected_turns, rejected_turn_mask, beta
    )
    losses = -jax.nn.log_sigmoid(reward_chosen - reward_rejected - margin)
    metrics = _pair_metrics(
        reward_chosen,
        reward_rejected,
        chosen_turns=jnp.sum(_as_bool(chosen_turn_mask), axis=-1).astype(jnp.float32),
        rejected_turns=jnp.sum(_as_bool(rejected_turn_mask), axis=-1).astype(jnp.float32),
    )
    return losses, metrics


# ---------------------------------------------------------------------------------------------
# Online RL: GRPO and its variants (Dr. GRPO, DAPO). Per-token, over sampled responses.
#
# - GRPO: Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open
#   Language Models", §4.1: Eq. 3 (clipped surrogate per token, KL to the reference, averaged over
#   each output's |o_i| tokens then over the G outputs), Eq. 4 (the k3 KL estimator
#   pi_ref/pi - log(pi_ref/pi) - 1), §4.1.2 outcome supervision (A_i = (r_i - mean r) / std r).
# - Dr. GRPO: Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective", §3.1:
#   no division by |o_i| (a constant instead) and no division by std r.
# - DAPO: Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
#   Eq. 8-10: token-level aggregation (sum over every token of the batch / total tokens) and
#   decoupled clip ranges eps_low < eps_high ("clip-higher", §3.1).
#
# Conventions: `logps`, `old_logps`, `ref_logps`, `loss_mask` are [B, T] over the sampled response
# tokens (mask 0 on prompt, environment/tool tokens and padding); `advantages` are [B, T] (a
# sequence-level advantage broadcast over its row, or per-turn values). The loss to minimise is the
# negative of the paper's objective J.
# ---------------------------------------------------------------------------------------------

GRPO_AGGREGATIONS = ("sequence_mean", "token_mean", "constant")


def group_advantages(rewards: Array, group_size: int, scale: bool = True, ddof: int = 1,
                     eps: float = 1e-6) -> Array:
    """Group-relative advantages (DeepSeekMath §4.1.2): rewards [N] laid out group by group
    (rows g*G .. g*G+G-1 answer prompt g) -> (r - mean_group) / (std_group + eps).

    scale=False is Dr. GRPO's r - mean_group (§3.1). `ddof` picks the std: 1 the sample std (TRL,
    verl), 0 the population std; the paper only says "standard deviation". A group whose rewards are
    all equal gets advantage 0 (the numerator is 0)."""
    r = jnp.asarray(rewards, jnp.float32).reshape(-1, group_size)
    centred = r - jnp.mean(r, axis=1, keepdims=True)
    if scale:
        n = max(group_size - ddof, 1)
        std = jnp.sqrt(jnp.sum(centred**2, axis=1, keepdims=True) / n)
        centred = centred / (std + eps)
    return centred.reshape(-1)


def k3_kl(logps: Array, ref_logps: Array) -> Array:
    """DeepSeekMath Eq. 4 per token: exp(ref - logp) - (ref - logp) - 1 (>= 0, unbiased for KL(pi||ref))."""
    d = ref_logps - logps
    return jnp.exp(d) - d - 1.0


def grpo_token_weights(loss_mask: Array, aggregation: str = "sequence_mean", constant: float = 1.0) -> Array:
    """The weight of each token's loss so that sum(weights * per_token_loss) is the batch loss:

    - "sequence_mean" (GRPO Eq. 3): 1/G sum_i 1/|o_i| sum_t  ->  mask / (|o_i| * N_rows_with_tokens)
    - "token_mean"    (DAPO Eq. 8): 1/sum_i |o_i| sum_i sum_t ->  mask / total_tokens
    - "constant"      (Dr. GRPO):   1/G sum_i 1/C sum_t        ->  mask / (C * N_rows_with_tokens)

    Computed from the mask alone (the host can compute it for a whole global batch, so micro-batches
    sum to exactly the global loss). Rows with no trained token get weight 0 and do not count."""
    m = _as_bool(loss_mask).astype(jnp.float32)
    lens = jnp.sum(m, axis=-1, keepdims=True)
    rows = jnp.maximum(jnp.sum(lens > 0), 1).astype(jnp.float32)
    if aggregation == "sequence_mean":
        return m / (jnp.maximum(lens, 1.0) * rows)
    if aggregation == "token_mean":
        return m / jnp.maximum(jnp.sum(m), 1.0)
    if aggregation == "constant":
        return m / (float(constant) * rows)
    raise ValueError(f"aggregation must be one of {GRPO_AGGREGATIONS}, got {aggregation!r}")


def grpo_token_loss(logps: Array, old_logps: Array, advantages: Array, ref_logps: Array | None = None, *,
                    eps_low: float = 0.2, eps_high: float | None = None, beta: float = 0.04
                    ) -> tuple[Array, dict[str, Array]]:
    """Per-token negative GRPO objective (DeepSeekMath Eq. 3, inner term):

        ratio = exp(logp - old_logp)
        l_t   = -( min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) - beta * k3_kl )

    eps_high=None is GRPO/PPO's symmetric clip (eps_high = eps_low); DAPO's clip-higher sets it
    larger (0.28 with eps_low 0.2). beta=0 (or ref_logps None) drops the KL term.
    Returns (loss [B, T], metrics {"kl", "clipped", "ratio"} [B, T], no gradient); the caller
    weights tokens with `grpo_token_weights`."""
    eps_high = eps_low if eps_high is None else eps_high
    logps = logps.astype(jnp.float32)
    ratio = jnp.exp(logps - jax.lax.stop_gradient(old_logps.astype(jnp.float32)))
    adv = jax.lax.stop_gradient(advantages.astype(jnp.float32))
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    surrogate = jnp.minimum(unclipped, clipped)
    if ref_logps is not None and beta != 0:
        kl = k3_kl(logps, jax.lax.stop_gradient(ref_logps.astype(jnp.float32)))
        loss = -(surrogate - beta * kl)
    else:
        kl = jnp.zeros_like(logps) if ref_logps is None else k3_kl(logps, ref_logps.astype(jnp.float32))
        loss = -surrogate
    metrics = {"kl": jax.lax.stop_gradient(kl),
               "clipped": jax.lax.stop_gradient((clipped < unclipped).astype(jnp.float32)),
               "ratio": jax.lax.stop_gradient(ratio)}
    return loss, metrics


def grpo_loss(logps: Array, old_logps: Array, advantages: Array, loss_mask: Array, ref_logps: Array | None = None,
              *, eps_low: float = 0.2, eps_high: float | None = None, beta: float = 0.04,
              aggregation: str = "sequence_mean", constant: float = 1.0) -> tuple[Array, dict[str, Array]]:
    """The batch's GRPO loss (a scalar) and its token-weighted metrics (scalars): kl, clip_fraction."""
    per_tok, m = grpo_token_loss(logps, old_logps, advantages, ref_logps, eps_low=eps_low, eps_high=eps_high,
                                 beta=beta)
    w = grpo_token_weights(loss_mask, aggregation, constant)
    tok = _as_bool(loss_mask).astype(jnp.float32)
    n = jnp.maximum(jnp.sum(tok), 1.0)
    return jnp.sum(w * per_tok), {"kl": jnp.sum(m["kl"] * tok) / n, "clip_fraction": jnp.sum(m["clipped"] * tok) / n}


__all__ += ["group_advantages", "k3_kl", "grpo_token_weights", "grpo_token_loss", "grpo_loss", "GRPO_AGGREGATIONS"]
