"""docs/fidelity.md is what a reviewer reads first (issue 23): its code references must point at the
code. Every ``path:LINE`` (and ``, :LINE`` after it: the same file) names an existing file and a line
inside it; every ``path:LINE (`symbol`)`` or ``path:LINE `symbol` `` finds that symbol on the named
line or the one after it. When code moves: ``python tests/test_docs_fidelity.py --fix``."""
from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "fidelity.md")
REF = re.compile(r"((?:jaxtool|tests|configs|launch)/[\w/.-]+\.(?:py|yaml|sh))?:(\d+)(?: \(?`([\w.]+))?")


def _row_refs(row: str):
    """(match, path) of each reference in one row; ``, :262`` continues the row's last path."""
    path = None
    for m in REF.finditer(row):
        if m.group(1):
            path = m.group(1)
        elif not (path and row[m.start() - 1] in " ,("):
            continue
        yield m, path


def _refs():
    with open(DOC, encoding="utf-8") as fh:
        for lineno, row in enumerate(fh, 1):
            for m, path in _row_refs(row):
                yield lineno, path, int(m.group(2)), m.group(3)


def test_every_code_reference_points_at_its_code():
    refs = list(_refs())
    assert len(refs) > 100          # the table is there and the pattern reads it
    bad = []
    for row, path, n, sym in refs:
        full = os.path.join(ROOT, path)
        if not os.path.isfile(full):
            bad.append(f"docs/fidelity.md:{row}: {path} does not exist")
            continue
        with open(full, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        if not 1 <= n <= len(lines):
            bad.append(f"docs/fidelity.md:{row}: {path}:{n} is past the end ({len(lines)} lines)")
        elif sym and sym.split(".")[-1] not in "\n".join(lines[n - 1:n + 1]):
            bad.append(f"docs/fidelity.md:{row}: {path}:{n} does not show `{sym}`")
    assert not bad, "\n".join(bad)


def _definition(lines: list[str], sym: str) -> int | None:
    """The one line that defines `sym` (def / class / assignment / dataclass field), 1-based, or None."""
    pat = re.compile(rf"^\s*(?:async\s+)?(?:def|class)\s+{sym}\b|^\s*{sym}\s*[:=]")
    hits = [i + 1 for i, ln in enumerate(lines) if pat.search(ln)]
    return hits[0] if len(hits) == 1 else None


def fix() -> int:
    """Rewrite the line numbers of ``path:LINE (`symbol`)`` references whose symbol has moved (its one
    definition is found); print what cannot be fixed. ``python tests/test_docs_fidelity.py --fix``."""
    with open(DOC, encoding="utf-8") as fh:
        rows = fh.read().split("\n")
    left = 0
    for i, row in enumerate(rows):
        out, pos = [], 0
        for m, path in _row_refs(row):
            n, sym = int(m.group(2)), m.group(3)
            if not sym or not os.path.isfile(os.path.join(ROOT, path)):
                continue
            with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
                lines = fh.read().splitlines()
            name = sym.split(".")[-1]
            if name in "\n".join(lines[n - 1:n + 1]):
                continue
            new = _definition(lines, name)
            if new is None:
                print(f"docs/fidelity.md:{i + 1}: {path}:{n} `{sym}`: no single definition found; fix by hand")
                left += 1
                continue
            out.append(row[pos:m.start(2)] + str(new))
            pos = m.end(2)
        rows[i] = "".join(out) + row[pos:]
    with open(DOC, "w", encoding="utf-8") as fh:
        fh.write("\n".join(rows))
    return left


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--fix"]:
        sys.exit("usage: python tests/test_docs_fidelity.py --fix")
    sys.exit(1 if fix() else 0)
