"""Helpers shared by the training-source loaders (glaive, xlam, toolace, sgd, snips, conversations).

One job: the loop every loader runs — read rows, convert each inside the bad-row policy, stop at
`limit` — plus the small checks every converter needs (a finished conversation validates, calls name
known tools). Dataset-specific parsing stays in the loader modules.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Iterator

from jaxtool.data.schema import Conversation, SchemaError, ToolCall, conversation_call_problem
from jaxtool.data.sources.base import BadRow, LoadReport
from jaxtool.errors import JaxtoolError, json_error_text

# Exceptions a converter can raise on an oddly shaped row that it did not anticipate. They are turned
# into a `BadRow` so the user sees "source, row N: malformed row: ..." instead of a traceback.
_SHAPE_ERRORS = (KeyError, TypeError, AttributeError, ValueError, IndexError, RecursionError)


def iterate(source: str, rows: Iterable[tuple[Any, Any]], convert: Callable[[Any, Any], Conversation | None], *,
            on_bad_row: str = "error", report: LoadReport | None = None,
            limit: int | None = None) -> Iterator[Conversation]:
    """Yield `convert(index, record)` for each row, under the report's bad-row policy.

    `convert` returns a Conversation, or None to drop a row on purpose (not counted as bad). A passed
    `report` decides the policy (its `on_bad_row` wins over the argument). `limit` caps the number of
    conversations yielded, not rows read.
    """
    if report is None:
        report = LoadReport(source=source, on_bad_row=on_bad_row)
    if limit is not None and limit <= 0:
        return
    yielded = 0
    for index, record in rows:
        conv = None
        with report.row(index):
            try:
                conv = convert(index, record)
            except SchemaError as e:  # a DataError whose `reason` is a free-form message: give it a category
                raise BadRow("invalid conversation", str(e)) from None
            except JaxtoolError:  # DataError/BadRow go to the policy; ConfigError etc. stop the load
                raise
            except _SHAPE_ERRORS as e:
                raise BadRow("malformed row", f"{type(e).__name__}: {e}") from None
        if conv is None:
            continue
        report.keep()
        yield conv
        yielded += 1
        if limit is not None and yielded >= limit:
            return


def finish(conv: Conversation) -> Conversation:
    """Validate a converted conversation; a violation becomes a countable `BadRow`."""
    try:
        conv = conv.validate()
    except SchemaError as e:
        raise BadRow("invalid conversation", str(e)) from None
    problem = conversation_call_problem(conv)  # NaN / Infinity arguments, arguments off the tool schema
    if problem is not None:
        raise BadRow(problem[0], problem[1], field=problem[2])
    return conv


def check_calls_known(calls: Iterable[ToolCall], tool_names: Iterable[str], field: str) -> None:
    """Every call must name a listed tool (also when the list is empty: a call with no tools is bad data)."""
    names = set(tool_names)
    for c in calls:
        if c.name not in names:
            raise BadRow("call to unknown tool", f"{c.name!r} is not among the tools {sorted(names)}", field=field)


def json_field(rec: dict, field: str, kinds: type | tuple[type, ...]) -> Any:
    """`rec[field]` decoded when it is a JSON string (xLAM stores lists as JSON text), else as given."""
    if field not in rec or rec[field] is None:
        raise BadRow("missing field", "expected JSON text or a decoded value", field=field)
    value = rec[field]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise BadRow("invalid json", f"{json_error_text(e)}", field=field) from None
    if not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise BadRow("wrong field type", f"expected {names}, got {type(value).__name__}", field=field)
    return value


def numbered_calls(calls: Iterable[ToolCall], start: int) -> tuple[ToolCall, ...]:
    """Give calls the ids `call_<n>` (n counting from `start` across the conversation)."""
    return tuple(ToolCall(c.name, dict(c.arguments), id=f"call_{start + i}") for i, c in enumerate(calls))


def dataset_id(rec: dict, key: str = "id") -> Any:
    value = rec.get(key)
    return value if isinstance(value, (str, int)) else None


def dedupe_tools(tools: Iterable) -> tuple[tuple, int]:
    """Keep the first tool of each name (real xLAM rows list the same name several times; Hammer's
    preprocessing keeps the first too). Returns `(tools, number dropped)`."""
    tools = list(tools)
    seen: set[str] = set()
    kept = []
    for t in tools:
        if t.name not in seen:
            seen.add(t.name)
            kept.append(t)
    return tuple(kept), len(tools) - len(kept)


def base_meta(source: str, row: Any, dataset_row_id: Any = None, **extra) -> dict:
    """The provenance every conversation carries: `{"source", "row", "id", ...}`."""
    meta = {"source": source, "row": row, "id": dataset_row_id}
    meta.update({k: v for k, v in extra.items() if v is not None})
    return meta
