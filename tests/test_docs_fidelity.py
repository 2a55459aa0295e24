"""docs/fidelity.md is what a reviewer reads first (issue 23): its code references must point at the
code. Every ``path:LINE`` (and ``, :LINE`` after it, the same file) names an existing file and a line inside it; every ``path:LINE (`symbol`)``
or ``path:LINE `symbol` `` finds that symbol on the named line or the one after it (a decorator or a signature split over lines)."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "fidelity.md")
REF = re.compile(r"((?:jaxtool|tests|configs|launch)/[\w/.-]+\.(?:py|yaml|sh))?:(\d+)(?: \(?`([\w.]+))?")


def _refs():
    with open(DOC, encoding="utf-8") as fh:
        for lineno, row in enumerate(fh, 1):
            path = None
            for m in REF.finditer(row):
                if m.group(1):
                    path = m.group(1)
                elif not (path and row[m.start() - 1] in " ,("):   # ", :262" continues the last path
                    continue
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
