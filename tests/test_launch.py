"""launch/convert_to_hf.sh converts a training run's checkpoint steps into HF directories that
transformers loads."""

import os
import stat
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM

from jaxtool.config import load_config
from jaxtool.train.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "tests", "fixtures", "diatool", "seeds.jsonl")


def test_convert_to_hf_script_converts_every_step(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    cfg = load_config(None, [f"model.path={tiny_model_dir}", f"run_dir={run}", "progress=false",
                             f"data.train=conversations:{SEEDS}", "data.limit=4", "data.max_length=512",
                             "batch_size=2", "max_steps=2", "save_every=1", "keep=5"])
    Trainer(cfg).run()
    # a `jaxtool` executable for the script, whether or not the package is pip-installed here
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "jaxtool"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m jaxtool.cli "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "PYTHONPATH": ROOT}
    out = subprocess.run(["bash", os.path.join(ROOT, "launch", "convert_to_hf.sh"), str(run)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    steps = sorted(os.listdir(run / "hf_steps"))
    assert steps == ["step_1", "step_2"]
    a = AutoModelForCausalLM.from_pretrained(str(run / "hf_steps" / "step_1"), dtype=torch.float32)
    b = AutoModelForCausalLM.from_pretrained(str(run / "hf_steps" / "step_2"), dtype=torch.float32)
    ids = torch.arange(3, 20).unsqueeze(0)
    with torch.no_grad():
        assert not torch.equal(a(ids).logits, b(ids).logits)  # two different trained states
    bad = subprocess.run(["bash", os.path.join(ROOT, "launch", "convert_to_hf.sh"), str(tmp_path)], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "not a jaxtool checkpoint directory" in bad.stderr
