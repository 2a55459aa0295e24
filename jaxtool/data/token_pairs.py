"""Pre-tokenized preference pairs: JSONL rows `{"prompt_ids": [...], "chosen_ids": [...],
"rejected_ids": [...]}`. The prompt is context (attended to, never trained); each side's ids are the
trained response. iTool's step-level pairs use this layout (Zeng et al. 2025, §3.2: the question is
the query plus the path to the node, an unfinished assistant turn; chosen and rejected are the single
steps, so a step that does not end the response carries no end-of-turn). The ids are the sampled
ones, never re-tokenized text.
"""

from __future__ import annotations

import json
import os

import numpy as np

from jaxtool.data.sources.base import BadRow, LoadReport, read_jsonl, require_mapping
from jaxtool.data.tokenize import TokenizedConversation, TruncationReport
from jaxtool.errors import DataError

FIELDS = ("prompt_ids", "chosen_ids", "rejected_ids")


def is_token_pair_file(path: str) -> bool:
    """Whether the first row of a JSONL file is a pre-tokenized pair (has `prompt_ids`)."""
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8", errors="replace") as fh:  # a later row that is not UTF-8 is the reader's to count
        for line in fh:
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    return False
                return isinstance(row, dict) and "prompt_ids" in row
    return False


def _ids(row: dict, key: str, vocab_size: int) -> list[int]:
    v = row.get(key)
    if not isinstance(v, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in v):
        raise BadRow("wrong field type", f"expected a list of token ids, got {type(v).__name__}", field=key)
    bad = [t for t in v if not 0 <= t < vocab_size]
    if bad:
        raise BadRow("token id out of range", f"{bad[0]} not in [0, {vocab_size})", field=key)
    return v


def _side(prompt: list[int], resp: list[int], meta: dict) -> TokenizedConversation:
    n_p, n_r = len(prompt), len(resp)
    return TokenizedConversation(
        input_ids=np.asarray(prompt + resp, np.int32),
        loss_mask=np.concatenate([np.zeros(n_p, np.int32), np.ones(n_r, np.int32)]),
        turn_ids=np.concatenate([np.full(n_p, -1, np.int32), np.zeros(n_r, np.int32)]),
        n_turns=1, meta=dict(meta))


def read_token_pairs(path: str, vocab_size: int, max_length: int | None, report: TruncationReport,
                     load_report: LoadReport, limit: int = 0) -> list[tuple[TokenizedConversation, TokenizedConversation]]:
    """(chosen, rejected) tokenized sides of every row; a bad row is an error naming file, row and field
    or skipped and counted (`load_report.on_bad_row`); a pair longer than `max_length` is dropped and
    counted in `report` ("too long")."""
    out = []
    for i, rec in read_jsonl(path):
        pair = None
        with load_report.row(i):
            row = require_mapping(rec)
            missing = [k for k in FIELDS if k not in row]
            if missing:
                raise BadRow("missing field", f"expected fields {', '.join(FIELDS)}", field=missing[0])
            prompt, chosen, rejected = (_ids(row, k, vocab_size) for k in FIELDS)
            for k, v in (("chosen_ids", chosen), ("rejected_ids", rejected)):
                if not v:
                    raise BadRow("empty response", "a side has no tokens to train", field=k)
            meta = {k: row[k] for k in ("kind", "query_id", "depth") if k in row} | {"row": i}
            pair = (_side(prompt, chosen, meta), _side(prompt, rejected, meta))
        if pair is None:
            continue
        load_report.keep()
        report.seen += 1
        longest = max(len(pair[0]), len(pair[1]))
        if max_length is not None and longest > max_length:
            report.drop("pair: too long", f"{longest} tokens > max_length {max_length}")
            continue
        report.kept += 1
        out.append(pair)
        if limit and len(out) >= limit:
            break
    if not out:
        why = f" ({load_report.bad_rows} bad rows skipped: {dict(load_report.skipped)})" if load_report.bad_rows else ""
        raise DataError(f"{path}: no usable token-id preference rows{why}")
    return out
