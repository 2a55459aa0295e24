"""`jaxtool eval suite --suite calm|itool|diatool` end to end with the scripted backend and fake
format (tests/dialog_fakes.py): every benchmark's numbers reach the paper-layout table unchanged (in
percent), data not given is "not run" with its flag, BFCL multi-turn is "not run" with the reason,
and the paper column holds only the numbers cited."""

import argparse
import json
import os
import re

import pytest

from dialog_fakes import ScriptedBackend, install_fake_stack
from jaxtool.commands import eval_suite

HERE = os.path.dirname(__file__)
FIX = os.path.join(HERE, "fixtures")


def _run(monkeypatch, argv, respond):
    created = []

    def load_backend(name, model, **kw):
        created.append(ScriptedBackend(respond))
        return created[-1]

    import jaxtool.eval.bfcl  # noqa: F401  (imports the real chat formats before the fake stack replaces them)

    install_fake_stack(monkeypatch, load_backend)
    parser = argparse.ArgumentParser()
    eval_suite.register(parser.add_subparsers())
    args = parser.parse_args(["suite", "--model", "m", "--no-progress"] + argv)
    assert args.func(args) == 0
    return created


def _paper_rows(out):
    rows = {}
    for line in open(os.path.join(out, "suite_paper.md")).read().splitlines()[2:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_suite_calm_multiwoz_e2e_and_not_run_rows(monkeypatch, tmp_path, capsys):
    from test_multiwoz_e2e import _respond

    raw = json.load(open(os.path.join(FIX, "multiwoz", "val_slice.json")))
    data = tmp_path / "two.json"
    data.write_text(json.dumps({k: raw[k] for k in ("SNG0752", "SNG02260")}))
    out = str(tmp_path / "calm")
    _run(monkeypatch, ["--suite", "calm", "--out", out, "--multiwoz-data", str(data), "--multiwoz-db",
                       os.path.join(FIX, "multiwoz_db"), "--apibank-l1",
                       os.path.join(FIX, "api_bank", "lv3-response-train-slice.json"), "--limit-apibank", "2",
                       "--bfcl-data-dir", os.path.join(FIX, "bfcl"), "--bfcl-categories", "simple_python",
                       "--limit-bfcl", "2"], _respond)
    s = json.load(open(os.path.join(out, "suite_summary.json")))
    b = s["benchmarks"]
    e2e = json.load(open(os.path.join(out, "multiwoz_e2e", "multiwoz_e2e_summary.json")))
    # the scripted agent of test_multiwoz_e2e: Inform and Success 1.0 (hand-worked there)
    assert (e2e["inform"], e2e["success"]) == (1.0, 1.0) and b["multiwoz_e2e"]["metrics"]["Success"] == 1.0
    rows = _paper_rows(out)
    assert float(rows["MultiWOZ 2.4 Success"][0]) == 100 and float(rows["MultiWOZ 2.4 Inform"][0]) == 100
    dst = json.load(open(os.path.join(out, "multiwoz", "multiwoz_summary.json")))
    assert float(rows["MultiWOZ 2.4 JGA (DST prompts)"][0]) == pytest.approx(round(dst["jga"] * 100, 2))
    ab = json.load(open(os.path.join(out, "apibank_l1", "apibank_l1_summary.json")))
    assert float(rows["API-Bank L1 ROUGE-L"][0]) == pytest.approx(round(ab["rouge_l"] * 100, 2))
    assert b["apibank_l1"]["metrics"]["ROUGE-2"] == ab["response"]["rouge_2"]
    assert rows["API-Bank L2 ROUGE-L"][0] == "not run: no data: give --apibank-l2 FILE"
    assert rows["BFCL Multi-turn"][0].startswith("not run: --bfcl-data-dir") and "no multi-turn files" in \
        rows["BFCL Multi-turn"][0]
    assert rows["BFCL Overall (V3)"][0].startswith("not computed: BFCL's overall includes multi-turn")
    # one BFCL category of four: BFCL counts the others 0 inside Non-Live, and the table says so
    assert "partial: 5 categories not run count 0" in rows["BFCL Non-live"][0]
    assert rows["API-Bank L1 call accuracy"][0] == "n/a (no items)"  # a response-only file
    # the paper column: CoALM 8B's numbers as read from CoALM Tables 2-4 (copied here by hand, not from
    # the code); rows the paper has no number for stay empty, never 0
    paper = {"MultiWOZ 2.4 Success": 51.6, "MultiWOZ 2.4 Inform": "", "MultiWOZ 2.4 JGA (DST prompts)": 30.4,
             "API-Bank L1 ROUGE-L": 92.8, "API-Bank L1 call accuracy": "", "API-Bank L2 ROUGE-L": 81.9,
             "API-Bank L2 call accuracy": "", "BFCL Overall (V3)": 54.11, "BFCL Non-live": 85.17,
             "BFCL Live": 72.59, "BFCL Multi-turn": 7.0}
    assert {k: (float(r[1]) if r[1] else "") for k, r in rows.items()} == paper
    assert "Table 2" in rows["MultiWOZ 2.4 Success"][2] and "Table 4" in rows["BFCL Live"][2]
    assert "MultiWOZ 2.4 Success" in capsys.readouterr().out


def test_suite_itool_bfcl_layout_with_multi_turn(monkeypatch, tmp_path):
    """Installed bfcl-eval data: one item per single-turn category, one entry per multi-turn category."""
    from jaxtool.eval.bfcl.score import bfcl_scores

    out = str(tmp_path / "itool")
    _run(monkeypatch, ["--suite", "itool", "--out", out, "--limit-bfcl", "1", "--limit-bfcl-multi-turn", "1"],
         lambda p: "I cannot help with that.")
    rows = _paper_rows(out)
    assert list(rows) == ["BFCL Overall (V3)", "BFCL Non-live", "BFCL Live", "BFCL Multi-turn", "BFCL Relevance",
                          "BFCL Irrelevance"]
    # a model that never calls: every AST item and every multi-turn entry fails (empty turns), every
    # irrelevance item passes, the relevance item fails
    assert float(rows["BFCL Non-live"][0]) == 0 and float(rows["BFCL Live"][0]) == 0
    assert float(rows["BFCL Irrelevance"][0]) == 100 and float(rows["BFCL Relevance"][0]) == 0
    assert float(rows["BFCL Multi-turn"][0]) == 0 and float(rows["BFCL Overall (V3)"][0]) == 0
    # iTool's BFCL table could not be read here: every paper cell is empty (not 0) and says why
    assert all(r[1] == "" and "not verified here" in r[2] for r in rows.values())
    mt = json.load(open(os.path.join(out, "bfcl_multi_turn", "bfcl_summary.json")))
    assert sorted(mt["categories"]) == ["multi_turn_base", "multi_turn_long_context", "multi_turn_miss_func",
                                        "multi_turn_miss_param"]
    assert all(c["total"] == 1 and c["correct"] == 0 for c in mt["categories"].values())
    s = json.load(open(os.path.join(out, "suite_summary.json")))
    st = json.load(open(os.path.join(out, "bfcl", "bfcl_summary.json")))
    want = bfcl_scores({**st["categories"], **mt["categories"]})
    assert s["benchmarks"]["bfcl_overall"]["metrics"]["V3 Overall"] == want["v3_overall"]["accuracy"]
    assert s["benchmarks"]["bfcl_overall"]["missing"]["V3 Overall"] == []
    # the table's n is each row's own: one entry per multi-turn category, four in the group
    table = open(os.path.join(out, "suite.md")).read()
    assert re.search(r"\| multi_turn_base +\| 1 entries +\|", table)
    assert re.search(r"\| Multi-Turn +\| 4 entries +\|", table)
    n_irr = st["categories"]["irrelevance"]["total"] + st["categories"]["live_irrelevance"]["total"]
    assert re.search(rf"\| Irrelevance +\| {n_irr} items +\|", table)


def test_suite_diatool_functionchat(monkeypatch, tmp_path):
    out = str(tmp_path / "dia")
    spec = "functionchat:" + os.path.join(FIX, "functionchat_calldecision_slice", "calldecision_4.jsonl")
    _run(monkeypatch, ["--suite", "diatool", "--out", out, "--functionchat-data", spec],
         lambda p: "어떤 정보가 필요하신가요?")
    dia = json.load(open(os.path.join(out, "functionchat", "functionchat_summary.json")))
    rows = _paper_rows(out)
    assert float(rows["FunctionChat dialog (micro avg)"][0]) == pytest.approx(round(dia["micro_avg"] * 100, 2))
    for t, v in dia["per_type"].items():
        assert float(rows[t][0]) == pytest.approx(round(v["accuracy"] * 100, 2))
    # a model that never calls fails every call turn
    assert dia["per_type"]["call"]["accuracy"] == 0.0
    # DiaTool-DPO Table 3, row "DiaTool-DPO (Ours)" (0-1 in the paper), copied here by hand
    assert {k: float(r[1]) for k, r in rows.items()} == {
        "FunctionChat dialog (micro avg)": 90.5, "call": 85.7, "completion": 92.9, "slot": 91.7,
        "relevance": 91.3, "macro avg": 90.4}
    s = json.load(open(os.path.join(out, "suite_summary.json")))
    assert list(s["benchmarks"]) == ["functionchat"]
    # each turn type's row counts its own turns
    table = open(os.path.join(out, "suite.md")).read()
    for t, v in dia["per_type"].items():
        assert re.search(rf"\| {t} +\| {v['n']} turns +\|", table)


def test_suite_flags_checked_before_the_model(monkeypatch, tmp_path):
    from jaxtool.errors import DataError

    with pytest.raises(DataError, match="--functionchat-data .*no such file"):
        _run(monkeypatch, ["--suite", "diatool", "--out", str(tmp_path), "--functionchat-data",
                           "functionchat:" + str(tmp_path / "nope.jsonl")], lambda p: "")
    with pytest.raises(DataError, match="--multiwoz-db .*no such file"):
        _run(monkeypatch, ["--suite", "calm", "--out", str(tmp_path), "--multiwoz-db", str(tmp_path / "db")],
             lambda p: "")
    with pytest.raises(DataError, match="cannot read a suite summary"):
        _run(monkeypatch, ["--suite", "calm", "--out", str(tmp_path), "--reuse", str(tmp_path / "none")], lambda p: "")


def test_suite_reuses_a_benchmark_only_with_the_same_fingerprint(monkeypatch, tmp_path):
    """BFCL multi-turn run in an itool suite is copied into a calm suite of the same model and settings
    (no multi-turn prompt generated again); a changed generation setting runs it again."""
    first = str(tmp_path / "itool")
    b1 = _run(monkeypatch, ["--suite", "itool", "--out", first, "--bfcl-categories", "irrelevance", "--limit-bfcl", "1",
                            "--limit-bfcl-multi-turn", "1"], lambda p: "I cannot help with that.")[0]
    mt_prompts = len(b1.prompts) - 1  # one irrelevance item, the rest are multi-turn steps
    assert mt_prompts >= 4  # at least one step for each of the four categories

    second = str(tmp_path / "calm")
    b2 = _run(monkeypatch, ["--suite", "calm", "--out", second, "--bfcl-categories", "simple_python", "--limit-bfcl",
                            "1", "--limit-bfcl-multi-turn", "1", "--reuse", first],
              lambda p: "I cannot help with that.")[0]
    assert len(b2.prompts) == 1  # only the simple_python item: multi-turn was not generated again
    s1 = json.load(open(os.path.join(first, "suite_summary.json")))["benchmarks"]
    s2 = json.load(open(os.path.join(second, "suite_summary.json")))["benchmarks"]
    assert s2["bfcl_multi_turn"]["reused_from"] == os.path.abspath(first)
    assert s2["bfcl_multi_turn"]["metrics"] == s1["bfcl_multi_turn"]["metrics"]
    assert s2["bfcl"].get("reused_from") is None  # different categories: run, not reused
    # the files come along, and the overall is computed from them
    mt = json.load(open(os.path.join(second, "bfcl_multi_turn", "bfcl_summary.json")))
    assert sorted(mt["categories"]) == sorted(s1["bfcl_multi_turn"]["categories"])
    assert s2["bfcl_overall"]["status"] == "ok"
    assert "Reused, not rerun" in open(os.path.join(second, "suite_paper.md")).read()

    third = str(tmp_path / "calm_longer")
    b3 = _run(monkeypatch, ["--suite", "calm", "--out", third, "--bfcl-categories", "simple_python", "--limit-bfcl",
                            "1", "--limit-bfcl-multi-turn", "1", "--max-new-tokens-bfcl-multi-turn", "100",
                            "--reuse", first], lambda p: "I cannot help with that.")[0]
    assert len(b3.prompts) == 1 + mt_prompts  # a different budget: multi-turn run again
    assert "reused_from" not in json.load(open(os.path.join(third, "suite_summary.json")))["benchmarks"]["bfcl_multi_turn"]


def test_fingerprint_follows_data_content_not_only_the_path(tmp_path):
    from jaxtool.eval import suite

    f = tmp_path / "items.json"
    f.write_text("[1]")
    kw = dict(model_label="m", backend_name="jax", fmt_name="alpaca", limits=suite.SuiteLimits(apibank=3),
              settings=suite.SuiteSettings())
    a = suite.bench_fingerprint("apibank_l1", data=suite.SuiteData(apibank_l1=str(f)), **kw)
    assert a == suite.bench_fingerprint("apibank_l1", data=suite.SuiteData(apibank_l1=str(f)), **kw)
    f.write_text("[2]")
    assert a != suite.bench_fingerprint("apibank_l1", data=suite.SuiteData(apibank_l1=str(f)), **kw)
    assert a["limit"] == 3 and a["settings"] == {"batch_size": 8, "max_new_tokens_apibank": 128}
    # level 2's data field is not level 1's
    assert "apibank_l1" not in suite.bench_fingerprint("apibank_l2", data=suite.SuiteData(apibank_l1=str(f)), **kw)["data"]
