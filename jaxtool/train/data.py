"""From `DataConfig` to tokenized examples: SFT conversations or preference pairs.

SFT data is any source of the registry (`name:path`, see `jaxtool.data.sources`). Preference data
is a JSONL file of rows `{"chosen": conversation, "rejected": conversation, ...}` — the DiaTool-DPO
builder's output (`jaxtool data build-diatool`) or anything in that layout; each side may also be
a JSON string (kakao/diatool-dpo's training layout).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from jaxtool.config import DataConfig
from jaxtool.data.schema import Conversation, Tool
from jaxtool.errors import DataError


@dataclasses.dataclass
class Tokenized:
    examples: list            # TokenizedConversation (SFT) or (chosen, rejected) pairs
    report: Any               # TruncationReport
    load_report: Any = None   # LoadReport of the source (SFT)
    source: str = ""


def read_preference_rows(path: str, limit: int = 0) -> list[tuple[Conversation, Conversation]]:
    """(chosen, rejected) conversations from a JSONL file; errors name the file and line."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such preference file (JSONL rows with 'chosen' and 'rejected')")
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}, line {i}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not JSON ({e.msg})") from None
            if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
                raise DataError(f"{where}: expected an object with fields 'chosen' and 'rejected'")
            chosen = Conversation.from_dict(row["chosen"], f"{where}.chosen")
            removed = row.get("removed_tool")  # DiaTool Type 3: the rejected side calls a removed tool
            rejected = Conversation.from_dict(row["rejected"], f"{where}.rejected", validate=removed is None)
            if removed is not None:
                rejected.replace(tools=rejected.tools + (Tool(removed),)).validate(f"{where}.rejected")
            meta = {k: row[k] for k in ("type", "kind", "difficulty", "chosen_trajectory", "rejected_trajectory")
                    if k in row}
            out.append((chosen.replace(meta={**chosen.meta, **meta, "row": i}),
                        rejected.replace(meta={**rejected.meta, **meta, "row": i})))
            if limit and len(out) >= limit:
                break
    if not out:
        raise DataError(f"{path}: no preference rows")
    return out


def prompt_length(ex) -> int:
    """Tokens before the first trained (assistant) token."""
    trained = ex.loss_mask.nonzero()[0]
    return int(trained[0]) if len(trained) else len(ex)


def tokenize_data(spec: str, dc: DataConfig, kind: str, fmt, tokenizer) -> Tokenized:
    from jaxtool.data.tokenize import TruncationReport, tokenize_conversation, tokenize_pair

    if not spec:
        raise DataError("data.train is empty: give a source spec like 'conversations:path.jsonl'")
    report = TruncationReport(policy=dc.truncation, max_length=dc.max_length,
                              on_bad_example="skip" if dc.on_bad_row == "skip" else "error")
    if kind == "preference":
        path = spec.split(":", 1)[1] if spec.startswith(("diatool:", "preference:")) else spec
        pairs = read_preference_rows(path, dc.limit)
        out = []
        for c, r in pairs:
            tp = tokenize_pair(c, r, fmt, tokenizer, dc.max_length, dc.truncation, report)
            if tp is not None and dc.max_prompt_length and max(map(prompt_length, tp)) > dc.max_prompt_length:
                report.kept -= 1
                report.drop("prompt longer than max_prompt_length", f"{max(map(prompt_length, tp))} tokens")
                tp = None
            if tp is not None:
                out.append(tp)
        return Tokenized(out, report, source=path)
    from jaxtool.data.sources import load
    from jaxtool.data.sources.base import LoadReport

    name = spec.split(":", 1)[0] if ":" in spec else "conversations"
    load_report = LoadReport(name, on_bad_row=dc.on_bad_row)
    out = []
    for conv in load(spec if ":" in spec else f"conversations:{spec}", on_bad_row=dc.on_bad_row,
                     report=load_report, limit=dc.limit or None):
        ex = tokenize_conversation(conv, fmt, tokenizer, dc.max_length, dc.truncation, report)
        if ex is not None and dc.max_prompt_length and prompt_length(ex) > dc.max_prompt_length:
            report.kept -= 1
            report.drop("prompt longer than max_prompt_length", f"{prompt_length(ex)} tokens")
            ex = None
        if ex is not None:
            out.append(ex)
    return Tokenized(out, report, load_report, source=spec)
