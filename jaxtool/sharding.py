"""Device mesh, logical axis names and the one rules table that maps them onto the mesh.

Every parameter and every key activation carries *logical* axis names (`embed`, `heads`, `mlp`,
`vocab`, `batch`, …). One short table, `DEFAULT_RULES`, says which mesh axis (`data`, `fsdp`,
`tensor`) each logical axis is split over. The same model code therefore runs on one CPU device (a
1×1×1 mesh: every rule resolves to "replicated") and on a multi-host TPU pod (e.g. data=4, fsdp=64,
tensor=4) — only the mesh changes.

A logical axis is split over a mesh axis only when the dimension divides evenly by the mesh axis
size; otherwise that dimension stays replicated (e.g. SmolLM2's 3 KV heads on tensor=2). A mesh
axis is used at most once per array.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxtool.errors import ConfigError, JaxtoolError

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or tuple of mesh axes, or None = replicated)
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    ("lora_rank", None),
    ("quant_blocks", ("fsdp", "tensor")),   # NF4 blocks of a flattened weight slice (models/quant.py)
    # activations
    ("batch", ("data", "fsdp")),
    ("seq", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_seq", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all devices of all processes).

    One of the sizes may be -1: it takes whatever is left. The product must equal the device count.
    """
    devices = list(devices if devices is not None else jax.devices())
    sizes = mesh_sizes(data, fsdp, tensor, devices)
    n = math.prod(sizes)
    procs = jax.process_count()
    if procs > 1:
        # process-major order: each process's devices are neighbours along the innermost axes, so
        # `tensor` stays within a host and every process holds a contiguous block of batch rows
        devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    if n < len(devices):
        import logging

        logging.getLogger(__name__).warning("mesh uses %d of %d devices (data=%d fsdp=%d tensor=%d)",
                                            n, len(devices), *sizes)
        devices = devices[:n]
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(tuple(sizes), devices=devices)
    except Exception:  # noqa: BLE001 - fall back to plain order (e.g. CPU host devices)
        grid = np.asarray(devices, dtype=object).reshape(sizes)
    return Mesh(grid, MESH_AXES)


def mesh_sizes(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[Any] | None = None) -> list[int]:
    """[data, fsdp, tensor] resolved against `devices` (default: all devices of all processes), or a
    `ConfigError` that names the sizes and the devices. Cheap: call it before loading a model."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ConfigError("mesh: at most one of data/fsdp/tensor may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if any(s == 0 or s < -1 for s in sizes) or known == 0:
        raise ConfigError(f"mesh: sizes must be positive or -1, got data={data} fsdp={fsdp} tensor={tensor}")
    if -1 in sizes:
        if len(devices) % known:
            raise ConfigError(f"mesh: {len(devices)} devices do not divide by {known} (data={data} fsdp={fsdp} tensor={tensor})")
        sizes[sizes.index(-1)] = len(devices) // known
    n = math.prod(sizes)
    procs = jax.process_count()
    where = f" ({procs} processes × {len(devices) // procs} devices)" if procs > 1 else ""
    if n > len(devices) or len(devices) % n:
        raise ConfigError(f"mesh: data×fsdp×tensor = {n} (data={sizes[0]} fsdp={sizes[1]} tensor={sizes[2]}) "
                          f"does not divide the {len(devices)} devices{where}")
    if n < len(devices) and procs > 1:
        raise ConfigError(f"mesh: data×fsdp×tensor = {n} (data={sizes[0]} fsdp={sizes[1]} tensor={sizes[2]}) "
                          f"leaves devices idle: a multi-process mesh must span all {len(devices)} devices{where} "
                          "(set one of mesh.data/fsdp/tensor to -1)")
    return sizes


def _rule_table(rules) -> dict[str, tuple[str, ...]]:
    table = {}
    for logical, mesh_axes in rules:
        if mesh_axes is None:
            table[logical] = ()
        elif isinstance(mesh_axes, str):
            table[logical] = (mesh_axes,)
        else:
            table[logical] = tuple(mesh_axes)
    return table


def logical_to_spec(axes: Sequence[str | None], mesh: Mesh, rules=DEFAULT_RULES,
                    shape: Sequence[int] | None = None) -> PartitionSpec:
    """PartitionSpec for an array whose dims carry the logical names `axes`.

    With `shape`, a mesh axis is kept only if it divides the dimension (after the axes already
    chosen for that dimension); mesh axes of size 1 are dropped; each mesh axis is used once.
    """
    table = _rule_table(rules)
    used: set[str] = set()
    spec = []
    for i, name in enumerate(axes):
        if name is None:
            spec.append(None)
            continue
        if name not in table:
            raise ConfigError(f"sharding: logical axis {name!r} has no rule; known: {sorted(table)}")
        chosen = []
        size = shape[i] if shape is not None else None
        for m in table[name]:
            n = mesh.shape[m]
            if m in used or n == 1:
                continue
            if size is not None:
                if size % n:
                    continue
                size //= n
            chosen.append(m)
            used.add(m)
        spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
    return PartitionSpec(*spec)


def named_sharding(axes, mesh: Mesh, rules=DEFAULT_RULES, shape=None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, mesh, rules, shape))


def tree_shardings(axes_tree, shapes_tree, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedShardings for a pytree, given a matching pytree of logical-axes tuples and of shapes
    (arrays or `jax.ShapeDtypeStruct`s)."""
    return jax.tree.map(
        lambda axes, x: named_sharding(axes, mesh, rules, getattr(x, "shape", x)),
        axes_tree, shapes_tree, is_leaf=lambda v: isinstance(v, tuple) and all(isinstance(a, (str, type(None))) for a in v),
    )


# --------------------------------------------------------------------------------------------
# activation constraints inside traced code
# --------------------------------------------------------------------------------------------

_CTX = threading.local()


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None, rules=DEFAULT_RULES):
    """Within this context, `constrain(x, axes)` pins activations to the mesh. Tracing must happen
    inside it (jit traces lazily: call the jitted function inside the context)."""
    prev = getattr(_CTX, "state", None)
    _CTX.state = None if mesh is None else (mesh, rules)
    try:
        yield mesh
    finally:
        _CTX.state = prev


def current_mesh() -> Mesh | None:
    state = getattr(_CTX, "state", None)
    return state[0] if state else None


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical axes; a no-op outside `use_mesh` or on a 1-device mesh."""
    state = getattr(_CTX, "state", None)
    if not state:
        return x
    mesh, rules = state
    if mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, named_sharding(axes, mesh, rules, x.shape))


# --------------------------------------------------------------------------------------------
# placing host data on the mesh
# --------------------------------------------------------------------------------------------

def batch_sharding(mesh: Mesh, ndim: int, rules=DEFAULT_RULES, shape=None) -> NamedSharding:
    return named_sharding(("batch",) + (None,) * (ndim - 1), mesh, rules, shape)


def shard_batch(batch, mesh: Mesh, rules=DEFAULT_RULES):
    """Place a pytree of per-process numpy batches (leading dim = this process's rows) on the mesh,
    split over the batch axes. On one process this is a `device_put`; on many, each process
    contributes the rows its devices hold (`jax.make_array_from_process_local_data`): the global
    batch is `count` blocks of rows (see `data_shard`; processes of one block pass the same rows)."""

    def put(x):
        x = np.asarray(x)
        if jax.process_count() == 1:
            return jax.device_put(x, batch_sharding(mesh, x.ndim, rules, x.shape))
        count = _local_count(mesh, x.shape[0], rules)
        global_shape = (x.shape[0] * count,) + x.shape[1:]
        sharding = batch_sharding(mesh, x.ndim, rules, global_shape)
        _check_process_rows(sharding, mesh, global_shape, x.shape[0])
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(put, batch)


def data_shard(mesh: Mesh, global_rows: int, rules=DEFAULT_RULES) -> tuple[int, int]:
    """Which rows of a global batch of `global_rows` this process reads: `(index, count)` — the batch
    splits into `count` equal blocks and this process's devices hold block `index` (the input
    pipeline's `process_index` / `process_count`). Processes whose devices hold the same rows read the
    same block: a `tensor` axis across processes (one process per GPU with tensor parallelism) or a
    batch the batch axes cannot split (then every process reads it all). One process: (0, 1)."""
    if jax.process_count() == 1:
        return 0, 1
    key = (id(mesh), global_rows, rules)
    if key not in _SHARDS:
        sh = batch_sharding(mesh, 1, rules, (global_rows,))
        by_proc: dict[int, set] = {}
        for dev, idx in sh.devices_indices_map((global_rows,)).items():
            by_proc.setdefault(dev.process_index, set()).update(range(*idx[0].indices(global_rows)))
        blocks = sorted({frozenset(r) for r in by_proc.values()}, key=min)
        if len({len(b) for b in blocks}) != 1 or sum(len(b) for b in blocks) != global_rows:
            raise ConfigError(f"mesh {dict(mesh.shape)} over {jax.process_count()} processes: the processes' "
                              f"devices hold overlapping, unequal parts of a batch of {global_rows} rows; put "
                              "mesh.tensor within a host or along whole hosts (one of mesh.data/fsdp = -1)")
        if len(blocks) == 1:
            import logging

            split = math.prod(mesh.shape[a] for a in ("data", "fsdp"))
            logging.getLogger(__name__).warning(
                "batch of %d rows is not split over data×fsdp = %d: every process reads and every device "
                "computes all of it (make batch_size a multiple of %d)", global_rows, split, split)
        _SHARDS[key] = (blocks.index(frozenset(by_proc[jax.process_index()])), len(blocks))
    return _SHARDS[key]


_SHARDS: dict = {}


def _local_count(mesh: Mesh, local_rows: int, rules) -> int:
    """The number of row blocks for a process that reads `local_rows`: the largest `count` with
    data_shard(mesh, local_rows × count) splitting into `count` blocks."""
    for count in sorted((c for c in range(1, jax.process_count() + 1) if jax.process_count() % c == 0), reverse=True):
        try:
            if data_shard(mesh, local_rows * count, rules)[1] == count:
                return count
        except ConfigError:
            continue
    raise ConfigError(f"mesh {dict(mesh.shape)}: no split of the global batch gives this process {local_rows} rows")


_ROWS_OK: set = set()


def _check_process_rows(sh: NamedSharding, mesh: Mesh, global_shape: tuple, local_rows: int) -> None:
    key = (id(mesh), sh.spec, global_shape[0])
    if key in _ROWS_OK:
        return
    rows: set[int] = set()
    for idx in sh.addressable_devices_indices_map(global_shape).values():
        rows.update(range(*idx[0].indices(global_shape[0])))
    if len(rows) != local_rows:
        split = math.prod(mesh.shape[a] for a in ("data", "fsdp"))
        raise ConfigError(
            f"mesh {dict(mesh.shape)} over {jax.process_count()} processes: the global batch of "
            f"{global_shape[0]} rows is split as {sh.spec[0] or 'replicated'}, so this process's devices "
            f"hold {len(rows)} rows but it reads {local_rows}; make batch_size a multiple of data×fsdp = "
            f"{split} and read each process's rows with data_shard(mesh, batch_size)")
    _ROWS_OK.add(key)


def to_host(tree):
    """Numpy copies of a pytree of (possibly multi-process) arrays, whole on every process: a
    sharded global array is gathered across processes (`process_allgather`), so call this on
    every process in the same order."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(get, tree)


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is true on any of them (one small all-gather; call it on
    every process at the same point, e.g. once per step). With one process: `flag` itself.

    This is how a SIGTERM that reaches the processes of a pod at different moments (a TPU
    maintenance notice, `scancel`) becomes one decision — stop after the same step on all of them —
    and therefore one consistent checkpoint."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.asarray([int(bool(flag))], np.int32))).any())


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def agree_max(value: int | None) -> int | None:
    """The largest `value` over all processes, None counting as the largest ("no limit"); call it
    on every process at the same point. For static arguments computed from a process's own rows
    (e.g. the selective-logits budget): every process must compile the same program."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    v = -1 if value is None else int(value)
    got = np.asarray(multihost_utils.process_allgather(np.asarray([v], np.int64))).reshape(-1)
    return None if (got < 0).any() else int(got.max())


_BARRIERS: dict[str, int] = {}


def barrier(name: str, timeout_s: float | None = None) -> None:
    """Wait until every process reaches this point — through the coordination service, with no
    device collective, so a process that is much slower (loading a model, compiling) is waited for
    up to `timeout_s` (default JAXTOOL_DIST_INIT_TIMEOUT or 300 s). On CPU the first cross-process
    collective gives its peers only 30 s to show up (Gloo's rendezvous): call this before it."""
    if jax.process_count() == 1:
        return
    import os

    if timeout_s is None:
        timeout_s = float(os.environ.get(ENV_INIT_TIMEOUT) or 300)
    n = _BARRIERS[name] = _BARRIERS.get(name, 0) + 1   # a barrier id may be used once
    try:
        from jax._src import distributed

        client = distributed.global_state.client
    except (ImportError, AttributeError):  # pragma: no cover - private API moved: fall back to a collective
        client = None
    if client is None:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"{name}_{n}")
        return
    try:
        client.wait_at_barrier(f"jaxtool_{name}_{n}", int(timeout_s * 1000))
    except RUNTIME_ERRORS as e:
        raise DistributedError(f"distributed: process {jax.process_index()} of {jax.process_count()} waited "
                               f"{timeout_s:g}s at {name!r} for the other processes: "
                               f"{(str(e).strip().splitlines() or [''])[0][:300]} (is one of them stuck or dead? "
                               f"{ENV_INIT_TIMEOUT} sets the timeout)") from None


class DistributedError(JaxtoolError):
    """A multi-process start-up that cannot work: unreachable coordinator, incomplete settings."""


ENV_INIT_TIMEOUT = "JAXTOOL_DIST_INIT_TIMEOUT"            # seconds to reach the coordinator (default 300)
ENV_HEARTBEAT_TIMEOUT = "JAXTOOL_DIST_HEARTBEAT_TIMEOUT"  # seconds before a silent process counts as dead (100)
ENV_SHUTDOWN_TIMEOUT = "JAXTOOL_DIST_SHUTDOWN_TIMEOUT"    # seconds a finished process waits for the others (300)


def distributed_settings(environ=None) -> dict:
    """The `jax.distributed.initialize` keywords that the environment sets.

    JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID name the
    cluster explicitly (plain multi-node, the local emulation in tests); without them JAX detects
    TPU pods, SLURM and Open MPI by itself. JAXTOOL_DIST_INIT_TIMEOUT / JAXTOOL_DIST_HEARTBEAT_TIMEOUT /
    JAXTOOL_DIST_SHUTDOWN_TIMEOUT (seconds) bound the wait for the coordinator, for a process that
    died, and at exit for the slowest process."""
    import os

    env = os.environ if environ is None else environ
    out: dict = {}
    names = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
             "process_id": "JAX_PROCESS_ID", "initialization_timeout": ENV_INIT_TIMEOUT,
             "heartbeat_timeout_seconds": ENV_HEARTBEAT_TIMEOUT, "shutdown_timeout_seconds": ENV_SHUTDOWN_TIMEOUT}
    for key, var in names.items():
        v = env.get(var)
        if v in (None, ""):
            continue
        if key == "coordinator_address":
            if ":" not in v:
                raise DistributedError(f"{var}={v!r}: expected host:port of process 0 (e.g. 10.0.0.1:8476)")
            out[key] = v
            continue
        try:
            out[key] = int(v)
        except ValueError:
            raise DistributedError(f"{var}={v!r}: expected an integer") from None
    explicit = [k for k in ("coordinator_address", "num_processes", "process_id") if k in out]
    if explicit and len(explicit) != 3 and not _cluster_detected(env):
        missing = [names[k] for k in ("coordinator_address", "num_processes", "process_id") if k not in out]
        raise DistributedError(f"distributed: {', '.join(names[k] + '=' + str(out[k]) for k in explicit)} set but "
                               f"{', '.join(missing)} missing (set all three, or none on a TPU pod / under SLURM)")
    if "num_processes" in out and "process_id" in out and not 0 <= out["process_id"] < out["num_processes"]:
        raise DistributedError(f"JAX_PROCESS_ID={out['process_id']} is not in [0, JAX_NUM_PROCESSES="
                               f"{out['num_processes']})")
    return out


def _cluster_detected(env) -> bool:
    return any(k in env for k in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                                  "CLOUD_TPU_TASK_ID", "MEGASCALE_COORDINATOR_ADDRESS"))


def initialize_distributed(**kwargs) -> None:
    """Multi-host start-up (TPU pods, multi-node GPU): call once per process before anything else.

    On TPU and under SLURM / Open MPI, JAX discovers the cluster by itself. Otherwise set
    JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID, or pass
    coordinator_address / num_processes / process_id (see `distributed_settings` for the timeouts).
    A coordinator that cannot be reached within the timeout is a `DistributedError` naming it."""
    for k, v in distributed_settings().items():
        kwargs.setdefault(k, v)
    addr, pid = kwargs.get("coordinator_address"), kwargs.get("process_id")
    if addr and pid not in (None, 0):
        # jax aborts the process (no Python error, a message blaming "another task") when the
        # coordinator cannot be reached: probe it first so the user gets an error that names it
        wait_for_coordinator(addr, kwargs.get("initialization_timeout", 300), pid, kwargs.get("num_processes"))
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError, TypeError) as e:  # jax raises XlaRuntimeError (a RuntimeError) or ValueError
        addr = kwargs.get("coordinator_address") or "(auto-detected)"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(
            f"distributed: process {kwargs.get('process_id', '?')} of {kwargs.get('num_processes', '?')} could not "
            f"join the coordinator at {addr} within {kwargs.get('initialization_timeout', 300)}s: {msg} "
            f"(is process 0 running and is the address reachable? {ENV_INIT_TIMEOUT} sets the timeout)") from None


def wait_for_coordinator(address: str, timeout_s: float, process_id=None, num_processes=None) -> None:
    """Wait until `address` (host:port, the coordinator that process 0 starts) accepts TCP
    connections; a `DistributedError` naming it after `timeout_s` seconds."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        port_n = int(port)
    except ValueError:
        raise DistributedError(f"coordinator address {address!r}: expected host:port") from None
    deadline = time.monotonic() + float(timeout_s)
    last = ""
    while True:
        try:
            with socket.create_connection((host, port_n), timeout=min(2.0, max(0.1, deadline - time.monotonic()))):
                return
        except OSError as e:
            last = e.strerror or type(e).__name__
        if time.monotonic() >= deadline:
            who = f"process {process_id} of {num_processes}" if process_id is not None else "this process"
            raise DistributedError(
                f"distributed: {who} could not reach the coordinator at {address} within {timeout_s:g}s "
                f"({last}); is process 0 running, and is JAX_COORDINATOR_ADDRESS its reachable host:port? "
                f"({ENV_INIT_TIMEOUT} sets the timeout)")
        time.sleep(0.25)


RUNTIME_ERRORS = (getattr(jax.errors, "JaxRuntimeError", RuntimeError),)


def peer_failure(error: BaseException, ckpt_dir: str, last_step: int | None) -> DistributedError:
    """The error of a multi-process run whose collective failed (a peer process died: its sockets
    closed, or the coordination service missed its heartbeats)."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    resume = (f"the last complete checkpoint is step {last_step} in {ckpt_dir}" if last_step is not None
              else f"no complete checkpoint in {ckpt_dir} yet")
    return DistributedError(
        f"distributed: process {jax.process_index()} of {jax.process_count()}: a collective across the processes "
        f"failed ({first}); another process has probably died — see its log. {resume}; restart every process "
        "with --resume to continue from it")
