"""Split guard: keeps benchmark test queries (BFCL, FunctionChat-Bench, API-Bank, ...) out of
training data built by the applications (the DiaTool-DPO builder's seeds, iTool's training examples).
It lives in the evaluation layer, beside the benchmark readers it uses, so that no application
imports another for it (tests/test_layering.py).

A seed is dropped when its first user turn equals any user turn of a benchmark item after
`normalize_query` (Unicode NFKC, case-folded, punctuation and symbols removed, whitespace collapsed).
Benchmarks come in as any iterable of `Conversation`s (e.g. ``sources.load("functionchat", path)``)
or of plain query strings; `bfcl_queries` reads the user turns of the BFCL data files shipped in the
installed ``bfcl_eval`` package without importing it.
"""

from __future__ import annotations

import glob
import json
import os
import re
import unicodedata
from typing import Any, Iterable, Iterator

from jaxtool.data.schema import Conversation
from jaxtool.errors import DataError

_SPACE = re.compile(r"\s+")


def normalize_query(text: str) -> str:
    """Case, whitespace and punctuation-insensitive form of a query (works for any script)."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    kept = [" " if unicodedata.category(ch)[0] in "PSZ" or ch.isspace() else ch for ch in text]
    return _SPACE.sub(" ", "".join(kept)).strip()


class SplitGuard:
    """A set of normalised benchmark queries, each remembered with the benchmark it came from."""

    def __init__(self):
        self._queries: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def add_queries(self, texts: Iterable[str], source: str) -> int:
        n = 0
        for t in texts:
            if isinstance(t, str):
                key = normalize_query(t)
                if key:
                    self._queries.setdefault(key, source)
                    n += 1
        self.counts[source] = self.counts.get(source, 0) + n
        return n

    def add_conversations(self, convs: Iterable[Conversation], source: str) -> int:
        """Every user turn of every benchmark conversation becomes a blocked query."""
        return self.add_queries((m.content for c in convs for m in c.messages
                                 if m.role == "user" and isinstance(m.content, str)), source)

    def match(self, text: str) -> str | None:
        """The benchmark whose query `text` equals after normalisation, or None."""
        return self._queries.get(normalize_query(text))

    def __len__(self) -> int:
        return len(self._queries)

    def to_dict(self) -> dict:
        return {"queries": len(self), "by_benchmark": dict(self.counts)}


def bfcl_data_dir() -> str | None:
    """``.../site-packages/bfcl_eval/data`` of the installed bfcl-eval package
    (`jaxtool.eval.bfcl.data.data_dir`), or None when it is not installed."""
    from jaxtool.eval.bfcl.data import data_dir

    try:
        return data_dir()
    except DataError:
        return None


def bfcl_queries(data_dir: str) -> Iterator[str]:
    """User turns of every ``BFCL_v*_*.json`` file in `data_dir` (JSON-lines files whose items hold
    ``question``: a list of turns, each a list of ``{"role", "content"}`` messages)."""
    files = sorted(glob.glob(os.path.join(data_dir, "BFCL_v*_*.json")))
    if not files:
        raise DataError(f"{data_dir}: no BFCL_v*_*.json files found")
    for path in files:
        for item in _json_items(path):
            if isinstance(item, dict) and "question" in item:
                yield from _user_contents(item["question"])


def _json_items(path: str) -> Iterator[Any]:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        data = json.loads(text)
        yield from (data if isinstance(data, list) else [data])
        return
    except json.JSONDecodeError:
        pass
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {lineno}: not JSON ({e.msg})") from None


def _user_contents(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if node.get("role") == "user" and isinstance(node.get("content"), str):
            yield node["content"]
    elif isinstance(node, list):
        for x in node:
            yield from _user_contents(x)
