"""tests/slow_tests.txt cannot rot: every node id it lists names a test function that exists in its file
(a renamed or deleted test would otherwise silently rejoin the fast loop)."""

import os
import re

from conftest import SLOW_LIST, _slow_ids

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_listed_slow_test_exists():
    missing = []
    for nodeid in sorted(_slow_ids()):
        path, _, name = nodeid.partition("::")
        func = re.split(r"[\[:]", name, maxsplit=1)[0]
        full = os.path.join(ROOT, path)
        if not os.path.isfile(full) or not re.search(rf"^\s*def {re.escape(func)}\(", open(full).read(), re.M):
            missing.append(nodeid)
    assert not missing, f"{SLOW_LIST}: no such test: {missing}"
