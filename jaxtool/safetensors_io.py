"""Minimal, strict safetensors reader/writer on numpy (bfloat16 via ml_dtypes).

Written here rather than borrowed so that every failure names the file and tensor: a truncated
file, a header that points past the end, a dtype we cannot represent. Format: 8-byte little-endian
header length N, N bytes of JSON header `{name: {"dtype", "shape", "data_offsets": [begin, end]},
"__metadata__": {...}}`, then the raw little-endian tensor bytes.
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Iterable, Mapping

import ml_dtypes
import numpy as np

from jaxtool.errors import CheckpointError

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class SafetensorsFile:
    """Lazy view of one .safetensors file: `keys()`, `shape(name)`, `dtype(name)`, `get(name)`."""

    def __init__(self, path: str):
        self.path = path
        try:
            size = os.path.getsize(path)
        except OSError:
            raise CheckpointError(f"{path}: safetensors file not found") from None
        if size < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > size - 8:
                raise CheckpointError(f"{path}: truncated safetensors file (header of {n} bytes, file has {size})")
            try:
                header = json.loads(fh.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
        self.metadata = header.pop("__metadata__", {}) or {}
        self.header = header
        self.data_start = 8 + n
        data_len = size - self.data_start
        for name, info in header.items():
            begin, end = info["data_offsets"]
            if info["dtype"] not in _DTYPES:
                raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
            want = math.prod(info["shape"]) * np.dtype(_DTYPES[info["dtype"]]).itemsize
            if end - begin != want:
                raise CheckpointError(f"{path}: tensor {name!r} declares {end - begin} bytes, "
                                      f"its shape {info['shape']} × {info['dtype']} needs {want}")
            if end > data_len:
                raise CheckpointError(f"{path}: truncated safetensors file: tensor {name!r} ends at byte "
                                      f"{self.data_start + end} but the file has {size}")
        self._mm = None

    def keys(self) -> list[str]:
        return list(self.header)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.header[name]["shape"])

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(_DTYPES[self.header[name]["dtype"]])

    def get(self, name: str) -> np.ndarray:
        if name not in self.header:
            raise CheckpointError(f"{self.path}: no tensor {name!r}")
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        info = self.header[name]
        begin, end = info["data_offsets"]
        raw = self._mm[self.data_start + begin:self.data_start + end]
        return np.frombuffer(raw, dtype=self.dtype(name)).reshape(info["shape"])


def save_file(tensors: Mapping[str, np.ndarray], path: str, metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors (numpy arrays, C-contiguous copies made as needed) to `path` atomically."""
    header, offset, arrays = {}, 0, []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype not in _NAMES:
            raise CheckpointError(f"{path}: cannot store tensor {name!r} of dtype {arr.dtype}")
        header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays.append(arr)
    if metadata:
        header["__metadata__"] = dict(metadata)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for arr in arrays:
            fh.write(arr.tobytes())
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
