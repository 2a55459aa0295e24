"""`jaxtool bench sft --nnx`: the NNX module's train step timed beside the pure step (issue 29)."""

import json

import pytest

from jaxtool.cli import main


@pytest.mark.slow   # two train-step compiles (~20 s here)
def test_bench_sft_nnx_times_the_module_step_beside_the_pure_step(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(["bench", "sft", "--nnx", "--no-torch", "--shape", "tiny", "--grid", "2x32", "--dtypes", "float32",
               "--repeats", "1", "--out", str(out)])
    assert rc == 0
    (row,) = [r for r in json.loads((out / "bench.json").read_text())["rows"] if r["section"] == "sft"]
    assert row["nnx_s"] > 0 and row["ours_s"] > 0
    assert row["nnx_over_ours"] == pytest.approx(row["nnx_s"] / row["ours_s"])
    printed = capsys.readouterr().out
    assert "module/pure" in printed and "| SFT step (--nnx)" in (out / "bench.md").read_text()
