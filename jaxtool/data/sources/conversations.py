"""jaxtool's own conversation rows (`Conversation.to_dict`, OpenAI/functionary layout) -> Conversations.

Accepted rows (JSON/JSONL/Parquet, or a hub dataset with these columns):

- `{"tools": [...], "messages": [...], "meta": {...}}` — what `Conversation.to_dict` writes (tools may be
  bare function specs; call arguments may be JSON text or objects; see `jaxtool.data.schema`);
- a row whose field holds such an object as JSON *text*, as in DiaTool-DPO's released training layout
  `{"chosen": "<json of {tools, messages}>", "rejected": "<json>"}`. Pass `field="chosen"` (or any
  field name) to pick one; when a row has no `messages` and exactly one field holds a JSON-encoded
  conversation, that field is used; several candidates without `field=` is an error asking for it;
- a JSONL line that is itself a JSON string of such an object.

Provenance: `meta = {"source": "conversations", "row", "id", "field"?, "origin": <the row's own meta>}`;
`id` is the row's `id`, else its meta's `id`.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Mapping

from jaxtool.data.schema import Conversation, SchemaError
from jaxtool.data.sources import _common
from jaxtool.data.sources.base import BadRow, LoadReport, read_records, require_mapping
from jaxtool.errors import ConfigError, json_error_text

SOURCE = "conversations"


def load(path_or_name: str | None = None, *, on_bad_row: str = "error", report: LoadReport | None = None,
         limit: int | None = None, field: str | None = None, split: str | None = None) -> Iterator[Conversation]:
    """Conversations from rows in jaxtool's schema (or DiaTool-DPO's JSON-string fields, see `field`)."""
    if not path_or_name:
        raise ConfigError("the conversations source needs a path: 'conversations:path/to/rows.jsonl'")
    rows = read_records(path_or_name, split=split)
    return _common.iterate(SOURCE, rows, lambda i, r: convert(i, r, field=field),
                           on_bad_row=on_bad_row, report=report, limit=limit)


def convert(index: Any, record: Any, *, field: str | None = None) -> Conversation:
    if isinstance(record, str):
        record = _decode(record, "row")
    rec = require_mapping(record)
    used_field = None
    body: Any = rec
    if field is not None:
        if field not in rec:
            raise BadRow("missing field", "expected a conversation (object or JSON text)", field=field)
        body, used_field = rec[field], field
    elif "messages" not in rec:
        candidates = [k for k, v in rec.items() if isinstance(v, str) and _looks_like_conversation(v)]
        if len(candidates) == 1:
            used_field = candidates[0]
            body = rec[used_field]
        elif len(candidates) > 1:
            raise ConfigError(f"{SOURCE}: rows hold several JSON-encoded conversations in fields {candidates}; "
                              "choose one with field=..., e.g. load('conversations', path, field='chosen')")
        else:
            raise BadRow("missing field", "expected a list of messages (or a field holding a JSON-encoded "
                         "conversation)", field="messages")
    if isinstance(body, str):
        body = _decode(body, used_field or "row")
    if not isinstance(body, Mapping):
        raise BadRow("wrong field type", f"expected a conversation object, got {type(body).__name__}",
                     field=used_field or "row")
    try:
        conv = Conversation.from_dict(body, where=used_field or "row", validate=False)
    except SchemaError as e:
        raise BadRow("invalid conversation", str(e), field=used_field) from None
    origin = dict(conv.meta)
    row_id = _common.dataset_id(rec) if _common.dataset_id(rec) is not None else _common.dataset_id(origin)
    meta = _common.base_meta(SOURCE, index, row_id, field=used_field, origin=origin or None)
    return _common.finish(conv.replace(meta=meta))


def _decode(text: str, field: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRow("invalid json", f"{json_error_text(e)}", field=field) from None


def _looks_like_conversation(text: str) -> bool:
    s = text.lstrip()
    if not s.startswith("{") or '"messages"' not in s:
        return False
    try:
        obj = json.loads(s)
    except json.JSONDecodeError:
        return True  # a broken conversation is still a candidate; decoding it later reports the error
    return isinstance(obj, Mapping) and "messages" in obj
