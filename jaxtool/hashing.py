"""Content hashes of files, for the places that must notice a changed input or a damaged output
(iTool stage markers, `eval suite --reuse` fingerprints)."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str, chunk: int = 8 << 20) -> str:
    """SHA-256 hex digest of a file's bytes, read in `chunk`-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def tree_stat(path: str) -> dict[str, list[int]]:
    """``{relative path: [size, mtime_ns]}`` of a file (key ".") or of every file under a folder: a cheap
    identity for inputs too large to hash (a model folder, an SGD split), changed by any rewrite."""
    if os.path.isfile(path):
        st = os.stat(path)
        return {".": [st.st_size, st.st_mtime_ns]}
    out = {}
    for root, _, names in os.walk(path):
        for n in names:
            st = os.stat(os.path.join(root, n))
            out[os.path.relpath(os.path.join(root, n), path)] = [st.st_size, st.st_mtime_ns]
    return dict(sorted(out.items()))
