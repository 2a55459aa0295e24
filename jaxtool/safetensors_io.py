"""Safetensors I/O through the `safetensors` library, behind a thin layer whose only job is named
errors: a missing, truncated or corrupt file, a tensor that is not there, or a dtype that cannot be
stored is a `CheckpointError` naming the file (and tensor) — never the library's own exception.

`SafetensorsFile` is a lazy view of one file (`keys()`, `shape(name)`, `dtype(name)`, `get(name)`,
`header`, `metadata`); `save_file` writes atomically; `save_sharded` / `open_checkpoint` handle the
HF layouts (one `model.safetensors`, or shards plus `model.safetensors.index.json`). bfloat16 is
numpy's `ml_dtypes.bfloat16`, which `safetensors.numpy` reads and writes.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Mapping

import numpy as np

from jaxtool.errors import CheckpointError


def _lib_error(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


class SafetensorsFile:
    """Lazy view of one .safetensors file: `keys()`, `shape(name)`, `dtype(name)`, `get(name)`."""

    def __init__(self, path: str):
        from safetensors import safe_open

        self.path = path
        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: safetensors file not found")
        size = os.path.getsize(path)
        if size < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        try:
            self._f = safe_open(path, framework="numpy")
            self.metadata = dict(self._f.metadata() or {})
            self.header = {}
            for name in self._f.keys():
                sl = self._f.get_slice(name)
                self.header[name] = {"dtype": sl.get_dtype(), "shape": list(sl.get_shape())}
        except Exception as e:  # noqa: BLE001 - the library raises SafetensorError, OSError, ValueError...
            raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt: "
                                  f"{_lib_error(e)})") from None

    def keys(self) -> list[str]:
        return list(self.header)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.header[name]["shape"])

    def dtype(self, name: str) -> np.dtype:
        return self.get(name).dtype

    def get(self, name: str) -> np.ndarray:
        if name not in self.header:
            raise CheckpointError(f"{self.path}: no tensor {name!r}")
        try:
            return self._f.get_tensor(name)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{self.path}: tensor {name!r} cannot be read ({_lib_error(e)})") from None


def save_file(tensors: Mapping[str, np.ndarray], path: str, metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors (numpy arrays, C-contiguous copies made as needed) to `path` atomically."""
    from safetensors.numpy import save_file as _save

    arrays = {name: np.ascontiguousarray(arr) for name, arr in tensors.items()}
    tmp = path + ".tmp"
    try:
        _save(arrays, tmp, metadata=dict(metadata) if metadata else None)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. a dtype safetensors cannot store
        bad = next((f"{n!r} of dtype {a.dtype}" for n, a in arrays.items()
                    if a.dtype.kind not in "fiub" or a.dtype.itemsize > 8), None)
        raise CheckpointError(f"{path}: cannot store tensor{' ' + bad if bad else 's'} ({_lib_error(e)})") from None
    os.replace(tmp, path)


def save_sharded(tensors: Mapping[str, np.ndarray], out_dir: str, max_shard_bytes: int = 2 * 1024 ** 3,
                 prefix: str = "model") -> list[str]:
    """HF layout: `model.safetensors` if it fits in one shard, else `model-0000i-of-0000n.safetensors`
    plus `model.safetensors.index.json`. Returns the files written."""
    shards: list[dict] = [{}]
    size = 0
    for name, arr in tensors.items():
        if shards[-1] and size + arr.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = arr
        size += arr.nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        path = os.path.join(out_dir, f"{prefix}.safetensors")
        save_file(shards[0], path, meta)
        return [path]
    files, weight_map = [], {}
    for i, shard in enumerate(shards):
        fname = f"{prefix}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(out_dir, fname), meta)
        files.append(os.path.join(out_dir, fname))
        weight_map.update({n: fname for n in shard})
    index = {"metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))}, "weight_map": weight_map}
    with open(os.path.join(out_dir, f"{prefix}.safetensors.index.json"), "w") as fh:
        json.dump(index, fh, indent=2)
    return files


def open_checkpoint(hf_dir: str) -> dict[str, SafetensorsFile]:
    """tensor name -> the SafetensorsFile holding it, for a single-file or index-sharded HF dir."""
    index_path = os.path.join(hf_dir, "model.safetensors.index.json")
    single = os.path.join(hf_dir, "model.safetensors")
    if os.path.isfile(index_path):
        try:
            with open(index_path) as fh:
                weight_map = json.load(fh)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index_path}: not a valid safetensors index ({e})") from None
        files: dict[str, SafetensorsFile] = {}
        out = {}
        for name, fname in weight_map.items():
            path = os.path.join(hf_dir, fname)
            if fname not in files:
                if not os.path.isfile(path):
                    raise CheckpointError(f"{hf_dir}: shard {fname} (listed in model.safetensors.index.json "
                                          f"for tensor {name!r}) is missing")
                files[fname] = SafetensorsFile(path)
            if name not in files[fname].header:
                raise CheckpointError(f"{path}: index says it holds {name!r}, but it does not")
            out[name] = files[fname]
        return out
    if os.path.isfile(single):
        f = SafetensorsFile(single)
        return {n: f for n in f.keys()}
    candidates = sorted(p for p in os.listdir(hf_dir) if p.endswith(".safetensors"))
    if candidates:
        raise CheckpointError(f"{hf_dir}: has {candidates} but neither model.safetensors nor "
                              "model.safetensors.index.json")
    raise CheckpointError(f"{hf_dir}: no model.safetensors or model.safetensors.index.json "
                          "(only safetensors checkpoints are read; convert .bin files with transformers first)")


def total_bytes(arrays: Iterable[np.ndarray]) -> int:
    return int(sum(a.nbytes for a in arrays))
