"""Plumbing shared by every source loader: reading records from a local file or a Hugging Face
dataset, the bad-row policy, and the per-load report.

A loader is a function `load(path_or_name, *, on_bad_row="error", report=None, limit=None, **opts)`
yielding `Conversation`s (or richer items for evaluation sets). Inside, it iterates
`read_records(...)` and converts each row inside `with report.row(index):` — a `DataError` raised
there becomes either an error naming source, row and field (`on_bad_row="error"`) or a counted skip
(`on_bad_row="skip"`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
from typing import Any, Iterator

from jaxtool.errors import DataError, json_error_text

BAD_ROW_POLICIES = ("error", "skip")


class BadRow(DataError):
    """One row a loader cannot convert. `reason` is a short, countable category; `detail` the specifics."""

    def __init__(self, reason: str, detail: str = "", field: str | None = None):
        self.reason = reason
        self.detail = detail
        self.field = field
        msg = reason if not detail else f"{reason}: {detail}"
        super().__init__(f"field {field!r}: {msg}" if field else msg)


# every bad-row error names the switch that skips and counts such rows instead (issue 26)
SKIP_HINT = "--on-bad-row skip (train: data.on_bad_row=skip) skips and counts bad rows"


@dataclasses.dataclass
class LoadReport:
    """What a load read, kept, and skipped (by reason). `str(report)` is a printable summary."""

    source: str
    on_bad_row: str = "error"
    rows: int = 0
    kept: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict = dataclasses.field(default_factory=dict)  # reason -> first (row, detail)

    def __post_init__(self):
        if self.on_bad_row not in BAD_ROW_POLICIES:
            raise DataError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {self.on_bad_row!r}")

    @contextlib.contextmanager
    def row(self, index: Any):
        """Convert one row; count it; turn a `DataError` into the policy's outcome."""
        self.rows += 1
        try:
            yield
        except DataError as e:
            reason = getattr(e, "reason", None) or type(e).__name__
            if self.on_bad_row == "error":
                raise DataError(f"{self.source}, row {index}: {e} [{SKIP_HINT}]") from None
            self.skipped[reason] += 1
            self.examples.setdefault(reason, (index, str(e)))

    def keep(self, n: int = 1) -> None:
        self.kept += n

    @property
    def bad_rows(self) -> int:
        return sum(self.skipped.values())

    def __str__(self) -> str:
        lines = [f"{self.source}: {self.rows} rows read, {self.kept} kept, {self.bad_rows} skipped"]
        for reason, n in self.skipped.most_common():
            row, detail = self.examples[reason]
            lines.append(f"  {n:6d} × {reason}  (first: row {row}: {detail})")
        return "\n".join(lines)


def is_local(path_or_name: str) -> bool:
    return os.path.exists(path_or_name)


def read_records(path_or_name: str, *, split: str | None = None, name: str | None = None,
                 encoding_errors: str = "strict") -> Iterator[tuple[Any, Any]]:
    """Yield `(row_index, record)` from a local file/dir or a Hugging Face dataset name.

    Local: `.json` (a list, or an object of lists/records), `.jsonl`, `.parquet`; a directory is read
    file by file in sorted order (row index = `file:line`). Otherwise `path_or_name` is a hub dataset
    loaded with `datasets.load_dataset(path_or_name, name, split=split or "train")`.
    """
    if os.path.isdir(path_or_name):
        files = sorted(
            os.path.join(path_or_name, f) for f in os.listdir(path_or_name)
            if f.endswith((".json", ".jsonl", ".parquet"))
        )
        if not files:
            raise DataError(f"{path_or_name}: directory holds no .json, .jsonl or .parquet files")
        for f in files:
            for idx, rec in read_records(f, encoding_errors=encoding_errors):
                yield f"{os.path.basename(f)}:{idx}", rec
        return
    if os.path.isfile(path_or_name):
        yield from _read_file(path_or_name, encoding_errors)
        return
    if path_or_name.endswith((".json", ".jsonl", ".parquet")) or (os.sep in path_or_name and not _looks_like_hub(path_or_name)):
        raise DataError(f"{path_or_name}: no such file or directory")
    yield from _read_hub(path_or_name, split=split, config=name)


def _looks_like_hub(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "/"))


def _read_file(path: str, encoding_errors: str) -> Iterator[tuple[Any, Any]]:
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - pyarrow comes with datasets
            raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        try:
            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for bad files
            raise DataError(f"{path}: not a readable Parquet file ({e})") from None
        for i, rec in enumerate(table.to_pylist()):
            yield i, rec
        return
    if path.endswith(".jsonl"):
        yield from read_jsonl(path, encoding_errors)
        return
    data, escaped = _read_json_file(path, encoding_errors)
    if isinstance(data, list):
        records = enumerate(data)
    elif isinstance(data, dict):
        records = data.items()
    else:
        raise DataError(f"{path}: expected a JSON list or object at the top level, got {type(data).__name__}")
    for key, rec in records:
        yield key, (_Undecodable("the record holds bytes that are not UTF-8 text", reason="not utf-8")
                    if escaped and _has_undecodable(rec) else rec)


def _read_json_file(path: str, encoding_errors: str) -> tuple[Any, bool]:
    """(value, escaped) of a whole .json file. Bytes that are not UTF-8 do not fail the file: it is
    decoded again with "surrogateescape" (`escaped` is then True), and only the records holding such
    bytes become bad rows (`_has_undecodable`)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    escaped = False
    try:
        text = raw.decode("utf-8-sig", errors=encoding_errors)
    except UnicodeDecodeError:
        text, escaped = raw.decode("utf-8-sig", errors="surrogateescape"), True
    try:
        return json.loads(text), escaped
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({json_error_text(e)})") from None
    except (ValueError, RecursionError) as e:  # a 5000-digit integer, absurd nesting
        raise DataError(f"{path}: not readable JSON ({type(e).__name__}: {str(e)[:120]})") from None


def _has_undecodable(value: Any) -> bool:
    """Whether a decoded JSON value holds a string with escaped non-UTF-8 bytes (U+DC80..U+DCFF)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if any("\udc80" <= ch <= "\udcff" for ch in v):
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def read_jsonl(path: str, encoding_errors: str = "strict") -> Iterator[tuple[int, Any]]:
    """(0-based line index, record) for each non-empty line of a JSON Lines file, whatever its
    extension. A line that is not JSON, or not UTF-8 text, yields a placeholder that
    `require_mapping` reports as a bad row ("invalid json" / "not utf-8") naming the line, so
    `on_bad_row="skip"` counts it and the other lines still load."""
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh):
            try:
                line = raw.decode("utf-8-sig" if i == 0 else "utf-8", errors=encoding_errors)
            except UnicodeDecodeError as e:
                yield i, _Undecodable(f"line {i + 1} is not UTF-8 text (byte {e.start + 1} of the line: "
                                      f"{raw[e.start:e.start + 1]!r})", reason="not utf-8")
                continue
            if not line.strip():
                continue
            try:
                yield i, json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                yield i, _Undecodable(f"line {i + 1} is not JSON ({json_error_text(e)})")
            except (ValueError, RecursionError) as e:  # a 5000-digit integer, absurd nesting
                yield i, _Undecodable(f"line {i + 1} is not readable JSON ({type(e).__name__})")


def _read_hub(name: str, split: str | None, config: str | None = None) -> Iterator[tuple[Any, Any]]:
    try:
        import datasets
    except ImportError:  # pragma: no cover
        raise DataError(f"{name}: loading a hub dataset needs the `datasets` package") from None
    try:
        ds = datasets.load_dataset(name, config, split=split or "train")
    except Exception as e:  # noqa: BLE001 - network / hub errors come in many types
        raise DataError(f"{name}: could not load as a Hugging Face dataset ({type(e).__name__}: {e}). "
                        "Pass a local .json/.jsonl/.parquet path instead.") from None
    for i, rec in enumerate(ds):
        yield i, rec


class _Undecodable:
    """Placeholder for a row that is not JSON or not UTF-8 text; `require_mapping` turns it into a
    BadRow with `reason`."""

    def __init__(self, detail: str, reason: str = "invalid json"):
        self.detail = detail
        self.reason = reason


def require_mapping(rec: Any) -> dict:
    if isinstance(rec, _Undecodable):
        raise BadRow(rec.reason, rec.detail)
    if not isinstance(rec, dict):
        raise BadRow("not an object", f"expected a JSON object, got {type(rec).__name__}")
    return rec


def require_field(rec: dict, field: str, kind: type | tuple[type, ...] = str) -> Any:
    """`rec[field]`, or a BadRow naming the field and the expected type."""
    if field not in rec or rec[field] is None:
        raise BadRow("missing field", f"expected {_kind_name(kind)}", field=field)
    value = rec[field]
    if not isinstance(value, kind):
        raise BadRow("wrong field type", f"expected {_kind_name(kind)}, got {type(value).__name__}", field=field)
    return value


def _kind_name(kind) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__
