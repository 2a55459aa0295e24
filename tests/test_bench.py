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


# ------------------------------------------------------------------------------------------------
# accelerator numbers right the first time (issue 28): what can be checked on a CPU
# ------------------------------------------------------------------------------------------------

class _FakeGPU:
    platform = "gpu"
    device_kind = "NVIDIA H100 80GB HBM3"


class _FakeTorchSide:
    """The PyTorch worker's interface, answering as a CUDA worker would (no torch needed)."""

    PEAKS = {"float32": 51e12, "bfloat16": 610e12}

    def __init__(self):
        self.asked = []

    def peak(self, dtype="float32"):
        self.asked.append(dtype)
        return self.PEAKS[dtype]

    def device(self):
        return "cuda"

    def build_sft(self, *a):
        pass

    def run(self, name):
        return 0.02

    def drop(self, name):
        pass


def _args(**kw):
    import argparse

    base = dict(dtypes="bfloat16", grid="2x32", repeats=1, remat="none", attention="auto", torch_compile=False,
                full_grid=False, torch_only=False)
    return argparse.Namespace(**{**base, **kw})


def test_bf16_rows_on_a_gpu_use_the_bf16_peaks_of_each_side(monkeypatch):
    """On a GPU a bf16 row's MFU is over the bf16 matmul peak measured on that GPU (not the float32 /
    TF32 one), the PyTorch side's over the peak its worker measured on CUDA, and the chip's published
    bf16 peak is a second column. The JAX step is stubbed (timing is not the point here)."""
    import jax

    from jaxtool import bench
    from jaxtool.models import llama

    measured = []

    def fake_peak(dtype="float32", n=2048, repeats=5):
        measured.append(dtype)
        return {"float32": 60e12, "bfloat16": 700e12}[dtype]

    monkeypatch.setattr(jax, "devices", lambda *a: [_FakeGPU()])
    monkeypatch.setattr(bench, "measure_matmul_peak", fake_peak)
    monkeypatch.setattr(bench, "_jax_sft_step", lambda cfg, B, L, **kw: ((lambda: None), B * L))
    side = _FakeTorchSide()
    cfg = llama.preset("tiny")
    rows = bench.bench_sft(_args(), cfg, 60e12, side.peak("float32"), side)
    (row,) = rows
    assert measured == ["bfloat16"] and side.asked == ["float32", "bfloat16"]
    assert row["ours_peak_flops"] == 700e12 and row["theirs_peak_flops"] == 610e12
    assert row["theirs_peak_device"] == "cuda" and row["ours_peak_device"] == "gpu"
    flops = cfg.flops_per_token(32) * 64
    assert abs(row["theirs_mfu"] - flops / 0.02 / 610e12) < 1e-12
    assert abs(row["ours_mfu"] - flops / row["ours_s"] / 700e12) / row["ours_mfu"] < 1e-9
    assert row["chip_published_peak_flops"] == 989e12
    assert abs(row["ours_mfu_vs_chip_bf16"] - flops / row["ours_s"] / 989e12) / row["ours_mfu_vs_chip_bf16"] < 1e-9
    assert bench.chip_peak("NVIDIA H100 PCIe") == 756e12 and bench.chip_peak("NVIDIA H200") == 989e12
    assert bench.chip_peak("Intel Xeon") is None


def test_torch_peak_is_measured_on_cuda_when_its_step_runs_there(monkeypatch):
    import torch

    from jaxtool import bench

    devices = []
    real_ones = torch.ones

    def ones(*shape, dtype=None, device=None):
        devices.append(device)
        return real_ones(*shape, dtype=dtype)  # made on the CPU: this machine has no GPU

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch, "ones", ones)
    assert bench.torch_device() == "cuda"
    assert bench.measure_torch_matmul_peak(n=64, repeats=1, dtype="bfloat16") > 0
    assert devices == ["cuda"]


def test_bench_dpo_runs_every_step_with_the_same_run_options(monkeypatch):
    """Both sides of every ratio run the same RunOptions (one example per row, --remat, --attention,
    the backend's dtype), the rows say which, and an SFT row timed with other options is not reused."""
    from jaxtool import bench
    from jaxtool.models import llama
    from jaxtool.models.run import RunOptions

    runs = []

    def fake_step(cfg, B, L, lc=None, reference=None, run=None):
        runs.append((lc.type if lc else "sft", run))
        return (lambda: None), B * L

    monkeypatch.setattr(bench, "_jax_sft_step", fake_step)
    other = {"section": "sft", "batch": 2, "length": 32, "dtype": "float32", "ours_s": 1.0, "compute_dtype": "float32",
             "remat": "none", "packed": False, "attention_requested": "xla", "attention": "xla (forced)"}
    rows = bench.bench_dpo(_args(remat="full", attention="xla"), llama.preset("tiny"), [other])
    want = RunOptions(compute_dtype="float32", remat="full", attention="xla", packed=False)
    assert [t for t, _ in runs] == ["sft", "diatool_dpo", "diatool_dpo", "dpo"]    # the base re-measured
    assert all(r == want for _, r in runs)
    assert {(r["remat"], r["attention_requested"], r["packed"], r["compute_dtype"]) for r in rows} == {
        ("full", "xla", False, "float32")}
    # the same options: the sft section's time is the base
    runs.clear()
    same = {**other, "remat": "full"}
    rows = bench.bench_dpo(_args(remat="full", attention="xla"), llama.preset("tiny"), [same])
    assert [t for t, _ in runs] == ["diatool_dpo", "diatool_dpo", "dpo"]
    assert rows[0]["variant"] == "sft" and rows[0]["step_s"] == 1.0
