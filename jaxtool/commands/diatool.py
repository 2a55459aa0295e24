"""`jaxtool diatool pipeline CONFIG`: DiaTool-DPO's CPT → SFT → DiaTool-DPO pipeline
(`jaxtool.diatool.pipeline`)."""

from __future__ import annotations

import argparse

from jaxtool.commands._registry import group_help

PIPELINE_DESCRIPTION = """Run DiaTool-DPO's training pipeline (Jung et al. 2025, §6.1 / App. C): continued
pre-training -> SFT -> DiaTool-DPO, each stage a training recipe, each starting from the previous
stage's exported model (the first from the pipeline's `model`). Stages already finished with the same
recipe, overrides and input model are reused, so rerunning the command resumes an interrupted pipeline.

CPT data: plain documents (`text:` JSONL of {"text": ...} rows, or a .txt file of documents separated
by blank lines), every token trained. SFT data: tool dialogues (any name:path source). DiaTool-DPO
data: trajectory pairs from `jaxtool data build-diatool`.

Examples:
  jaxtool diatool pipeline configs/diatool_dpo/pipeline_llama3_8b.yaml
  jaxtool diatool pipeline configs/diatool_dpo/pipeline_llama3_8b.yaml model=models/Llama-3.1-8B run_dir=runs/p
  jaxtool diatool pipeline configs/diatool_dpo/pipeline_llama3_8b.yaml --dry-run

Writes RUN_DIR/<stage>/ (each stage's training run, hf/ export, stage_done.json) and RUN_DIR/pipeline.json."""


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("diatool", help="DiaTool-DPO workflows (the CPT -> SFT -> DiaTool-DPO pipeline)",
                                   description="DiaTool-DPO workflows.\n\nExamples:\n"
                                               "  jaxtool diatool pipeline configs/diatool_dpo/pipeline_llama3_8b.yaml",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="diatool_command", metavar="COMMAND")
    p = sub.add_parser("pipeline", help="CPT -> SFT -> DiaTool-DPO, each stage from the previous stage's model",
                       description=PIPELINE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="pipeline file (model, run_dir, stages)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="model=... or run_dir=...")
    p.add_argument("--dry-run", action="store_true",
                   help="print each stage's recipe and starting model, check the recipes load, train nothing")
    p.set_defaults(func=run, _overrides="overrides")
    parser.set_defaults(func=group_help(parser))
    return parser


def run(args) -> int:
    import json
    import os

    from jaxtool.diatool.pipeline import load_pipeline, run_pipeline, stage_config

    p = load_pipeline(args.config, args.overrides)
    if args.dry_run:
        model = p.model
        for st in p.stages:
            rd = os.path.join(p.run_dir, st.name)
            cfg = stage_config(st, model, rd)  # the recipe loads and validates
            print(f"{st.name}: {st.recipe} loss={cfg.loss.type} data={cfg.data.train} from {model}")
            model = os.path.join(rd, "hf")
        return 0
    records = run_pipeline(p)
    os.makedirs(p.run_dir, exist_ok=True)
    with open(os.path.join(p.run_dir, "pipeline.json"), "w", encoding="utf-8") as fh:
        json.dump(records, fh, indent=2, default=str)
    print(f"\npipeline done: final model {records[-1]['hf_dir']} (stages: {', '.join(r['stage'] for r in records)})")
    return 0
