"""`jaxtool eval dialog` command path with a scripted backend (load_backend monkeypatched) and the
scripted chat format standing in for `jaxtool.data.formats` / `jaxtool.data.tokenize`."""

import argparse
import json
import os

import pytest

from dialog_fakes import ScriptedBackend, call_text, install_fake_stack
from jaxtool.commands.eval_dialog import register as register_dialog
from jaxtool.errors import ConfigError, DataError

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "functionchat_bench")


def parse(argv):
    parser = argparse.ArgumentParser(prog="jaxtool eval")
    register_dialog(parser.add_subparsers(dest="bench"))
    return parser.parse_args(argv)


@pytest.fixture
def fake_stack(monkeypatch):
    """Scripted backend + format; returns the list of backends created."""
    created = []

    def respond(prompt):
        lines = prompt.splitlines()
        if "get_stock_price" in lines[0] and "마이크로소프트" in lines[-2]:
            return call_text("get_stock_price", stock_name="마이크로소프트")
        return "도착 위치를 알려주세요."

    def load_backend(kind, model, **kw):
        b = ScriptedBackend(respond)
        b.kind, b.model = kind, model
        created.append(b)
        return b

    install_fake_stack(monkeypatch, load_backend)
    return created


def test_dialog_command_writes_all_four_artifacts(fake_stack, tmp_path, capsys):
    data = os.path.join(FIX, "FunctionChat-CallDecision.jsonl")
    args = parse(["dialog", "--model", "ckpt", "--backend", "hf", "--data", f"functionchat:{data}",
                  "--out", str(tmp_path), "--batch-size", "3", "--no-progress"])
    assert args.func(args) == 0
    (backend,) = fake_stack
    assert (backend.kind, backend.model) == ("hf", "ckpt")
    assert [c["n"] for c in backend.calls] == [3, 3, 1]
    items = [json.loads(line) for line in open(tmp_path / "dialog_functionchat_items.jsonl", encoding="utf-8")]
    assert len(items) == 7
    # serial 1 gets the gold call; CALL 4/5 and the REJECT (no stock tool) get text; SLOTs get the taxi question
    assert [(i["id"], i["turn_type"], i["passed"]) for i in items] == [
        (1, "call", True), (4, "call", False), (5, "call", False), (101, "relevance", True),
        (201, "slot", False), (301, "slot", True), (361, "slot", False)]
    summary = json.load(open(tmp_path / "dialog_functionchat_summary.json"))
    assert summary["micro_avg"] == pytest.approx(3 / 7)
    assert summary["macro_avg"] == pytest.approx((1 / 3 + 1 / 3 + 1.0) / 3)
    assert summary["by_group"]["category"]["SLOT-some"] == {"n": 2, "passed": 1, "accuracy": 0.5}
    assert os.path.getsize(tmp_path / "dialog_functionchat.png") > 0
    table = open(tmp_path / "dialog_functionchat.md").read()
    assert "| macro avg" in table
    assert "micro avg" in capsys.readouterr().out


def test_llm_judge_needs_a_model_before_any_model_is_loaded(fake_stack, tmp_path):
    data = os.path.join(FIX, "FunctionChat-CallDecision.jsonl")
    args = parse(["dialog", "--model", "m", "--data", f"functionchat:{data}", "--judge", "llm", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="--judge-model"):
        args.func(args)
    assert fake_stack == []


def test_llm_judge_rubrics_must_exist(fake_stack, tmp_path):
    args = parse(["dialog", "--model", "m", "--data", f"functionchat:{FIX}/FunctionChat-CallDecision.jsonl",
                  "--judge", "llm", "--judge-model", "j", "--rubrics", str(tmp_path), "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="rubric"):
        args.func(args)


def test_bad_data_spec_and_bad_numbers(fake_stack, tmp_path):
    args = parse(["dialog", "--model", "m", "--data", "valid.jsonl"])
    with pytest.raises(DataError, match="SOURCE:PATH"):
        args.func(args)
    args = parse(["dialog", "--model", "m", "--data", "diatool:x.jsonl", "--batch-size", "0"])
    with pytest.raises(ConfigError, match="--batch-size"):
        args.func(args)
    args = parse(["dialog", "--model", "m", "--data", f"diatool:{tmp_path}/missing.jsonl"])
    with pytest.raises(DataError, match="no such file"):
        args.func(args)


def test_llm_judge_from_environment_with_cache_in_out_dir(fake_stack, tmp_path, monkeypatch):
    from dialog_fakes import Endpoint

    with Endpoint(lambda body, n: (200, "검토 결과\nfail\nfail")) as ep:
        monkeypatch.setenv("OPENAI_BASE_URL", ep.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
        args = parse(["dialog", "--model", "m", "--data", f"functionchat:{FIX}/FunctionChat-CallDecision.jsonl",
                      "--judge", "llm", "--judge-model", "gpt-judge", "--out", str(tmp_path), "--no-progress"])
        assert args.func(args) == 0
    # serial 1 passes by exact match without a request; the other six are sent to the judge
    assert len(ep.requests) == 6 and {r["auth"] for r in ep.requests} == {"Bearer sk-env"}
    items = [json.loads(line) for line in open(tmp_path / "dialog_functionchat_items.jsonl", encoding="utf-8")]
    assert [i["judge"] for i in items] == ["exact"] + ["llm"] * 6
    assert [i["passed"] for i in items] == [True] + [False] * 6
    assert len(open(tmp_path / "judge_cache.jsonl").readlines()) == 6
