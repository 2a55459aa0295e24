"""`jaxtool data build-calm`, the CALM recipes, and `jaxtool eval suite` (with a scripted backend)."""

import argparse
import json
import os
import re

import pytest

from jaxtool.calm.example import CalmExample
from jaxtool.commands import build_calm, eval_suite
from jaxtool.data import sources
from jaxtool.errors import ConfigError, DataError
from jaxtool.sample.completion import Completion

HERE = os.path.dirname(__file__)
FIX = os.path.join(HERE, "fixtures")
ROOT = os.path.dirname(HERE)
INPUTS = ["--snips", os.path.join(FIX, "snips"), "--sgd", os.path.join(FIX, "sgd", "train"),
          "--toolace", os.path.join(FIX, "toolace", "toolace_sample.json"),
          "--xlam", os.path.join(FIX, "xlam", "xlam_sample.json")]


def _parse(module, argv):
    p = argparse.ArgumentParser()
    module.register(p.add_subparsers())
    return p.parse_args(argv)


def test_build_calm_writes_a_trainable_mix(tmp_path, capsys):
    out = tmp_path / "calm"
    args = _parse(build_calm, ["build-calm", *INPUTS, "--out", str(out), "--weights", "all", "--tokenizer", "none"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "| dst " in printed and "unparseable call" in printed  # bad ToolACE row counted by reason
    summary = json.loads((out / "summary.json").read_text())
    rows = list(sources.load("conversations", str(out / "calm_it.jsonl")))
    assert len(rows) == summary["rows"] == sum(t["selected"] for t in summary["tasks"].values())
    tasks = {CalmExample.from_conversation(c.replace(meta=c.meta["origin"])).task for c in rows}
    assert tasks == {"dst", "hammer", "toolace", "cra"}
    assert summary["tasks"]["dst"]["selected"] == 145
    reasons = {(b["task"], b["reason"]) for b in summary["bad_rows"]}
    assert ("toolace", "unparseable call") in reasons and ("hammer", "invalid json") in reasons
    # the same command again gives the same file
    first = (out / "calm_it.jsonl").read_text()
    assert args.func(args) == 0 and (out / "calm_it.jsonl").read_text() == first


def test_default_mix_is_every_row_and_hammer_masks_xlam_only(tmp_path):
    """CALM §4.1: the default mix holds every row of every task; Hammer-masked rows come from the
    xlam-format data Hammer masks, and ToolACE stays its own task (`--hammer-toolace` is the option)."""
    out = tmp_path / "calm"
    args = _parse(build_calm, ["build-calm", *INPUTS, "--out", str(out), "--tokenizer", "none"])
    assert args.func(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["weights"] == "all" and s["hammer_toolace"] is False and s["cra_layout"] == "figures"
    assert all(t["selected"] == t["available"] > 0 for t in s["tasks"].values())
    rows = [CalmExample.from_conversation(c.replace(meta=c.meta["origin"]))
            for c in sources.load("conversations", str(out / "calm_it.jsonl"))]
    hammer = [r for r in rows if r.task == "hammer"]
    assert hammer and {r.meta["source"] for r in hammer} == {"xlam"}
    # the xlam fixture's 12 usable rows, one Hammer row each (no ToolACE dialogue among them)
    assert s["tasks"]["hammer"]["available"] == len({r.meta["row"] for r in hammer}) == 12
    assert _parse(build_calm, ["build-calm", *INPUTS, "--dry-run", "--hammer-toolace"]).hammer_toolace
    from jaxtool.calm.build import BuildConfig, convert_all

    by_task, _ = convert_all(BuildConfig(toolace=INPUTS[5], xlam=INPUTS[7], hammer_toolace=True))
    assert {r.meta["source"] for r in by_task["hammer"]} == {"xlam", "toolace"}


def test_build_calm_dry_run_and_errors(tmp_path, capsys):
    args = _parse(build_calm, ["build-calm", *INPUTS, "--dry-run", "--tokenizer", "none", "--out", str(tmp_path / "x")])
    assert args.func(args) == 0
    assert "| toolace " in capsys.readouterr().out and not (tmp_path / "x").exists()
    args = _parse(build_calm, ["build-calm", "--snips", str(tmp_path / "missing"), "--out", str(tmp_path)])
    with pytest.raises(DataError, match="--snips .*missing: no such file"):
        args.func(args)
    args = _parse(build_calm, ["build-calm", *INPUTS, "--weights", "sgd=1", "--dry-run", "--tokenizer", "none"])
    with pytest.raises(ConfigError, match="tasks from"):
        args.func(args)


def test_token_statistics_and_max_tokens(smollm2_tokenizer):
    from jaxtool.calm.build import BuildConfig, build

    cfg = BuildConfig(snips=os.path.join(FIX, "snips"), sgd=os.path.join(FIX, "sgd", "train"), weights="all",
                      max_tokens=700)
    res = build(cfg, tokenizer=smollm2_tokenizer)
    s = res.summary
    assert s["max"] <= 700 and s["tasks"]["cra"]["max"] <= 700
    long = [b for b in s["bad_rows"] if b["reason"] == "longer than max_tokens"]
    assert long and long[0]["task"] == "cra" and long[0]["stage"] == "tokenize"
    raw = [d for f in sorted(os.listdir(os.path.join(FIX, "sgd", "train"))) if f.startswith("dialogues_")
           for d in json.load(open(os.path.join(FIX, "sgd", "train", f)))]
    system_turns = [t for d in raw for t in d["turns"] if t["speaker"] == "SYSTEM"]
    n_cra = len(system_turns) + sum("service_call" in fr for t in system_turns for fr in t["frames"])
    assert s["tasks"]["cra"]["available"] + long[0]["rows"] == n_cra  # every CRA row is kept or counted
    assert s["tasks"]["dst"]["trained_tokens"] < s["tasks"]["dst"]["tokens"]


@pytest.mark.parametrize("name", ["llama3_8b_lora", "llama3_70b_lora", "smollm2_cpu"])
def test_recipes_load(name):
    from jaxtool.config import load_config

    cfg = load_config(os.path.join(ROOT, "configs", "calm", f"{name}.yaml"))
    assert (cfg.lora.enabled, cfg.lora.rank, cfg.lora.alpha) == (True, 16, 32.0)
    assert set(cfg.lora.targets) == {"wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"}
    assert cfg.data.format == "alpaca" and cfg.loss.type == "sft" and cfg.optim.warmup_ratio == 0.1
    if name != "smollm2_cpu":
        assert (cfg.batch_size, cfg.epochs, cfg.optim.lr, cfg.model.compute_dtype) == (8, 3, 1e-4, "bfloat16")


def test_405b_recipe_is_qlora_on_an_nf4_base():
    from jaxtool.config import load_config

    c = load_config(os.path.join(ROOT, "configs", "calm", "llama3_405b_qlora.yaml"))
    assert c.lora.enabled and c.lora.base_quant == "nf4" and (c.lora.rank, c.lora.alpha) == (16, 32.0)
    assert (c.batch_size, c.epochs, c.optim.lr) == (8, 3, 1e-4)


# --------------------------------------------------------------------------------------------
# eval suite
# --------------------------------------------------------------------------------------------

class RuleBackend:
    """Answers by what the prompt asks (decoded with the real tokenizer)."""

    name = "rules"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.n = 0

    def generate(self, prompts, *, max_new_tokens=256, stop_strings=(), temperature=0.0, top_k=0, top_p=1.0, seed=0):
        out = []
        for p in prompts:
            text = self.tokenizer.decode(p)
            self.n += 1
            if "Which domain" in text:
                reply = "restaurant"
            elif "You track what a customer wants" in text:
                reply = "'area':'centre'"
            elif "Generate an API request" in text or "API-Request" in text:
                reply = "API-Request: [ToolSearcher(keywords='healthcare provider appointment availability checker')]"
            else:
                reply = "[calculate_triangle_area(base=10, height=5)]"
            out.append(Completion(text=reply, token_ids=[1], finish_reason="eos"))
        return out


def test_eval_suite_runs_every_benchmark(tmp_path, smollm2_tokenizer):
    from jaxtool.data.formats import get_format
    from jaxtool.eval import suite

    backend = RuleBackend(smollm2_tokenizer)
    fmt = get_format("alpaca", tokenizer=smollm2_tokenizer)
    data = suite.SuiteData(multiwoz=os.path.join(FIX, "multiwoz", "val_slice.json"),
                           apibank_l1=os.path.join(FIX, "api_bank", "lv3-api-train-slice.json"),
                           bfcl_dir=os.path.join(FIX, "bfcl"), bfcl_categories=("simple_python", "multiple"))
    out = str(tmp_path / "after")
    s = suite.run_suite(backend, fmt, "alpaca", out, data=data,
                        limits=suite.SuiteLimits(multiwoz=1, apibank=3, bfcl=2),
                        settings=suite.SuiteSettings(progress=False), model_label="m", label="after")
    b = s["benchmarks"]
    assert b["apibank_l2"]["status"] == "not run" and "--apibank-l2" in b["apibank_l2"]["reason"]
    for name in ("multiwoz", "apibank_l1", "bfcl"):
        assert b[name]["status"] == "ok"
    # each benchmark's own files, and the suite's numbers are theirs
    mw = json.load(open(os.path.join(out, "multiwoz", "multiwoz_summary.json")))
    assert b["multiwoz"]["metrics"]["JGA"] == mw["jga"] and b["multiwoz"]["n"] == mw["n_turns"]
    ab = json.load(open(os.path.join(out, "apibank_l1", "apibank_l1_summary.json")))
    assert b["apibank_l1"]["metrics"]["API-call acc"] == ab["api_accuracy"] and b["apibank_l1"]["n"] == 3
    bf = json.load(open(os.path.join(out, "bfcl", "bfcl_summary.json")))
    assert b["bfcl"]["n"] == 4 and b["bfcl"]["metrics"]["AST overall"] == bf["overall_unweighted"]
    assert os.path.exists(os.path.join(out, "bfcl", "bfcl.png"))
    # first API-Bank item expects exactly the ToolSearcher call the backend gives
    items = [json.loads(x) for x in open(os.path.join(out, "apibank_l1", "apibank_l1_items.jsonl"))]
    assert items[0]["correct"] is True
    # one table and one chart, with an earlier run as a column
    before = dict(s, label="before")
    before["benchmarks"] = {k: (dict(v, metrics={m: 0.0 for m in v["metrics"]}) if v.get("metrics") else v)
                            for k, v in b.items()}
    paths = suite.write_outputs(out, [before, s])
    table = open(paths["table"]).read()
    assert "| benchmark" in table and "before" in table and "after" in table
    assert re.search(r"API-Bank level 2 +\| – +\| +\| not run +\| not run", table)
    assert os.path.getsize(paths["chart"]) > 1000
    assert suite.read_summary(out)["label"] == "after"


def test_eval_suite_command_checks_inputs_first(tmp_path):
    args = _parse(eval_suite, ["suite", "--model", "nonexistent-model", "--out", str(tmp_path),
                               "--apibank-l1", str(tmp_path / "missing.json")])
    with pytest.raises(DataError, match="--apibank-l1 .*missing.json: no such file"):
        args.func(args)
    args = _parse(eval_suite, ["suite", "--model", "nonexistent-model", "--out", str(tmp_path),
                               "--compare", str(tmp_path / "nothing")])
    with pytest.raises(DataError, match="cannot read a suite summary"):
        args.func(args)
    with pytest.raises(SystemExit):
        _parse(eval_suite, ["suite", "--model", "m", "--out", "o", "--limit-bfcl", "0"])
