"""RL parts without a model: advantages by hand, rewards and their counted verdicts, task files."""

import collections
import json

import numpy as np
import pytest

from jaxtool.data.formats import get_format
from jaxtool.data.schema import Conversation, Message, Tool, ToolCall
from jaxtool.errors import DataError
from jaxtool.eval.tool_tasks import Example
from jaxtool.rl import rewards
from jaxtool.rl.advantages import compute_advantages
from jaxtool.rl.rollout import Trajectory
from jaxtool.rl.tasks import Task, env_tasks


def test_sequence_advantages_and_zero_variance_count():
    adv, turn, zero = compute_advantages([[1.0], [0.0], [0.0], [0.0], [1.0], [1.0], [1.0], [1.0]], 4)
    np.testing.assert_allclose(adv[:4], [1.5, -0.5, -0.5, -0.5], rtol=1e-5)   # std 0.5 (sample)
    np.testing.assert_array_equal(adv[4:], [0, 0, 0, 0])
    assert turn is None and zero == 1


def test_turn_advantages_by_hand():
    # group of 2: trajectory A turns [0, 1] -> returns to go [1, 1]; B turns [1] -> [1]... gamma 0.5:
    # A: [0 + 0.5 * 1, 1] = [0.5, 1]; B: [0]
    _, adv, zero = compute_advantages([[0.0, 1.0], [0.0]], 2, mode="turn", gamma=0.5, scale=False)
    mean = (0.5 + 1.0 + 0.0) / 3
    np.testing.assert_allclose(adv, [[0.5 - mean, 1.0 - mean], [0.0 - mean, 0.0]], rtol=1e-6)
    assert zero == 0


def _example():
    tool = Tool("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    conv = Conversation((Message("user", "weather in Paris?"),
                         Message("assistant", None, tool_calls=(ToolCall("get_weather", {"city": "Paris"}),))),
                        tools=(tool,))
    return Example("e1", conv)


def _traj(text, closed=True):
    t = Trajectory(0, [1])
    t.texts, t.finished_turn, t.finish = [text], closed, "answer" if closed else "length"
    t.replies = [get_format("pythonic").parse(text)]
    return t


def test_outcome_and_format_rewards_count_their_verdicts():
    fmt = get_format("pythonic")
    ex = _example()
    task = Task("e1", ex.prompt, example=ex)
    ctx = rewards.RewardContext(fmt)
    assert rewards.get("outcome")(task, _traj('[get_weather(city="Paris")]'), ctx) == 1.0
    assert rewards.get("outcome")(task, _traj('[get_weather(city="Rome")]'), ctx) == 0.0
    assert rewards.get("outcome")(task, _traj('[get_weather(city="Par', closed=False), ctx) == 0.0
    assert rewards.get("format")(task, _traj('[get_weather(city="Par', closed=False), ctx) == 0.0
    assert rewards.get("outcome")(Task("x", ex.prompt), _traj("[f()]"), ctx) == 0.0   # no gold: counted
    c = ctx.counts
    assert c["outcome: correct"] == 1 and c["outcome: wrong arguments"] == 1
    assert c["outcome: call never closed"] == 1 and c["format: bad"] == 1
    assert c["outcome: task has no gold answer"] == 1
    # a gold answer the checker cannot use is scored 0 and counted, never raised
    bad = Example("e2", ex.conversation.replace(meta={"functions": [], "category": "simple", "ground_truth": 5}))
    assert rewards.get("outcome")(Task("e2", bad.prompt, example=bad), _traj("[f()]"), ctx) == 0.0
    assert ctx.counts["outcome: gold unusable"] == 1


def test_env_tasks_file_and_its_errors(tmp_path):
    p = tmp_path / "tasks.jsonl"
    p.write_text(json.dumps({"id": "a", "env": "kv", "messages": [{"role": "user", "content": "store x=1"}],
                             "entry": {"initial": {}}, "goal": {"store": {"x": "1"}}}) + "\n")
    (t,) = env_tasks(str(p))
    env = t.make_env()
    assert [x.name for x in t.prompt.tools] == env.tool_names()
    env.step([ToolCall("kv_set", {"key": "x", "value": "1"})])
    traj = Trajectory(0, [1])
    traj.env = env
    assert rewards.get("env_goal")(t, traj, rewards.RewardContext(None)) == 1.0
    p.write_text('{"id": "b", "env": "nope", "messages": []}\n')
    with pytest.raises(DataError, match=r"tasks.jsonl:1: field 'env'"):
        env_tasks(str(p))


def test_cli_dry_run_and_print_config(capsys):
    from jaxtool import cli

    assert cli.main(["rl", "--config", "configs/rl/qwen2_5_7b.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "recipe OK: loss dapo" in out and "eps_high=0.28" in out
    assert cli.main(["rl", "--print-config", "loss.type=dr_grpo"]) == 0
    assert "aggregation: constant" in capsys.readouterr().out
    assert cli.main(["rl", "--config", "configs/rl/smollm2_cpu.yaml", "--dry-run", "rollout.group_size=1"]) == 2


def test_bfcl_simulator_env_tasks_and_the_split_guard(tmp_path):
    from jaxtool.eval.split_guard import SplitGuard

    p = tmp_path / "tasks.jsonl"
    rows = [{"id": "ours", "env": "bfcl", "messages": [{"role": "user", "content": "add 2 and 3"}],
             "entry": {"id": "ours", "involved_classes": ["MathAPI"], "initial_config": {}}},
            {"id": "leak", "env": "bfcl", "messages": [{"role": "user", "content": "A BFCL test query."}],
             "entry": {"id": "leak", "involved_classes": ["MathAPI"], "initial_config": {}}}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    guard = SplitGuard()
    guard.add_queries(["a bfcl test query"], "bfcl")
    dropped = collections.Counter()
    (t,) = env_tasks(str(p), guard=guard, dropped=dropped)
    assert t.id == "ours" and dropped == {"task: benchmark test query": 1}
    env = t.make_env()
    (res,) = env.step([ToolCall("add", {"a": 2, "b": 3})])
    assert not res.error and "5" in res.content
    assert "add" in [x.name for x in t.prompt.tools]


def test_partial_reward_by_hand():
    fmt = get_format("pythonic")
    tool = Tool("f", "", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}})
    conv = Conversation((Message("user", "q"), Message("assistant", None, tool_calls=(ToolCall("f", {"a": 1, "b": "x"}),))),
                        tools=(tool,))
    task = Task("p", conv.replace(messages=conv.messages[:1]), example=Example("p", conv))
    ctx = rewards.RewardContext(fmt)
    r = lambda text, closed=True: rewards.get("partial")(task, _traj(text, closed), ctx)  # noqa: E731
    assert r('[f(a=1, b="x")]') == 1.0
    assert r('[f(a=1, b="y")]') == 0.5 + 0.5 * 1 / 2       # name + one of two arguments
    assert r('[f(a=1.0, b="x", c=3)]') == 1.0             # 1 == 1.0 as JSON numbers; extra argument not counted
    assert r('[g(a=1, b="x")]') == 0.0                     # wrong name: nothing
    assert r('[f(a=1, b="x"), f(a=2)]') == (1.0 + 0.0) / 2  # an extra call halves it
    assert r('[f(a=2), f(a=1, b="x")]') == 1.0 / 2          # the best-matching call is credited
    assert r('[f(a=1, b="x"', closed=False) == 0.0
    assert r("not a call") == 0.0


def test_bootstrap_interval_of_the_mean():
    from jaxtool.rl.evaluate import bootstrap_ci

    assert bootstrap_ci([1.0] * 7) == (1.0, 1.0)
    lo, hi = bootstrap_ci([0.0, 1.0] * 50)
    # the mean of 100 fair coin flips: standard error 0.05, so the 95% interval is about 0.5 +- 0.098
    assert 0.38 < lo < 0.43 and 0.57 < hi < 0.62
    assert bootstrap_ci([0.0, 1.0] * 50) == (lo, hi)   # seeded: reproducible


def test_split_source_is_disjoint_and_complete(tmp_path):
    from jaxtool import cli

    assert cli.main(["rl", "--split", "bundled", "--out", str(tmp_path), "--valid", "0.2", "--heldout", "0.3"]) == 0
    parts = {p: [json.loads(x)["meta"]["id"] for x in open(tmp_path / f"{p}.jsonl")] for p in ("train", "valid", "heldout")}
    assert [len(parts[p]) for p in ("train", "valid", "heldout")] == [50, 20, 30]
    ids = parts["train"] + parts["valid"] + parts["heldout"]
    assert len(set(ids)) == 100
    again = tmp_path / "again"
    cli.main(["rl", "--split", "bundled", "--out", str(again), "--valid", "0.2", "--heldout", "0.3"])
    assert (again / "heldout.jsonl").read_text() == (tmp_path / "heldout.jsonl").read_text()
