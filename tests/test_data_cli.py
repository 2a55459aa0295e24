"""`jaxtool data inspect`: the rendered example with trained tokens marked, and the summary."""

import copy
import json
import os

import pytest

from formats_samples import chat_conv, functionchat_convs, weather_conv
from jaxtool.cli import main
from jaxtool.data import inspect as data_inspect


@pytest.fixture
def fast_tokenizer(monkeypatch, smollm2_tokenizer):
    """Skip re-reading the GGUF file on every CLI run: hand out copies of the session tokenizer."""
    monkeypatch.setattr(data_inspect, "load_tokenizer", lambda spec: copy.deepcopy(smollm2_tokenizer))


@pytest.fixture
def schema_file(tmp_path):
    """jaxtool-schema JSONL: 6 good conversations and 3 bad rows."""
    rows = [json.dumps(c.to_dict(), ensure_ascii=False) for c in [weather_conv(), chat_conv()] + functionchat_convs()]
    rows.insert(2, "{not json")
    rows.insert(4, json.dumps({"tools": []}))
    rows.append(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]}))
    path = tmp_path / "convs.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_inspect_marks_exactly_the_trained_text(schema_file, fast_tokenizer, capsys):
    rc = main(["data", "inspect", str(schema_file), "--format", "hermes", "--mark", "brackets"])
    out = capsys.readouterr().out
    assert rc == 0
    shown = out.split("=== summary")[0]
    assert ("<|im_start|>assistant\n[[<tool_call>\n"
            '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>]]\n') in shown
    assert "<|im_start|>assistant\n[[It is 21°C in Paris.<|im_end|>]]\n<|im_start|>user\nAnd in Oslo" in shown
    header, body = shown.split("\n", 1)
    assert body.count("[[") == body.count("]]") == 4  # four assistant turns, nothing else marked
    assert "format hermes" in header and "4 assistant turns" in header and "trained tokens in [[...]]" in header


def test_inspect_summary_counts_rows_bad_rows_and_lengths(schema_file, fast_tokenizer, capsys, smollm2_tokenizer):
    rc = main(["data", "inspect", str(schema_file), "--index", "1", "--mark", "brackets"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "[[ok<|im_end|>]]" in out  # example #1 is the plain chat
    summary = out.split("=== summary")[1]
    assert "9 rows read, 6 kept, 3 skipped" in summary
    assert "invalid json" in summary
    assert "missing list field 'messages'" in summary
    assert "assistant message has neither content nor tool calls" in summary
    assert "tokenized 6 conversations" in summary and "6 kept, 0 dropped" in summary
    assert "over 6 examples" in summary and "token length: p50 " in summary


def test_inspect_reports_truncation_and_added_tokens(schema_file, fast_tokenizer, capsys):
    rc = main(["data", "inspect", str(schema_file), "--format", "llama3_json", "--max-length", "600",
               "--truncation", "drop", "--mark", "brackets"])
    out = capsys.readouterr().out
    assert rc == 0
    summary = out.split("=== summary")[1]
    assert "× too long" in summary  # the long Korean rows
    assert "added 6 special tokens" in summary


def test_percentiles_hand_computed():
    pc = data_inspect.percentiles(list(range(1, 11)))
    # "higher" percentiles of 1..10: rank 0.5*9=4.5 -> 6, 0.9*9=8.1 -> 10, 0.99*9=8.91 -> 10
    assert (pc["p50"], pc["p90"], pc["p99"], pc["max"], pc["mean"]) == (6, 10, 10, 10, 5.5)
    assert data_inspect.percentiles([]) == {}


def test_missing_index_and_parse_source(schema_file, fast_tokenizer, capsys):
    assert main(["data", "inspect", str(schema_file), "--index", "99"]) == 0
    assert "no example #99: 6 examples were kept" in capsys.readouterr().out
    assert data_inspect.parse_source("glaive:data/x.jsonl") == ("glaive", "data/x.jsonl")
    assert data_inspect.parse_source(str(schema_file)) == (None, str(schema_file))
    assert data_inspect.parse_source("C:/x.jsonl") == (None, "C:/x.jsonl")


def test_user_mistakes_are_one_line_errors(tmp_path, fast_tokenizer, capsys):
    assert main(["data", "inspect", str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxtool data: error: ") and "no such file" in err and err.count("\n") == 1
    # a registry spec: either the registry is missing in this build or the file is; both are clear errors
    assert main(["data", "inspect", f"glaive:{tmp_path / 'nope.jsonl'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxtool data: error: ") and err.count("\n") == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n", encoding="utf-8")
    assert main(["data", "inspect", str(bad), "--on-bad-row", "error"]) == 2
    assert "row 0" in capsys.readouterr().err


def test_data_group_without_subcommand_prints_help(capsys):
    assert main(["data"]) == 1
    assert "inspect" in capsys.readouterr().out


def test_load_tokenizer_errors_are_clear(tmp_path):
    from jaxtool.errors import CheckpointError

    with pytest.raises(CheckpointError, match="cannot load a tokenizer"):
        data_inspect.load_tokenizer(str(tmp_path / "no_such_dir"))


def test_inspect_reads_a_benchmark_source_registered_by_the_eval_layer(fast_tokenizer, capsys):
    # `functionchat` lives beside its evaluator (jaxtool.eval), not in jaxtool.data; the command line resolves it
    path = os.path.join(os.path.dirname(__file__), "fixtures", "functionchat_bench", "FunctionChat-CallDecision.jsonl")
    assert main(["data", "inspect", f"functionchat:{path}", "--mark", "brackets"]) == 0
    out = capsys.readouterr().out
    assert "(source=functionchat, row=0" in out and "7 rows read, 7 kept" in out


def test_build_calm_explains_an_unmet_total():  # issue 26: `build-calm --total 500` gave 191 rows silently
    from jaxtool.commands.build_calm import unmet_target_notes

    summary = {"rows": 191, "tasks": {"dst": {"available": 40, "target_share": 0.5},
                                      "fc": {"available": 400, "target_share": 0.5}}}
    assert unmet_target_notes(None, "all", summary) == []
    assert unmet_target_notes(150, "table1", summary) == []
    (note,) = unmet_target_notes(500, "all", summary)
    assert "--total 500 is not met (191 rows)" in note and "--weights table1" in note
    (note,) = unmet_target_notes(500, "table1", summary)
    assert "dst: 40 available < 250 wanted" in note and "fc:" not in note
