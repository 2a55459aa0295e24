"""`jaxtool bench rl` runs end to end on the tiny model (ours and the transformers side) and writes
its table. It checks the harness — rows, columns, the fixed token count of both sides — not the
speed (speed is measured by `jaxtool bench rl`, not asserted in tests)."""

import json

import pytest

from jaxtool.cli import main
from jaxtool.data.schema import Conversation, Message, Tool, ToolCall


def _tasks(path):
    tool = Tool("get_weather", "Weather of a city.", {"type": "object", "properties": {"city": {"type": "string"}},
                                                       "required": ["city"]})
    rows = [Conversation((Message("user", f"weather in {c}?"),
                          Message("assistant", None, tool_calls=(ToolCall("get_weather", {"city": c}),))),
                         tools=(tool,), meta={"id": f"w{i}"}) for i, c in enumerate(["Paris", "Rome", "Oslo"])]
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    return f"conversations:{path}"


@pytest.mark.slow
def test_bench_rl_runs_on_the_tiny_model(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(["bench", "rl", "--rl-model", tiny_model_dir, "--rl-data", _tasks(tmp_path / "t.jsonl"),
               "--rl-prompts", "2", "--rl-group", "2", "--rl-new-tokens", "5", "--repeats", "1", "--out", str(out)])
    assert rc == 0
    (row,) = json.loads((out / "bench_rl.json").read_text())["rows"]
    o, t = row["ours"], row["theirs"]
    # both sides sampled exactly prompts x group x new_tokens tokens
    assert row["sampled_tokens"] == t["sampled_tokens"] == 2 * 2 * 5
    assert o["rollout_tok_s"] > 0 and o["update_tok_s"] > 0 and t["rollout_tok_s"] > 0
    assert 0 < o["rollout_share"] < 1 and 0 < o["update_share"] < 1
    assert abs(o["rollout_share"] + o["update_share"] + o["other_share"] - 1) < 1e-6
    assert row["rollout_ratio"] == o["rollout_tok_s"] / t["rollout_tok_s"]
    printed = capsys.readouterr().out
    assert "transformers generate" in printed and "rollout tokens/s" in printed
    assert (out / "bench_rl.md").read_text().count("|") > 10


def test_evaluate_rewards_on_the_tiny_model(tiny_model_dir, tmp_path, capsys):
    """`jaxtool rl --evaluate`: per-task rewards over samples, the bootstrap summary and the counts."""
    out = tmp_path / "ev.json"
    rc = main(["rl", "--evaluate", tiny_model_dir, "--eval-data", _tasks(tmp_path / "t.jsonl"), "--samples", "2",
               "--temperature", "1.0", "--max-tokens", "4", "--format", "hermes", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["tasks"] == ["w0", "w1", "w2"] and res["samples"] == 2
    for name in ("outcome", "partial"):
        s = res["summary"][name]
        assert s["n"] == 3 and s["lo"] <= s["mean"] <= s["hi"]
        assert all(0.0 <= v <= 1.0 for v in res["per_task"][name])
    assert sum(v for k, v in res["counts"].items() if k.startswith("finish: ")) == 6
    assert "outcome:" in capsys.readouterr().out
