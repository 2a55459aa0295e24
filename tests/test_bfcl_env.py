"""jaxtool.envs.bfcl: BFCL's simulators behind the ToolEnv interface, calls parsed, never evaluated."""

import copy
import json
import os
import uuid

import pytest

from jaxtool.envs import EnvBatch, EnvEntryError, ToolCall
from jaxtool.envs.bfcl import BFCLEnv, Refused, parse_call
from jaxtool.eval.bfcl.multi_turn import MULTI_TURN_CATEGORIES, read_multi_turn

HOSTILE = [
    "__import__('os').system('touch /tmp/jaxtool_pwned')",
    "ls.__globals__['os'].system('id')",
    "ls().__class__.__mro__",
    "GorillaFileSystem.ls(self)",
    "(lambda: 1)()",
    "cd(folder=(lambda: 'x')())",
    "cd(folder=f'{__import__(\"os\").getcwd()}')",
    "cd(folder=__import__('os').getcwd())",
    "cd(folder=pwd())",
    "cd(folder=[x for x in 'ab'])",
    "cd(**{'folder': 'x'})",
    "cd(*['x'])",
    "cd(folder=(y := 'x'))",
    "_load_scenario(scenario={})",
    "__init__()",
    "cd(folder=10**10**10**10)",
    "cd(folder=" + "[" * 200_000 + "]" * 200_000 + ")",
    "eval('1')",
    "exec('import os')",
    "getattr(ls, '__globals__')",
    "cd(folder=os.sep)",
    "x" * 2_000_000,
]


def _fs_entry():
    return read_multi_turn("multi_turn_base", limit=1)[0]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_call_strings_are_refused_and_nothing_runs(text, tmp_path):
    env = BFCLEnv()
    env.reset(_fs_entry())
    before = copy.deepcopy(env.state())
    res = env.step_strings([text])
    assert len(res) == 1 and res[0].error
    assert res[0].content.startswith("Error during execution:")
    assert env.state() == before
    assert not os.path.exists("/tmp/jaxtool_pwned")


def test_parse_call_accepts_literals_only():
    assert parse_call("sort('a.txt')").args == ("a.txt",)
    p = parse_call("f(a=-1, b=(1, 2), c={'k': [None, True]}, d=1.5e3)")
    assert p.name == "f" and p.kwargs == {"a": -1, "b": (1, 2), "c": {"k": [None, True]}, "d": 1500.0}
    for bad in ("f(a=b)", "a.b()", "f()()", "[f()]", "1 + 2", "f(a=1+x)", "f(a='x'.upper())"):
        assert isinstance(parse_call(bad), Refused), bad


def test_errors_are_bfcls_strings():
    env = BFCLEnv()
    env.reset(_fs_entry())
    unknown, bad_arg, deny, ok = env.step_strings(["nope(x=1)", "cd(foldr='x')", "run(x=1)", "pwd()"])
    assert unknown.content == "Error during execution: name 'nope' is not defined"
    assert bad_arg.content.startswith("Error during execution: ") and "foldr" in bad_arg.content
    assert deny.content == "Error during execution: Function call run is not allowed."
    assert not ok.error and "current_working_directory" in json.loads(ok.content)


def _same_as_bfcls_executor(n):
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import execute_multi_turn_func_call

    for cat in MULTI_TURN_CATEGORIES:
        for e in read_multi_turn(cat, limit=n):
            env = BFCLEnv()
            env.reset(e)
            name = "m" + uuid.uuid4().hex
            for turn in e["ground_truth"]:
                ours = [r.content for r in env.step_strings(turn)]
                ref, inst = execute_multi_turn_func_call(turn, e["initial_config"], e["involved_classes"], name,
                                                         e["id"], long_context="long_context" in cat, is_evaL_run=True)
                assert ours == ref, (e["id"], turn)
            ref_state = {c: {k: v for k, v in vars(i).items() if not k.startswith("_")} for c, i in inst.items()}
            assert env.state() == ref_state


def test_ground_truth_results_and_state_equal_bfcls_executor():
    """Every ground-truth call of the first 5 entries per category: the same result strings and the
    same final public state as BFCL's own (eval-based) executor."""
    _same_as_bfcls_executor(5)


@pytest.mark.slow
def test_ground_truth_results_and_state_equal_bfcls_executor_all_800_entries():
    _same_as_bfcls_executor(None)


def test_instances_are_not_shared_between_envs():
    e = read_multi_turn("multi_turn_long_context", limit=1)[0]
    a, b = BFCLEnv(), BFCLEnv()
    a.reset(e)
    b.reset(e)
    for cname, inst in a.instances.items():
        for k, v in vars(inst).items():
            if isinstance(v, (list, dict)) and v:
                assert getattr(b.instances[cname], k) is not v, (cname, k)


def test_snapshot_restore_and_batch():
    e = _fs_entry()
    env = BFCLEnv()
    env.reset(e)
    snap = env.snapshot()
    s0 = copy.deepcopy(env.state())
    env.step_strings(e["ground_truth"][0])
    assert env.state() != s0
    env.restore(snap)
    assert env.state() == s0
    batch = EnvBatch(BFCLEnv, read_multi_turn("multi_turn_base", limit=3))
    res = batch.step({1: [ToolCall("pwd", {})]})
    assert list(res) == [1] and not res[1][0].error


def test_miss_func_tools_held_out_until_their_turn():
    e = read_multi_turn("multi_turn_miss_func", limit=1)[0]
    (turn, names), = e["missed_function"].items()
    env = BFCLEnv()
    env.reset(e)
    assert not set(names) & set(env.tool_names())
    assert set(e.get("excluded_function", [])).isdisjoint(env.tool_names())
    added = env.add_missed(int(turn))
    assert [d["name"] for d in added] == names and set(names) <= set(env.tool_names())


def test_bad_entry_is_named():
    with pytest.raises(EnvEntryError, match="involved_classes"):
        BFCLEnv().reset({"id": "multi_turn_base_0", "involved_classes": "GorillaFileSystem"})
    with pytest.raises(EnvEntryError, match="NoSuchAPI"):
        BFCLEnv().reset({"id": "multi_turn_base_0", "involved_classes": ["NoSuchAPI"]})
