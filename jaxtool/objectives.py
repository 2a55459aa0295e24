"""The loss registry: one entry per training objective.

An objective is its typed hyper-parameters, what it needs from the model, and a pure `compute`:

    Objective(name, hparams=DPOParams, kind="preference", needs_reference=True, needs_turns=False,
              compute=fn(policy, reference, hp) -> (losses [U], metrics {name: [U]}))

`policy` / `reference` are the statistics the train step derived from token log-probs (see
`jaxtool.train.steps`):

* SFT (`kind="sft"`): `{"token_logps": [B, L], "loss_mask": [B, L]}`; one unit per trained token.
* preference: `{"chosen": S, "rejected": S}` with `S = {"seq": [B] summed log-prob, "len": [B]
  trained tokens, "turns": [B, T] per-turn sums, "turn_mask": [B, T]}` (turns only when
  `needs_turns`); one unit per pair. `reference` has the same layout (None when not needed).

The step sums `losses` (and every metric) over units and divides once by the global unit count, so
gradient accumulation equals one big batch. Hyper-parameters are frozen dataclasses; the YAML key
`loss:` is a tagged union over them — `loss.type` picks the entry, the other `loss.*` keys must be
fields of its dataclass (or the common keys `reference`, `max_turns`).

Adding a loss = one pure function in `jaxtool/losses.py` + one `register(Objective(...))` (here, or in
its own module with a lazy `register("name", "package.module:ATTR")` line here) + a test; see
CONTRIBUTING.md for the table and README lines that also change.
The equations are cited in `jaxtool.losses`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from jaxtool import losses
from jaxtool.errors import ConfigError
from jaxtool.registry import Registry


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    hparams: type                      # frozen dataclass of the objective's hyper-parameters
    kind: str                          # "sft" | "preference"
    compute: Callable[[dict, dict | None, Any], tuple[Any, dict]]
    needs_reference: bool = False      # a frozen reference model's statistics
    needs_turns: bool = False          # per-assistant-turn sums (turn_ids)
    doc: str = ""


KINDS = ("sft", "preference", "rl")


def _check(name: str, obj: Any) -> None:
    if not isinstance(obj, Objective):
        raise ValueError(f"objective {name!r}: expected an Objective, got {type(obj).__name__}")
    if obj.kind not in KINDS:
        raise ValueError(f"objective {obj.name}: kind must be 'sft', 'preference' or 'rl'")
    if obj.name != name:
        raise ValueError(f"objective registered as {name!r} is named {obj.name!r}")


def _unknown(name, ranked: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(str(name), ranked, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"loss.type must be one of {tuple(REGISTRY)}, got {name!r}{hint}"


REGISTRY: dict[str, Any] = {}     # name -> Objective, or "package.module:attr" naming one (imported on use)
TABLE: Registry = Registry("objective", ConfigError, REGISTRY, check=_check, message=_unknown)


def register(obj: Objective | str, target: str | None = None) -> Objective | str:
    """Add an objective: `register(Objective(...))` where it is defined (any module: the entry is
    usable once that module is imported), or `register("name", "package.module:ATTR")` here, so the
    name resolves without anyone importing that module first. Another objective under a taken name
    is a ValueError."""
    if isinstance(obj, Objective):
        return TABLE.register(obj.name, obj)
    if target is None:
        raise ValueError("register(name, 'package.module:attr') or register(Objective(...))")
    return TABLE.register(obj, target)


def get(name: str) -> Objective:
    return TABLE.get(name)


def names() -> tuple[str, ...]:
    return TABLE.names()


# ---------------------------------------------------------------------------------------------
# hyper-parameters (field comments are what `jaxtool train --print-config` users read)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NoParams:
    pass


@dataclasses.dataclass(frozen=True)
class DPOParams:
    beta: float = 0.1              # inverse temperature of the implicit reward
    label_smoothing: float = 0.0   # cDPO: probability that a label is flipped


@dataclasses.dataclass(frozen=True)
class BetaParams:
    beta: float = 0.1              # IPO: tau; hinge: 1/margin


@dataclasses.dataclass(frozen=True)
class SimPOParams:
    beta: float = 2.0              # reward scale (SimPO Eq. 6; iTool uses 2.5)
    gamma: float = 0.5             # target reward margin (SimPO's gamma)


@dataclasses.dataclass(frozen=True)
class ORPOParams:
    lam: float = 0.1               # weight of the odds-ratio term (ORPO's lambda)


@dataclasses.dataclass(frozen=True)
class DMPOParams:
    beta: float = 0.1              # inverse temperature of the implicit reward
    gamma: float = 0.5             # turn discount of the state-action occupancy weights


@dataclasses.dataclass(frozen=True)
class DiaToolParams:
    beta: float = 0.5              # inverse temperature of the implicit reward (the paper's recipe: 0.5)
    gamma: float = 0.5             # turn discount of phi (DiaTool-DPO Eq. 1)
    margin: float = 0.0            # rho: target reward margin
    use_phi: bool = True           # turn weights phi (Table 3 ablation: false)
    use_psi: bool = True           # total-turn normalisation psi (Table 3 ablation: false)


# ---------------------------------------------------------------------------------------------
# compute functions
# ---------------------------------------------------------------------------------------------

def _sft(pol: dict, _ref, _hp) -> tuple[Any, dict]:
    nll = losses.sft_token_nll(pol["token_logps"], pol["loss_mask"])
    return nll, {}


def _dpo_family(loss_type: str):
    def compute(pol, ref, hp):
        c, r = pol["chosen"], pol["rejected"]
        return losses.dpo_loss(c["seq"], r["seq"], ref["chosen"]["seq"], ref["rejected"]["seq"], hp.beta,
                               loss_type=loss_type, label_smoothing=getattr(hp, "label_smoothing", 0.0))
    return compute


def _simpo(pol, _ref, hp):
    c, r = pol["chosen"], pol["rejected"]
    return losses.simpo_loss(c["seq"], r["seq"], c["len"], r["len"], hp.beta, hp.gamma)


def _orpo(pol, _ref, hp):
    c, r = pol["chosen"], pol["rejected"]
    return losses.orpo_loss(c["seq"], r["seq"], c["len"], r["len"], hp.lam)


def _dmpo(pol, ref, hp):
    c, r = pol["chosen"], pol["rejected"]
    return losses.dmpo_loss(c["turns"], ref["chosen"]["turns"], c["turn_mask"], r["turns"],
                            ref["rejected"]["turns"], r["turn_mask"], hp.beta, hp.gamma)


def _diatool(pol, ref, hp):
    c, r = pol["chosen"], pol["rejected"]
    return losses.diatool_dpo_loss(c["turns"], ref["chosen"]["turns"], c["turn_mask"], r["turns"],
                                   ref["rejected"]["turns"], r["turn_mask"], hp.beta, hp.gamma, hp.margin,
                                   use_phi=hp.use_phi, use_psi=hp.use_psi)


register(Objective("sft", NoParams, "sft", _sft, doc="token-mean NLL of the assistant turns"))
register(Objective("dpo", DPOParams, "preference", _dpo_family("sigmoid"), needs_reference=True,
                   doc="DPO (Rafailov et al. 2023, Eq. 7); cDPO with label_smoothing"))
register(Objective("ipo", BetaParams, "preference", _dpo_family("ipo"), needs_reference=True,
                   doc="IPO (Azar et al. 2024, Eq. 17)"))
register(Objective("hinge", BetaParams, "preference", _dpo_family("hinge"), needs_reference=True,
                   doc="SLiC-HF calibration hinge"))
register(Objective("simpo", SimPOParams, "preference", _simpo,
                   doc="SimPO (Meng et al. 2024, Eq. 6; iTool Eq. 10-11), reference-free"))
register(Objective("orpo", ORPOParams, "preference", _orpo, doc="ORPO (Hong et al. 2024, Eq. 6-7)"))
register(Objective("dmpo", DMPOParams, "preference", _dmpo, needs_reference=True, needs_turns=True,
                   doc="DMPO (Shi et al. 2024), per-turn discounted"))
register(Objective("diatool_dpo", DiaToolParams, "preference", _diatool, needs_reference=True, needs_turns=True,
                   doc="DiaTool-DPO (Jung et al. 2025, Eq. 1): turn weights phi, normalisation psi, margin rho"))


def hparam_fields(name: str) -> dict[str, Any]:
    """{field: default} of an objective's hyper-parameters."""
    return {f.name: f.default for f in dataclasses.fields(get(name).hparams)}


def make_hparams(name: str, values: dict[str, Any] | None = None):
    return get(name).hparams(**(values or {}))


__all__ = ["Objective", "REGISTRY", "TABLE", "register", "get", "names", "hparam_fields", "make_hparams",
           "NoParams", "DPOParams", "BetaParams", "SimPOParams", "ORPOParams", "DMPOParams", "DiaToolParams"]


# ---------------------------------------------------------------------------------------------
# online RL (kind "rl"): GRPO and its variants; the RL step (`jaxtool.rl.step`) hands `compute`
#   policy    = {"token_logps", "old_logps", "advantages", "weights", "loss_mask"}   each [B, T]
#   reference = {"token_logps": [B, T]} (None when beta = 0)
# and gets back per-token losses [B, T] and per-token metrics; the batch loss is
# sum(weights * losses) with `weights = losses.grpo_token_weights(mask, aggregation, C)` computed
# over the global batch on the host.
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GRPOParams:
    beta: float = 0.04             # KL weight to the reference (DeepSeekMath §4.2: 0.04); 0 = no reference
    eps_low: float = 0.2           # clip range below 1 (PPO/GRPO epsilon)
    eps_high: float = 0.0          # clip range above 1; 0 = eps_low (symmetric); DAPO clip-higher: 0.28
    aggregation: str = "sequence_mean"  # sequence_mean (GRPO Eq. 3) | token_mean (DAPO Eq. 8) | constant (Dr. GRPO)
    norm_constant: float = 0.0     # aggregation=constant: the divisor C; 0 = the rollout's max_new_tokens
    scale_advantages: bool = True  # divide by the group std (GRPO); false = Dr. GRPO
    std_ddof: int = 1              # group std: 1 sample (TRL, verl), 0 population (the paper does not say)


@dataclasses.dataclass(frozen=True)
class DrGRPOParams(GRPOParams):
    beta: float = 0.0
    aggregation: str = "constant"
    scale_advantages: bool = False


@dataclasses.dataclass(frozen=True)
class DAPOParams(GRPOParams):
    beta: float = 0.0
    eps_high: float = 0.28
    aggregation: str = "token_mean"


def _grpo(pol, ref, hp):
    return losses.grpo_token_loss(pol["token_logps"], pol["old_logps"], pol["advantages"],
                                  None if ref is None else ref["token_logps"], eps_low=hp.eps_low,
                                  eps_high=(hp.eps_high or None), beta=hp.beta)


register(Objective("grpo", GRPOParams, "rl", _grpo, needs_reference=True,
                   doc="GRPO (Shao et al. 2024, DeepSeekMath Eq. 3-4): group-relative advantages, clipped ratio, k3 KL"))
register(Objective("dr_grpo", DrGRPOParams, "rl", _grpo, needs_reference=True,
                   doc="Dr. GRPO (Liu et al. 2025): no |o_i| or std normalisation"))
register(Objective("dapo", DAPOParams, "rl", _grpo, needs_reference=True,
                   doc="DAPO (Yu et al. 2025): token-level loss, clip-higher (eps_high 0.28)"))
__all__ += ["GRPOParams", "DrGRPOParams", "DAPOParams"]
