"""Content hashes of files, for the places that must notice a changed input or a damaged output
(iTool stage markers, `eval suite --reuse` fingerprints)."""

from __future__ import annotations

import hashlib


def file_sha256(path: str, chunk: int = 8 << 20) -> str:
    """SHA-256 hex digest of a file's bytes, read in `chunk`-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
