"""Accelerator defaults checked on a CPU (issue 28): the compute dtype each backend gets by default,
the attention kernel actually used reported once (and why a requested one could not serve), and
launch/gpu_session.sh sizing JAX's memory fraction from the card nvidia-smi reports."""

from __future__ import annotations

import logging
import os
import re
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_compute_dtype_per_backend(monkeypatch):
    from jaxtool.models.run import DEFAULT_RUN, RunOptions, default_compute_dtype
    from jaxtool.sample import generate

    assert (default_compute_dtype("gpu"), default_compute_dtype("tpu"), default_compute_dtype("cpu")) == (
        "bfloat16", "bfloat16", "float32")
    assert RunOptions().dtype == jnp.float32                      # this CPU: float32, the fast path here
    # the run every caller without an explicit `run` gets (generate_ids: eval, MCTS, buffer, bench decode)
    import inspect

    assert inspect.signature(generate.generate_ids).parameters["run"].default is DEFAULT_RUN
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert DEFAULT_RUN.dtype == jnp.bfloat16 and DEFAULT_RUN.resolved_compute_dtype == "bfloat16"
    assert RunOptions(compute_dtype="float32").dtype == jnp.float32   # overridable
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    assert DEFAULT_RUN.dtype == jnp.bfloat16


def test_load_model_defaults_to_the_backend_dtype(tiny_model_dir, monkeypatch):
    from jaxtool import load_model

    m = load_model(tiny_model_dir)
    assert m.run.compute_dtype == "auto" and "float32 params / float32 compute" in repr(m)
    assert load_model(tiny_model_dir, compute_dtype="bfloat16").run.dtype == jnp.bfloat16
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert m.run.dtype == jnp.bfloat16 and "float32 params / bfloat16 compute" in repr(m)


def test_attention_reports_the_kernel_used_once_and_why_auto_fell_back(monkeypatch, caplog):
    from jaxtool.ops import attention as att

    rng = np.random.RandomState(0)
    q = jnp.asarray(rng.normal(size=(1, 8, 4, 16)), jnp.bfloat16)
    k = v = jnp.asarray(rng.normal(size=(1, 8, 2, 16)), jnp.bfloat16)
    seg = jnp.asarray([[1, 1, 1, 2, 2, 2, 0, 0]], jnp.int32)
    att.reset_resolutions()
    caplog.set_level(logging.INFO, logger="jaxtool.ops.attention")
    att.attention(q, k, v, segment_ids=seg)                        # this CPU: auto -> xla
    assert att.resolutions() == [{"requested": "auto", "kernel": "xla", "reason": "auto on cpu", "traces": 1}]
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "auto resolved to xla (auto on cpu)" in caplog.records[0].getMessage()
    # on a Hopper GPU, packed segment ids keep auto off cuDNN: said once, as a warning, with the reason
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(att, "_cuda_capability", lambda: (9, 0))
    caplog.clear()
    for _ in range(2):
        att.attention(q, k, v, segment_ids=seg, packed=True)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "packed segments" in warnings[0].getMessage()
    assert "not the fused kernel of this GPU" in warnings[0].getMessage()
    assert att.resolutions()[-1]["kernel"] == "xla" and att.resolutions()[-1]["traces"] == 2
    assert "xla (auto on GPU: packed segments" in att.describe_resolutions()
    att.reset_resolutions()
    assert att.resolutions() == [] and att.describe_resolutions() == "none traced"


def test_memory_fraction_fits_the_card():
    from jaxtool.bench import memory_fraction

    for card in (80.0, 141.0):
        frac, fits = memory_fraction(46.0, card)
        assert fits and frac * card >= 46.0 + 6.0 and frac <= 0.95
    assert memory_fraction(100.0, 80.0) == (0.95, False)


@pytest.mark.parametrize("card_mib, card_gib", [(81920, 80.0), (144384, 141.0)])
def test_gpu_session_sizes_jax_from_nvidia_smi_and_runs_the_sides_in_turn(tmp_path, card_mib, card_gib):
    """A dry run on this CPU with a fake nvidia-smi on PATH: the fraction given to JAX holds the 1B
    step's XLA memory (from mem.json) plus headroom on each card, and the PyTorch side runs after the
    JAX side in its own process (never in the background, JAX kept off the GPU there)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text('#!/bin/sh\nfor a in "$@"; do case "$a" in *nounits*) echo "$FAKE_MIB"; '
                                     'exit 0;; esac; done\necho "NVIDIA H100, $FAKE_MIB MiB, 550.0"\n')
    (fake / "nvidia-smi").chmod(0o755)
    out = tmp_path / "gpu"
    out.mkdir()
    (out / "mem.json").write_text('[{"temp_gib": 31.8, "argument_gib": 14.2, "output_gib": 14.2}]')
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "FAKE_MIB": str(card_mib),
           "OUT": str(out), "SHAPE": "tiny", "GRID": "2x32", "PYTHONPATH": ROOT}
    p = subprocess.run(["bash", os.path.join(ROOT, "launch", "gpu_session.sh"), "--dry-run", "sft"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    frac = float(re.search(r"XLA_PYTHON_CLIENT_MEM_FRACTION=([0-9.]+) \(fits: yes\)", p.stdout).group(1))
    need = 31.8 + 14.2 + 14.2
    assert f"card {card_gib:.1f} GiB" in p.stdout
    assert need + 6.0 <= frac * card_gib <= 0.95 * card_gib + 1e-6
    cmds = [ln for ln in p.stdout.splitlines() if ln.startswith("+ ")]
    assert len(cmds) == 3 and "--no-torch" in cmds[0] and f"XLA_PYTHON_CLIENT_MEM_FRACTION={frac}" in cmds[0]
    assert "--torch-only" in cmds[1] and "JAX_PLATFORMS=cpu" in cmds[1] and "--shape tiny" in cmds[1]
    assert "merge_sides" in cmds[2] and not any(c.rstrip().endswith("&") for c in cmds)


def test_eval_run_header_names_the_dtype_and_the_kernel_used(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """An evaluation's header says which dtype the jax backend computes in, and its end which attention
    kernel(s) were traced (issue 28, items 3-4); on a faked GPU the same load says bfloat16."""
    from types import SimpleNamespace

    from jaxtool.commands._model_args import write_and_print
    from jaxtool.ops import attention as att
    from jaxtool.sample.jax_backend import JaxBackend

    be = JaxBackend.load(tiny_model_dir, batch_size=1)
    assert "float32 params / float32 compute); attention auto requested" in capsys.readouterr().err
    att.reset_resolutions()
    be.generate([[1, 2, 3]], max_new_tokens=2)
    result = SimpleNamespace(records=[{"id": 1}], summary={}, table=lambda: "| table |")
    write_and_print(result, str(tmp_path), "x", summary={}, table_rows=lambda s: (["a"], [["1"]]),
                    chart_values=lambda s: {}, chart_title="t")
    assert "attention kernel(s) used: xla (auto on cpu)" in capsys.readouterr().err
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    JaxBackend.load(tiny_model_dir, batch_size=1)
    assert "float32 params / bfloat16 compute)" in capsys.readouterr().err
