"""The DiaTool-DPO dataset build: seeds -> (split guard) -> train/valid split by seed -> Type 2
augmentation -> Table 1 pairs -> JSONL + summary tables.

Output directory:

- ``train.jsonl`` / ``valid.jsonl`` — one pair per line (`Pair.to_row`), a 95/5 split *by seed*:
  all pairs of one seed land on the same side. A row is ``{"chosen": {"messages", "tools"},
  "rejected": {...}, "type", "chosen_trajectory", "rejected_trajectory", "difficulty", "kind",
  "seed_id"}`` plus ``"removed_tool"`` for Type 3; `read_pairs` loads it back;
- ``valid_flows.jsonl`` — the distinct chosen trajectories of the validation seeds, each a labelled
  conversation (``meta``: seed id, type, difficulty, trajectory): the held-out dialogue-flow test set;
- ``summary.json`` — every count: seeds kept/dropped by reason, augmentation outcomes, pairs per
  kind/difficulty/split, pairs that could not be built and why, Table 1 and Table 2;
- ``tables.md`` — Table 1 (pairs per type and trajectory pair, per difficulty) and Table 2 (average
  assistant turns of chosen vs rejected per difficulty), shaped like the paper's.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from typing import Any, Iterable, Mapping, Sequence

from jaxtool.diatool.pairs import PAIR_KINDS, Pair, build_pairs
from jaxtool.diatool.seeds import Seed
from jaxtool.diatool.slots import DIFFICULTIES, NoAugmentation
from jaxtool.diatool.states import assistant_turns
from jaxtool.diatool.templates import Templates, load_templates
from jaxtool.errors import ConfigError

SUBSETS = ("easy", "hard", "all")


def difficulties_of(subset: str) -> tuple[str, ...]:
    if subset not in SUBSETS:
        raise ConfigError(f"--difficulty must be one of {SUBSETS}, got {subset!r}")
    return DIFFICULTIES if subset == "all" else (subset,)


def split_seeds(seed_ids: Sequence[str], valid_fraction: float = 0.05, salt: str = "0") -> dict[str, str]:
    """``{seed_id: "train" | "valid"}``: the ``round(valid_fraction * n)`` seeds (at least one when
    0 < fraction and n >= 2) with the smallest ``sha256(salt:id)`` go to validation. Depends only on
    the set of ids and the salt, not on their order."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ConfigError(f"valid fraction must be in [0, 1), got {valid_fraction}")
    ids = sorted(set(seed_ids), key=lambda s: hashlib.sha256(f"{salt}:{s}".encode("utf-8")).hexdigest())
    n_valid = round(valid_fraction * len(ids))
    if valid_fraction > 0 and len(ids) >= 2:
        n_valid = max(1, n_valid)
    valid = set(ids[:n_valid])
    return {s: ("valid" if s in valid else "train") for s in seed_ids}


@dataclasses.dataclass
class BuildStats:
    pairs: collections.Counter = dataclasses.field(default_factory=collections.Counter)   # (kind, split)
    turns: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(lambda: [0, 0, 0]))
    unavailable: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(collections.Counter))
    augmentation: dict = dataclasses.field(default_factory=lambda: {d: collections.Counter() for d in DIFFICULTIES})
    seeds_with_pairs: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(set))
    split_seeds: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    flows: int = 0

    def add_pair(self, pair: Pair, split: str) -> None:
        self.pairs[(pair.kind, split)] += 1
        t = self.turns[pair.difficulty]
        t[0] += 1
        t[1] += assistant_turns(pair.chosen)
        t[2] += assistant_turns(pair.rejected)
        self.seeds_with_pairs[pair.difficulty].add(pair.seed_id)

    def kind_count(self, kind: str) -> int:
        return sum(n for (k, _), n in self.pairs.items() if k == kind)


class PairWriter:
    """Streams pairs into ``train.jsonl`` / ``valid.jsonl`` and the validation flows file."""

    def __init__(self, out_dir: str, sides_as_strings: bool = False):
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir = out_dir
        self.sides_as_strings = sides_as_strings
        self._fh = {s: open(os.path.join(out_dir, f"{s}.jsonl"), "w", encoding="utf-8") for s in ("train", "valid")}
        self._flows = open(os.path.join(out_dir, "valid_flows.jsonl"), "w", encoding="utf-8")
        self._seen_flows: set[str] = set()

    def write(self, pair: Pair, split: str) -> bool:
        row = pair.to_row()
        if self.sides_as_strings:
            row["chosen"] = json.dumps(row["chosen"], ensure_ascii=False)
            row["rejected"] = json.dumps(row["rejected"], ensure_ascii=False)
        self._fh[split].write(json.dumps(row, ensure_ascii=False) + "\n")
        if split != "valid":
            return False
        flow = {"messages": [m.to_dict() for m in pair.chosen.messages],
                "tools": [t.to_dict() for t in pair.chosen.tools]}
        key = json.dumps(flow, sort_keys=True, ensure_ascii=False)
        if key in self._seen_flows:
            return False
        self._seen_flows.add(key)
        flow["meta"] = {"seed_id": pair.seed_id, "type": pair.type, "difficulty": pair.difficulty,
                        "trajectory": pair.chosen_trajectory}
        self._flows.write(json.dumps(flow, ensure_ascii=False) + "\n")
        return True

    def close(self) -> None:
        for fh in list(self._fh.values()) + [self._flows]:
            fh.close()


def build(seeds: Sequence[Seed], augmenter, out_dir: str, *, subset: str = "all",
          templates: Templates | str | None = None, valid_fraction: float = 0.05, rng_seed: int = 0,
          rejections: str = "template", progress: bool = False, sides_as_strings: bool = False,
          split: Mapping[str, str] | None = None, type3_easy: bool = False) -> BuildStats:
    """Build and write the dataset for `seeds` (already extracted, de-duplicated and guarded).

    `augmenter.augment(seed, difficulty)` returns a `SlotFilling` or raises `NoAugmentation`;
    `rejections` = "template" (default) or "llm" (use the LLM-written refusal when the augmenter
    produced one, else the template). `sides_as_strings` writes ``chosen`` / ``rejected`` as
    JSON-encoded strings instead of objects (the layout kakao/diatool-dpo's training script reads,
    per the project's data notes). `split` (``{seed_id: "train" | "valid"}`` for every seed) replaces
    the hashed `valid_fraction` split, e.g. to hold out whole services. `type3_easy` also builds the
    ``t3-easy-call`` extra into Easy (the paper's Easy set has no Type 3 pair, §4.3 / Table 1).
    """
    if rejections not in ("template", "llm"):
        raise ConfigError(f"rejections must be 'template' or 'llm', got {rejections!r}")
    diffs = difficulties_of(subset)
    templates = load_templates(templates)
    if split is None:
        split = split_seeds([s.id for s in seeds], valid_fraction, salt=str(rng_seed))
    else:
        bad = sorted({str(v) for v in split.values()} - {"train", "valid"})
        missing = [s.id for s in seeds if s.id not in split]
        if bad or missing:
            raise ConfigError(f"split must map every seed id to 'train' or 'valid' (other values: {bad}; "
                              f"seeds without a split: {missing[:5]}{' ...' if len(missing) > 5 else ''})")
    stats = BuildStats()
    writer = PairWriter(out_dir, sides_as_strings)
    it: Iterable[Seed] = seeds
    if progress:
        from tqdm import tqdm

        it = tqdm(seeds, desc="build-diatool", unit="seed", dynamic_ncols=True)
    try:
        for seed in it:
            side = split[seed.id]
            stats.split_seeds[side] += 1
            fills: dict[str, Any] = {}
            for d in diffs:
                try:
                    fills[d] = augmenter.augment(seed, d)
                    stats.augmentation[d]["ok"] += 1
                except NoAugmentation as e:
                    fills[d] = e
                    stats.augmentation[d][e.reason] += 1
            llm_rejection = None
            if rejections == "llm":
                llm_rejection = next((f.rejection for f in fills.values()
                                      if not isinstance(f, NoAugmentation) and f.rejection), None)
            pairs, unavailable = build_pairs(seed, fills, diffs, templates, rng_seed, llm_rejection,
                                              type3_easy=type3_easy)
            for p in pairs:
                stats.add_pair(p, side)
                stats.flows += writer.write(p, side)
            for kind, reason in unavailable:
                stats.unavailable[kind][reason] += 1
    finally:
        writer.close()
    return stats


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------

def table1(stats: BuildStats) -> tuple[list[str], list[list[Any]]]:
    """Pairs per type and (chosen, rejected) trajectory pair, per difficulty — the paper's Table 1
    with counts. A Table 1 row that exists in both difficulties (e.g. Type 1 vs 1→1) is one row."""
    header = ["Type", "Chosen", "Rejected", "Easy", "Hard", "All"]
    rows: dict[tuple, list[int]] = {}
    for k in PAIR_KINDS:
        key = (k.type, k.chosen, k.rejected)
        row = rows.setdefault(key, [0, 0])
        row[0 if k.difficulty == "easy" else 1] += stats.kind_count(k.id)
    out = [[f"Type {t}", c, r, e, h, e + h] for (t, c, r), (e, h) in rows.items()]
    tot = [sum(r[i] for r in out) for i in (3, 4, 5)]
    out.append(["Total", "", "", *tot])
    return header, out


def table2(stats: BuildStats) -> tuple[list[str], list[list[Any]]]:
    """Pairs, seeds and average assistant turns of chosen vs rejected per difficulty (Table 2)."""
    header = ["Subset", "Pairs", "Seeds", "Avg assistant turns (chosen)", "Avg assistant turns (rejected)"]
    rows = []
    tot = [0, 0, 0]
    seeds_all: set = set()
    for d in DIFFICULTIES:
        n, c, r = stats.turns.get(d, [0, 0, 0])
        tot = [tot[0] + n, tot[1] + c, tot[2] + r]
        seeds_all |= stats.seeds_with_pairs.get(d, set())
        rows.append([d.capitalize(), n, len(stats.seeds_with_pairs.get(d, ())), c / n if n else float("nan"),
                     r / n if n else float("nan")])
    n, c, r = tot
    rows.append(["All", n, len(seeds_all), c / n if n else float("nan"), r / n if n else float("nan")])
    return header, rows


def unavailable_table(stats: BuildStats) -> tuple[list[str], list[list[Any]]]:
    header = ["Pair kind", "Chosen", "Rejected", "Reason", "Seeds"]
    rows = []
    for k in PAIR_KINDS:
        for reason, n in stats.unavailable.get(k.id, collections.Counter()).most_common():
            rows.append([k.id, k.chosen, k.rejected, reason, n])
    return header, rows


def summary_dict(stats: BuildStats, **extra) -> dict:
    by_kind = {}
    for k in PAIR_KINDS:
        tr, va = stats.pairs.get((k.id, "train"), 0), stats.pairs.get((k.id, "valid"), 0)
        if tr or va or k.id in stats.unavailable:
            by_kind[k.id] = {"type": k.type, "difficulty": k.difficulty, "chosen": k.chosen,
                             "rejected": k.rejected, "train": tr, "valid": va}
    h1, r1 = table1(stats)
    h2, r2 = table2(stats)
    return {
        **extra,
        "split_seeds": dict(stats.split_seeds),
        "pairs": {"train": sum(n for (_, s), n in stats.pairs.items() if s == "train"),
                  "valid": sum(n for (_, s), n in stats.pairs.items() if s == "valid"),
                  "by_kind": by_kind},
        "valid_flows": stats.flows,
        "augmentation": {d: dict(c.most_common()) for d, c in stats.augmentation.items() if c},
        "pairs_not_built": {k: dict(c.most_common()) for k, c in stats.unavailable.items()},
        "table1": [dict(zip(h1, r)) for r in r1],
        "table2": [dict(zip(h2, [None if isinstance(v, float) and v != v else v for v in r])) for r in r2],
    }


def render_tables(stats: BuildStats) -> str:
    from jaxtool.eval.report import markdown_table

    parts = ["## Table 1 — preference pairs per query type and trajectory pair",
             "", "States: 1 initial, 2 slot-filling, 3 tool call (complete slots), 4 wait for tool response, "
             "5 complete. N = required fields of the called tool, N > M > 1.", "",
             markdown_table(*table1(stats)), "",
             "## Table 2 — average assistant turns per pair", "", markdown_table(*table2(stats))]
    h, rows = unavailable_table(stats)
    if rows:
        parts += ["", "## Pairs that could not be built (per seed)", "", markdown_table(h, rows)]
    return "\n".join(parts) + "\n"


def write_summary(out_dir: str, stats: BuildStats, **extra) -> tuple[str, str]:
    from jaxtool.eval.report import write_json

    summary = summary_dict(stats, **extra)
    tables = render_tables(stats)
    write_json(os.path.join(out_dir, "summary.json"), summary)
    with open(os.path.join(out_dir, "tables.md"), "w", encoding="utf-8") as fh:
        fh.write(tables)
    return summary, tables


def read_pairs(path: str) -> list[Pair]:
    """Load a written ``train.jsonl`` / ``valid.jsonl`` back into `Pair`s (errors name the line)."""
    from jaxtool.errors import DataError

    pairs = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {i}: not JSON ({e.msg})") from None
            pairs.append(Pair.from_row(row, where=f"{path}, line {i}"))
    return pairs


__all__ = ["build", "split_seeds", "difficulties_of", "table1", "table2", "render_tables", "write_summary",
           "summary_dict", "read_pairs", "BuildStats", "PairWriter", "SUBSETS"]
