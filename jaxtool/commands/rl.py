"""`jaxtool rl --config configs/rl/<recipe>.yaml [key=value ...] [--resume]`: online RL (GRPO)."""

from __future__ import annotations

import argparse

DESCRIPTION = """Online RL for tool use: rollouts from jaxtool's jitted decoder (tools executed between
turns for environment tasks), rewards from the outcome checkers, GRPO / Dr. GRPO / DAPO updates on
exactly the sampled tokens. See docs/rl.md.

Examples:
  jaxtool rl --config configs/rl/smollm2_cpu.yaml                     # minutes on a CPU
  jaxtool rl --config configs/rl/smollm2_cpu.yaml loss.type=dapo      # token-level loss, clip-higher
  jaxtool rl --config configs/rl/smollm2_cpu.yaml reward.advantage=turn data.env_tasks=tasks.jsonl rollout.max_turns=4
  jaxtool rl --config runs/rl_smollm2/config.yaml --resume           # continue an interrupted run exactly
  jaxtool rl --config configs/rl/llama3_8b.yaml --dry-run             # check a recipe without loading weights
  jaxtool rl --print-config                                           # every key with its default

The run directory receives config.yaml, metrics.jsonl (reward mean/std, KL, clip fraction, response
length, rollout and update tokens/s, verdict counts), tb/ (TensorBoard), counts.json and checkpoints/."""


def register(sub) -> None:
    from jaxtool.commands._recipe import add_recipe_args

    p = sub.add_parser("rl", help="online RL (GRPO / Dr. GRPO / DAPO) over tool-call tasks and tool environments",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_args(p, "YAML recipe (configs/rl/*.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the recipe (keys, objective, rewards, model family when model.path exists) and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("measuring (no training)")
    g.add_argument("--split", metavar="SPEC", help="write RUN/{train,valid,heldout}.jsonl from one task source "
                   "(e.g. bundled) by a seeded permutation and exit; RUN is --out")
    g.add_argument("--valid", type=float, default=0.15, help="--split: share for choosing hyperparameters")
    g.add_argument("--heldout", type=float, default=0.25, help="--split: share held out for the final measure")
    g.add_argument("--evaluate", metavar="MODEL", help="rewards of MODEL (checkpoint, HF dir, smollm2) on --eval-data "
                   "with a bootstrap interval, then exit")
    g.add_argument("--eval-data", action="append", default=[], metavar="SPEC", help="task source(s) for --evaluate")
    g.add_argument("--samples", type=int, default=1, help="--evaluate: samples per task (1 + temperature 0: greedy)")
    g.add_argument("--temperature", type=float, default=0.0, help="--evaluate: sampling temperature")
    g.add_argument("--max-tokens", type=int, default=64, help="--evaluate: response budget")
    g.add_argument("--format", default="pythonic", help="--evaluate: chat format")
    g.add_argument("--limit", type=int, default=0, help="--evaluate: first N tasks of each source (0 = all)")
    g.add_argument("--seed", type=int, default=0, help="--split / --evaluate: seed")
    g.add_argument("--out", help="--split: output directory; --evaluate: JSON file of per-task rewards")
    p.add_argument("--distributed", action="store_true",
                   help="multi-host run: call jax.distributed.initialize() first (see launch/); every process "
                        "decodes the whole rollout on the global mesh and trains its rows of it")
    p.set_defaults(func=run, _overrides="overrides")  # key=value also after the flags (jaxtool.cli.main)


def run(args) -> int:
    from jaxtool.commands._recipe import recipe_and_overrides
    from jaxtool.config import dump_yaml, load_config
    from jaxtool.rl.loop import RLConfig, RLTrainer, validate

    if args.split:
        return _split(args)
    if args.evaluate:
        return _evaluate(args)
    path, overrides = recipe_and_overrides(args.config_flag, None, args.overrides)
    overrides += ["progress=false"] if args.no_progress else []
    cfg = load_config(path, overrides, cls=RLConfig)
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    if args.dry_run:
        validate(cfg)
        print(dry_run_summary(cfg))
        return 0
    if args.distributed:
        from jaxtool.sharding import initialize_distributed

        initialize_distributed()
    res = RLTrainer(cfg).run(resume=args.resume)
    h = res.history
    if h:
        print(f"\nrl: {res.iterations} iterations ({res.status}); reward {h[0]['reward_mean']:.3f} (first of this "
              f"run) -> {h[-1]['reward_mean']:.3f} (last); KL {h[-1]['kl']:.4f}; {res.wall_s:.0f}s")
    print(f"metrics: {res.run_dir}/metrics.jsonl; verdict counts: {res.run_dir}/counts.json")
    return 0


def dry_run_summary(cfg) -> str:
    import json
    import os

    from jaxtool.models.family import family_for_hf

    lines = [f"recipe OK: loss {cfg.loss.type} {cfg.loss.params}",
             f"rollout: {cfg.rollout.prompts} tasks x {cfg.rollout.group_size} samples, <= {cfg.rollout.max_turns} "
             f"turns, {cfg.rollout.max_response_tokens} response tokens",
             f"rewards: {dict(zip(cfg.reward.functions, cfg.reward.weights))} ({cfg.reward.advantage}-level advantages)",
             f"training: {'LoRA r=%d' % cfg.lora.rank if cfg.lora.enabled else 'full'}, mesh {cfg.mesh}, "
             f"{cfg.iterations} iterations x {cfg.updates_per_rollout} updates"]
    cj = os.path.join(cfg.model.path, "config.json")
    if os.path.isfile(cj):
        with open(cj, encoding="utf-8") as fh:
            hf = json.load(fh)
        lines.append(f"model: {cfg.model.path} (model_type {hf.get('model_type')!r}: family "
                     f"{family_for_hf(hf, cj).name})")
    else:
        lines.append(f"model: {cfg.model.path} (not present here: its family is checked when the run loads it)")
    return "\n".join(lines)


def _split(args) -> int:
    from jaxtool.errors import ConfigError
    from jaxtool.rl.evaluate import split_source

    if not args.out:
        raise ConfigError("--split needs --out DIR")
    info = split_source(args.split, args.out, valid=args.valid, heldout=args.heldout, seed=args.seed)
    print(f"{args.split}: {info['rows']} rows -> train {info['train']}, valid {info['valid']}, heldout "
          f"{info['heldout']} in {args.out} (skipped by the loader: {info['skipped'] or 'none'})")
    return 0


def _evaluate(args) -> int:
    import json

    from jaxtool.errors import ConfigError
    from jaxtool.rl.evaluate import evaluate_rewards

    if not args.eval_data:
        raise ConfigError("--evaluate needs --eval-data SPEC (e.g. conversations:runs/rl_split/heldout.jsonl)")
    res = evaluate_rewards(args.evaluate, args.eval_data, fmt=args.format, samples=args.samples,
                           temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed,
                           limit=args.limit)
    for name, s in res.summary().items():
        print(f"{name}: {s['mean']:.3f} [95% bootstrap {s['lo']:.3f}, {s['hi']:.3f}] over {s['n']} tasks"
              + (f"; samples disagree on {s['varied']:.0%} of the tasks" if args.samples > 1 else ""))
    print(f"counts: {dict(sorted(res.counts.items()))}; {res.wall_s:.0f}s")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res.to_dict(), fh, indent=1)
        print(f"per-task rewards: {args.out}")
    return 0
