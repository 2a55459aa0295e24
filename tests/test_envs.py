"""The tool-environment interface (jaxtool.envs.base) on its tiny test environment."""

import json

import pytest

from jaxtool.envs import EnvBatch, EnvEntryError, KeyValueEnv, ToolCall, ToolEnv, ToolResult


def C(name, **kw):
    return ToolCall(name=name, arguments=kw)


def test_step_returns_one_result_per_call_and_errors_are_results():
    env = KeyValueEnv()
    assert env.reset({"initial": {"a": "1"}}) is None
    out = env.step([C("kv_get", key="a"), C("kv_set", key="b", value="2"), C("kv_get", key="zz"),
                    C("nope"), C("kv_set", key="x")])
    assert [r.error for r in out] == [False, False, True, True, True]
    assert json.loads(out[0].content) == "1"
    assert "zz" in out[2].content and "nope" in out[3].content and "value" in out[4].content
    assert env.state() == {"store": {"a": "1", "b": "2"}, "calls": 3}
    assert sorted(env.tool_names()) == ["kv_delete", "kv_get", "kv_list", "kv_set"]


def test_snapshot_restore_roundtrip_and_snapshot_is_reusable():
    env = KeyValueEnv()
    env.reset({"initial": {"k": "v"}})
    snap = env.snapshot()
    env.step([C("kv_delete", key="k"), C("kv_set", key="n", value="1")])
    after = env.state()
    env.restore(snap)
    assert env.state() == {"store": {"k": "v"}, "calls": 0}
    env.step([C("kv_set", key="z", value="0")])
    env.restore(snap)  # the snapshot was not mutated by the steps after the first restore
    assert env.state() == {"store": {"k": "v"}, "calls": 0}
    assert after != env.state()


def test_default_snapshot_deep_copies():
    class Box(KeyValueEnv):
        snapshot = ToolEnv.snapshot  # the base class's deepcopy default
        restore = ToolEnv.restore
    env = Box()
    env.reset({"initial": {"k": ["v"]}})
    snap = env.snapshot()
    env.store["k"].append("w")
    env.restore(snap)
    assert env.store == {"k": ["v"]}


def test_batch_steps_only_given_entries():
    batch = EnvBatch(KeyValueEnv, [{"initial": {"a": "1"}}, None, {"initial": {}}])
    res = batch.step({0: [C("kv_delete", key="a")], 2: [C("kv_set", key="q", value="w")]})
    assert set(res) == {0, 2} and all(isinstance(r, ToolResult) for rs in res.values() for r in rs)
    assert batch.states() == [{"store": {}, "calls": 1}, {"store": {}, "calls": 0},
                              {"store": {"q": "w"}, "calls": 1}]
    batch.done[1] = True
    assert batch.active() == [0, 2]
    with pytest.raises(ValueError, match="entry 1"):
        batch.step({1: [C("kv_list")]})
    snaps = batch.snapshot([2])
    batch.step({2: [C("kv_delete", key="q")]})
    batch.restore(snaps)
    assert batch[2].state()["store"] == {"q": "w"}


def test_bad_entry_is_named_error():
    with pytest.raises(EnvEntryError, match="initial"):
        KeyValueEnv().reset({"initial": [1, 2]})
