"""`ItoolConfig`: one YAML recipe for the whole iTool loop (`configs/itool/*.yaml`).

    from jaxtool.config import load_config
    cfg = load_config("configs/itool/smollm2.yaml", ["iterations=2"], cls=ItoolConfig)

Training stages (the three warm-up SFT stages, each iteration's SimPO update) are ordinary
`jaxtool.train.train` runs. Their `TrainConfig` is built from the sections here as `key=value`
overrides (`stage_train_config`), so every `jaxtool train` key stays reachable through a stage's
`extra` list (e.g. `simpo.extra=[optim.grad_accum=4, model.remat=full]`).
"""

from __future__ import annotations

import dataclasses

from jaxtool.config import LoraConfig, MeshConfig, ModelConfig
from jaxtool.errors import ConfigError
from jaxtool.sample.mcts.config import MCTSConfig

WARMUP_MODES = ("run", "mixed", "skip")
SEARCH_MODES = ("mcts", "sample")


@dataclasses.dataclass
class ItoolDataConfig:
    train: tuple[str, ...] = ("bundled",)  # source specs ("xlam:path", a conversations JSONL, "bundled")
    format: str = "pythonic"       # chat format of training, search and evaluation
    max_length: int = 1024         # longest prompt + gold answer (tokens); longer examples are dropped
    limit: int = 0                 # first N conversations of each source (0 = all)
    target: str = "first_call"     # which assistant turn is the gold answer: first_call | last
    guard: str = "bfcl"            # drop queries equal to a BFCL test query: bfcl | none
    guard_data: str = ""           # BFCL data directory ("" = the installed bfcl_eval package)


@dataclasses.dataclass
class CurriculumConfig:
    """Warm-up SFT, easy → medium → hard (§3.1; Table 4: 3 epochs each, lr 5e-5 / 2e-5 / 1e-5, batch 64;
    §4.1 / App. B.1: warm-up ratio 0.1, the warm-up data split 90/10 into train / valid, the checkpoint
    best on valid kept per stage)."""
    lrs: tuple[float, ...] = (5e-5, 2e-5, 1e-5)
    epochs: int = 3
    batch_size: int = 64
    schedule: str = "cosine"
    warmup_ratio: float = 0.1
    valid_fraction: float = 0.1    # held out of each level for validation (0 = none)
    select: str = "best_valid"     # best_valid: the stage's checkpoint with the lowest valid loss | last
    eval_every: int = 0            # steps between valid evaluations (0 = once per epoch)
    mixed_lr: float = 0.0          # warmup: mixed (Fig. 6's baseline, one SFT over all levels): its lr (0 = lrs[0])
    extra: tuple[str, ...] = ()    # further TrainConfig overrides for every stage


@dataclasses.dataclass
class BufferConfig:
    init_fraction: float = 0.5     # random share of the data the buffer starts with
    select_fraction: float = 0.1   # highest-perplexity share searched per iteration
    batch_size: int = 8            # perplexity scoring batch
    length_multiple: int = 64


_SEARCH = MCTSConfig()  # the one set of search defaults (Table 5 + our token budgets)


@dataclasses.dataclass
class MctsConfig:
    """Table 5 of the paper: the recipe's `mcts:` section. Every key but `queries_per_search` and
    `eval_gold` is a `jaxtool.sample.mcts.MCTSConfig` field, with that class's default (one source:
    `search_adapter.mcts_config` copies them by name; the seed is the run's)."""
    depth: int = _SEARCH.depth
    width: int = _SEARCH.width
    simulations: int = _SEARCH.simulations
    simulation_mode: str = _SEARCH.simulation_mode   # steps (the paper's "simulation") | rollouts
    iterations: int = _SEARCH.iterations
    c_puct: float = _SEARCH.c_puct
    temperature: float = _SEARCH.temperature
    discount: float = _SEARCH.discount               # γ of Eq. 8 (value not printed in the paper: 1.0)
    max_step_tokens: int = _SEARCH.max_step_tokens
    max_total_tokens: int = _SEARCH.max_total_tokens
    eval_samples: int = _SEARCH.eval_samples
    eval_weights: tuple[float, ...] = _SEARCH.eval_weights
    eval_normalize: bool = _SEARCH.eval_normalize    # option probabilities renormalised over A-D
    prior: str = _SEARCH.prior                       # p(a|s): exp(mean token log-prob of the step) | "sum"
    eval_gold: bool = True         # Eq. 7 / Table 7: the Eval Prompt carries the ground-truth response
    queries_per_search: int = 4    # queries searched together in one compiled call


@dataclasses.dataclass
class SampleConfig:
    """The "without MCTS" ablation: n samples per query, most vs least likely."""
    n: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    batch_queries: int = 2


@dataclasses.dataclass
class FilterConfig:
    """Appendix B's pair filters."""
    max_similarity: float = 0.95
    min_q_gap: float = 0.1
    min_chosen_q: float = 0.3


@dataclasses.dataclass
class UpdateConfig:
    """The preference update of each iteration: SimPO (Eq. 10–11; β 2.5, γ 0.5, lr 1e-6, 2 epochs, batch 64).
    `loss` may be any registered preference objective (App. B.2 / Fig. 10 compare DPO, IPO, ORPO, ...):
    `beta` / `gamma` are SimPO's (the paper's values); another objective takes its own
    hyper-parameters from `params` ("name=value", fields of its dataclass in `jaxtool.objectives`),
    the others at that objective's defaults."""
    loss: str = "simpo"
    beta: float = 2.5
    gamma: float = 0.5
    params: tuple[str, ...] = ()   # e.g. [beta=0.1] for loss=dpo, [lam=0.1] for loss=orpo
    lr: float = 1e-6
    epochs: int = 2
    batch_size: int = 64
    schedule: str = "cosine"
    warmup_ratio: float = 0.1
    extra: tuple[str, ...] = ()


@dataclasses.dataclass
class ItoolConfig:
    run_dir: str = "runs/itool"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)   # the base (warm-up) or SFT model
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)      # every training stage
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    data: ItoolDataConfig = dataclasses.field(default_factory=ItoolDataConfig)
    warmup: str = "run"            # run: the three-stage SFT first (§3.1) | mixed: one SFT over all levels at once
                                   # (Fig. 6's "mixed SFT" baseline) | skip: model.path is already the SFT model
    curriculum: CurriculumConfig = dataclasses.field(default_factory=CurriculumConfig)
    iterations: int = 3
    buffer: BufferConfig = dataclasses.field(default_factory=BufferConfig)
    search: str = "mcts"           # mcts | sample (the "without MCTS" ablation)
    mcts: MctsConfig = dataclasses.field(default_factory=MctsConfig)
    sample: SampleConfig = dataclasses.field(default_factory=SampleConfig)
    filters: FilterConfig = dataclasses.field(default_factory=FilterConfig)
    pair_layout: str = "step"      # step: §3.2, prompt = query + path, chosen/rejected = the single steps |
                                   # response: the authors' scripts, prefix + step as a whole trained turn
    simpo: UpdateConfig = dataclasses.field(default_factory=UpdateConfig)
    seed: int = 42
    progress: bool = True


# Keys that may change between a run and its resumption: how many iterations, and how things are
# computed (memory, devices, batching of forward passes) — never what a finished stage computed.
RESUMABLE_CHANGES = ("iterations", "progress", "model.remat", "model.attention", "model.logits_chunk",
                     "mesh.data", "mesh.fsdp", "mesh.tensor", "buffer.batch_size")


def validate(cfg: ItoolConfig) -> ItoolConfig:
    if cfg.warmup not in WARMUP_MODES:
        raise ConfigError(f"warmup must be one of {WARMUP_MODES}, got {cfg.warmup!r}")
    from jaxtool.itool.pairs import PAIR_LAYOUTS

    if cfg.pair_layout not in PAIR_LAYOUTS:
        raise ConfigError(f"pair_layout must be one of {PAIR_LAYOUTS}, got {cfg.pair_layout!r}")
    if cfg.search not in SEARCH_MODES:
        raise ConfigError(f"search must be one of {SEARCH_MODES}, got {cfg.search!r}")
    if cfg.iterations < 0:
        raise ConfigError(f"iterations must be ≥ 0, got {cfg.iterations}")
    if len(cfg.curriculum.lrs) != 3:
        raise ConfigError(f"curriculum.lrs needs one learning rate per stage (easy, medium, hard), got "
                          f"{list(cfg.curriculum.lrs)}")
    if not 0.0 <= cfg.curriculum.valid_fraction < 1.0:
        raise ConfigError(f"curriculum.valid_fraction must be in [0, 1), got {cfg.curriculum.valid_fraction}")
    if cfg.curriculum.select not in ("best_valid", "last"):
        raise ConfigError(f"curriculum.select must be best_valid or last, got {cfg.curriculum.select!r}")
    if len(cfg.mcts.eval_weights) != 4:
        raise ConfigError(f"mcts.eval_weights needs 4 weights (options A/B/C/D), got {list(cfg.mcts.eval_weights)}")
    for key, v in (("buffer.init_fraction", cfg.buffer.init_fraction),
                   ("buffer.select_fraction", cfg.buffer.select_fraction)):
        if not 0.0 < v <= 1.0:
            raise ConfigError(f"{key} must be in (0, 1], got {v}")
    if cfg.sample.n < 2:
        raise ConfigError(f"sample.n must be at least 2 (a pair needs two samples), got {cfg.sample.n}")
    if not cfg.data.train:
        raise ConfigError("data.train is empty: give source specs or 'bundled'")
    update_loss_overrides(cfg.simpo)   # the update's objective and its hyper-parameters, checked before any work
    return cfg


def update_loss_overrides(u: UpdateConfig) -> tuple[str, ...]:
    """The `loss.*` overrides of the iteration's update: the objective's type and its own
    hyper-parameters (`UpdateConfig`), checked against the objectives registry."""
    from jaxtool import objectives

    try:
        obj = objectives.get(u.loss)
    except ConfigError as e:
        raise ConfigError(f"simpo.loss: {e}") from None
    if obj.kind != "preference":
        raise ConfigError(f"simpo.loss={u.loss!r} is a {obj.kind} objective; the iteration's update needs a preference "
                          f"one ({', '.join(n for n in objectives.names() if objectives.get(n).kind == 'preference')})")
    fields = objectives.hparam_fields(u.loss)
    values: dict[str, str] = {}
    if u.loss == "simpo":
        values = {"beta": str(u.beta), "gamma": str(u.gamma)}
    else:
        default = UpdateConfig()
        changed = [k for k in ("beta", "gamma") if getattr(u, k) != getattr(default, k)]
        if changed:
            raise ConfigError(f"simpo.{changed[0]} is SimPO's; with simpo.loss={u.loss} give that objective's own "
                              f"hyper-parameters as simpo.params=[name=value] (its keys: {', '.join(fields) or 'none'})")
    for item in u.params:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep or name not in fields:
            raise ConfigError(f"simpo.params: {item!r} is not name=value with a hyper-parameter of loss.type={u.loss!r} "
                              f"(its keys: {', '.join(fields) or 'none'})")
        values[name] = value.strip()
    return (f"loss.type={u.loss}", *(f"loss.{k}={v}" for k, v in values.items()))


def _flat(section, prefix: str) -> list[str]:
    out = []
    for f in dataclasses.fields(section):
        v = getattr(section, f.name)
        if isinstance(v, tuple):
            v = "[" + ",".join(str(x) for x in v) + "]"
        out.append(f"{prefix}{f.name}={v}")
    return out


def stage_train_config(cfg: ItoolConfig, *, model_path: str, train: str, run_dir: str, kind: str,
                       lr: float, epochs: int, batch_size: int, schedule: str, warmup_ratio: float,
                       extra=(), loss=(), max_length: int | None = None):
    """The `TrainConfig` of one training stage (through `load_config`, so its checks apply)."""
    from jaxtool.config import load_config

    overrides = _flat(cfg.model, "model.") + _flat(cfg.lora, "lora.") + _flat(cfg.mesh, "mesh.")
    overrides += [f"model.path={model_path}", f"data.kind={kind}", f"data.train={train}",
                  f"data.format={cfg.data.format}", f"data.max_length={max_length or cfg.data.max_length}",
                  "data.on_bad_row=skip", f"optim.lr={lr}", f"optim.schedule={schedule}",
                  f"optim.warmup_ratio={warmup_ratio}", f"epochs={epochs}", f"batch_size={batch_size}",
                  f"run_dir={run_dir}", "export_hf=true", f"seed={cfg.seed}", f"progress={cfg.progress}"]
    overrides += list(loss) + list(extra)
    return load_config(None, overrides)
