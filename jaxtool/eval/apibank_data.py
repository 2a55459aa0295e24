"""API-Bank (AlibabaResearch/DAMO-ConvAI `api-bank/`) evaluation and training items.

Every file is a JSON list of Alpaca-style records::

    level-1 / level-2 test: {"file": "<dialogue>.jsonl", "id": <turn>, "instruction", "input", "expected_output"}
    level-3 training:       {"instruction", "input", "output"}

An item whose expected text starts with `API-Request:` asks for the next API call
(`API-Request: [ApiName(key='value', ...)]`); any other item asks for the AI's reply after an API
result (level-3 writes it as `AI: <reply>\\n`, the test files without the prefix).

`load_items` yields `ApiBankItem`s for the evaluator; `load` (the source-registry entry) yields each
item as a Conversation: system = instruction, user = input, assistant = expected text, with
`meta = {"source": "apibank", "row", "file", "id", "kind": "api" | "response"}`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

from jaxtool.data.schema import Conversation, Message
from jaxtool.data.sources.base import BadRow, LoadReport, read_records, require_field, require_mapping

API_PREFIX = "API-Request:"


@dataclasses.dataclass(frozen=True)
class ApiBankItem:
    row: Any
    instruction: str
    input: str
    expected: str
    kind: str  # "api" | "response"
    file: str | None = None
    id: Any = None


def item_kind(expected: str) -> str:
    return "api" if expected.lstrip().startswith(API_PREFIX) else "response"


def load_items(path: str, *, on_bad_row: str = "error", report: LoadReport | None = None,
               limit: int | None = None) -> Iterator[ApiBankItem]:
    report = report or LoadReport(f"apibank:{path}", on_bad_row)
    n = 0
    for idx, rec in read_records(path):
        if limit is not None and n >= limit:
            return
        item = None
        with report.row(idx):
            item = _item(require_mapping(rec), idx)
        if item is not None:
            report.keep()
            n += 1
            yield item


def _item(rec: dict, idx: Any) -> ApiBankItem:
    instruction = require_field(rec, "instruction", str)
    inp = require_field(rec, "input", str)
    if rec.get("expected_output") is not None:
        expected = require_field(rec, "expected_output", str)
    elif rec.get("output") is not None:
        expected = require_field(rec, "output", str)
    else:
        raise BadRow("missing field", "expected 'expected_output' (level-1/2 test files) or 'output' "
                     "(level-3 training files)", field="expected_output")
    if not expected.strip():
        raise BadRow("empty expected output", "the expected answer is empty", field="expected_output")
    return ApiBankItem(row=idx, instruction=instruction, input=inp, expected=expected, kind=item_kind(expected),
                       file=rec.get("file"), id=rec.get("id"))


def load(path: str, *, on_bad_row: str = "error", report: LoadReport | None = None,
         limit: int | None = None) -> Iterator[Conversation]:
    for it in load_items(path, on_bad_row=on_bad_row, report=report, limit=limit):
        yield Conversation(
            messages=(Message("system", it.instruction), Message("user", it.input), Message("assistant", it.expected)),
            meta={"source": "apibank", "row": it.row, "file": it.file, "id": it.id, "kind": it.kind})
