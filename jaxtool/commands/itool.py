"""`jaxtool itool --config configs/itool/<recipe>.yaml [key=value ...]`: the iTool loop."""

from __future__ import annotations

import argparse

DESCRIPTION = """iTool (Zeng et al. 2025): warm-up SFT easy -> medium -> hard, then iterations of
replay buffer (gold-response perplexity, top 10%) -> step-level MCTS (or the "without MCTS" sampler,
search=sample) -> preference pairs -> filters -> SimPO.

Examples:
  jaxtool itool configs/itool/smollm2.yaml                          # minutes on a CPU (or --config RECIPE)
  jaxtool itool --config configs/itool/smollm2.yaml search=sample   # the "without MCTS" ablation
  jaxtool itool --config configs/itool/llama3_8b.yaml model.path=/models/Llama-3.1-8B-Instruct
  jaxtool itool --config configs/itool/llama3_8b.yaml warmup=skip model.path=/models/my-sft-model
  jaxtool itool --print-config                                      # every key with its default

Each iteration writes RUN/iter_K/: buffer.json, pairs.jsonl, filtered.json, model/ (HF directory),
metrics.json. Rerunning the same command resumes at the first unfinished stage."""


def register(sub) -> None:
    from jaxtool.commands._recipe import add_recipe_args

    p = sub.add_parser("itool", help="the iTool loop: warm-up, buffer -> MCTS -> pairs -> SimPO iterations",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_args(p, "YAML recipe (configs/itool/*.yaml)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run, _overrides="overrides")  # key=value also after the flags (jaxtool.cli.main)


def run(args) -> int:
    from jaxtool.config import dump_yaml, load_config
    from jaxtool.itool import ItoolConfig, run_itool

    from jaxtool.commands._recipe import recipe_and_overrides

    path, overrides = recipe_and_overrides(args.config_flag, None, args.overrides)
    overrides += ["progress=false"] if args.no_progress else []
    cfg = load_config(path, overrides, cls=ItoolConfig)
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    summary = run_itool(cfg)
    print(f"\nitool: final model {summary['final_model']}")
    for m in summary["iterations"]:
        f = m["filter"]
        print(f"  iter {m['iteration']}: {m['search']['queries']} queries, {f['extracted']} pairs, {f['kept']} kept "
              f"(dropped {f['dropped']}); wall s {m['wall_s']}")
    print(f"summary: {summary['run_dir']}/summary.json")
    return 0
