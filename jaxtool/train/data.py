"""From `DataConfig` to tokenized examples: SFT conversations or preference pairs.

SFT data is any source of the registry (`name:path`, see `jaxtool.data.sources`). Preference data
is a JSONL file of rows `{"chosen": conversation, "rejected": conversation, ...}` — the DiaTool-DPO
builder's output (`jaxtool data build-diatool`) or anything in that layout; each side may also be
a JSON string (kakao/diatool-dpo's training layout).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from jaxtool.config import DataConfig
from jaxtool.data.schema import Conversation, SchemaError, Tool, conversation_call_problem
from jaxtool.data.sources.base import BadRow, LoadReport, read_jsonl, require_mapping
from jaxtool.errors import DataError, JaxtoolError


@dataclasses.dataclass
class Tokenized:
    examples: list            # TokenizedConversation (SFT) or (chosen, rejected) pairs
    report: Any               # TruncationReport
    load_report: Any = None   # LoadReport of the source: rows read, kept, skipped by reason
    source: str = ""


def read_preference_rows(path: str, limit: int = 0, on_bad_row: str = "error",
                         report: LoadReport | None = None) -> list[tuple[Conversation, Conversation]]:
    """(chosen, rejected) conversations from a JSONL file.

    Rows are numbered as every other source numbers them (`jaxtool.data.sources`: row 0 is the
    file's first line). A bad row is, by `on_bad_row`, an error naming the file, row and field, or
    skipped and counted by reason in `report` (its `on_bad_row` wins when given)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such preference file (JSONL rows with 'chosen' and 'rejected')")
    report = report if report is not None else LoadReport(path, on_bad_row=on_bad_row)
    out = []
    for i, rec in read_jsonl(path):
        pair = None
        with report.row(i):
            try:
                pair = _preference_pair(require_mapping(rec), i)
            except SchemaError as e:
                raise BadRow("invalid conversation", str(e)) from None
            except JaxtoolError:
                raise
            except (KeyError, TypeError, AttributeError, ValueError, IndexError, RecursionError) as e:
                raise BadRow("malformed row", f"{type(e).__name__}: {e}") from None
        if pair is None:
            continue
        report.keep()
        out.append(pair)
        if limit and len(out) >= limit:
            break
    if not out:
        why = f" ({report.bad_rows} bad rows skipped: {dict(report.skipped)})" if report.bad_rows else ""
        raise DataError(f"{path}: no usable preference rows{why}")
    return out


def _preference_pair(row: dict, i: int) -> tuple[Conversation, Conversation]:
    missing = [k for k in ("chosen", "rejected") if k not in row]
    if missing:
        raise BadRow("missing field", "expected an object with fields 'chosen' and 'rejected'", field=missing[0])
    chosen = Conversation.from_dict(row["chosen"], "chosen")
    removed = row.get("removed_tool")  # DiaTool Type 3: the rejected side calls a removed tool
    if removed is not None and not isinstance(removed, str):
        raise BadRow("wrong field type", f"expected a tool name, got {type(removed).__name__}", field="removed_tool")
    rejected = Conversation.from_dict(row["rejected"], "rejected", validate=removed is None)
    if removed is not None:
        rejected.replace(tools=rejected.tools + (Tool(removed),)).validate("rejected")
    for side, conv, schema in (("chosen", chosen, True), ("rejected", rejected, False)):  # the shared rule
        problem = conversation_call_problem(conv, schema=schema)
        if problem is not None:
            raise BadRow(problem[0], problem[1], field=f"{side}.{problem[2]}")
    meta = {k: row[k] for k in ("type", "kind", "difficulty", "chosen_trajectory", "rejected_trajectory")
            if k in row}
    return (chosen.replace(meta={**chosen.meta, **meta, "row": i}),
            rejected.replace(meta={**rejected.meta, **meta, "row": i}))


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
        load_report = LoadReport(path, on_bad_row=dc.on_bad_row)
        from jaxtool.data.token_pairs import is_token_pair_file, read_token_pairs

        if is_token_pair_file(path):  # pre-tokenized pairs (iTool's step-level pairs, §3.2)
            return Tokenized(read_token_pairs(path, len(tokenizer), dc.max_length, report, load_report, dc.limit),
                             report, load_report, source=path)
        pairs = read_preference_rows(path, dc.limit, report=load_report)
        out = []
        for c, r in pairs:
            tp = tokenize_pair(c, r, fmt, tokenizer, dc.max_length, dc.truncation, report)
            if tp is not None and dc.max_prompt_length and max(map(prompt_length, tp)) > dc.max_prompt_length:
                report.kept -= 1
                report.drop("prompt longer than max_prompt_length", f"{max(map(prompt_length, tp))} tokens")
                tp = None
            if tp is not None:
                out.append(tp)
        return Tokenized(out, report, load_report, source=path)
    from jaxtool.data.sources import load

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
