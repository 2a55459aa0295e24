"""Start N JAX processes on this machine, the way a pod starts one per host.

    job = Job.start(2, ["train", RECIPE, "key=value", ..., "--distributed"], log_dir=tmp)
    results = job.wait(timeout=300)            # [ProcResult(rc, log, wall_s)] per process
    job.signal(signal.SIGTERM)                 # every process (a preemption notice)
    job.kill(1)                                # SIGKILL one process

Each process is `python -m jaxtool ARGS` with the cluster given by the environment that
`jaxtool.sharding.initialize_distributed` reads (JAX_COORDINATOR_ADDRESS = 127.0.0.1:<free port>,
JAX_NUM_PROCESSES, JAX_PROCESS_ID), `JAX_PLATFORMS=cpu` and
`XLA_FLAGS=--xla_force_host_platform_device_count=D` set before JAX starts (D host devices per
process), short coordination timeouts, and its stdout+stderr in `log_dir/p<i>.log`.

Compiled programs are shared through JAX's persistent compilation cache (`cache_dir`), so a
restart does not pay the compile again (as on a real pod with a cache bucket).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(devices: int, cache_dir: str | None = None, heartbeat_s: int = 10, init_s: int = 60,
             extra: dict | None = None) -> dict:
    """The environment of an emulated host, without its place in the cluster (a launch script adds
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_", "PYTEST_"))}
    env.update({
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAXTOOL_DIST_HEARTBEAT_TIMEOUT": str(heartbeat_s),
        "JAXTOOL_DIST_INIT_TIMEOUT": str(init_s),
        "JAXTOOL_DIST_SHUTDOWN_TIMEOUT": "120",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONUNBUFFERED": "1",
        "JAXTOOL": f"{sys.executable} -m jaxtool",   # the command launch/*.sh run
        "PYTHONPATH": ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
    })
    if cache_dir:
        env.update({"JAX_COMPILATION_CACHE_DIR": cache_dir, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})
    env.update(extra or {})
    return env


def process_env(process_id: int, num_processes: int, port: int, devices: int, cache_dir: str | None = None,
                heartbeat_s: int = 10, init_s: int = 60, extra: dict | None = None) -> dict:
    """The environment of process `process_id` of `num_processes` (coordinator 127.0.0.1:port)."""
    env = base_env(devices, cache_dir, heartbeat_s, init_s, extra)
    env.update({"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": str(num_processes),
                "JAX_PROCESS_ID": str(process_id)})
    return env


@dataclasses.dataclass
class ProcResult:
    process_id: int
    rc: int | None          # None: still running when the wait timed out (it was then killed)
    wall_s: float
    log: str


class Job:
    def __init__(self, procs, logs, t0):
        self.procs, self.logs, self.t0 = procs, logs, t0

    @classmethod
    def start(cls, n: int, args: list[str], log_dir: str, devices: int = 2, cache_dir: str | None = None,
              heartbeat_s: int = 10, init_s: int = 60, env: dict | None = None, port: int | None = None) -> "Job":
        os.makedirs(log_dir, exist_ok=True)
        port = port or free_port()
        procs, logs = [], []
        t0 = time.monotonic()
        for i in range(n):
            path = os.path.join(log_dir, f"p{i}.log")
            fh = open(path, "w")
            procs.append(subprocess.Popen([sys.executable, "-m", "jaxtool", *args], cwd=ROOT, stdout=fh,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=process_env(i, n, port, devices, cache_dir, heartbeat_s, init_s, env)))
            fh.close()
            logs.append(path)
        return cls(procs, logs, t0)

    def log(self, i: int) -> str:
        with open(self.logs[i], encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def signal(self, sig=signal.SIGTERM, which=None) -> None:
        for i in (range(len(self.procs)) if which is None else which):
            if self.procs[i].poll() is None:
                self.procs[i].send_signal(sig)

    def kill(self, i: int) -> None:
        self.procs[i].kill()

    def wait_for(self, predicate, timeout: float, poll: float = 0.2) -> bool:
        """Poll `predicate()` until true (True) or timeout / every process exited (False)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            if all(p.poll() is not None for p in self.procs):
                return bool(predicate())
            time.sleep(poll)
        return False

    def wait(self, timeout: float) -> list[ProcResult]:
        """Wait for every process (all of them killed at the deadline); results in process order."""
        end = time.monotonic() + timeout
        walls = [None] * len(self.procs)
        while time.monotonic() < end and any(p.poll() is None for p in self.procs):
            for i, p in enumerate(self.procs):
                if walls[i] is None and p.poll() is not None:
                    walls[i] = time.monotonic() - self.t0
            time.sleep(0.1)
        out = []
        for i, p in enumerate(self.procs):
            rc = p.poll()
            if rc is None:
                p.kill()
                p.wait()
            elif walls[i] is None:
                walls[i] = time.monotonic() - self.t0
            out.append(ProcResult(i, rc, walls[i] if walls[i] is not None else time.monotonic() - self.t0, self.log(i)))
        return out

    def exit_times(self) -> list[float | None]:
        return [None if p.poll() is None else time.monotonic() - self.t0 for p in self.procs]


def describe(results: list[ProcResult], tail: int = 3000) -> str:
    """Every process's exit code and the end of its log (for assertion messages)."""
    return "\n".join(f"--- process {r.process_id}: rc={r.rc} after {r.wall_s:.1f}s\n{r.log[-tail:]}" for r in results)
