"""Test sets for the dialogue-flow evaluator, named on the command line as `SOURCE:PATH`.

- `functionchat:FILE` — FunctionChat-Bench Singlecall / CallDecision / Dialog files
  (`jaxtool.eval.functionchat_data`); each item evaluates its last (gold) assistant turn.
- `diatool:FILE` — rows written by jaxtool's DiaTool-DPO pair builder:
  `{"chosen": {"messages", "tools"}, "rejected": ..., "type": 1|2|3, "chosen_trajectory": "1-3-4-5",
  "rejected_trajectory": ..., "difficulty": ...}`. The *chosen* trajectory of each row is a gold
  dialogue; every assistant message in it is evaluated, teacher-forced. `chosen` may be an object or
  a JSON-encoded string (the layout DiaTool-DPO's released training script reads). Assistant
  messages carry their MDP state as a `"state"` key (1, 2, 3 or 5).
- any other name is handed to the source registry (`jaxtool.data.sources.load`), e.g.
  `conversations:FILE` for jaxtool's own schema JSONL; every assistant turn is evaluated.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from jaxtool.data.schema import Conversation, SchemaError
from jaxtool.data.sources.base import BadRow, LoadReport, read_records, require_mapping
from jaxtool.errors import DataError, json_error_text

DIATOOL_STATES = (1, 2, 3, 5)


def split_spec(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition(":")
    if not sep or not name or not path:
        raise DataError(f"--data must be SOURCE:PATH (e.g. functionchat:data/FunctionChat-Dialog.jsonl "
                        f"or diatool:out/valid.jsonl), got {spec!r}")
    return name, path


def load_dialogs(spec: str, *, on_bad_row: str = "error", report: LoadReport | None = None,
                 limit: int | None = None, **opts: Any) -> Iterator[Conversation]:
    name, path = split_spec(spec)
    if name == "functionchat":
        from jaxtool.eval import functionchat_data as functionchat

        return functionchat.load(path, on_bad_row=on_bad_row, report=report, limit=limit, **opts)
    if name == "diatool":
        return load_diatool(path, on_bad_row=on_bad_row, report=report, limit=limit)
    try:
        from jaxtool.data.sources import load as registry_load
    except ImportError:
        raise DataError(f"unknown dialogue source {name!r}: use functionchat:FILE or diatool:FILE") from None
    return registry_load(spec, on_bad_row=on_bad_row, report=report, limit=limit)


def load_diatool(path: str, *, on_bad_row: str = "error", report: LoadReport | None = None,
                 limit: int | None = None, side: str = "chosen") -> Iterator[Conversation]:
    """The `side` ("chosen") trajectories of a DiaTool-DPO pair file as Conversations."""
    report = report or LoadReport(f"diatool:{path}", on_bad_row)
    n = 0
    for idx, rec in read_records(path):
        if limit is not None and n >= limit:
            return
        conv = None
        with report.row(idx):
            rec = require_mapping(rec)
            conv = _diatool_row(rec, idx, side)
        if conv is not None:
            report.keep()
            n += 1
            yield conv


def _diatool_row(rec: dict, idx: Any, side: str) -> Conversation:
    raw = rec.get(side)
    if raw is None:
        raise BadRow("missing field", "expected the trajectory object (or its JSON string)", field=side)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise BadRow("invalid json", f"{json_error_text(e)}", field=side) from None
    try:
        conv = Conversation.from_dict(raw, where=side)
    except SchemaError as e:
        raise BadRow("invalid conversation", str(e)) from None
    for i, m in enumerate(conv.messages):
        if m.role == "assistant" and "state" in m.meta:
            s = m.meta["state"]
            if isinstance(s, bool) or not isinstance(s, int) or s not in DIATOOL_STATES:
                raise BadRow("unknown state", f"assistant state must be one of {DIATOOL_STATES}, got {s!r}",
                             field=f"{side}.messages[{i}].state")
    meta = {"source": "diatool", "row": idx, "query_type": rec.get("type"),
            "trajectory": rec.get(f"{side}_trajectory"), "difficulty": rec.get("difficulty")}
    return conv.replace(meta={**dict(conv.meta), **{k: v for k, v in meta.items() if v is not None}})
