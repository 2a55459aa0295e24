"""Does DiaTool-DPO help on services the model never saw? The paper's Table 3 arms on SGD.

Jung et al. 2025 (DiaTool-DPO, arXiv 2504.02882), Table 3: trajectory DPO with turn weights φ,
normalisation ψ and margin ρ lifts slot filling and relevance over SFT-only, while "SFT with
preferred responses" trades call accuracy away. This experiment tests that claim on dialogues of
services held out from training:

  data   Type 1 seeds from SGD (`sgd_seeds`: 1,853 seed episodes of 2,044 SGD train dialogues),
         split **by service** (no held-out service's tools, slots or dialogues in training);
         trajectory pairs of every Table 1 kind (Easy + Hard) from the rules augmenter
  (a) sft          SFT on Type 1 seeds of the training services — the start of every other arm
  (b) sft_chosen   (a) + SFT on the chosen trajectories of the same pairs the DPO arms use
  (c) dpo          (a) + plain DPO on those pairs (sequence log-probs, β as (d))
  (d) diatool      (a) + DiaTool-DPO (β 0.5, γ 0.5, ρ 2.0)
  (e) no_psi / no_rho / no_psi_rho   Table 3's ablations of (d): "w/o ψ" (ψ = 1), "w/o ρ" (ρ = 0) and
         "w/o {ψ, ρ}" (φ on, ψ = 1, ρ = 0)
  (x) no_phi   (d) without turn weights (φ = 1): an extra arm, not a row of Table 3
  eval   every arm (and the base model) on the same held-out dialogue flows: teacher-forced
         assistant turns of the held-out seeds' chosen trajectories (`jaxtool.eval.dialog`:
         call / slot / relevance / completion, micro and macro), with cluster-bootstrap 95%
         intervals over held-out dialogues and paired differences against (a) and (c) (`stats`)

Outputs under ``out``: ``data/`` (every set used, with counts), ``arms/<arm>/`` (training run, HF
export, per-turn predictions, summary), ``results.md`` / ``results.json`` / ``results.png``.
A rerun with the same ``out`` reuses arms whose results exist for the same settings.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import json
import os
import random
import time
from collections.abc import Sequence

from jaxtool.config import TrainConfig, to_dict, train_config
from jaxtool.errors import ConfigError

ARMS = ("sft", "sft_chosen", "dpo", "diatool", "no_psi", "no_rho", "no_psi_rho", "no_phi")
# The DiaTool-DPO loss changes of each ablation arm (Table 3: w/o ψ, w/o ρ, w/o {ψ, ρ}; w/o φ is an extra).
ABLATIONS = {
    "no_psi": {"use_psi": False},
    "no_rho": {"margin": 0.0},
    "no_psi_rho": {"use_psi": False, "margin": 0.0},
    "no_phi": {"use_phi": False},
}
ARM_LABELS = {
    "base": "base model", "sft": "(a) SFT-only", "sft_chosen": "(b) SFT on chosen", "dpo": "(c) plain DPO",
    "diatool": "(d) DiaTool-DPO", "no_psi": "(e) DiaTool-DPO w/o ψ", "no_rho": "(e) DiaTool-DPO w/o ρ",
    "no_psi_rho": "(e) DiaTool-DPO w/o {ψ, ρ}", "no_phi": "(x) DiaTool-DPO w/o φ (extra, not Table 3)",
}
DEFAULT_HELDOUT = ("Banks_1", "Homes_1", "Hotels_2", "RentalCars_1", "RentalCars_2")


@dataclasses.dataclass
class Size:
    """How big one run is. The recipe has two: ``cpu`` and ``accelerator``."""

    arms: tuple[str, ...] = ("sft", "sft_chosen", "dpo", "diatool")
    eval_base: bool = True          # also evaluate the untrained model
    sft_seeds: int = 64             # Type 1 seed dialogues for (a)
    pairs: int = 40                 # trajectory pairs for (b)-(e), round-robin over the Table 1 kinds
    heldout_per_service: int = 4    # held-out seeds evaluated per held-out service
    heldout_pairs: int = 16         # held-out pairs whose reward margin the preference arms report (0 = none)
    max_length: int = 1536
    eval_max_new_tokens: int = 80
    eval_batch_size: int = 16
    sft_epochs: int = 1
    pref_epochs: int = 1
    lora: bool = True               # LoRA (rank 16) or full fine-tuning for every arm
    compute_dtype: str = "float32"  # bfloat16 on accelerators


@dataclasses.dataclass
class ExperimentConfig:
    out: str = "runs/experiment_diatool"
    model: str = "smollm2"          # jaxtool.load_model spec: the embedded SmolLM2-135M-Instruct
    format: str = "hermes"
    seeds: str = ""                 # "" = bundled SGD seeds; or an SGD split directory, or a seeds .jsonl[.gz]
    heldout_services: tuple[str, ...] = DEFAULT_HELDOUT
    max_results: int = 3            # SGD service results kept in a seed's tool message
    size: str = "cpu"               # which of `cpu` / `accelerator` to run
    # what the arms are scored on: "heldout" = seeds of the held-out services (the experiment's result);
    # "validation" = seeds of the *training* services kept out of every training set (as many as the
    # held-out sample, round-robin over the training services) — choose learning rate / β / epochs
    # here, never on the held-out services; the held-out services are then not touched at all
    eval_on: str = "heldout"
    seed: int = 0
    n_boot: int = 2000
    cpu: Size = dataclasses.field(default_factory=Size)
    accelerator: Size = dataclasses.field(default_factory=lambda: Size(
        arms=ARMS, sft_seeds=512, pairs=768, heldout_per_service=24, heldout_pairs=128, max_length=1536,
        eval_max_new_tokens=128, eval_batch_size=64, sft_epochs=2, pref_epochs=1, lora=False,
        compute_dtype="bfloat16"))
    sft: TrainConfig = dataclasses.field(default_factory=lambda: train_config(
        lora=dict(enabled=True, rank=16, alpha=32.0), optim=dict(lr=1e-3, schedule="linear", warmup_steps=2),
        loss=dict(type="sft"), batch_size=4))
    sft_chosen: TrainConfig = dataclasses.field(default_factory=lambda: train_config(
        lora=dict(enabled=True, rank=16, alpha=32.0), optim=dict(lr=1e-3, schedule="linear", warmup_steps=2),
        loss=dict(type="sft"), batch_size=4))
    dpo: TrainConfig = dataclasses.field(default_factory=lambda: train_config(
        lora=dict(enabled=True, rank=16, alpha=32.0),
        optim=dict(lr=1e-3, schedule="linear", warmup_steps=2, grad_accum=4),
        loss=dict(type="dpo", beta=0.5), batch_size=4))
    diatool: TrainConfig = dataclasses.field(default_factory=lambda: train_config(
        lora=dict(enabled=True, rank=16, alpha=32.0),
        optim=dict(lr=1e-3, schedule="linear", warmup_steps=2, grad_accum=4),
        loss=dict(type="diatool_dpo", beta=0.5, gamma=0.5, margin=2.0), batch_size=4))

    @property
    def run_size(self) -> Size:
        if self.size not in ("cpu", "accelerator"):
            raise ConfigError(f"size must be 'cpu' or 'accelerator', got {self.size!r}")
        return getattr(self, self.size)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

def load_seed_dialogues(spec: str, max_results: int):
    from jaxtool.experiment import sgd_seeds

    if not spec:
        return sgd_seeds.read_seed_dialogues(sgd_seeds.bundled_path()), "bundled SGD seeds"
    if os.path.isdir(spec):
        ex = sgd_seeds.from_sgd(spec, max_results)
        return ex.dialogues, f"SGD {spec}: {ex.to_dict()}"
    return sgd_seeds.read_seed_dialogues(spec), spec


def _round_robin(items_by_key: dict, n: int) -> list:
    out, keys = [], sorted(items_by_key)
    while len(out) < n and any(items_by_key[k] for k in keys):
        for k in keys:
            if items_by_key[k] and len(out) < n:
                out.append(items_by_key[k].pop())
    return out


def _data_key(ec: ExperimentConfig) -> str:
    """What `prepare_data`'s output depends on: the seed source (content for a file, sizes and mtimes
    for an SGD directory), the settings it reads, and jaxtool's own source (a changed builder rebuilds)."""
    from jaxtool.experiment import sgd_seeds
    from jaxtool.hashing import file_sha256, tree_stat

    sz = ec.run_size
    src = ec.seeds or sgd_seeds.bundled_path()
    seeds = tree_stat(src) if os.path.isdir(src) else file_sha256(src)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = hashlib.sha256()
    for d, _, fs in sorted(os.walk(pkg)):
        for f in sorted(fs):
            if f.endswith(".py"):
                with open(os.path.join(d, f), "rb") as fh:
                    code.update(f.encode() + fh.read())
    return _fingerprint({"seeds": seeds, "max_results": ec.max_results, "heldout": list(ec.heldout_services),
                         "seed": ec.seed, "eval_on": ec.eval_on, "heldout_per_service": sz.heldout_per_service,
                         "sft_seeds": sz.sft_seeds, "pairs": sz.pairs, "heldout_pairs": sz.heldout_pairs,
                         "code": code.hexdigest()})


def prepare_data(ec: ExperimentConfig, data_dir: str) -> dict:
    """Seeds -> split by service -> pairs -> the (a)/(b)/(c-e) training sets and the held-out flows.
    A rerun with the same inputs (`_data_key`) whose files are all there reads ``data.json`` instead."""
    key = _data_key(ec)
    prev = _read_json(os.path.join(data_dir, "data.json"))
    if prev and prev.get("key") == key and all(os.path.isfile(p) for p in prev["paths"].values()):
        return prev
    info = {**_build_data(ec, data_dir), "key": key}
    with open(os.path.join(data_dir, "data.json"), "w") as fh:
        json.dump(info, fh, indent=2)
    return json.loads(json.dumps(info))     # as a rerun reads it back (JSON object keys are strings)


def _build_data(ec: ExperimentConfig, data_dir: str) -> dict:
    from jaxtool.diatool import RulesAugmenter, build, collect_seeds
    from jaxtool.experiment import sgd_seeds

    sz = ec.run_size
    os.makedirs(data_dir, exist_ok=True)
    dialogues, origin = load_seed_dialogues(ec.seeds, ec.max_results)
    train_d, held_d, mixed = sgd_seeds.split_by_service(dialogues, ec.heldout_services)
    train_seeds, train_rep = collect_seeds([(c.meta["id"], c) for c in train_d])
    held_seeds, held_rep = collect_seeds([(c.meta["id"], c) for c in held_d])
    rng = random.Random(ec.seed)
    # held-out sample: the same number of seeds from each held-out service
    by_svc: dict[str, list] = collections.defaultdict(list)
    for s in held_seeds:
        by_svc[s.source_meta.get("call_service")].append(s)
    held_sample = []
    for svc in sorted(by_svc):
        pool = sorted(by_svc[svc], key=lambda s: s.id)
        held_sample += rng.sample(pool, min(sz.heldout_per_service, len(pool)))
    train_pool = sorted(train_seeds, key=lambda s: s.id)
    rng.shuffle(train_pool)
    if ec.eval_on == "validation":
        # validation seeds of the training services, round-robin over them, out of every training set
        n_val = len(held_sample)
        by_tsvc: dict[str, list] = collections.defaultdict(list)
        for s in train_pool:
            by_tsvc[s.source_meta.get("call_service")].append(s)
        held_sample = _round_robin(by_tsvc, n_val)
        val_ids = {s.id for s in held_sample}
        train_pool = [s for s in train_pool if s.id not in val_ids]
        held_d = [c for c in train_d if c.meta["id"] in val_ids]
    elif ec.eval_on != "heldout":
        raise ConfigError(f"eval_on must be 'heldout' or 'validation', got {ec.eval_on!r}")
    split = {s.id: "train" for s in train_pool}
    split.update({s.id: "valid" for s in held_sample})
    pairs_dir = os.path.join(data_dir, "pairs")
    stats = build(train_pool + held_sample, RulesAugmenter(seed=ec.seed), pairs_dir, subset="all",
                  rng_seed=ec.seed, split=split)
    train_pairs = _read_jsonl(os.path.join(pairs_dir, "train.jsonl"))
    held_pairs = _read_jsonl(os.path.join(pairs_dir, "valid.jsonl"))
    # (a): Type 1 seed dialogues, spread over the training services
    by_train_svc: dict[str, list] = collections.defaultdict(list)
    for s in train_pool:
        by_train_svc[s.source_meta.get("call_service")].append(s)
    sft_seeds = _round_robin(by_train_svc, sz.sft_seeds)
    sft_ids = {s.id for s in sft_seeds}
    sft_rows = [c for c in train_d if c.meta["id"] in sft_ids]
    # (b)-(e): pairs round-robin over the Table 1 kinds
    by_kind: dict[str, list] = collections.defaultdict(list)
    for p in train_pairs:
        by_kind[p["kind"]].append(p)
    for k in sorted(by_kind):
        rng.shuffle(by_kind[k])
    pairs = _round_robin(by_kind, sz.pairs)
    rng.shuffle(pairs)
    hp_by_kind: dict[str, list] = collections.defaultdict(list)
    for p in held_pairs:
        hp_by_kind[p["kind"]].append(p)
    held_pairs_used = _round_robin(hp_by_kind, sz.heldout_pairs)
    paths = {k: os.path.join(data_dir, f"{k}.jsonl") for k in ("sft", "sft_chosen", "pairs", "heldout_pairs",
                                                                 "heldout_sft")}
    held_ids = {s.id for s in held_sample}
    for key, convs in (("sft", sft_rows), ("heldout_sft", [c for c in held_d if c.meta["id"] in held_ids])):
        with open(paths[key], "w", encoding="utf-8") as fh:
            for c in convs:
                fh.write(c.to_json() + "\n")
    with open(paths["sft_chosen"], "w", encoding="utf-8") as fh:
        for p in pairs:
            side = p["chosen"] if isinstance(p["chosen"], dict) else json.loads(p["chosen"])
            fh.write(json.dumps({**side, "meta": {"id": f"{p['seed_id']}:{p['kind']}"}}, ensure_ascii=False) + "\n")
    for key, rows in (("pairs", pairs), ("heldout_pairs", held_pairs_used)):
        with open(paths[key], "w", encoding="utf-8") as fh:
            for p in rows:
                fh.write(json.dumps(p, ensure_ascii=False) + "\n")
    # The scored flows: every chosen trajectory of the held-out (validation) seeds, Type 3's decline
    # included for Easy fills too. §4.3 keeps Type 3 out of the Easy *pairs* (training data); without the
    # Easy decline flows, only seeds with a Hard fill would have a decline turn to judge (1 of 20 at the
    # CPU size). Pairs and training sets above are unchanged.
    flows_dir = os.path.join(data_dir, "flows")
    build(held_sample, RulesAugmenter(seed=ec.seed), flows_dir, subset="all", rng_seed=ec.seed,
          split={s.id: "valid" for s in held_sample}, type3_easy=True)
    flows_path = os.path.join(flows_dir, "valid_flows.jsonl")
    flows = _read_jsonl(flows_path)
    train_services = sorted({s for c in train_d for s in c.meta["services"]})
    leak = _leaks(train_services, ec.heldout_services, sft_rows)
    if leak:
        raise AssertionError(f"held-out service material in training data: {leak}")
    info = {
        "seed_source": origin, "eval_on": ec.eval_on, "heldout_services": list(ec.heldout_services),
        "train_services": train_services,
        "seed_dialogues": len(dialogues), "train_dialogues": len(train_d), "heldout_dialogues": len(held_d),
        "mixed_dropped": mixed, "train_seeds": train_rep.kept, "heldout_seeds": held_rep.kept,
        "heldout_sample": len(held_sample),
        "heldout_sample_by_service": dict(collections.Counter(s.source_meta.get("call_service") for s in held_sample)),
        "pairs_built_train": len(train_pairs), "pairs_built_heldout": len(held_pairs),
        "sft_rows": len(sft_rows), "sft_by_service": dict(collections.Counter(c.meta["call_service"] for c in sft_rows)),
        "pairs_used": len(pairs), "pairs_by_kind": dict(sorted(collections.Counter(p["kind"] for p in pairs).items())),
        "heldout_pairs_used": len(held_pairs_used), "heldout_flows": len(flows),
        "heldout_flows_by_type": dict(collections.Counter(f["meta"]["type"] for f in flows)),
        "augmentation": {d: dict(v) for d, v in stats.augmentation.items()},
        "paths": {**paths, "heldout_flows": flows_path},
    }
    return info


def _leaks(train_services, heldout, sft_rows) -> list[str]:
    """Held-out services or their tools anywhere in the training sets (must be empty)."""
    held = set(heldout)
    bad = sorted(held & set(train_services))
    for c in sft_rows:
        if set(c.meta["services"]) & held:
            bad.append(f"sft row {c.meta['id']}")
    return bad


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(ln) for ln in fh if ln.strip()]


# --------------------------------------------------------------------------------------------
# arms
# --------------------------------------------------------------------------------------------

def arm_plan(ec: ExperimentConfig) -> dict[str, tuple[str, TrainConfig, str]]:
    """``{arm: (data kind, TrainConfig template, data key)}`` for the arms of the run size."""
    plan = {"sft": ("sft", ec.sft, "sft"), "sft_chosen": ("sft", ec.sft_chosen, "sft_chosen"),
            "dpo": ("preference", ec.dpo, "pairs"), "diatool": ("preference", ec.diatool, "pairs")}
    for name, change in ABLATIONS.items():
        c = copy.deepcopy(ec.diatool)
        c.loss.params = dataclasses.replace(c.loss.params, **change)
        plan[name] = ("preference", c, "pairs")
    unknown = [a for a in ec.run_size.arms if a not in plan]
    if unknown:
        raise ConfigError(f"{ec.size}.arms: unknown arm(s) {unknown}; the arms are {list(plan)}")
    if ec.run_size.arms and ec.run_size.arms[0] != "sft":
        raise ConfigError(f"{ec.size}.arms must start with 'sft' (every other arm starts from the SFT-only model)")
    return {a: plan[a] for a in ec.run_size.arms}


def arm_config(ec: ExperimentConfig, arm: str, kind: str, template: TrainConfig, train: str, valid: str,
               model_path: str, progress: bool) -> TrainConfig:
    sz = ec.run_size
    c = copy.deepcopy(template)
    c.model.path = model_path
    c.model.compute_dtype = sz.compute_dtype
    c.lora = dataclasses.replace(c.lora, enabled=sz.lora)
    c.data.kind, c.data.format, c.data.max_length = kind, ec.format, sz.max_length
    c.data.train = train
    c.data.valid = valid
    c.data.bucket_multiple = 256
    c.data.on_bad_row = "error"
    c.epochs = sz.sft_epochs if kind == "sft" else sz.pref_epochs
    c.run_dir, c.export_hf, c.progress, c.seed = os.path.join(ec.out, "arms", arm, "train"), True, progress, ec.seed
    if not sz.lora and c.optim.lr > 1e-4:  # full fine-tuning: LoRA's learning rates would wreck the model
        c.optim = dataclasses.replace(c.optim, lr=c.optim.lr / 20)
    return c


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def evaluate(model_dir: str, flows_path: str, ec: ExperimentConfig, out_dir: str, progress: bool) -> dict:
    from jaxtool.data.formats import get_format
    from jaxtool.data.schema import Conversation
    from jaxtool.eval.dialog import evaluate_dialogs
    from jaxtool.sample.jax_backend import JaxBackend

    sz = ec.run_size
    backend = JaxBackend.load(model_dir, batch_size=sz.eval_batch_size)
    fmt = get_format(ec.format, tokenizer=backend.tokenizer)
    convs = [Conversation.from_dict(r) for r in _read_jsonl(flows_path)]
    res = evaluate_dialogs(convs, backend, fmt, batch_size=sz.eval_batch_size, max_new_tokens=sz.eval_max_new_tokens,
                           progress=progress)
    # the first decision, teacher-forced: P(the reply opens a tool call) on the same turns
    from jaxtool.eval.first_decision import first_decisions

    for r, d in zip(res.records, first_decisions(convs, backend.model, fmt, batch_size=4), strict=True):
        if (r["conv"], r["turn"]) != (d["conv"], d["turn"]):
            raise AssertionError("first-decision turns out of step with the evaluated turns")
        r["p_call"] = d["p_call"]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "turns.jsonl"), "w", encoding="utf-8") as fh:
        for r in res.records:
            fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    return {"summary": res.summary, "records": res.records}


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------

def run(ec: ExperimentConfig, progress: bool = True, log=print, report_only: bool = False) -> dict:
    """Run the experiment end to end (module docstring); returns the results dict (also written).
    `report_only`: train and evaluate nothing; write the report from the arms already finished in
    ``out`` as they were saved (an arm without both results is left out and named)."""
    from jaxtool.api import load_model
    from jaxtool.train.trainer import Trainer

    sz = ec.run_size
    plan = arm_plan(ec)
    if report_only:
        return _report_saved(ec, plan, log)
    t_all = time.time()
    os.makedirs(ec.out, exist_ok=True)
    timings: dict[str, float] = {}

    t = time.time()
    base_dir = os.path.join(ec.out, "base_hf")
    if not os.path.isfile(os.path.join(base_dir, "config.json")):
        log(f"== base model: {ec.model} ==")
        m = load_model(ec.model)
        m.save_hf(base_dir, dtype="float32")
        del m
    timings["base model"] = time.time() - t

    t = time.time()
    log("== data: SGD seeds -> split by service -> pairs ==")
    data = prepare_data(ec, os.path.join(ec.out, "data"))
    log(f"{data['seed_dialogues']} seed dialogues; held-out services {data['heldout_services']}: "
        f"{data['heldout_sample']} seeds evaluated ({data['heldout_flows']} flows); training services: "
        f"{len(data['train_services'])}, SFT on {data['sft_rows']} seeds, {data['pairs_used']} pairs of "
        f"{len(data['pairs_by_kind'])} kinds; {data['mixed_dropped']} mixed-service dialogues dropped")
    timings["data"] = time.time() - t
    flows = data["paths"]["heldout_flows"]
    # held-out sets scored at the end of training: Type 1 seeds of the held-out services (SFT loss) and
    # held-out pairs (the preference loss, reward margin and accuracy)
    valid = {"sft": f"conversations:{data['paths']['heldout_sft']}",
             "preference": f"diatool:{data['paths']['heldout_pairs']}" if data["heldout_pairs_used"] else ""}

    evals: dict[str, dict] = {}
    trained: dict[str, dict] = {}
    if sz.eval_base:
        evals["base"] = _cached_eval("base", base_dir, flows, ec, progress, log, timings, {"model": ec.model})
    # training order: (a) first (every other arm starts from it), then the SFT arms, then the preference
    # arms whose objective needs per-turn reference sums (DiaTool-DPO, its ablations) before plain DPO,
    # so the reference column is computed once and shared (`_share_reference`, `reference.cache_serves`)
    order = sorted(plan, key=lambda a: (a != "sft", plan[a][0] == "preference",
                                        plan[a][0] == "preference" and not plan[a][1].loss.objective.needs_turns))
    for arm in order:
        kind, template, data_key = plan[arm]
        start = base_dir if arm == "sft" else trained["sft"]["hf_dir"]
        train_spec = (f"conversations:{data['paths'][data_key]}" if kind == "sft"
                      else f"diatool:{data['paths'][data_key]}")
        cfg = arm_config(ec, arm, kind, template, train_spec, valid[kind], start, progress)
        # the start model by content: every arm but (a) starts from (a), whose fingerprint covers its own settings
        key = {"config": to_dict(cfg), "data": data["pairs_by_kind"], "data_files": _file_hashes(data, data_key),
               "start": start if arm == "sft" else trained["sft"]["key"]}
        done_path = os.path.join(ec.out, "arms", arm, "train_result.json")
        prev = _read_json(done_path)
        if prev and prev.get("key") == _fingerprint(key) and os.path.isdir(prev.get("hf_dir") or ""):
            log(f"== {ARM_LABELS[arm]}: reusing {prev['hf_dir']} ==")
            trained[arm] = prev
        else:
            log(f"== train {ARM_LABELS[arm]} ==")
            t = time.time()
            resume = _resumable(cfg.run_dir, _fingerprint(key), log, start=key["start"] if arm != "sft" else None)
            if kind == "preference":
                _share_reference(cfg.run_dir, [os.path.join(ec.out, "arms", a, "train") for a in trained
                                               if plan[a][0] == "preference"], log)
            r = Trainer(cfg).run(resume=resume)
            if r.status != "finished":
                raise RuntimeError(f"arm {arm} stopped at step {r.steps} ({r.status})")
            trained[arm] = {"key": _fingerprint(key), "hf_dir": r.hf_dir, "steps": r.steps, "wall_s": r.wall_s,
                            "tokens_per_s": r.tokens_per_s, "last": r.last_metrics, "heldout": r.eval_metrics}
            timings[f"train {arm}"] = time.time() - t
            with open(done_path, "w") as fh:
                json.dump(trained[arm], fh, indent=2, default=float)
        evals[arm] = _cached_eval(arm, trained[arm]["hf_dir"], flows, ec, progress, log, timings,
                                  {"train": trained[arm]["key"]})
    evals = {a: evals[a] for a in ["base", *plan] if a in evals}   # the report lists arms in the recipe's order
    results = report(ec, data, evals, trained, timings, time.time() - t_all)
    return results


def _report_saved(ec: ExperimentConfig, plan: dict, log) -> dict:
    data = _read_json(os.path.join(ec.out, "data", "data.json"))
    if data is None:
        raise ConfigError(f"{ec.out}: no data/data.json — nothing has run in this directory yet")
    evals, trained = {}, {}
    for arm in (["base"] if ec.run_size.eval_base else []) + list(plan):
        t = _read_json(os.path.join(ec.out, "arms", arm, "train_result.json")) if arm != "base" else {}
        e = _read_json(os.path.join(ec.out, "arms", arm, "eval", "eval.json"))
        if t is None or e is None:
            log(f"{ARM_LABELS[arm]}: not finished in {ec.out}; left out of the report")
            continue
        evals[arm] = e
        if arm != "base":
            trained[arm] = t
    if "sft" not in evals:
        raise ConfigError(f"{ec.out}: the SFT-only arm has not finished; there is nothing to compare")
    return report(ec, data, evals, trained, {}, 0.0)


def _resumable(run_dir: str, key: str, log, start: str | None = None) -> bool:
    """An unfinished run of this arm: resume it when it was started with the same settings (its
    ``started.json`` holds the same key), else remove it (it belongs to other settings) — all but its
    precomputed reference log-probs when it started from the same model (`start`: the start model's
    fingerprint): they depend on the start model and the pairs, not on lr or β, so a sweep in one
    ``out`` computes them once (the trainer still checks the pairs' fingerprint before use)."""
    import shutil

    marker = os.path.join(run_dir, "started.json")
    prev = _read_json(marker)
    if os.path.isdir(run_dir) and prev and prev.get("key") == key:
        log(f"resuming the unfinished run in {run_dir}")
        return True
    kept = {}
    same_start = start is not None and prev is not None and prev.get("start") == start
    if os.path.isdir(run_dir):
        log(f"removing {run_dir}: a run with other settings")
        for name in ("reference.npz", "reference_valid.npz") if same_start else ():
            if os.path.isfile(os.path.join(run_dir, name)):
                with open(os.path.join(run_dir, name), "rb") as fh:
                    kept[name] = fh.read()
        shutil.rmtree(run_dir)
    os.makedirs(run_dir)
    for name, blob in kept.items():
        with open(os.path.join(run_dir, name), "wb") as fh:
            fh.write(blob)
        log(f"kept {name} of the removed run (used if its fingerprint matches)")
    with open(marker, "w") as fh:
        json.dump({"key": key, "start": start}, fh)
    return False


def _file_hashes(data: dict, data_key: str) -> dict:
    out = {}
    for k in (data_key, "heldout_pairs", "heldout_sft"):
        with open(data["paths"][k], "rb") as fh:
            out[k] = hashlib.sha256(fh.read()).hexdigest()[:16]
    return out


def _share_reference(run_dir: str, done_dirs: list[str], log) -> None:
    """Copy precomputed reference log-probs of an arm already trained from the same model on the same
    pairs (the (e) ablations share (d)'s) into `run_dir`. The trainer checks the cache's fingerprint
    (data, model, turn count) and recomputes it when it does not match, so a copy is never trusted
    blindly."""
    import shutil

    for name in ("reference.npz", "reference_valid.npz"):
        dst = os.path.join(run_dir, name)
        src = next((os.path.join(d, name) for d in done_dirs if os.path.isfile(os.path.join(d, name))), None)
        if src and not os.path.exists(dst):
            shutil.copyfile(src, dst)
            log(f"reference log-probs: starting from {src} (used if its fingerprint matches)")


def _read_json(path: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None


def _cached_eval(arm, model_dir, flows, ec, progress, log, timings, key) -> dict:
    sz = ec.run_size
    out_dir = os.path.join(ec.out, "arms", arm, "eval")
    key = _fingerprint({**key, "flows": os.path.getsize(flows), "tokens": sz.eval_max_new_tokens, "fmt": ec.format,
                        "first_decision": 1})
    prev = _read_json(os.path.join(out_dir, "eval.json"))
    if prev and prev.get("key") == key:
        log(f"== {ARM_LABELS[arm]}: reusing its evaluation ==")
        return prev
    log(f"== evaluate {ARM_LABELS[arm]} on the {_scored(ec)} flows ==")
    t = time.time()
    res = {"key": key, **evaluate(model_dir, flows, ec, out_dir, progress)}
    timings[f"eval {arm}"] = res["eval_s"] = time.time() - t
    with open(os.path.join(out_dir, "eval.json"), "w") as fh:
        json.dump(res, fh, default=str)
    return res


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

ROW_LABELS = {"call": "call the tool", "slot": "ask for a missing slot", "relevance": "decline (no tool fits)",
              "completion": "answer from the tool result", "micro": "micro avg (turns)", "macro": "macro avg (types)"}


def _fmt(v: dict) -> str:
    return f"{v['value']:.3f} [{v['lo']:.2f}, {v['hi']:.2f}]"


def report(ec: ExperimentConfig, data: dict, evals: dict, trained: dict, timings: dict, total_s: float) -> dict:
    from jaxtool.eval.report import markdown_table
    from jaxtool.experiment import stats

    flows = _read_jsonl(data["paths"]["heldout_flows"])
    unit_of = {i: f["meta"]["seed_id"] for i, f in enumerate(flows)}
    units = sorted(set(unit_of.values()))
    counts = {a: stats.counts(e["records"], unit_of, units) for a, e in evals.items()}
    baselines = [b for b in ("sft", "dpo") if b in counts]
    st = stats.summarize_arms(counts, n_boot=ec.n_boot, seed=ec.seed, baselines=baselines)
    n_by_type = {t: int(counts[next(iter(counts))][:, i, 1].sum()) for i, t in enumerate(stats.TYPES)}
    where = _scored(ec)
    header = [f"{where} turns"] + [ARM_LABELS[a] for a in evals]
    rows = []
    for m in stats.METRICS:
        if m in n_by_type and not n_by_type[m]:
            continue
        label = f"{ROW_LABELS[m]} (n={n_by_type[m]})" if m in n_by_type else ROW_LABELS[m]
        rows.append([label] + [_fmt(st["arms"][a][m]) for a in evals])
    diff_header = ["difference (paired bootstrap)"] + [ROW_LABELS[m].split(" (")[0] for m in stats.METRICS]
    diff_rows = [[k] + [_fmt(v[m]) for m in stats.METRICS] for k, v in st["differences"].items()]
    fd_md, fd_st = _first_decision_table(evals, unit_of, units, ec)
    train_header = ["arm", "steps", "train wall s", "eval wall s", "last train loss", "last reward margin",
                    f"{where} loss", f"{where} pair margin", f"{where} pair accuracy"]
    train_rows = []
    for a, r in trained.items():
        h = r.get("heldout") or {}
        train_rows.append([ARM_LABELS[a], r["steps"], round(r["wall_s"], 1),
                           round(evals[a].get("eval_s", float("nan")), 1), r["last"].get("loss", float("nan")),
                           r["last"].get("reward_margin", float("nan")), h.get("loss", float("nan")),
                           h.get("reward_margin", float("nan")), h.get("accuracy", float("nan"))])
    sz = ec.run_size
    scored = (f"Held-out services: {', '.join(data['heldout_services'])} —" if ec.eval_on == "heldout" else
              f"**Validation** seeds of the training services, kept out of every training set (the held-out "
              f"services {', '.join(data['heldout_services'])} are not read):")
    md = [f"# DiaTool-DPO on {'held-out SGD services' if ec.eval_on == 'heldout' else 'validation dialogues'} "
          f"({ec.size} size)", "",
          f"{scored} {data['heldout_sample']} seed dialogues, "
          f"{data['heldout_flows']} flows, {sum(n_by_type.values())} assistant turns; training: "
          f"{len(data['train_services'])} services, SFT-only on {data['sft_rows']} Type 1 seeds, "
          f"{data['pairs_used']} pairs ({', '.join(f'{k} {v}' for k, v in data['pairs_by_kind'].items())}). "
          f"Model {ec.model}, {'LoRA r16' if sz.lora else 'full fine-tuning'}, {sz.compute_dtype}.", "",
          f"Pass rate per turn type with the 95% cluster-bootstrap interval over {where} dialogues "
          f"({st['n_units']} dialogues, {st['n_boot']} draws):", "", markdown_table(header, rows), "",
          "Paired differences (same bootstrap draws for both arms; an interval that excludes 0 is a difference "
          "at the 95% level):", "", markdown_table(diff_header, diff_rows), "", *fd_md,
          markdown_table(train_header, train_rows),
          "", f"{where.capitalize()} loss: SFT arms, the NLL of the {where} Type 1 seed dialogues; preference "
          f"arms, their own loss on {where} pairs (plain DPO and DiaTool-DPO losses are not on one scale).", "",
          ("time of this invocation (arms reused from an earlier one are not in it): "
           + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + f"; total {total_s:.0f}s") if timings
          else "(written from the saved arms: nothing trained or evaluated in this invocation)", ""]
    results = {"config": to_dict(ec), "data": data, "stats": st, "n_turns_by_type": n_by_type,
               "first_decision": fd_st,
               "summaries": {a: e["summary"] for a, e in evals.items()},
               "training": trained, "timings_s": timings, "total_s": total_s}
    with open(os.path.join(ec.out, "results.md"), "w") as fh:
        fh.write("\n".join(md))
    with open(os.path.join(ec.out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=2, default=float)
    chart(st, list(evals), os.path.join(ec.out, "results.png"), n_by_type, where)
    print("\n".join(md))
    return results


def _scored(ec: ExperimentConfig) -> str:
    """What the report's numbers are scored on: the held-out services' turns, or validation turns of the
    training services (``eval_on=validation``, where settings are chosen)."""
    return "held-out" if ec.eval_on == "heldout" else "validation"


def _first_decision_table(evals: dict, unit_of: dict, units: list, ec: ExperimentConfig) -> tuple[list[str], dict]:
    """(markdown lines, stats): mean P(reply opens a tool call) per gold turn type and arm, 95% cluster-bootstrap
    intervals (the turns' `p_call`, `jaxtool.eval.first_decision`); ([], {}) if an arm was saved without it."""
    from jaxtool.eval.report import markdown_table
    from jaxtool.experiment import stats

    if not evals or any(any("p_call" not in r for r in e["records"]) for e in evals.values()):
        return [], {}
    sums = {a: stats.counts(e["records"], unit_of, units, value="p_call") for a, e in evals.items()}
    st = stats.summarize_arms(sums, n_boot=ec.n_boot, seed=ec.seed)
    first = next(iter(sums.values()))
    rows = []
    for i, t in enumerate(stats.TYPES):
        n = int(first[:, i, 1].sum())
        if n:
            rows.append([f"{ROW_LABELS[t]} (n={n})"] + [_fmt(st["arms"][a][t]) for a in evals])
    want = "high on call turns, low on the others"
    return ["First decision, teacher-forced: mean P(the reply opens a tool call) on the same turns, by gold turn "
            f"type ({want}; 95% cluster-bootstrap intervals):", "",
            markdown_table([f"{_scored(ec)} turns"] + [ARM_LABELS[a] for a in evals], rows), ""], st


def chart(st: dict, arms: list[str], path: str, n_by_type: dict, where: str = "held-out") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from jaxtool.experiment import stats

    metrics = [m for m in stats.METRICS if n_by_type.get(m, 1)]
    x = np.arange(len(metrics))
    w = 0.8 / max(len(arms), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(metrics) + 2, 4.2))
    for i, a in enumerate(arms):
        v = np.array([st["arms"][a][m]["value"] for m in metrics])
        lo = np.array([st["arms"][a][m]["lo"] for m in metrics])
        hi = np.array([st["arms"][a][m]["hi"] for m in metrics])
        ax.bar(x + (i - (len(arms) - 1) / 2) * w, v, w, yerr=[v - lo, hi - v], capsize=2, label=ARM_LABELS[a])
    ax.set_xticks(x, [ROW_LABELS[m].replace(" (", "\n(") for m in metrics], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("pass rate on held-out services" if where == "held-out" else "pass rate on validation dialogues")
    ax.set_title(f"DiaTool-DPO arms, 95% bootstrap intervals over {st['n_units']} {where} dialogues", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# choosing a setting on validation turns (docs/experiment.md, "Choosing learning rate, β and epochs")
# --------------------------------------------------------------------------------------------

def first_decision_separation(results: dict, arm: str = "diatool") -> float:
    """p(call opener | call turns) - mean(p(call opener | slot turns), p(call opener | decline turns)) of
    `arm` in an experiment's ``results.json``; turn types with no turns are left out of the mean."""
    fd = results["first_decision"]["arms"][arm]
    others = [fd[t]["value"] for t in ("slot", "relevance") if results["n_turns_by_type"].get(t)]
    return fd["call"]["value"] - (sum(others) / len(others) if others else 0.0)


def pick_setting(results: Sequence[dict], arm: str = "diatool", tie: float = 0.02) -> tuple[int, list[dict]]:
    """The rule of docs/experiment.md: the highest validation macro average of `arm`; among settings
    within `tie` of the best, the largest first-decision separation. Returns (index of the chosen
    results, one row per setting: lr, beta, epochs, macro, separation, n_turns_by_type). The macro
    average weighs every turn type alike: a type with a handful of validation turns can decide it
    (`launch/pick_diatool_setting.py` warns below 5)."""
    rows = []
    for r in results:
        if r["config"]["eval_on"] != "validation":
            raise ConfigError(f"{r['config']['out']}: evaluated on {r['config']['eval_on']!r} turns; settings are "
                              "chosen on eval_on=validation only (never on the held-out services)")
        c = r["config"][arm if arm in ("sft", "sft_chosen", "dpo") else "diatool"]
        rows.append({"lr": c["optim"]["lr"], "beta": c["loss"].get("beta"),
                     "epochs": r["config"][r["config"]["size"]]["pref_epochs"],
                     "macro": r["stats"]["arms"][arm]["macro"]["value"],
                     "separation": first_decision_separation(r, arm), "n_turns_by_type": r["n_turns_by_type"]})
    best = max(row["macro"] for row in rows)
    close = [i for i, row in enumerate(rows) if best - row["macro"] <= tie]
    return max(close, key=lambda i: rows[i]["separation"]), rows
