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

from jaxtool.errors import ConfigError

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
    if n > len(devices) or len(devices) % n:
        raise ConfigError(f"mesh: data×fsdp×tensor = {n} does not fit {len(devices)} devices")
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
    contributes its rows (`jax.make_array_from_process_local_data`)."""

    def put(x):
        x = np.asarray(x)
        if jax.process_count() == 1:
            return jax.device_put(x, batch_sharding(mesh, x.ndim, rules, x.shape))
        global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
        sharding = batch_sharding(mesh, x.ndim, rules, global_shape)
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(put, batch)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def initialize_distributed(**kwargs) -> None:
    """Multi-host start-up (TPU pods, multi-node GPU): call once per process before anything else.

    On TPU and under SLURM / Open MPI, JAX discovers the cluster by itself. Otherwise set
    JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID, or pass
    coordinator_address / num_processes / process_id."""
    import os

    env = {"coordinator_address": os.environ.get("JAX_COORDINATOR_ADDRESS"),
           "num_processes": os.environ.get("JAX_NUM_PROCESSES"),
           "process_id": os.environ.get("JAX_PROCESS_ID")}
    for k, v in env.items():
        if v is not None and k not in kwargs:
            kwargs[k] = int(v) if k != "coordinator_address" else v
    jax.distributed.initialize(**kwargs)
