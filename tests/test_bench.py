"""The benchmark harness works end to end (every section, ours and the PyTorch side) on a tiny
shape. It checks the harness — rows, columns, files — not the speed: speed is measured by
`jaxtool bench`, not asserted in tests."""

import json

from jaxtool.cli import main


def test_bench_all_runs_on_a_tiny_shape(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(["bench", "all", "--shape", "tiny", "--grid", "2x32", "--dtypes", "float32", "--repeats", "1",
               "--decode-batches", "1,2", "--new-tokens", "4", "--scaling-grid", "1x32", "--scaling-layers", "2",
               "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "bench.json").read_text())
    rows = result["rows"]
    sft = [r for r in rows if r["section"] == "sft"]
    assert sft and sft[0]["ours_tok_s"] > 0 and sft[0]["theirs_tok_s"] > 0 and sft[0]["ours_mfu"] > 0
    dpo = {r["variant"]: r for r in rows if r["section"] == "dpo"}
    assert dpo["sft"]["relative_to_sft"] == 1.0 and "diatool_dpo (ref on the fly)" in dpo
    dec = [r for r in rows if r["section"] == "decode"]
    assert [r["batch"] for r in dec] == [1, 2] and all(r["theirs_tok_s"] > 0 for r in dec)
    comp = [r for r in rows if r.get("kind") == "compile"]
    assert {(r["layers"], r["scan"]) for r in comp} >= {(2, True), (2, False)}
    assert (out / "bench.png").is_file() and (out / "bench.md").read_text().count("|") > 10
    printed = capsys.readouterr().out
    assert "transformers" in printed and "ratio" in printed


def test_torch_worker_reports_errors_instead_of_hanging():
    import pytest

    from jaxtool.bench import TorchSide

    side = TorchSide()
    try:
        assert side.peak() > 0
        with pytest.raises(RuntimeError, match="PyTorch benchmark worker: KeyError"):
            side.run("never-built")
    finally:
        side.close()
