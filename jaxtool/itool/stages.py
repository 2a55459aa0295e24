"""iTool's stage markers, checked against the artifacts they vouch for (issue 26, probe findings 4, 6, 7).

Every stage of `jaxtool.itool.loop` ends by writing `.done/<stage>.json` atomically. A marker holds
the stage's result, the run directory it was written in, and the size and SHA-256 of each artifact
the stage left behind (its own files — `STAGE_FILES` — and every file under a path of its result that
lies inside the run directory, e.g. the warm-up stage's model). A rerun trusts a marker only when:

- it is a JSON object with a `result` (a marker cut short, not JSON or `{}` is reported and the stage
  redone — never a `JSONDecodeError` / `KeyError`);
- every artifact it lists still has its size and hash (a `buffer.json` truncated to 20 bytes or a
  deleted `data/examples.jsonl` makes the stage run again, and says which file was the reason).

Files over `HASH_LIMIT` bytes (model shards) are checked by size only, so resuming an 8B run does not
re-read 16 GB. Markers written before artifacts were recorded are trusted as they are.

A run directory may be moved or copied: paths in a marker's result that lie under the directory the
marker was written in are read relative to the directory the run is in now (`result()`), so a copy
resumes in place and never writes into the original.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from jaxtool.hashing import file_sha256
from jaxtool.itool.buffer import write_json

HASH_LIMIT = 64 << 20

# files each stage writes into its own directory (besides those its result points to)
STAGE_FILES = {
    "data": ("data/examples.jsonl", "data/buffer_init.json"),
    "split": ("split.json",),
    "buffer": ("buffer.json",),
    "search": ("pairs_raw.jsonl", "search.json"),
    "filter": ("pairs.jsonl", "train_pairs.jsonl", "filtered.json"),
}


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _inside(path: str, root: str) -> str | None:
    """`path` relative to `root` when it lies inside it, else None."""
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    except ValueError:
        return None
    return None if rel == "." or rel.startswith("..") else rel


def _rebase(value: Any, old_roots: list[str], new_root: str) -> Any:
    if isinstance(value, str):
        for old in old_roots:
            if value == old:
                return new_root
            if value.startswith(old.rstrip(os.sep) + os.sep):
                return os.path.join(new_root, value[len(old.rstrip(os.sep)) + 1:])
        return value
    if isinstance(value, dict):
        return {k: _rebase(v, old_roots, new_root) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, old_roots, new_root) for v in value]
    return value


def _find_run_dir(directory: str) -> str:
    """The run directory a stage directory belongs to: the nearest of it and its parents holding the
    first stage's marker (`.done/data.json`); `directory` itself when none does."""
    d = os.path.abspath(directory)
    while True:
        if os.path.isfile(os.path.join(d, ".done", "data.json")):
            return d if os.path.isabs(directory) else os.path.relpath(d)
        parent = os.path.dirname(d)
        if parent == d:
            return directory
        d = parent


class Stage:
    """A named unit of work whose completion is a marker file, trusted only while its artifacts are
    as they were written (see the module docstring)."""

    def __init__(self, directory: str, name: str, run_dir: str | None = None, printer: Callable = print):
        self.dir = directory
        self.name = name
        self.run_dir = run_dir if run_dir is not None else _find_run_dir(directory)
        self.path = os.path.join(directory, ".done", f"{name}.json")
        self.print = printer
        self._marker: dict | None = None

    # -- reading ------------------------------------------------------------------------------
    def _read(self) -> tuple[dict | None, str | None]:
        """(marker, why it cannot be trusted)."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                m = json.load(fh)
        except FileNotFoundError:
            return None, None
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            return None, f"not readable JSON ({type(e).__name__}: {str(e)[:80]})"
        if not isinstance(m, dict) or not isinstance(m.get("result"), dict):
            return None, "not a marker (no 'result' object)"
        arts = m.get("artifacts", {})
        if not isinstance(arts, dict):
            return None, "its 'artifacts' is not an object"
        for rel, info in arts.items():
            path = os.path.join(self.run_dir, rel)
            try:
                size, digest = int(info["size"]), info.get("sha256")
            except (TypeError, KeyError, ValueError):
                return None, f"its entry for {rel} is malformed"
            if not os.path.isfile(path):
                return None, f"{rel} is missing"
            if os.path.getsize(path) != size:
                return None, f"{rel} is {os.path.getsize(path)} bytes, {size} were written"
            if digest is not None and file_sha256(path) != digest:
                return None, f"{rel} differs from what the stage wrote (sha256)"
        return m, None

    def done(self) -> bool:
        m, why = self._read()
        if why is not None:
            self.print(f"[itool] {os.path.relpath(self.path, self.run_dir)}: {why}: the stage is redone")
            try:
                os.remove(self.path)
            except OSError:
                pass
        self._marker = m
        return m is not None

    def result(self) -> dict:
        m = self._marker if self._marker is not None else self._read()[0]
        if m is None:
            from jaxtool.errors import DataError

            raise DataError(f"{self.path}: stage {self.name!r} has no valid marker (run the stage first)")
        olds = [r for r in (m.get("run_dir_abs"), m.get("run_dir")) if isinstance(r, str) and r]
        return _rebase(m["result"], olds, self.run_dir) if olds else m["result"]

    def wall(self) -> float:
        m = self._marker if self._marker is not None else self._read()[0]
        try:
            return float((m or {}).get("wall_s", 0.0))
        except (TypeError, ValueError):
            return 0.0

    # -- writing ------------------------------------------------------------------------------
    def artifacts(self, result: dict) -> dict:
        """{path relative to the run dir: {size, sha256 (None above HASH_LIMIT)}} of the stage's files."""
        paths = [os.path.join(self.dir, f) for f in STAGE_FILES.get(self.name, ())]
        paths += [s for s in _strings(result) if _inside(s, self.run_dir) is not None and os.path.exists(s)]
        files: list[str] = []
        for p in paths:
            if os.path.isdir(p):
                for root, dirs, names in os.walk(p):
                    dirs.sort()
                    files += [os.path.join(root, n) for n in sorted(names)]
            elif os.path.isfile(p):
                files.append(p)
        out = {}
        for f in files:
            rel = _inside(f, self.run_dir)
            if rel is None or os.sep + ".done" + os.sep in os.sep + rel:
                continue
            size = os.path.getsize(f)
            out[rel.replace(os.sep, "/")] = {"size": size, "sha256": file_sha256(f) if size <= HASH_LIMIT else None}
        return out

    def finish(self, result: dict, wall_s: float) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_json(self.path, {"stage": self.name, "wall_s": round(wall_s, 3), "finished_at": time.time(),
                               "run_dir": self.run_dir, "run_dir_abs": os.path.abspath(self.run_dir),
                               "artifacts": self.artifacts(result), "result": result})
        self._marker = None
