"""CALM-IT mixing: counts per task, determinism by seed, and the weights honoured on 10k rows
(synthetic rows)."""

import pytest

from jaxtool.calm import TABLE1_ROWS, mix
from jaxtool.errors import ConfigError

TABLE1_TOTAL = 13_028 + 13_819 + 202_500 + 82_236  # 311,583


def _rows(available):
    return {t: [(t, i) for i in range(n)] for t, n in available.items()}


def _mix(available, seed, **kw):
    by = _rows(available)
    counts = mix.plan_counts(available, kw.pop("weights", None), kw.pop("caps", None), kw.pop("total", None))
    return mix.interleave({t: mix.select(by[t], counts[t], seed, t) for t in by}, seed), counts


def test_default_is_every_row_of_every_task():
    """CALM §4.1: CALM-IT is every row of every task in one pass; Table 1's proportions are an option."""
    avail = {"dst": 13_028, "hammer": 13_819, "toolace": 2_025, "cra": 82_236}
    assert mix.plan_counts(avail) == avail
    assert mix.parse_weights(None) == "all" and mix.parse_weights("") == "all"
    assert mix.plan_counts(avail, mix.parse_weights(None)) == avail


def test_table1_option_is_scaled_to_the_scarcest_task():
    table1 = mix.parse_weights("table1")
    # worked by hand: toolace's share is 202500/311583 = 0.649907, so 2025 toolace rows allow
    # floor(2025 / 0.649907) = 3115 rows; 3115 * share = dst 130.25, hammer 138.15, toolace 2024.46,
    # cra 822.14 -> floors 130/138/2024/822 (3114), the one left goes to the largest remainder (toolace)
    counts = mix.plan_counts({"dst": 13_028, "hammer": 13_819, "toolace": 2_025, "cra": 82_236}, table1)
    assert counts == {"dst": 130, "hammer": 138, "toolace": 2025, "cra": 822}
    # a task with no input drops out and the others keep their relative shares
    counts = mix.plan_counts({"dst": 1_000, "hammer": 0, "toolace": 0, "cra": 82_236}, table1)
    assert counts["hammer"] == counts["toolace"] == 0
    assert counts["dst"] == 1000 and abs(counts["cra"] / counts["dst"] - 82_236 / 13_028) < 0.01


def test_weights_caps_total_and_all():
    avail = {"dst": 500, "hammer": 500, "toolace": 500, "cra": 500}
    assert mix.plan_counts(avail, mix.parse_weights("dst=1,cra=3"), total=400) == \
        {"dst": 100, "hammer": 0, "toolace": 0, "cra": 300}
    assert mix.plan_counts(avail, mix.parse_weights("all"), mix.parse_task_numbers("cra=7", "--caps", integer=True)) == \
        {"dst": 500, "hammer": 500, "toolace": 500, "cra": 7}
    # a total the inputs cannot fill: a task runs short, nothing is repeated
    assert mix.plan_counts(avail, mix.parse_weights("dst=1,cra=1"), total=1400) == \
        {"dst": 500, "hammer": 0, "toolace": 0, "cra": 500}
    with pytest.raises(ConfigError, match="tasks from"):
        mix.parse_weights("snips=1")
    with pytest.raises(ConfigError, match=">= 0"):
        mix.parse_weights("dst=-1")
    with pytest.raises(ConfigError, match="whole number"):
        mix.parse_task_numbers("cra=1.5", "--caps", integer=True)


def test_deterministic_by_seed():
    avail = {"dst": 300, "hammer": 300, "toolace": 3000, "cra": 1000}
    t1 = mix.parse_weights("table1")
    a, _ = _mix(avail, seed=1, total=2000, weights=t1)
    b, _ = _mix(avail, seed=1, total=2000, weights=t1)
    c, _ = _mix(avail, seed=2, total=2000, weights=t1)
    assert a == b
    assert a != c and sorted(map(str, a)) != sorted(map(str, c))  # other order and other rows chosen
    assert len(set(a)) == len(a)  # no row twice


def test_weights_honoured_within_two_percent_on_10k_rows():
    avail = {"dst": 20_000, "hammer": 20_000, "toolace": 20_000, "cra": 20_000}
    rows, counts = _mix(avail, seed=0, total=10_000, weights=mix.parse_weights("table1"))
    assert len(rows) == 10_000
    target = {t: n / TABLE1_TOTAL for t, n in TABLE1_ROWS.items()}
    for part in (rows, rows[:5000], rows[5000:]):  # the whole file, and each half (interleaved, not blocks)
        for t, share in target.items():
            got = sum(r[0] == t for r in part) / len(part)
            assert abs(got - share) <= 0.02, (t, got, share)
    # custom weights too
    rows, _ = _mix(avail, seed=5, total=10_000, weights=mix.parse_weights("dst=1,hammer=1,toolace=1,cra=1"))
    for t in avail:
        assert abs(sum(r[0] == t for r in rows) / 10_000 - 0.25) <= 0.02
