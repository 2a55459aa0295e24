"""`jaxtool rl` as separate processes: 2 processes equal 1 process; killed with SIGKILL and resumed,
equal to the uninterrupted run.

Two processes × 2 host devices each, joined by `jax.distributed` on localhost (tests/multiproc.py,
the harness of tests/test_multiprocess.py), run `jaxtool rl ... --distributed` on one global mesh
(fsdp 4): every process decodes the whole rollout batch with the sharded parameters (the same
host loop, the same sampling key) and trains its block of rows. The reference is the same recipe in
this pytest process on 4 of its 8 host devices (mesh fsdp 4). Checked: the per-iteration metrics
(rewards and response lengths exactly — the same tokens were sampled; loss, KL, gradient norm to
float tolerance) and the final parameters from the 2-process checkpoint.

Tasks: key-value environment tasks (`jaxtool.envs.toy`, the scripted test environment); reward: a
scripted function of the sampled ids (the share of even token ids), registered by this file, which
is also the subprocesses' entry point (`python tests/test_rl_multiprocess.py rl ...` registers it,
then runs `jaxtool.cli.main`), so rewards vary within each group and every update moves the
parameters.
"""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from multiproc import ROOT, base_env, free_port, process_env  # noqa: E402

REWARD = "test_even_tokens"
ITERATIONS = 2
RTOL = 1e-5


def _register():
    from jaxtool.rl import rewards

    def even_share(task, traj, ctx):
        s = [i for i, m in zip(traj.ids, traj.sampled) if m]
        return float(np.mean([i % 2 == 0 for i in s])) if s else 0.0

    rewards.register(REWARD)(even_share)


def overrides(model_dir, run_dir, tasks):
    return [f"model.path={model_dir}", f"run_dir={run_dir}", f"data.env_tasks={tasks}", "data.format=hermes",
            "rollout.prompts=2", "rollout.group_size=4", "rollout.max_turn_tokens=6", "rollout.max_response_tokens=6",
            "rollout.length_multiple=16", f"reward.functions=[{REWARD}]", "reward.weights=[1.0]", "loss.type=grpo",
            "loss.beta=0.04", "optim.lr=1e-2", "optim.schedule=constant", f"iterations={ITERATIONS}",
            "mesh.data=1", "mesh.fsdp=4", "model.logits_chunk=0", "seed=3", "progress=false"]


def _tasks(path):
    rows = [{"id": f"t{i}", "env": "kv", "messages": [{"role": "user", "content": q}],
             "entry": {"initial": {"a": "1"}}, "goal": {"store": {"b": "2"}}}
            for i, q in enumerate(["store b=2", "set the key b to 2", "put 2 under b"])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.slow
def test_two_processes_run_rl_like_one_process(tiny_model_dir, tmp_path):
    import subprocess

    import jax

    from jaxtool import checkpoint
    from jaxtool.config import load_config
    from jaxtool.rl.loop import RLConfig, RLTrainer
    from jaxtool.train.metrics import read_metrics

    _register()
    tasks = _tasks(tmp_path / "tasks.jsonl")
    cache = str(tmp_path / "xla_cache")
    port = free_port()
    procs = []
    for i in range(2):
        log = open(tmp_path / f"p{i}.log", "w")
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "rl", *overrides(tiny_model_dir, tmp_path / "two", tasks), "--distributed"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=process_env(i, 2, port, devices=2, cache_dir=cache, init_s=120)))
        log.close()
    # the reference meanwhile, in this process (mesh fsdp 4 on 4 of the 8 host devices)
    one = RLTrainer(load_config(None, overrides(tiny_model_dir, tmp_path / "one", tasks), cls=RLConfig),
                    printer=lambda *a, **k: None)
    res = one.run()
    assert res.status == "finished" and dict(one.mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 1}
    rcs = [p.wait(timeout=300) for p in procs]
    logs = [(tmp_path / f"p{i}.log").read_text() for i in range(2)]
    assert rcs == [0, 0], "\n".join(f"--- process {i}: rc={rc}\n{lg[-3000:]}" for i, (rc, lg) in enumerate(zip(rcs, logs)))
    assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 1}" in logs[0]   # one global mesh over both processes

    got = [r for r in read_metrics(str(tmp_path / "two" / "metrics.jsonl")) if r.get("split") == "train"]
    want = [r for r in read_metrics(str(tmp_path / "one" / "metrics.jsonl")) if r.get("split") == "train"]
    print("2 processes:", [(r["reward_mean"], r["loss"], r["kl"]) for r in got])
    print("1 process:  ", [(r["reward_mean"], r["loss"], r["kl"]) for r in want])
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, ITERATIONS + 1))
    for k in ("reward_mean", "reward_std", "response_len"):   # the same tokens were sampled
        assert [r[k] for r in got] == [r[k] for r in want], k
    assert len({r["reward_mean"] for r in want} | {want[0]["reward_std"]}) > 1 and want[0]["reward_std"] > 0
    for k in ("loss", "kl", "grad_norm"):
        np.testing.assert_allclose([r[k] for r in got], [r[k] for r in want], rtol=RTOL, atol=1e-7, err_msg=k)
    assert want[-1]["kl"] > 0   # the policy moved

    # the final parameters: the 2-process checkpoint (both processes' shards) vs this process's state
    ck = checkpoint.Checkpointer(str(tmp_path / "two" / "checkpoints"), create=False)
    assert ck.steps() == [ITERATIONS]
    step, items, _, damaged = ck.restore_newest_good(
        {"params": checkpoint.abstract_like(one.state.trainable),
         "opt_state": checkpoint.abstract_like(one.state.opt_state)}, verify="all")
    assert step == ITERATIONS and not damaged
    a, b = jax.tree.leaves(items["params"]), jax.tree.leaves(one.state.trainable)
    assert len(a) == len(b) > 0
    init = RLTrainer(load_config(None, overrides(tiny_model_dir, tmp_path / "init", tasks), cls=RLConfig),
                     printer=lambda *a, **k: None)
    init.setup()
    moved = max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(b, jax.tree.leaves(init.state.trainable)))
    diff = max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(a, b))
    print(f"final params: max |2 processes - 1 process| {diff:.2e}; moved from init by {moved:.2e}")
    # Adam divides by sqrt(v): a rounding difference in a near-zero gradient entry moves that entry by
    # a visible fraction of lr, so the bound is relative to how far training moved the parameters
    assert moved > 1e-3 and diff < 1e-2 * moved


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tiny_model_dir, tmp_path):
    """`jaxtool rl` in a subprocess, checkpointing every iteration, is killed with SIGKILL as soon as
    iteration 1's checkpoint is committed (it is then inside iteration 2); `--resume` continues from
    the newest good checkpoint and ends bit-identical to an uninterrupted run: the same rewards,
    losses and KL per iteration and the same final parameters."""
    import signal
    import subprocess
    import time

    import jax

    from jaxtool import checkpoint
    from jaxtool.config import load_config
    from jaxtool.rl.loop import RLConfig, RLTrainer
    from jaxtool.train.metrics import read_metrics

    _register()
    tasks = _tasks(tmp_path / "tasks.jsonl")
    its = ["iterations=3", "save_every=1", "keep=5", "mesh.fsdp=1", "mesh.data=-1"]
    ov = lambda run: [x for x in overrides(tiny_model_dir, tmp_path / run, tasks)  # noqa: E731
                      if not x.startswith(("mesh.", "iterations="))] + its
    # the uninterrupted run first, in this process: the subprocess then finds its programs in the
    # session's persistent compilation cache (the same 8 host devices) and spends its time running
    full = RLTrainer(load_config(None, ov("full"), cls=RLConfig), printer=lambda *a, **k: None)
    want = full.run()
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen([sys.executable, __file__, "rl", *ov("killed")], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=base_env(devices=8, cache_dir=os.environ.get("JAX_COMPILATION_CACHE_DIR")))
    log.close()
    ck = str(tmp_path / "killed" / "checkpoints")
    end = time.monotonic() + 240
    while time.monotonic() < end and proc.poll() is None:
        if os.path.isdir(ck) and 1 in checkpoint.Checkpointer(ck, create=False).steps():
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + (tmp_path / "killed.log").read_text()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = checkpoint.Checkpointer(ck, create=False).steps()
    assert 1 in steps and max(steps) < 3, steps
    rest = RLTrainer(load_config(None, ov("killed"), cls=RLConfig), printer=lambda *a, **k: None)
    got = rest.run(resume=True)
    assert got.status == "finished" and got.iterations == 3
    start = 3 - len(got.history)
    assert start == max(steps)
    for a, b in zip(want.history[start:], got.history):
        assert (a["reward_mean"], a["loss"], a["kl"], a["response_len"]) == \
            (b["reward_mean"], b["loss"], b["kl"], b["response_len"])
    rows = [r for r in read_metrics(str(tmp_path / "killed" / "metrics.jsonl")) if r.get("split") == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3]       # no duplicate row from the killed iteration
    la, lb = jax.tree.leaves(full.state.trainable), jax.tree.leaves(rest.state.trainable)
    assert len(la) == len(lb) > 0 and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))
    # the run's checkpoint directory is a model `jaxtool eval --model` / `jaxtool rl --evaluate` load
    from jaxtool.api import load_model

    lm = jax.tree.leaves(load_model(ck).params)
    assert len(lm) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(lm, lb))


if __name__ == "__main__":   # a subprocess of the test above: the scripted reward, then `jaxtool ...`
    sys.path.insert(0, ROOT)
    _register()
    from jaxtool.cli import main

    sys.exit(main(sys.argv[1:]))
