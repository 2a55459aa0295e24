"""Mixing CALM-IT's tasks: how many rows of each task, which ones, and in what order.

`plan_counts` decides the rows per task:

- by default (`weights="all"`, §4.1: CALM-IT is every row of every task, trained in one pass) the
  mix takes every available row (after caps);
- `weights="table1"` uses the paper's Table 1 sizes (`jaxtool.calm.TABLE1_ROWS`) as relative
  shares — an option for inputs of other sizes than the paper's; other weights likewise;
  tasks with no rows available drop out and the rest are renormalised;
- caps bound a task's available rows first (`caps={"cra": 5000}`);
- without `total`, the mix is the largest one that keeps the shares exactly without repeating a row:
  total = min over tasks of available / share ("Table 1's proportions, scaled to what the inputs
  hold" — the scarcest task, relative to its share, sets the size);
- with `total`, each task gets round(total * share) rows (largest-remainder rounding, so the counts
  add up to `total`), capped at what it has; a task that runs short is reported, never padded by
  repeating rows;
- (`weights="all"` ignores `total`: every row is taken.)

`select` picks each task's rows with a seeded shuffle, and `interleave` shuffles the union with a
seeded generator, so the tasks are interleaved through the whole file (any stretch of it holds the
tasks in about their shares). Same inputs + same seed -> the same file.
"""

from __future__ import annotations

import math
import random
from typing import Mapping, Sequence, TypeVar

from jaxtool.calm import TABLE1_ROWS, TASKS
from jaxtool.errors import ConfigError

T = TypeVar("T")


def parse_task_numbers(spec: str | None, what: str, *, integer: bool = False) -> dict[str, float]:
    """`"dst=1,hammer=2.5"` -> {"dst": 1.0, "hammer": 2.5} (task names checked, values >= 0)."""
    out: dict[str, float] = {}
    if not spec:
        return out
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in TASKS:
            raise ConfigError(f"{what}: expected task=number pairs with tasks from {list(TASKS)}, got {part!r}")
        try:
            v = int(value) if integer else float(value)
        except ValueError:
            raise ConfigError(f"{what}: {name} needs a {'whole ' if integer else ''}number, got {value!r}") from None
        if v < 0 or (not integer and not math.isfinite(v)):
            raise ConfigError(f"{what}: {name} must be >= 0, got {value!r}")
        out[name] = v
    return out


def parse_weights(spec: str | None) -> dict[str, float] | str:
    """None/"" -> "all" (§4.1, the default); "table1" -> Table 1's shares; else task=weight pairs (others 0)."""
    if not spec or spec.strip().lower() == "all":
        return "all"
    if spec.strip().lower() == "table1":
        return {t: float(n) for t, n in TABLE1_ROWS.items()}
    w = parse_task_numbers(spec, "--weights")
    if not any(v > 0 for v in w.values()):
        raise ConfigError("--weights: at least one task needs a weight > 0")
    return w


def _round_to_total(shares: Mapping[str, float], total: int) -> dict[str, int]:
    raw = {t: total * s for t, s in shares.items()}
    counts = {t: int(math.floor(v)) for t, v in raw.items()}
    left = total - sum(counts.values())
    for t in sorted(raw, key=lambda t: (-(raw[t] - counts[t]), t))[:left]:
        counts[t] += 1
    return counts


def plan_counts(available: Mapping[str, int], weights: Mapping[str, float] | str | None = None,
                caps: Mapping[str, float] | None = None, total: int | None = None) -> dict[str, int]:
    """Rows per task (module docstring)."""
    caps = caps or {}
    avail = {t: min(int(available.get(t, 0)), int(caps[t])) if t in caps else int(available.get(t, 0))
             for t in TASKS}
    if weights is None or weights == "all":
        return dict(avail)
    if total is not None and total < 0:
        raise ConfigError(f"--total must be >= 0, got {total}")
    present = {t: float(weights.get(t, 0.0)) for t in TASKS if avail[t] > 0 and weights.get(t, 0.0) > 0}
    counts = {t: 0 for t in TASKS}
    if not present:
        return counts
    s = sum(present.values())
    shares = {t: w / s for t, w in present.items()}
    if total is None:
        total = int(math.floor(min(avail[t] / shares[t] for t in shares) + 1e-9))
    for t, n in _round_to_total(shares, total).items():
        counts[t] = min(n, avail[t])
    return counts


def select(rows: Sequence[T], n: int, seed: int, task: str) -> list[T]:
    """`n` of `rows`, chosen by a shuffle seeded by (seed, task), in their original order."""
    if n >= len(rows):
        return list(rows)
    idx = list(range(len(rows)))
    random.Random(f"calm-select|{seed}|{task}").shuffle(idx)
    return [rows[i] for i in sorted(idx[:n])]


def interleave(by_task: Mapping[str, Sequence[T]], seed: int) -> list[T]:
    """All rows of all tasks in one seeded random order (tasks in `TASKS` order before shuffling)."""
    out = [r for t in TASKS for r in by_task.get(t, ())]
    random.Random(f"calm-interleave|{seed}").shuffle(out)
    return out
