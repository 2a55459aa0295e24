"""The `jaxtool rl` loop on the tiny model: a scripted task whose optimal policy is known (always
answer with one fixed first token) — mean reward rises; and resume is bit-identical."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtool.config import load_config
from jaxtool.data.formats import get_format
from jaxtool.data.schema import Conversation, Message
from jaxtool.models.family import family_of
from jaxtool.rl import rewards
from jaxtool.rl.loop import RLConfig, RLTrainer
from jaxtool.rl.tasks import Task

QUERIES = ["hello", "list keys", "what now", "go"]


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    from jaxtool.api import load_model

    m = load_model(tiny_model_dir)
    fmt = get_format("hermes")
    tasks = [Task(f"t{i}", Conversation((Message("user", q),))) for i, q in enumerate(QUERIES)]
    ids = m.tokenizer.encode(fmt.prompt(tasks[0].prompt), add_special_tokens=False)
    x = jnp.asarray([ids])
    logits = family_of(m.config).forward(m.params, x, m.config, jnp.arange(len(ids))[None], jnp.ones_like(x),
                                         run=m.run)[0, -1]
    # the initial model's runner-up first token: sampled about half the time under top_k=2 sampling;
    # the optimal policy puts it first (reward 1 on every sample)
    target = int(np.argsort(np.asarray(logits))[-2])
    rewards.register("test_first_token")(lambda task, traj, ctx: float(bool(traj.ids) and traj.ids[0] == target))
    return m, tasks


def _cfg(tiny_model_dir, run_dir, *extra):
    return load_config(None, [f"model.path={tiny_model_dir}", "optim.lr=1e-2", "optim.schedule=constant",
                              "loss.type=grpo", "rollout.prompts=4", "rollout.group_size=4",
                              "rollout.max_turn_tokens=2", "rollout.max_response_tokens=8", "rollout.top_k=2",
                              "reward.functions=[test_first_token]", f"run_dir={run_dir}", "progress=false", "model.logits_chunk=0",
                              *extra], cls=RLConfig)


@pytest.mark.slow
def test_mean_reward_rises_and_resume_is_bit_identical(setup, tiny_model_dir, tmp_path):
    m, tasks = setup
    cfg = _cfg(tiny_model_dir, tmp_path / "a", "iterations=4", "loss.beta=0.04")
    first = RLTrainer(cfg, tasks=tasks, printer=lambda *a: None)
    full = first.run()
    r = [h["reward_mean"] for h in full.history]
    assert r[-1] >= 0.75 and np.mean(r[-2:]) > r[0] + 0.25, r
    rows = [json.loads(x) for x in open(tmp_path / "a" / "metrics.jsonl")]
    assert [x["step"] for x in rows] == [1, 2, 3, 4]
    for k in ("reward_mean", "reward_std", "kl", "clip_fraction", "response_len", "rollout_tokens_per_s",
              "update_tokens_per_s"):
        assert all(k in x for x in rows), k
    assert rows[-1]["kl"] > 0  # the policy moved away from the frozen reference

    # the same run interrupted after iteration 2 (a checkpoint), then resumed in a new trainer
    cfg_b = _cfg(tiny_model_dir, tmp_path / "b", "iterations=4", "loss.beta=0.04")
    part = RLTrainer(cfg_b, tasks=tasks, printer=lambda *a: None).run(interrupt_at=2)
    assert part.status == "interrupted" and part.iterations == 2
    rest = RLTrainer(cfg_b, tasks=tasks, printer=lambda *a: None)
    done = rest.run(resume=True)
    assert done.status == "finished" and done.iterations == 4
    for a, b in zip(full.history[2:], done.history):
        assert a["reward_mean"] == b["reward_mean"] and a["loss"] == b["loss"] and a["kl"] == b["kl"]
    rows_b = [json.loads(x) for x in open(tmp_path / "b" / "metrics.jsonl")]
    assert [x["step"] for x in rows_b] == [1, 2, 3, 4]
    # final parameters bit-identical
    leaves_a = jax.tree.leaves(first.state.trainable)
    leaves_b = jax.tree.leaves(rest.state.trainable)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b))


def test_config_errors_name_the_key(tiny_model_dir, tmp_path):
    from jaxtool.errors import ConfigError

    with pytest.raises(ConfigError, match="loss.type"):
        RLTrainer(_cfg(tiny_model_dir, tmp_path, "loss.type=dpo"))
    with pytest.raises(ConfigError, match="group_size"):
        RLTrainer(_cfg(tiny_model_dir, tmp_path, "rollout.group_size=1"))
    with pytest.raises(ConfigError, match="reward"):
        RLTrainer(_cfg(tiny_model_dir, tmp_path, "reward.functions=[nope]"))
