"""What `jaxtool data inspect SOURCE` shows: one rendered example with its trained tokens marked, and a
summary. (The command's flags are in `jaxtool.commands.data_inspect`.)

SOURCE is a registry spec `NAME:PATH` (e.g. `glaive:data/glaive.jsonl`, see `jaxtool.data.sources`)
or a path to jaxtool-schema conversations (`.jsonl` / `.json`, `Conversation.to_dict` layout). The
example is tokenized exactly as training does (`jaxtool.data.tokenize`), decoded run by run, and
the trained runs are wrapped in `[[...]]` (or shown in green on a terminal). The summary gives rows
read, bad rows by reason, examples dropped by tokenization, and token-length percentiles.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Iterator

from jaxtool.errors import CheckpointError, ConfigError, DataError

MARKS = ("auto", "brackets", "ansi")
_GREEN, _RESET = "\x1b[1;32m", "\x1b[0m"


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------

def load_tokenizer(spec: str):
    """'smollm2' (embedded GGUF), a .gguf file, or an HF tokenizer directory / hub name."""
    from jaxtool.models.gguf import _reader, embedded_gguf_path, gguf_tokenizer

    if spec == "smollm2":
        path = embedded_gguf_path()
        return gguf_tokenizer(_reader(path), path)
    if spec.endswith(".gguf"):
        return gguf_tokenizer(_reader(spec), spec)
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(spec)
    except Exception as e:  # noqa: BLE001 - hub/IO errors come in many types
        raise CheckpointError(f"--tokenizer {spec!r}: cannot load a tokenizer ({type(e).__name__}: {e}). "
                              "Pass an HF tokenizer directory, a .gguf file or 'smollm2'.") from None


def parse_source(source: str) -> tuple[str | None, str]:
    """(registry name, path) for `NAME:PATH`; (None, path) for a plain file path."""
    if os.path.exists(source):
        return None, source
    m = re.match(r"^([A-Za-z_][\w-]*):(.+)$", source)
    if m and len(m.group(1)) > 1:  # one letter would be a Windows drive
        return m.group(1), m.group(2)
    return None, source


def read_conversations_file(path: str, report, limit: int | None = None) -> Iterator:
    """jaxtool-schema conversations from a .jsonl/.json file (one `Conversation.to_dict` per row)."""
    from jaxtool.data.schema import Conversation
    from jaxtool.data.sources.base import read_records, require_mapping

    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory")
    for n, (idx, rec) in enumerate(read_records(path)):
        if limit is not None and n >= limit:
            return
        conv = None
        with report.row(idx):
            conv = Conversation.from_dict(require_mapping(rec))
            conv = conv.replace(meta={**dict(conv.meta), "source": path, "row": idx})
            report.keep()
        if conv is not None:
            yield conv


def open_source(source: str, on_bad_row: str = "skip", limit: int | None = None):
    """(LoadReport, iterator of Conversations) for a registry spec or a schema file."""
    from jaxtool.data.sources import load
    from jaxtool.data.sources.base import LoadReport

    name, path = parse_source(source)
    report = LoadReport(source=source, on_bad_row=on_bad_row)
    if name is None:
        return report, read_conversations_file(path, report, limit)
    return report, load(source, on_bad_row=on_bad_row, report=report, limit=limit)


# ----------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------

def marked_text(ex, tokenizer, mark: str = "brackets") -> str:
    """Decode `ex` run by run (runs of equal mask/turn); trained runs wrapped in [[...]] or colour."""
    ids, mask, turns = ex.input_ids.tolist(), ex.loss_mask.tolist(), ex.turn_ids.tolist()
    out, start = [], 0
    for t in range(1, len(ids) + 1):
        if t == len(ids) or (mask[t], turns[t]) != (mask[start], turns[start]):
            text = tokenizer.decode(ids[start:t], skip_special_tokens=False)
            if mask[start]:
                text = f"{_GREEN}{text}{_RESET}" if mark == "ansi" else f"[[{text}]]"
            out.append(text)
            start = t
    return "".join(out)


def percentiles(values, qs=(50, 90, 99)) -> dict:
    import numpy as np

    if not len(values):
        return {}
    arr = np.asarray(values)
    res = {f"p{q}": int(np.percentile(arr, q, method="higher")) for q in qs}
    res["max"] = int(arr.max())
    res["mean"] = float(arr.mean())
    return res


def show(source: str, *, format_name: str = "hermes", tokenizer: str = "smollm2", index: int = 0,
         limit: int | None = None, max_length: int | None = None, truncation: str = "drop", mark: str = "auto",
         on_bad_row: str = "skip") -> int:
    """Print example #`index` of `source` rendered in `format_name` with its trained tokens marked
    (`mark`: "brackets", "ansi", or "auto" = colour on a terminal), then the summary. `tokenizer` is
    a spec for `load_tokenizer`. Returns 0."""
    from jaxtool.data.formats import get_format
    from jaxtool.data.tokenize import TruncationReport, tokenize_conversation

    if index < 0:
        raise ConfigError(f"--index must be >= 0, got {index}")
    tok = load_tokenizer(tokenizer)
    fmt = get_format(format_name, tokenizer=tok)
    load_report, convs = open_source(source, on_bad_row=on_bad_row, limit=limit)
    trunc = TruncationReport(policy=truncation, max_length=max_length, on_bad_example="skip")
    lengths, trained, turns = [], [], []
    shown = None
    for conv in convs:
        ex = tokenize_conversation(conv, fmt, tok, max_length, truncation, trunc)
        if ex is None:
            continue
        if len(lengths) == index:
            shown = (conv, ex)
        lengths.append(len(ex))
        trained.append(ex.n_trained)
        turns.append(ex.n_turns)

    if mark == "auto":
        mark = "ansi" if sys.stdout.isatty() else "brackets"
    w = sys.stdout.write
    if shown is None:
        w(f"no example #{index}: {len(lengths)} examples were kept\n\n")
    else:
        conv, ex = shown
        where = ", ".join(f"{k}={conv.meta[k]}" for k in ("source", "row", "id") if k in conv.meta)
        w(f"=== example #{index}" + (f" ({where})" if where else "") + f" — format {fmt.name}, "
          f"{len(ex)} tokens, {ex.n_trained} trained in {ex.n_turns} assistant turns"
          + (" — trained tokens in [[...]]" if mark == "brackets" else " — trained tokens in green") + "\n")
        w(marked_text(ex, tok, mark) + "\n\n")
    w("=== summary\n")
    w(str(load_report) + "\n")
    w(str(trunc) + "\n")
    if lengths:
        pc = percentiles(lengths)
        w(f"token length: p50 {pc['p50']}, p90 {pc['p90']}, p99 {pc['p99']}, max {pc['max']} "
          f"(mean {pc['mean']:.1f}) over {len(lengths)} examples\n")
        tot_trained, tot = sum(trained), sum(lengths)
        w(f"trained tokens: {tot_trained} of {tot} ({100.0 * tot_trained / max(tot, 1):.1f}%), "
          f"assistant turns: {sum(turns)}\n")
    return 0
