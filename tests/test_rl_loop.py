"""The `jaxtool rl` loop on the tiny model: a scripted task whose optimal policy is known (always
answer with one fixed first token) — mean reward rises; and resume is bit-identical."""

import json

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


class _BrokenEnv:
    """An environment whose every step raises (a simulator bug)."""

    def reset(self, entry):
        pass

    def tool_names(self):
        return ["kv_list"]

    def step(self, calls):
        raise RuntimeError("simulator crashed")


@pytest.mark.slow
def test_bad_input_is_counted_by_reason_in_one_iteration(tiny_model_dir, tmp_path, monkeypatch):
    """One iteration over: a task whose gold answer the checker cannot use, environment tasks whose
    environment raises, turns too short to close, and groups where every sample scores the same —
    each counted under its reason in the iteration's counts and RUN/counts.json; nothing raises."""
    from jaxtool.data.formats import HermesFormat, Reply
    from jaxtool.data.schema import Tool, ToolCall
    from jaxtool.eval.tool_tasks import Example
    from jaxtool.rl import tasks as T

    class AlwaysListFormat(HermesFormat):   # a random tiny model never writes a call: parse one anyway
        def parse(self, text):
            return Reply(content=None, tool_calls=(ToolCall("kv_list", {}),))

    monkeypatch.setitem(T.ENVS, "test_broken", _BrokenEnv)
    tool = Tool("f", "", {"type": "object", "properties": {}})
    conv = Conversation((Message("user", "call f"), Message("assistant", None, tool_calls=(ToolCall("f", {}),))),
                        tools=(tool,), meta={"functions": [], "category": "simple", "ground_truth": 5})
    bad_gold = Task("bad_gold", conv.replace(messages=conv.messages[:1]), example=Example("bad_gold", conv))
    broken = [Task(f"env{i}", Conversation((Message("user", q),)), env="test_broken", entry={})
              for i, q in enumerate(["list", "list the keys"])]
    cfg = _cfg(tiny_model_dir, tmp_path / "bad", "iterations=1", "rollout.prompts=3", "rollout.group_size=2",
               "rollout.max_turns=2", "rollout.max_turn_tokens=3", "rollout.max_response_tokens=64",
               "rollout.top_k=0", "reward.functions=[outcome]", "loss.beta=0", "seed=1")
    tr = RLTrainer(cfg, tasks=[bad_gold, *broken], printer=lambda *a: None)
    tr.setup()
    tr.fmt = AlwaysListFormat()                                    # every closed turn calls kv_list()
    tr.stop_ids = list(range(0, len(tr.tokenizer), 4))             # a quarter of the vocabulary closes a turn
    res = tr.run()
    c = res.history[0]["counts"]
    assert c["bad: gold answer does not parse"] >= 1, c
    assert c["bad: environment error"] >= 1, c
    assert c["bad: rollout never closed its turn"] >= 1, c
    assert c["bad: zero-variance group"] >= 1, c               # outcome is 0 for every sample here
    assert sum(v for k, v in c.items() if k.startswith("finish: ")) == 6    # every trajectory accounted for
    saved = json.load(open(tmp_path / "bad" / "counts.json"))
    assert all(saved[k] == c[k] for k in c if k.startswith("bad: "))
    row = json.loads(open(tmp_path / "bad" / "metrics.jsonl").read().splitlines()[-1])
    assert row["count/bad: environment error"] == c["bad: environment error"]


@pytest.mark.slow
def test_gradient_accumulation_equals_one_batch_and_dynamic_sampling_replaces_flat_groups(setup, tiny_model_dir,
                                                                                          tmp_path):
    m, tasks = setup
    target_reward = rewards.get("test_first_token")
    # task t0 always scores 1 (a zero-variance group whatever is sampled); the others as before
    rewards.register("test_t0_flat")(lambda task, traj, ctx: 1.0 if task.id == "t0" else target_reward(task, traj, ctx))
    base = ["iterations=1", "loss.beta=0.04", "reward.functions=[test_t0_flat]"]

    def one(name, *extra):
        tr = RLTrainer(_cfg(tiny_model_dir, tmp_path / name, *base, *extra), tasks=tasks, printer=lambda *a: None)
        return tr, tr.run().history[0]

    a, ra = one("whole")
    b, rb = one("accum", "optim.grad_accum=4")   # 16 rows in 4 micro-batches of 4, one optimizer step
    assert ra["reward_mean"] == rb["reward_mean"]                 # the same rollout
    for k in ("loss", "kl", "grad_norm", "clip_fraction"):
        np.testing.assert_allclose(rb[k], ra[k], rtol=1e-5, atol=1e-7, err_msg=k)
    # Adam's first step moves each entry by about lr x g / |g|: a summation-order difference in a
    # near-zero gradient entry shows there, so the bound is 1% of lr (1e-2) on any entry
    for x, y in zip(jax.tree.leaves(a.state.trainable), jax.tree.leaves(b.state.trainable)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-4)

    # every iteration's 4 tasks include t0 (4 tasks, 4 prompts): without dynamic sampling its group is flat
    assert ra["counts"]["bad: zero-variance group"] >= 1
    _, rd = one("dynamic", "rollout.dynamic_sampling=true", "rollout.max_resample_rounds=3")
    c = rd["counts"]
    assert c["dynamic sampling: extra rollouts"] >= 1 and c["dynamic sampling: groups replaced"] >= 1, c
    assert c.get("bad: zero-variance group", 0) < ra["counts"]["bad: zero-variance group"]
    assert c.get("bad: zero-variance group", 0) == c.get(
        "dynamic sampling: zero-variance groups kept (rounds exhausted)", 0)
    assert sum(v for k, v in c.items() if k.startswith("finish: ")) == 16   # the batch keeps its size
