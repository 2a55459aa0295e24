"""Multi-process training on localhost, through the code path a pod uses: N processes, each with
its own host CPU devices, joined by `jax.distributed` (coordinator 127.0.0.1:<port>), each running
`python -m jaxtool train ... --distributed` (see tests/multiproc.py and launch/*.sh --local).

What is checked, against a single-process run of the same recipe (same global batch, seed and
mesh shape, run in this pytest process):
  * 2 processes × 2 devices (mesh fsdp=4, started by launch/gpu_nodes.sh --local 2): the loss curve
    equals the single-process one (rtol 1e-5), each process reads its own rows (example ids from
    JAXTOOL_DATA_LOG) and together they are the single-process global batch; one checkpoint per step,
    written by both processes (Orbax's per-process OCDBT shards), restorable;
  * one run started three times: SIGTERM to launch/tpu_pod.sh --local 2 (a preemption notice) →
    both processes stop after the same step with one checkpoint; the restart continues bit for bit
    (equal to the uninterrupted run); SIGKILL of one process → the other exits with a clear error
    within the heartbeat bound; a restart on 4 processes × 1 device (fsdp 2 × tensor 2, each tensor
    pair across two processes, as with one process per GPU) resumes from the last complete
    checkpoint and finishes on the 1- and 2-process curves (rtol 1e-5);
  * a 2-process checkpoint (fsdp 4) restores onto data 2 × fsdp 2 and onto one device in one process
    with equal parameters, optimizer state and data position, and training continues there;
    HF export from it;
  * bad input: unreachable coordinator, checkpoint/run mismatch, a mesh that does not fit.

Compiled programs go through a persistent compilation cache shared by the module's processes.
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxtool import checkpoint, sharding
from jaxtool.config import load_config
from jaxtool.errors import CheckpointError, ConfigError
from jaxtool.train.metrics import read_metrics
from jaxtool.train.trainer import DATA_LOG_ENV, Trainer

sys.path.insert(0, os.path.dirname(__file__))
from multiproc import ROOT, Job, base_env, describe, free_port  # noqa: E402

SEEDS = os.path.join(ROOT, "tests", "fixtures", "diatool", "seeds.jsonl")
STEPS = 5         # the whole epoch: 19 examples in batches of 4
RTOL = 1e-5       # single vs multi-process: same mesh shape, collectives sum in another order
TIMEOUT = 600     # per launch, generous: the CI machine is shared


def overrides(model_dir, run_dir, *extra):
    return [f"model.path={model_dir}", f"run_dir={run_dir}", "progress=false", f"data.train=conversations:{SEEDS}",
            "data.max_length=512", "data.bucket_multiple=512", "batch_size=4", f"max_steps={STEPS}",
            "save_every=1", f"keep={STEPS + 2}", "optim.lr=5e-3", "optim.schedule=constant", "seed=0",
            "mesh.data=1", "mesh.fsdp=4", *extra]


def train_rows(run_dir):
    return [r for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if r.get("split") == "train"]


def data_log(run_dir, process):
    """{step: [example index per row]} read by `process` (JAXTOOL_DATA_LOG files)."""
    out = {}
    with open(os.path.join(run_dir, f"data_index.p{process}.jsonl")) as fh:
        for ln in fh:
            r = json.loads(ln)
            out[r["step"]] = r["index"]
    return out


def in_process_run(cfg_overrides, resume=False):
    """A single-process run in this pytest process (8 host devices; the mesh picks its own)."""
    old = os.environ.get(DATA_LOG_ENV)
    os.environ[DATA_LOG_ENV] = "1"
    try:
        t = Trainer(load_config(None, cfg_overrides), printer=lambda *a, **k: None)
        return t, t.run(resume=resume)
    finally:
        if old is None:
            os.environ.pop(DATA_LOG_ENV)
        else:
            os.environ[DATA_LOG_ENV] = old


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("multiprocess")


@pytest.fixture(scope="module")
def env(root):
    return base_env(devices=2, cache_dir=str(root / "xla_cache"), heartbeat_s=10, init_s=120,
                    extra={DATA_LOG_ENV: "1"})


@pytest.fixture(scope="module")
def single(tiny_model_dir, root):
    """The reference: one process, mesh fsdp=4 (4 of this process's 8 host devices)."""
    run = root / "single"
    t, res = in_process_run(overrides(tiny_model_dir, run))
    assert res.status == "finished" and dict(t.mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 1}
    return {"run": str(run), "rows": train_rows(run), "data": data_log(run, 0)}


@pytest.fixture(scope="module")
def two(tiny_model_dir, root, env):
    """2 processes × 2 devices, started by the GPU launcher's local mode (one process per 'GPU')."""
    run = root / "two"
    t0, c0 = time.monotonic(), children_cpu_s()
    out = subprocess.run(["bash", os.path.join(ROOT, "launch", "gpu_nodes.sh"), "--local", "2", "--",
                          *overrides(tiny_model_dir, run, "export_hf=true")],
                         env=env, capture_output=True, text=True, timeout=TIMEOUT)
    logs = {i: (run / "logs" / f"worker{i}.log").read_text() for i in range(2) if (run / "logs" / f"worker{i}.log").exists()}
    assert out.returncode == 0, out.stdout + out.stderr + "".join(f"\n--- worker {i}\n{v[-3000:]}" for i, v in logs.items())
    print(f"[2 processes] launch wall {time.monotonic() - t0:.1f}s, cpu {children_cpu_s() - c0:.1f}s")
    return {"run": str(run), "rows": train_rows(run), "logs": logs, "launcher": out.stdout}


def _compare(name, got, want, rtol):
    gl, wl = [r["loss"] for r in got], [r["loss"] for r in want]
    rel = max(abs(a - b) / abs(b) for a, b in zip(gl, wl))
    print(f"[{name}] loss {['%.7f' % x for x in gl]} vs single {['%.7f' % x for x in wl]}; max rel diff {rel:.2e}")
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, STEPS + 1))
    np.testing.assert_allclose(gl, wl, rtol=rtol)
    np.testing.assert_allclose([r["grad_norm"] for r in got], [r["grad_norm"] for r in want], rtol=10 * rtol)
    assert [r["count"] for r in got] == [r["count"] for r in want]   # the same trained targets per step


def _check_shards(run, n, single):
    logs = [data_log(run, p) for p in range(n)]
    for step in range(1, STEPS + 1):
        rows = [logs[p][step] for p in range(n)]
        assert all(len(r) == 4 // n for r in rows), rows                   # each process: its share of the batch
        flat = [i for r in rows for i in r]
        assert len(set(flat)) == len(flat), f"step {step}: processes read the same example: {rows}"
        assert flat == single["data"][step], f"step {step}: {rows} is not the single-process batch {single['data'][step]}"


def test_two_processes_train_like_one_process(two, single):
    run = two["run"]
    assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 1}" in two["logs"][0]   # one global mesh over both processes
    _compare("2 processes", two["rows"], single["rows"], RTOL)
    _check_shards(run, 2, single)
    # one checkpoint per step, every one written by both processes (Orbax multi-host: each process
    # writes its own OCDBT shard files, process 0 commits) and none half-written
    ck = os.path.join(run, "checkpoints")
    assert checkpoint.Checkpointer(ck, create=False).steps() == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        for item in ("params", "opt_state"):
            d = os.path.join(ck, str(step), item)
            assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(d)), os.listdir(d)
    assert not [n for n in os.listdir(ck) if "tmp" in n]
    assert sorted(os.listdir(os.path.join(run, "logs"))) == ["worker0.log", "worker0.pid", "worker1.log", "worker1.pid"]


def test_checkpoint_moves_between_meshes_and_process_counts(two, tiny_model_dir, root):
    """Step 2 of the 2-process run (fsdp 4 over 2 processes) → one process, data 2 × fsdp 2 and one
    device: equal arrays and data position; training continues with the 2-process loss curve."""
    src = os.path.join(two["run"], "checkpoints")
    run = root / "moved"
    os.makedirs(run)
    shutil.copytree(src, run / "checkpoints", ignore=lambda d, names: [n for n in names if d == src and n.isdigit() and int(n) > 2])
    shutil.copy(os.path.join(two["run"], "metrics.jsonl"), run / "metrics.jsonl")

    def restored(*mesh):
        t = Trainer(load_config(None, overrides(tiny_model_dir, run, *mesh)), printer=lambda *a, **k: None)
        t.setup()
        step, data_state = t.restore_latest()
        assert step == 2
        return t, data_state

    a, a_data = restored("mesh.data=2", "mesh.fsdp=2")
    b, b_data = restored("mesh.data=1", "mesh.fsdp=1")
    assert dict(a.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 1} and b.mesh.size == 1
    assert a.state.trainable["layers"]["w_up"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", None)
    assert a_data == b_data and a_data is not None
    for name in ("trainable", "opt_state"):
        la, lb = jax.tree.leaves(getattr(a.state, name)), jax.tree.leaves(getattr(b.state, name))
        assert len(la) == len(lb) > 0
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)), name
    # the moments are real (step 2 of AdamW), not a fresh optimizer state
    assert max(float(np.abs(np.asarray(x)).max()) for x in jax.tree.leaves(a.state.opt_state)) > 0
    # continue on data 2 × fsdp 2 in one process: steps 3.. see the 2-process global batches
    _, res = in_process_run(overrides(tiny_model_dir, run, "mesh.data=2", "mesh.fsdp=2"), resume=True)
    assert res.status == "finished"
    got, want = train_rows(run), two["rows"]
    print(f"[moved] steps 3-{STEPS} loss {[r['loss'] for r in got[2:]]} vs 2 processes {[r['loss'] for r in want[2:]]}")
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in want], rtol=RTOL)
    moved = data_log(run, 0)
    two_log = [data_log(two["run"], p) for p in range(2)]
    assert sorted(moved) == list(range(3, STEPS + 1))
    assert all(moved[s] == two_log[0][s] + two_log[1][s] for s in moved)

    # HF export of the 2-process checkpoint in one process equals what the 2-process run exported
    from jaxtool.cli import main
    from jaxtool.convert import load_hf

    out = root / "hf_from_ckpt"
    assert main(["convert", "orbax-to-hf", "--ckpt", src, "--out", str(out), "--step", str(STEPS)]) == 0
    _, exported, _ = load_hf(str(out))
    _, by_run, _ = load_hf(os.path.join(two["run"], "hf"))
    cfg = checkpoint.read_config(src)
    final = checkpoint.restore_params(src, cfg, step=STEPS)
    for x, y, z in zip(jax.tree.leaves(exported), jax.tree.leaves(by_run), jax.tree.leaves(final)):
        assert np.array_equal(np.asarray(x), np.asarray(z)) and np.array_equal(np.asarray(y), np.asarray(z))


def test_checkpoint_of_another_batch_is_an_error_naming_both_meshes(two, tiny_model_dir, root):
    run = root / "mismatch"
    shutil.copytree(os.path.join(two["run"], "checkpoints"), run / "checkpoints")
    t = Trainer(load_config(None, overrides(tiny_model_dir, run, "batch_size=2", "mesh.fsdp=2")),
                printer=lambda *a, **k: None)
    with pytest.raises(CheckpointError) as e:
        t.run(resume=True)
    msg = str(e.value)
    assert "batch_size=4 (mesh {'data': 1, 'fsdp': 4, 'tensor': 1} on 2 process(es))" in msg, msg
    assert "this run has 2 (mesh {'data': 1, 'fsdp': 2, 'tensor': 1} on 1 process(es))" in msg, msg


def test_preemption_failure_and_restarts(two, single, tiny_model_dir, root, env):
    """One run, three starts: SIGTERM (through the TPU launcher) → SIGKILL of one process → a
    restart on 4 processes that finishes it."""
    run = root / "chain"
    ck = os.path.join(run, "checkpoints")
    cache = env["JAX_COMPILATION_CACHE_DIR"]
    want = {r["step"]: r for r in two["rows"]}

    def latest():
        return checkpoint.Checkpointer(ck, create=False).latest_step()

    # 1. launch/tpu_pod.sh --local 2; SIGTERM to the launcher (a preemption notice) once step 1 is
    #    saved: forwarded to both processes, which stop after the same step and save it once
    launcher = subprocess.Popen(["bash", os.path.join(ROOT, "launch", "tpu_pod.sh"), "--local", "2", "--",
                                 *overrides(tiny_model_dir, run)], env={**env, "PORT": str(free_port())},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and launcher.poll() is None and not os.path.isdir(os.path.join(ck, "1")):
            time.sleep(0.2)
        launcher.send_signal(signal.SIGTERM)
        out, _ = launcher.communicate(timeout=TIMEOUT)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    logs = [(run / "logs" / f"worker{i}.log").read_text() for i in range(2)]
    assert launcher.returncode == 3, out + "".join(x[-3000:] for x in logs)
    assert "SIGTERM: forwarding to every worker" in out, out
    stops = [int(x.rsplit("interrupted after ", 1)[1].split()[0]) for x in logs]   # each process's own word
    assert stops[0] == stops[1] and 1 <= stops[0] < STEPS - 1, stops
    stopped = stops[0]
    assert latest() == stopped
    print(f"[sigterm] both processes stopped after step {stopped} and saved it")

    # 2. restart (2 processes): it continues from that checkpoint bit for bit; SIGKILL process 1
    #    once the restart has saved a step of its own: process 0 must exit with a clear error, not hang
    job = Job.start(2, ["train", *overrides(tiny_model_dir, run), "--distributed", "--resume"],
                    str(root / "chain_logs_2"), cache_dir=cache, heartbeat_s=10, env={DATA_LOG_ENV: "1"})
    seen = job.wait_for(lambda: os.path.isdir(os.path.join(ck, str(stopped + 1))), TIMEOUT)
    assert seen, describe(job.wait(1))
    job.kill(1)
    t_kill = time.monotonic()
    res = job.wait(120)
    exit_s = (res[0].wall_s + job.t0) - t_kill
    print(f"[sigkill] process 0 exited {exit_s:.1f}s after process 1 was killed (rc {res[0].rc})")
    assert f"resuming from step {stopped}" in res[0].log, describe(res)
    assert res[0].rc not in (0, None), describe(res)
    assert exit_s < 60, describe(res)
    assert ("a collective across the processes failed" in res[0].log
            or "JAX distributed service detected fatal errors" in res[0].log), describe(res)
    last_complete = latest()
    assert stopped < last_complete < STEPS, (stopped, last_complete)
    rows = {r["step"]: r for r in train_rows(run)}
    for step in range(1, last_complete + 1):   # SIGTERM → restart: bit-identical to the uninterrupted run
        assert (rows[step]["loss"], rows[step]["grad_norm"]) == (want[step]["loss"], want[step]["grad_norm"]), step

    # 3. restart on 4 processes × 1 device (one process per GPU), mesh fsdp 2 × tensor 2 — each tensor
    #    pair spans two processes, which read the same rows: it resumes from the last complete
    #    checkpoint (re-sharded), finishes, and its steps follow the 2- and 1-process curves
    job = Job.start(4, ["train", *overrides(tiny_model_dir, run, "mesh.fsdp=2", "mesh.tensor=2"), "--distributed",
                        "--resume"], str(root / "chain_logs_3"), devices=1, cache_dir=cache, env={DATA_LOG_ENV: "1"})
    res = job.wait(TIMEOUT)
    assert all(r.rc == 0 for r in res), describe(res)
    assert f"resuming from step {last_complete}" in res[0].log, describe(res)
    assert (f"re-sharded step {last_complete} from mesh {{'data': 1, 'fsdp': 4, 'tensor': 1}} on 2 process(es) "
            "onto mesh {'data': 1, 'fsdp': 2, 'tensor': 2} on 4 process(es)") in res[0].log, describe(res)
    rows = train_rows(run)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    tail = rows[last_complete:]
    ref = [want[r["step"]] for r in tail]
    one = [single["rows"][r["step"] - 1] for r in tail]
    rel = max(abs(r["loss"] - w["loss"]) / w["loss"] for r, w in zip(tail, one))
    print(f"[4 processes] steps {[r['step'] for r in tail]} loss {[r['loss'] for r in tail]} vs 2 processes "
          f"{[w['loss'] for w in ref]} vs single {[w['loss'] for w in one]}; max rel diff to single {rel:.2e}")
    np.testing.assert_allclose([r["loss"] for r in tail], [w["loss"] for w in ref], rtol=RTOL)
    np.testing.assert_allclose([r["loss"] for r in tail], [w["loss"] for w in one], rtol=RTOL)
    logs4 = [data_log(run, p) for p in range(4)]
    for r in tail:
        parts = [logs4[p][r["step"]] for p in range(4)]
        assert parts[0] == parts[1] and parts[2] == parts[3], parts        # a tensor pair reads the same rows
        assert all(len(x) == 2 for x in parts), parts
        assert parts[0] + parts[2] == single["data"][r["step"]], parts    # the two pairs: the recipe's global batch


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

def test_unreachable_coordinator_is_a_clear_error_within_the_timeout(tiny_model_dir, tmp_path):
    port = free_port()  # nobody listens there
    env = base_env(devices=1, init_s=3, extra={"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                                               "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"})
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "jaxtool", "train", *overrides(tiny_model_dir, tmp_path / "r"),
                          "--distributed"], env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"could not reach the coordinator at 127.0.0.1:{port} within 3s" in out.stderr, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert took < 60, took


def test_incomplete_cluster_settings_are_clear_errors():
    with pytest.raises(sharding.DistributedError, match="JAX_NUM_PROCESSES, JAX_PROCESS_ID missing"):
        sharding.distributed_settings({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
    with pytest.raises(sharding.DistributedError, match="JAX_PROCESS_ID=2 is not in"):
        sharding.distributed_settings({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"})
    with pytest.raises(sharding.DistributedError, match="expected host:port"):
        sharding.distributed_settings({"JAX_COORDINATOR_ADDRESS": "10.0.0.1"})
    assert sharding.distributed_settings({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4",
                                          "JAX_PROCESS_ID": "3", "JAXTOOL_DIST_HEARTBEAT_TIMEOUT": "7"}) == {
        "coordinator_address": "h:1", "num_processes": 4, "process_id": 3, "heartbeat_timeout_seconds": 7}
    assert sharding.distributed_settings({"SLURM_JOB_ID": "1", "JAX_COORDINATOR_ADDRESS": "h:1"}) == {
        "coordinator_address": "h:1"}   # JAX fills in the rest from SLURM


def test_mesh_that_does_not_fit_fails_before_the_model_is_loaded(tiny_model_dir, tmp_path, monkeypatch):
    import jaxtool.api

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the mesh was checked")

    monkeypatch.setattr(jaxtool.api, "load_model", no_load)
    t = Trainer(load_config(None, overrides(tiny_model_dir, tmp_path / "r", "mesh.fsdp=3")))
    with pytest.raises(ConfigError, match=r"data×fsdp×tensor = 3 \(data=1 fsdp=3 tensor=1\) does not divide the 8 devices"):
        t.setup()


def test_multi_process_mesh_and_batch_checks(monkeypatch):
    # a multi-process mesh must use every device (an idle host would feed rows to no device)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"leaves devices idle: a multi-process mesh must span all 8 devices "
                                          r"\(2 processes × 4 devices\)"):
        sharding.mesh_sizes(1, 4, 1)
    monkeypatch.undo()
    # a batch the batch axes cannot split: each process's devices would hold rows it does not read
    mesh = sharding.make_mesh(data=1, fsdp=8, tensor=1)
    sh = sharding.batch_sharding(mesh, 2, shape=(4, 16))        # 4 rows over fsdp 8 → replicated
    with pytest.raises(ConfigError, match=r"global batch of 4 rows is split as replicated.*batch_size a multiple of "
                                          r"data×fsdp = 8"):
        sharding._check_process_rows(sh, mesh, (4, 16), 2)
