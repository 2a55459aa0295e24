"""Loading seed and benchmark conversations from a ``name:path`` spec.

Uses the project's source registry (``jaxtool.data.sources.load``, benchmark readers included).
The fallback reader (used when `_registry` gives None) reads only jaxtool's own schema:
``conversations:PATH`` or a bare ``.json``/``.jsonl`` path whose rows are `Conversation.to_dict`
objects.
"""

from __future__ import annotations

import os
from typing import Iterator

from jaxtool.data.schema import Conversation
from jaxtool.data.sources.base import LoadReport, read_records, require_mapping
from jaxtool.errors import ConfigError


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"glaive:data/g.jsonl"`` -> ``("glaive", "data/g.jsonl")``; a bare existing path ->
    ``("conversations", path)``; a bare name -> ``(name, None)``."""
    if os.path.exists(spec):
        return "conversations", spec
    if ":" in spec:
        name, path = spec.split(":", 1)
        return name, path or None
    return spec, None


def _registry():
    """The source registry's `load`, with the benchmark readers registered (tests replace this to
    exercise the fallback reader below)."""
    import jaxtool.eval  # noqa: F401 - registers bfcl / functionchat / apibank / multiwoz
    from jaxtool.data.sources import load

    return load


def load_conversations(spec: str, *, on_bad_row: str = "error", limit: int | None = None,
                       report: LoadReport | None = None) -> Iterator[Conversation]:
    name, path = split_spec(spec)
    load = _registry()
    if load is not None:
        yield from load(name, path, on_bad_row=on_bad_row, report=report, limit=limit)
        return
    if name != "conversations":
        raise ConfigError(f"source {name!r} needs the source registry (jaxtool.data.sources.load), which this "
                          "build does not have; convert the data to jaxtool's conversation JSONL and pass "
                          "conversations:PATH")
    if not path:
        raise ConfigError(f"source spec {spec!r} has no path (expected conversations:PATH)")
    report = report or LoadReport(source=path, on_bad_row=on_bad_row)
    n = 0
    for idx, rec in read_records(path):
        if limit is not None and n >= limit:
            break
        conv = None
        with report.row(idx):
            rec = require_mapping(rec)
            conv = Conversation.from_dict(rec, where="conversation")
            meta = dict(conv.meta)
            meta.setdefault("row", idx)
            conv = conv.replace(meta=meta)
        if conv is not None:
            report.keep()
            n += 1
            yield conv
