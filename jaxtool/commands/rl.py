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
    p.add_argument("--distributed", action="store_true",
                   help="multi-host run: call jax.distributed.initialize() first (see launch/); every process "
                        "decodes the whole rollout on the global mesh and trains its rows of it")
    p.set_defaults(func=run, _overrides="overrides")  # key=value also after the flags (jaxtool.cli.main)


def run(args) -> int:
    from jaxtool.commands._recipe import recipe_and_overrides
    from jaxtool.config import dump_yaml, load_config
    from jaxtool.rl.loop import RLConfig, RLTrainer, validate

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
