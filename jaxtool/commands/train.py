"""`jaxtool train CONFIG [key=value ...] [--resume]`."""

from __future__ import annotations

import argparse

DESCRIPTION = """Train a model from a YAML recipe (see configs/), with key=value overrides.

Examples:
  jaxtool train configs/sft/smollm2_lora.yaml data.train=conversations:my_dialogues.jsonl
  jaxtool train --config configs/sft/smollm2_lora.yaml max_steps=2   # the same, recipe as a flag
  jaxtool train configs/diatool_dpo/llama3_8b.yaml model.path=/models/llama3.1-8b run_dir=runs/dpo
  jaxtool train runs/dpo/config.yaml --resume           # continue an interrupted run exactly
  jaxtool train runs/dpo/config.yaml --resume max_steps=2000   # ... and train it longer
  jaxtool train --print-config                          # every key with its default and comment

Keys are dotted paths into the config (model.*, lora.*, data.*, optim.*, loss.*, mesh.*, and
batch_size, epochs, max_steps, seed, run_dir, save_every, keep, log_every, eval_every, export_hf).
An unknown key is an error that names the closest valid key.

The run directory receives config.yaml, metrics.jsonl, tb/ (TensorBoard), checkpoints/, curves.png
and, with export_hf=true, hf/ (an HF directory with LoRA merged, loadable by transformers/vLLM)."""


def register(sub) -> None:
    p = sub.add_parser("train", help="SFT / DPO / DiaTool-DPO / SimPO / ORPO / DMPO training from a YAML recipe",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="YAML recipe (or --config RECIPE)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--config", dest="config_flag", metavar="RECIPE", default=None,
                   help="YAML recipe, the same as giving it positionally")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.add_argument("--on-bad-row", choices=("skip", "error"), default=None,
                   help="bad dataset rows: skip and count them by reason (default; the counts are printed and "
                        "written to RUN/data_report.json) or stop at the first (the same as data.on_bad_row=)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--distributed", action="store_true",
                   help="multi-host run: call jax.distributed.initialize() first (see launch/)")
    p.set_defaults(func=run, _overrides="overrides")  # key=value also after the flags (jaxtool.cli.main)


def run(args) -> int:
    from jaxtool.config import load_config
    from jaxtool.errors import ConfigError

    if args.distributed:
        from jaxtool.sharding import initialize_distributed

        initialize_distributed()

    from jaxtool.commands._recipe import recipe_and_overrides

    path, overrides = recipe_and_overrides(args.config_flag, args.config, args.overrides)
    if args.on_bad_row:
        overrides.append(f"data.on_bad_row={args.on_bad_row}")
    cfg = load_config(path, overrides)
    if args.print_config:
        from jaxtool.config_doc import commented_yaml

        print(commented_yaml(cfg), end="")  # the YAML of dump_yaml, each key with its source comment
        return 0
    if not path and not overrides:
        raise ConfigError("give a YAML recipe (e.g. configs/sft/smollm2_lora.yaml) or key=value overrides")
    from jaxtool.train import train

    result = train(cfg, resume=args.resume)
    m = result.last_metrics
    line = f"{result.status} after {result.steps} steps in {result.wall_s:.0f}s ({result.tokens_per_s:.0f} trained tokens/s)"
    if m:
        line += f"; last loss {m['loss']:.4f}"
    print(line)
    if result.eval_metrics:
        print("held-out: " + ", ".join(f"{k} {v:.4f}" for k, v in result.eval_metrics.items()))
    print(f"run directory: {result.run_dir}")
    return 0 if result.status == "finished" else 3
