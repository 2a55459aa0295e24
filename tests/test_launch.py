"""launch/convert_to_hf.sh converts a training run's checkpoint steps into HF directories that
transformers loads; launch/tpu_pod.sh and launch/gpu_nodes.sh print every command they would run
(--dry-run) for a TPU slice, plain multi-node GPUs and SLURM (their --local mode is run for real by
tests/test_multiprocess.py)."""

import os
import stat
import subprocess
import sys

import pytest
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


# ---------------------------------------------------------------------------------------------
# launch/tpu_pod.sh and launch/gpu_nodes.sh: every command of a dry run (their --local mode trains
# for real in tests/test_multiprocess.py)
# ---------------------------------------------------------------------------------------------

def _dry(script, *args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "COORDINATOR", "NUM_NODES", "NODE_RANK"))}
    e.update(env or {})
    out = subprocess.run(["bash", os.path.join(ROOT, "launch", script), *args], env=e, capture_output=True,
                         text=True, timeout=60)
    return out.returncode, out.stdout, out.stderr


def test_tpu_pod_dry_run_prints_every_command():
    rc, out, err = _dry("tpu_pod.sh", "--dry-run", "--install", "--env", "LIBTPU_INIT_ARGS=--xla_tpu_foo=true",
                        "my-v5e", "us-west4-a", "proj", "--", "configs/diatool_dpo/llama3_8b.yaml",
                        "run_dir=/mnt/shared/runs/dpo", "mesh.fsdp=-1")
    assert rc == 0, err
    lines = out.splitlines()
    where = "--zone us-west4-a --project proj"
    assert f"gcloud compute tpus tpu-vm describe my-v5e {where} '--format=value(state,acceleratorType)'" in lines
    assert f"gcloud compute tpus tpu-vm scp --recurse {ROOT} my-v5e:jaxtool {where} --worker=all" in lines
    assert (f"gcloud compute tpus tpu-vm ssh my-v5e {where} --worker=all --command "
            "'pip install -U \"jax[tpu]\" && pip install -e jaxtool'") in lines
    run = [ln for ln in lines if ln.startswith("gcloud compute tpus tpu-vm ssh") and "jaxtool train" in ln]
    assert len(run) == 1
    assert "--worker=all" in run[0] and "cd jaxtool && mkdir -p /mnt/shared/runs/dpo/logs" in run[0]
    assert ("env LIBTPU_INIT_ARGS=--xla_tpu_foo=true jaxtool train configs/diatool_dpo/llama3_8b.yaml "
            "run_dir=/mnt/shared/runs/dpo mesh.fsdp=-1 --distributed --resume >> /mnt/shared/runs/dpo/logs/worker-$w.log") in run[0]
    assert "echo $! > /mnt/shared/runs/dpo/logs/worker-$w.pid" in run[0]
    stop = [ln for ln in lines if "kill -TERM" in ln]   # what SIGTERM/SIGINT to the launcher sends every worker
    assert len(stop) == 1 and "--worker=all" in stop[0] and "worker-$(hostname).pid" in stop[0]
    # the older form `-- jaxtool train CONFIG` is still accepted
    rc2, out2, _ = _dry("tpu_pod.sh", "--dry-run", "v4", "zone", "--", "jaxtool", "train", "c.yaml")
    assert rc2 == 0 and "jaxtool train c.yaml --distributed --resume" in out2


def test_tpu_pod_local_dry_run_and_bad_arguments():
    rc, out, _ = _dry("tpu_pod.sh", "--local", "2", "--dry-run", "--", "c.yaml", "run_dir=/tmp/r", env={"PORT": "9999"})
    assert rc == 0
    for i in range(2):
        assert (f"env JAX_COORDINATOR_ADDRESS=127.0.0.1:9999 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID={i} "
                f"JAX_LOCAL_DEVICE_IDS={i} jaxtool train c.yaml run_dir=/tmp/r --distributed --resume "
                f">> /tmp/r/logs/worker{i}.log 2>&1 &") in out
    assert _dry("tpu_pod.sh", "--dry-run", "onlyname", "--", "c.yaml")[0] == 2
    assert _dry("tpu_pod.sh", "--env", "novalue", "n", "z", "--", "c.yaml")[0] == 2
    rc, _, err = _dry("tpu_pod.sh", "--bogus")
    assert rc == 2 and "unknown option --bogus" in err


def test_tpu_slice_types_map_to_devices_and_workers():
    """`--accelerator-type` as gcloud spells it -> JAX devices and workers (Cloud TPU docs: v4/v5p count
    TensorCores, 2 per chip, 4 chips per worker; v5e/v6e count chips, up to 8 on one worker, else 4
    per worker; v2/v3 count cores, 8 per worker)."""
    want = {"v4-8": "4 1", "v4-32": "16 4", "v5p-16": "8 2", "v5p-128": "64 16", "v5litepod-8": "8 1",
            "v5litepod-16": "16 4", "v5litepod-256": "256 64", "v6e-4": "4 1", "v6e-64": "64 16", "v3-32": "32 4"}
    script = "; ".join(f"jt_tpu_topology {t}" for t in want)
    out = subprocess.run(["bash", "-c", f"source {ROOT}/launch/_workers.sh; {script}"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:-1] == list(want.values())
    for bad in ("v5p", "v5p-x", "tpu-8", "v5p-1"):
        rc, _, err = _dry("tpu_pod.sh", "--dry-run", "--accelerator-type", bad, "n", "z", "--", "c.yaml")
        assert rc == 2 and f"--accelerator-type {bad}: expected a Cloud TPU type" in err, (bad, err)
    rc, _, err = _dry("tpu_pod.sh", "--dry-run", "n", "z", "--", "c.yaml")   # no type: said, not guessed
    assert rc == 0 and "mesh not checked: add --accelerator-type" in err


@pytest.mark.slow  # two launcher runs, each importing jaxtool to resolve the recipe (~5 s each here)
def test_tpu_pod_dry_run_checks_the_mesh_against_the_slice():  # issue 26 CLI: dry-runs check mesh × processes
    recipe = os.path.join(ROOT, "configs", "diatool_dpo", "llama3_8b.yaml")
    env = {"PYTHON": sys.executable, "PYTHONPATH": ROOT}
    # v5p-32: 16 chips on 4 workers; fsdp=8 would leave half of them idle
    rc, out, err = _dry("tpu_pod.sh", "--dry-run", "--accelerator-type", "v5p-32", "my-v5p", "us-east5-a", "--",
                        recipe, "mesh.fsdp=8", env=env)
    assert rc == 2 and "leaves devices idle: a multi-process mesh must span all 16 devices (4 processes)" in err, (out, err)
    assert "gcloud" not in out   # refused before printing a command to run
    # the command of docs/llama3-8b-diatool.md: v5p-16 = 8 chips on 2 workers, fsdp=8
    rc, out, err = _dry("tpu_pod.sh", "--dry-run", "--accelerator-type", "v5p-16", "my-v5p", "us-east5-a", "--",
                        recipe, "mesh.fsdp=8", env=env)
    assert rc == 0 and "mesh data=1 fsdp=8 tensor=1 spans 8 devices of 2 processes" in out, (out, err)
    # --local N emulating hosts on a CPU: N processes of K devices each (here fsdp=2 leaves 2 of 4 idle)
    cpu = {**env, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    rc, out, err = _dry("tpu_pod.sh", "--local", "2", "--dry-run", "--", recipe, "mesh.fsdp=2", env=cpu)
    assert rc == 2 and "must span all 4 devices (2 processes)" in err, (out, err)


def test_gpu_nodes_dry_run_plain_multi_node_one_process_per_gpu():
    env = {"COORDINATOR": "10.0.0.1:8476", "NUM_NODES": "2", "NODE_RANK": "1"}
    rc, out, err = _dry("gpu_nodes.sh", "--dry-run", "--gpus-per-node", "8", "--install", "c.yaml", "run_dir=/shared/r",
                        env=env)
    assert rc == 0, err
    assert "mode nodes, 2 node(s) x 8 process(es)" in out
    assert f"bash -c 'pip install -U \"jax[cuda12]\" && pip install -e {ROOT}'" in out
    workers = [ln for ln in out.splitlines() if ln.startswith("env JAX_COORDINATOR_ADDRESS")]
    assert len(workers) == 8
    for local, ln in enumerate(workers):  # node 1 holds processes 8..15 of 16, one per local GPU
        assert ln == (f"env JAX_COORDINATOR_ADDRESS=10.0.0.1:8476 JAX_NUM_PROCESSES=16 JAX_PROCESS_ID={8 + local} "
                      f"JAX_LOCAL_DEVICE_IDS={local} jaxtool train c.yaml run_dir=/shared/r --distributed --resume "
                      f">> /shared/r/logs/worker{8 + local}.log 2>&1 &")
    assert _dry("gpu_nodes.sh", "--dry-run", "c.yaml", env={"COORDINATOR": "h:1", "NUM_NODES": "2"})[0] != 0  # no NODE_RANK
    rc, _, err = _dry("gpu_nodes.sh", "--dry-run", "c.yaml", env={**env, "NODE_RANK": "2"})
    assert rc == 2 and "NODE_RANK=2 is not below NUM_NODES=2" in err


def test_gpu_nodes_dry_run_under_slurm_uses_srun():
    env = {"SLURM_JOB_ID": "77", "SLURM_NNODES": "2"}
    rc, out, err = _dry("gpu_nodes.sh", "--dry-run", "--gpus-per-node", "8", "c.yaml", "data.train=conversations:a b.jsonl",
                        env=env)
    assert rc == 0, err
    assert ("srun --nodes=2 --ntasks-per-node=8 --gpus-per-task=1 --kill-on-bad-exit=1 --output=logs/worker%t.log "
            "jaxtool train c.yaml 'data.train=conversations:a b.jsonl' --distributed --resume") in out.splitlines()
    rc, out, _ = _dry("gpu_nodes.sh", "--dry-run", "--local", "3", "--port", "1234", "c.yaml")
    assert rc == 0 and out.count("JAX_COORDINATOR_ADDRESS=127.0.0.1:1234 JAX_NUM_PROCESSES=3") == 3


# ---------------------------------------------------------------------------------------------
# launch/memory_plan.py: its abstract train state is the one build_state places on the mesh
# ---------------------------------------------------------------------------------------------

def _memory_plan():
    import importlib.util

    spec = importlib.util.spec_from_file_location("memory_plan", os.path.join(ROOT, "launch", "memory_plan.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_memory_plan_state_matches_build_state(tiny_model_dir):
    import jax

    import jaxtool
    from jaxtool.train.state import build_state

    mp = _memory_plan()
    model = jaxtool.load_model(tiny_model_dir)
    for extra in ([], ["lora.enabled=true", "lora.rank=4", "lora.base_quant=int8"]):
        c = load_config(None, ["mesh.data=1", "mesh.fsdp=2", "mesh.tensor=2", *extra])
        real = build_state(c, model, total_steps=10, max_turns=0)
        state, state_sh, frozen, _, _, _ = mp.abstract_setup(c, model.config, real.mesh, total_steps=10)
        for got, want in ((state, real.state), (frozen, real.frozen), (state_sh, real.state_shardings)):
            g, gt = jax.tree_util.tree_flatten(got)
            w, wt = jax.tree_util.tree_flatten(want)
            assert gt == wt, extra
            for a, b in zip(g, w):
                if isinstance(b, jax.sharding.Sharding):
                    assert a == b, extra
                else:
                    assert (a.shape, a.dtype, a.sharding) == (b.shape, b.dtype, b.sharding), extra


def test_memory_plan_compiles_a_recipe_step_and_reports_per_chip_memory():
    mp = _memory_plan()
    r = mp.plan(os.path.join(ROOT, "configs", "simpo_smollm2.yaml"), "tiny", {"data": 1, "fsdp": 4, "tensor": 1},
                ["data.max_length=128", "batch_size=8"])
    assert r["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1} and r["kind"] == "preference"
    assert r["arguments_gib"] > 0 and r["temps_gib"] > 0
    assert abs(r["peak_gib"] - (r["arguments_gib"] + r["outputs_gib"] - r["aliased_gib"] + r["temps_gib"])) < 1e-9
    # twice the batch: more temporaries, the same state
    r2 = mp.plan(os.path.join(ROOT, "configs", "simpo_smollm2.yaml"), "tiny", {"data": 1, "fsdp": 4, "tensor": 1},
                 ["data.max_length=128", "batch_size=16"])
    assert r2["temps_gib"] > r["temps_gib"]
    assert abs(r2["arguments_gib"] - r["arguments_gib"]) < 1e-3
    assert "| configs/simpo_smollm2.yaml | tiny |" in mp.markdown([{**r, "recipe": "configs/simpo_smollm2.yaml"}])
