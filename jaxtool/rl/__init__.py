"""Online RL for tool use (`jaxtool rl`): rollouts from jaxtool's own jitted decoder with tools run
between turns, rewards from the outcome checkers, and GRPO-family updates on exactly the sampled
tokens. See docs/rl.md.

    rollout.py   batched multi-turn rollouts (decode -> execute calls -> append tool tokens -> decode)
    tasks.py     tasks: single-turn tool-call queries from any training source, env-backed multi-turn
    rewards.py   the reward registry: functions of (task, trajectory)
    step.py      batches of trajectories, per-token log-probs, the jitted GRPO update
    loop.py      RLConfig and the loop: rollout -> reward -> advantage -> K updates -> checkpoint
"""
