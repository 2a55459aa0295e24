"""The BFCL run loop, report and CLI commands, driven by a scripted fake backend and a small
ChatML-style fake chat format (the real formats and backends are cross-checked elsewhere)."""

import dataclasses
import json
import os
import re

import pytest

from jaxtool import cli
from jaxtool.commands import eval as eval_cli
from jaxtool.data.schema import ToolCall
from jaxtool.eval import textgen
from jaxtool.eval.bfcl import data as src
from jaxtool.eval.bfcl import run as bfcl_run
from jaxtool.sample.backend import Completion

from test_bfcl_data import ROOT, gold_calls, render

NO_CALL = "I am sorry, none of these functions can answer that."


class CharTokenizer:
    """One token per character, so prompts decode back exactly."""

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


@dataclasses.dataclass
class Reply:
    content: str | None
    tool_calls: tuple = ()
    error: str | None = None


class FakeFormat:
    """ChatML rendering; tools (if any) listed in a system block; Hermes-style <tool_call> parsing."""

    stop_strings = ("<|im_end|>",)

    def prompt(self, conv):
        s = ""
        if conv.tools:
            s += "<|im_start|>system\nTOOLS " + json.dumps([t.spec() for t in conv.tools]) + "<|im_end|>\n"
        for m in conv.messages:
            s += f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n"
        return s + "<|im_start|>assistant\n"

    def parse(self, text):
        bodies = re.findall(r"<tool_call>(.*?)</tool_call>", text, re.S)
        calls = []
        for b in bodies:
            try:
                obj = json.loads(b)
            except json.JSONDecodeError as e:
                return Reply(None, (), f"bad tool call JSON: {e.msg}")
            calls.append(ToolCall(obj["name"], obj.get("arguments", {})))
        return Reply(None if calls else text, tuple(calls))


def prompt_ids(conv, fmt, tokenizer):
    return tokenizer.encode(fmt.prompt(conv))


class ScriptedBackend:
    """Answers each prompt with the scripted text of the question found in it."""

    name = "scripted"

    def __init__(self, script):
        self.tokenizer = CharTokenizer()
        self.script = script
        self.calls = []

    def generate(self, prompts, *, max_new_tokens=256, stop_strings=(), temperature=0.0, top_k=0, top_p=1.0, seed=0):
        self.calls.append({"n": len(prompts), "lengths": [len(p) for p in prompts], "stop": list(stop_strings),
                           "temperature": temperature, "max_new_tokens": max_new_tokens})
        outs = []
        for p in prompts:
            text = self.tokenizer.decode(p)
            last_user = text.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0]
            reply = self.script[last_user]
            outs.append(Completion(text=reply, token_ids=self.tokenizer.encode(reply), finish_reason="stop"))
        return outs


def last_user(item):
    return [m for m in item.messages if m["role"] == "user"][-1]["content"]


def build_script(style="prompting"):
    """simple_python: gold for even items, no call for odd; parallel: all gold; irrelevance: no call for
    the first four, a call for the last two; live_relevance: always a call."""
    script, expected = {}, {}
    cats = {c: src.read_category(c, root=ROOT) for c in ("simple_python", "parallel", "irrelevance", "live_relevance")}
    for i, it in enumerate(cats["simple_python"]):
        script[last_user(it)] = encode(gold_calls(it), style) if i % 2 == 0 else NO_CALL
        expected[it.id] = i % 2 == 0
    for it in cats["parallel"]:
        script[last_user(it)] = encode(gold_calls(it), style)
        expected[it.id] = True
    for i, it in enumerate(cats["irrelevance"]):
        script[last_user(it)] = NO_CALL if i < 4 else encode([(it.functions[0]["name"], {})], style)
        expected[it.id] = i < 4
    for it in cats["live_relevance"]:
        script[last_user(it)] = encode([(it.functions[0]["name"], {"x": 1})], style)
        expected[it.id] = True
    n_questions = sum(len(v) for v in cats.values())
    assert len(script) == n_questions  # questions are unique, so the script is unambiguous
    return script, expected


def encode(calls, style):
    if style == "prompting":
        return render(calls)
    return "".join(f'<tool_call>{json.dumps({"name": n, "arguments": a})}</tool_call>' for n, a in calls)


CATS = ["simple_python", "parallel", "irrelevance", "live_relevance"]


def test_evaluate_scores_and_reports(tmp_path):
    script, expected = build_script()
    backend = ScriptedBackend(script)
    summary, records = bfcl_run.evaluate(backend, FakeFormat(), prompt_ids, categories=CATS, root=ROOT,
                                         out_dir=str(tmp_path), progress=False, batch_size=4, max_new_tokens=64,
                                         settings={"model": "fake"})
    assert {r["id"]: r["valid"] for r in records} == expected
    # records come back in dataset order even though batches go longest prompt first
    assert [r["id"] for r in records] == [it.id for c in CATS for it in src.read_category(c, root=ROOT)]
    for call in backend.calls:
        assert call["n"] <= 4 and call["lengths"] == sorted(call["lengths"], reverse=True)
        assert call["stop"] == ["<|im_end|>"] and call["temperature"] == 0.0 and call["max_new_tokens"] == 64
    cats = summary["categories"]
    assert (cats["simple_python"]["correct"], cats["simple_python"]["total"]) == (9, 18)
    assert (cats["parallel"]["correct"], cats["irrelevance"]["correct"], cats["live_relevance"]["correct"]) == (10, 4, 6)
    agg = summary["aggregates"]
    assert agg["non_live_ast"]["accuracy"] == pytest.approx((9 / 18 + 10 / 10) / 2)
    assert agg["non_live_ast"]["missing"] == ["simple_java", "simple_javascript", "multiple", "parallel_multiple"]
    assert agg["irrelevance"]["accuracy"] == pytest.approx(4 / 6) and agg["relevance"]["accuracy"] == 1.0
    assert summary["overall_unweighted"] == pytest.approx((0.5 + 1 + 4 / 6 + 1) / 4)
    assert summary["overall_weighted"] == pytest.approx(29 / 40)
    assert summary["complete"] is True and summary["settings"]["model"] == "fake"
    for f in ("bfcl_items.jsonl", "bfcl_summary.json", "bfcl.md", "bfcl.png", "bfcl_predictions.jsonl"):
        assert os.path.getsize(tmp_path / f) > 0, f
    table = (tmp_path / "bfcl.md").read_text()
    assert "| simple_python" in table and "non_live_ast (unweighted mean; missing simple_java, simple_javascript, multiple, parallel_multiple)" in table
    failed = next(r for r in records if not r["valid"] and r["category"] == "simple_python")
    assert failed["error_type"] == "ast_decoder:decoder_failed" and failed["output"] == NO_CALL


def test_predictions_file_rescores_to_the_same_verdicts(tmp_path):
    script, expected = build_script()
    _, records = bfcl_run.evaluate(ScriptedBackend(script), FakeFormat(), prompt_ids, categories=CATS, root=ROOT,
                                   out_dir=str(tmp_path), progress=False)
    preds = [json.loads(line) for line in open(tmp_path / "bfcl_predictions.jsonl")]
    for cat in CATS:
        p = tmp_path / f"{cat}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in preds if r["category"] == cat))
        out = tmp_path / f"{cat}_verdicts.json"
        rc = cli.main(["eval", "bfcl-score", "--category", cat, "--predictions", str(p), "--out", str(out),
                       "--data-dir", ROOT])
        assert rc == 0
        result = json.loads(out.read_text())
        assert {v["id"]: v["valid"] for v in result["verdicts"]} == {r["id"]: r["valid"] for r in records
                                                                      if r["category"] == cat}
        assert result["missing"] == 0


def test_fc_style_uses_tools_and_the_format_parser(tmp_path):
    script, expected = build_script("fc")
    first = src.read_category("simple_python", root=ROOT)[0]
    script[last_user(first)] = "<tool_call>{not json</tool_call>"
    expected[first.id] = False
    backend = ScriptedBackend(script)
    summary, records = bfcl_run.evaluate(backend, FakeFormat(), prompt_ids, categories=CATS, root=ROOT, style="fc",
                                         out_dir=str(tmp_path), progress=False)
    assert {r["id"]: r["valid"] for r in records} == expected
    bad = records[0]
    assert bad["error_type"] == "ast_decoder:decoder_failed" and "bad tool call JSON" in bad["error"]
    row = json.loads(open(tmp_path / "bfcl_predictions.jsonl").readline())
    assert row["calls"] is None and "bad tool call JSON" in row["error"]


def test_long_prompts_fail_without_generation():
    script, _ = build_script()
    backend = ScriptedBackend(script)
    items = src.read_category("simple_python", root=ROOT)[:3]
    recs = bfcl_run.run_items(items, backend, FakeFormat(), prompt_ids, max_prompt_tokens=10, progress=False)
    assert [r["error_type"] for r in recs] == ["prompt_too_long"] * 3 and backend.calls == []


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def test_cli_bfcl_runs_end_to_end_with_a_fake_backend(tmp_path, monkeypatch, capsys):
    script, expected = build_script()
    seen = {}

    def fake_load_backend(kind, model, **kw):
        seen["backend"] = (kind, model)
        return ScriptedBackend(script)

    monkeypatch.setattr("jaxtool.sample.backend.load_backend", fake_load_backend)
    monkeypatch.setattr(textgen, "resolve_format", lambda name, tok: seen.setdefault("format", name) and FakeFormat())
    monkeypatch.setattr(textgen, "encode_prompt", prompt_ids)
    out = tmp_path / "out"
    rc = cli.main(["eval", "bfcl", "--model", "ckpt", "--backend", "hf", "--categories", "simple_python,irrelevance",
                   "--limit", "4", "--out", str(out), "--data-dir", ROOT, "--no-progress"])
    assert rc == 0
    assert seen == {"backend": ("hf", "ckpt"), "format": "pythonic"}
    summary = json.loads((out / "bfcl_summary.json").read_text())
    assert summary["categories"]["simple_python"] == {"correct": 2, "total": 4, "accuracy": 0.5}
    assert summary["categories"]["irrelevance"]["correct"] == 4
    assert summary["complete"] is False and summary["settings"]["backend"] == "hf"
    assert len((out / "bfcl_items.jsonl").read_text().splitlines()) == 8
    assert "| simple_python" in capsys.readouterr().out


def test_cli_bfcl_rejects_unknown_category(capsys):
    rc = cli.main(["eval", "bfcl", "--model", "x", "--categories", "simple_python,nope", "--data-dir", ROOT])
    assert rc == 2 and "unknown BFCL category 'nope'" in capsys.readouterr().err


def _score(tmp_path, rows, category="parallel", fmt=None, extra=()):
    p = tmp_path / "p.jsonl"
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    out = tmp_path / "r.json"
    argv = ["eval", "bfcl-score", "--category", category, "--predictions", str(p), "--out", str(out),
            "--data-dir", ROOT] + (["--format", fmt] if fmt else []) + list(extra)
    return cli.main(argv), out


def test_bfcl_score_rows_missing_ids_and_reasons(tmp_path):
    items = src.read_category("parallel", root=ROOT)
    g0, g1 = gold_calls(items[0]), gold_calls(items[1])
    rows = [{"id": items[0].id, "calls": [{"name": n, "arguments": a} for n, a in g0]},
            {"id": items[1].id, "text": render(g1[:1])},
            {"id": items[2].id, "result": "no idea"},
            {"id": items[3].id, "calls": None, "error": "unparseable"}]
    rc, out = _score(tmp_path, rows)
    assert rc == 0
    r = json.loads(out.read_text())
    v = {x["id"]: x for x in r["verdicts"]}
    assert v[items[0].id]["valid"] and v[items[0].id]["error_type"] is None
    assert v[items[1].id]["error_type"] == "parallel_function_checker_no_order:wrong_count"
    assert v[items[2].id]["error_type"] == "ast_decoder:decoder_failed"
    assert v[items[3].id]["error"].endswith("unparseable")
    # by default the file's ids are scored, and the output says how many of the category that is
    assert r["missing"] == 0 and (r["correct"], r["total"], r["category_items"]) == (1, 4, 10)
    assert r["scored_ids"] == "predictions" and [x["id"] for x in r["verdicts"]] == [it.id for it in items[:4]]
    # --all-ids: every id of the category, ids without a prediction fail
    rc, out = _score(tmp_path, rows, extra=["--all-ids"])
    r = json.loads(out.read_text())
    v = {x["id"]: x for x in r["verdicts"]}
    assert r["missing"] == 6 and r["missing_ids"] == [it.id for it in items[4:]]
    assert v[items[4].id]["error_type"] == "missing_prediction"
    assert (r["correct"], r["total"]) == (1, 10) and [x["id"] for x in r["verdicts"]] == [it.id for it in items]
    # --ids: a subset, in dataset order; a listed id without a prediction fails
    rc, out = _score(tmp_path, rows, extra=["--ids", f"{items[5].id},{items[0].id}"])
    r = json.loads(out.read_text())
    assert [x["id"] for x in r["verdicts"]] == [items[0].id, items[5].id] and (r["correct"], r["missing"]) == (1, 1)


def test_bfcl_score_unknown_id_in_ids_is_named(tmp_path, capsys):
    rc, _ = _score(tmp_path, [{"id": "parallel_0", "calls": []}], extra=["--ids", "parallel_0,parallel_999"])
    assert rc == 2 and "parallel_999" in capsys.readouterr().err


def test_bfcl_score_json_text(tmp_path):
    items = src.read_category("parallel", root=ROOT)
    g0 = gold_calls(items[0])
    rc, out = _score(tmp_path, [{"id": items[0].id, "text": json.dumps([{"name": n, "arguments": a} for n, a in g0])}],
                     fmt="json")
    assert rc == 0 and json.loads(out.read_text())["verdicts"][0]["valid"]


@pytest.mark.parametrize("rows,message", [
    ([{"id": "parallel_0", "calls": []}, {"id": "simple_python_0", "calls": []}],
     "row 2: id 'simple_python_0' is not an item of BFCL category parallel"),
    ([{"id": "parallel_0", "calls": []}, {"id": "parallel_0", "calls": []}], "row 2: id 'parallel_0' appears a second time"),
    (["{bad json"], "row 1: not JSON"),
    ([{"id": "parallel_0", "calls": "f()"}], "row 1: field 'calls' must be a list"),
    ([{"id": "parallel_0", "calls": [{"arguments": {}}]}], "row 1: field 'calls': call has no string 'name'"),
    ([{"id": "parallel_0"}], "row 1: expected a field 'calls'"),
    ([{"calls": []}], "row 1: expected an object with a string field 'id'"),
])
def test_bfcl_score_bad_rows_name_the_row(tmp_path, capsys, rows, message):
    rc, _ = _score(tmp_path, rows)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "p.jsonl" in err


def test_eval_group_help_and_missing_benchmarks(monkeypatch, capsys):
    assert cli.main(["eval"]) == 1
    assert "bfcl-score" in capsys.readouterr().out
    monkeypatch.setattr(eval_cli, "SUBCOMMANDS", eval_cli.SUBCOMMANDS + [("nothere", "jaxtool.eval.nothere"),
                                                                         ("report", "jaxtool.eval.report")])
    with pytest.warns(UserWarning, match=r"jaxtool.eval.report has no register\(subparsers\); `jaxtool eval report`"):
        parser = cli.build_parser()
    assert parser is not None


def test_fc_style_parse_error_from_a_real_format_is_undecodable():
    from jaxtool.data.formats import get_format
    from jaxtool.eval.bfcl.decode import DecodeError
    from jaxtool.eval.bfcl.run import decode_completion

    out = decode_completion('<tool_call>\n{"name": "f", "arguments": {"x": 1-2-3-}}\n</tool_call>',
                            get_format("hermes"), "fc")
    assert isinstance(out, DecodeError)


def test_bfcl_overall_scores_by_bfcls_rules():
    from jaxtool.eval.bfcl.score import summarize

    valid = {"simple_python": [True] * 3 + [False], "simple_java": [True, False], "simple_javascript": [False],
             "multiple": [True], "parallel": [True, False], "parallel_multiple": [False, False],
             "live_simple": [True] * 3 + [False], "live_multiple": [True] + [False] * 5,
             "irrelevance": [True], "live_irrelevance": [True, False], "live_relevance": [True],
             "multi_turn_base": [True, False], "multi_turn_miss_func": [False], "multi_turn_long_context": [True]}
    s = summarize(valid)["bfcl_scores"]
    simple = (0.75 + 0.5 + 0.0) / 3                       # BFCL: Non-Live simple = mean of the languages
    non_live = (simple + 1.0 + 0.5 + 0.0) / 4
    live = (3 + 1) / (4 + 6)                               # item-weighted; live_parallel* not run
    multi = (0.5 + 0.0 + 0.0 + 1.0) / 4                    # miss_param not run: counted 0, as BFCL does
    assert s["groups"]["non_live"]["accuracy"] == pytest.approx(non_live)
    assert s["groups"]["live"]["accuracy"] == pytest.approx(live)
    assert s["groups"]["irrelevance"]["accuracy"] == pytest.approx(0.75)
    assert s["groups"]["multi_turn"]["missing"] == ["multi_turn_miss_param"]
    assert s["v3_overall"]["accuracy"] == pytest.approx((non_live + live + multi) / 3)
    assert s["v4_overall"]["accuracy"] == pytest.approx((10 * non_live + 10 * live + 10 * 0.75 + 30 * multi) / 100)
    assert "web_search_base" in s["v4_overall"]["missing"] and "V4" in s["data"]


def test_jax_backend_pads_a_partial_batch_to_a_power_of_two_not_to_batch_size(monkeypatch):
    # multi-turn's --sequential sends one prompt per call and the last chunk of a round is partial:
    # neither may pay for batch_size rows (the rows each generate_ids call got are recorded)
    import types

    from jaxtool.sample import jax_backend

    rows_seen = []

    def fake_generate_ids(params, cfg, batch, **kw):
        rows_seen.append(len(batch))
        return types.SimpleNamespace(tokens=[[7]] * len(batch), logprobs=[[0.0]] * len(batch),
                                     finish_reasons=["length"] * len(batch))

    monkeypatch.setattr(jax_backend, "generate_ids", fake_generate_ids)
    class Tok(CharTokenizer):
        eos_token_id = None

        def decode(self, ids, skip_special_tokens=False):
            return super().decode(ids)

    model = types.SimpleNamespace(tokenizer=Tok(), params=None, run=None,
                                  config=types.SimpleNamespace(eos_ids=(), pad_token_id=0))
    backend = jax_backend.JaxBackend(model, batch_size=8)
    outs = backend.generate([[1, 2, 3]] * 11, max_new_tokens=1)
    assert rows_seen == [8, 4] and len(outs) == 11          # 8 + a partial 3 -> 4 rows, not 8
    rows_seen.clear()
    backend.generate([[1]], max_new_tokens=1)
    assert rows_seen == [1]
    assert [jax_backend.rows_for(n, 6) for n in range(1, 7)] == [1, 2, 4, 4, 6, 6]
