"""`jaxtool experiment diatool`: DiaTool-DPO's Table 3 arms on held-out SGD services."""

from __future__ import annotations

import argparse

DESCRIPTION = """Does DiaTool-DPO help on services the model never saw? (Jung et al. 2025, Table 3 arms)

  data   Type 1 seeds from SGD (bundled: 1,853 seed episodes, 20 services), split by service;
         Table 1 trajectory pairs (Easy + Hard) from the rules augmenter over the training services
  arms   (a) SFT-only on Type 1 seeds   (b) (a) + SFT on the chosen trajectories
         (c) (a) + plain DPO             (d) (a) + DiaTool-DPO (beta 0.5, gamma 0.5, rho 2.0)
         (e) Table 3's ablations of (d): no_psi, no_rho, no_psi_rho (w/o {psi, rho}: phi on, psi = 1, rho = 0);
         (x) no_phi, an extra arm (not a Table 3 row) — all at the accelerator size; add them to cpu.arms here
  eval   held-out services' dialogue flows (call / slot / relevance / completion, micro / macro),
         95% cluster-bootstrap intervals over held-out dialogues, paired differences vs (a) and (c)

Sizes: `size=cpu` (default; SmolLM2-135M, LoRA, fp32: arms (a)-(d) on 2 CPU cores) and
`size=accelerator` (every arm, full fine-tuning, bf16, larger sets: one H100/H200).

Examples:
  jaxtool experiment diatool --config configs/experiments/diatool_sgd_smollm2.yaml
  jaxtool experiment diatool --config configs/experiments/diatool_sgd_smollm2.yaml size=accelerator
  jaxtool experiment diatool --config configs/experiments/diatool_sgd_smollm2.yaml seeds=PATH/sgd/train
  jaxtool experiment diatool --config configs/experiments/diatool_sgd_smollm2.yaml \\
      'cpu.arms=[sft,diatool,no_rho]' diatool.optim.lr=1e-3 out=runs/exp_lr
  jaxtool experiment diatool --print-config

Writes OUT/results.md, OUT/results.json, OUT/results.png, OUT/data/ and OUT/arms/<arm>/. Rerunning
with the same OUT reuses every arm already trained and evaluated with the same settings."""


def register(sub) -> None:
    from jaxtool.commands._recipe import add_recipe_args

    p = sub.add_parser("diatool", help="DiaTool-DPO vs SFT / SFT-on-chosen / plain DPO / ablations on held-out SGD services",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_args(p, "YAML recipe (configs/experiments/diatool_sgd_smollm2.yaml)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--report-only", action="store_true",
                   help="train and evaluate nothing: rewrite results.md/json/png from the arms finished in OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run, _overrides="overrides")  # key=value also after the flags (jaxtool.cli.main)


def run(args) -> int:
    from jaxtool.config import dump_yaml, load_config
    from jaxtool.experiment.diatool import ExperimentConfig, arm_plan, run as run_experiment

    from jaxtool.commands._recipe import recipe_and_overrides

    path, overrides = recipe_and_overrides(args.config_flag, None, args.overrides)
    cfg = load_config(path, overrides, cls=ExperimentConfig)
    arm_plan(cfg)  # unknown arms / size: an error before any work
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    results = run_experiment(cfg, progress=not args.no_progress, report_only=args.report_only)
    print(f"\nresults: {cfg.out}/results.md, results.json, results.png (total {results['total_s']:.0f}s)")
    return 0
