"""Source registry: turn a dataset name plus a path (or Hugging Face dataset name) into Conversations.

    from jaxtool.data.sources import load
    for conv in load("glaive:data/glaive-function-calling-v2.json"):   # CLI-style spec "name:path"
        ...
    for conv in load("xlam", "Salesforce/xlam-function-calling-60k", on_bad_row="skip", limit=100):
        ...
    for conv in load("hammer", "xlam:data/xlam.json", seed=0):          # Hammer masking over another source
        ...

Every source module defines `load(path_or_name, *, on_bad_row="error", report=None, limit=None, **opts)`.
Modules are imported only when used, so listing a source costs nothing. The training sources live in
this package (glaive, xlam, toolace, sgd, snips, conversations, hammer) and are registered below. Other
layers add their own with `register(name, "module:function")`: the benchmark readers (bfcl,
functionchat, apibank, multiwoz) live beside their evaluators and are registered by `import
jaxtool.eval`, which every `jaxtool` command does, so `name:path` specs resolve them on the command
line. `jaxtool.data` itself imports nothing from the layers above it.

Bad rows: `on_bad_row="error"` raises a `DataError` naming source, row and field; `"skip"` drops the row
and counts it by reason in the `LoadReport` (pass your own `report=` to read the counts; when the
registry made the report itself, a summary is logged as a warning once the iterator is exhausted).
"""

from __future__ import annotations

import logging
from typing import Iterator

from jaxtool.data.schema import Conversation
from jaxtool.data.sources.base import LoadReport
from jaxtool.errors import DataError
from jaxtool.registry import Registry

log = logging.getLogger(__name__)

SOURCES: dict[str, str] = {
    # training
    "glaive": "jaxtool.data.sources.glaive:load",
    "xlam": "jaxtool.data.sources.xlam:load",
    "toolace": "jaxtool.data.sources.toolace:load",
    "sgd": "jaxtool.data.sources.sgd:load",
    "snips": "jaxtool.data.sources.snips:load",
    "conversations": "jaxtool.data.sources.conversations:load",
    "hammer": "jaxtool.data.sources.hammer:load",
}

__all__ = ["SOURCES", "load", "parse_spec", "register", "resolve", "LoadReport"]


def _table() -> Registry:
    """The registry over `SOURCES` (read at call time, so a test may swap the dict)."""
    return Registry("data source", DataError, SOURCES, message=_unknown_text)


def register(name: str, target: str) -> None:
    """Make `name:path` specs load with `target`, a `"package.module:function"` string (imported on
    first use). Registering the same target again is a no-op; another target for a taken name is an
    error."""
    if not isinstance(target, str):
        raise ValueError(f"register({name!r}, {target!r}): expected a name without ':' and a "
                         "'package.module:function' target")
    _table().register(name, target)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`"glaive:/data/g.jsonl"` -> `("glaive", "/data/g.jsonl")`; `"glaive"` -> `("glaive", None)`.

    Only the first `:` separates name and path, so `"hammer:xlam:/data/x.json"` -> `("hammer", "xlam:/data/x.json")`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"a source spec must be a non-empty string like 'glaive:path/to/file.json', got {spec!r}")
    name, sep, path = spec.strip().partition(":")
    return name.strip(), (path.strip() or None) if sep else None


def _unknown_text(name, ranked: list[str]) -> str:
    return (f"unknown data source {name!r} (benchmark sources are registered by `import jaxtool.eval`); "
            f"known sources: {', '.join(ranked)}")


def resolve(name: str):
    """The loader function registered under `name` (imported on first use)."""
    return _table().get(name)


def load(spec_or_name: str, path: str | None = None, *, on_bad_row: str = "error",
         report: LoadReport | None = None, limit: int | None = None, **opts) -> Iterator[Conversation]:
    """Iterate the Conversations of one source.

    spec_or_name: `"name:path"` (path may be a local .json/.jsonl/.parquet file or directory, or a Hugging
        Face dataset name), or just `"name"` with `path` given separately (or omitted: the source's
        default hub dataset, where it has one).
    on_bad_row: "error" (raise naming source, row and field) or "skip" (count in `report`).
    limit: stop after this many conversations.
    opts: source-specific options (see each module's `load`).
    """
    if path is None:
        name, path = parse_spec(spec_or_name)
    else:
        name = spec_or_name.strip()
    loader = resolve(name)
    own_report = report is None
    if own_report:
        label = name
        if name == "hammer" and path:
            label = f"hammer/{parse_spec(path)[0]}"
        report = LoadReport(source=label, on_bad_row=on_bad_row)
    return _with_summary(loader(path, on_bad_row=report.on_bad_row, report=report, limit=limit, **opts),
                         report, own_report)


def _with_summary(items: Iterator[Conversation], report: LoadReport, log_it: bool) -> Iterator[Conversation]:
    yield from items
    if log_it and report.bad_rows:
        log.warning("%s", report)
