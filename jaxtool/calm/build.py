"""Build CALM-IT: read the sources, convert every task, mix, measure, write.

    result = build(BuildConfig(snips="data/snips", sgd="data/sgd/train", toolace="toolace.json",
                               xlam="xlam.json"), tokenizer=tok)
    print(result.table())
    write(result, "runs/calm_it")          # calm_it.jsonl, summary.md, summary.json

Inputs (each optional; a task without input has 0 rows and drops out of the mix):
SNIPS -> ``dst``; xlam (the function-calling data Hammer masks; + ToolACE only with the
`hammer_toolace=True` option) -> ``hammer``; ToolACE -> ``toolace``; SGD -> ``cra`` (`cra_layout`:
"figures", Figs. 6-7, or "generate", §4.2). The default mix is every row of every task (§4.1);
`weights="table1"` mixes in Table 1's proportions. Every bad row is counted by task, stage (``source``: the loader refused
the row; ``convert``: the converter did; ``tokenize``: the chat format / tokenizer did, or the row is
longer than `max_tokens`) and reason; with ``on_bad_row="error"`` the first one stops the build with
an error naming it.

The JSONL holds one `Conversation.to_dict` row per CALM-IT row (system = Instruction, user = Input,
assistant = Output, ``meta.task`` / ``meta.objective`` / provenance): train it with
``data.train: conversations:<out>/calm_it.jsonl`` and ``data.format: alpaca`` (configs/calm/).
Token counts are those of that format with the given tokenizer (EOS trained).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

from jaxtool.calm import TASKS, cra, dst, fc, mix
from jaxtool.calm.example import CalmExample
from jaxtool.data import sources
from jaxtool.data.sources.base import LoadReport
from jaxtool.data.sources.hammer import DEFAULT_MASK_PROB
from jaxtool.errors import ConfigError, DataError

FORMAT = "alpaca"
JSONL_NAME = "calm_it.jsonl"


@dataclasses.dataclass
class BuildConfig:
    snips: str | None = None
    sgd: str | None = None
    toolace: str | None = None
    xlam: str | None = None
    weights: str | None = None        # "all" (default, §4.1), "table1" (Table 1's shares), or "dst=1,hammer=1,..."
    caps: str | None = None           # "cra=5000,..."
    total: int | None = None          # rows in the mix (default: the largest with exact shares)
    seed: int = 0
    mask_prob: float = DEFAULT_MASK_PROB
    hammer_toolace: bool = False      # option: Hammer masking over ToolACE too (the paper masks xlam-format data)
    cra_layout: str = "figures"       # "figures" (Figs. 6-7: thoughts in the Input) or "generate" (§4.2 prose)
    on_bad_row: str = "skip"
    limit: int | None = None          # read at most this many rows (dialogues) per source
    max_tokens: int | None = None     # rows longer than this (tokens) are bad rows "longer than max_tokens"


@dataclasses.dataclass
class BuildResult:
    rows: list[CalmExample]
    summary: dict

    def table(self) -> str:
        return summary_table(self.summary)


# --------------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------------

def check(cfg: BuildConfig) -> None:
    """A clear error for a bad setting or a missing input (before anything is read)."""
    mix.parse_weights(cfg.weights)
    mix.parse_task_numbers(cfg.caps, "--caps", integer=True)
    if cfg.total is not None and cfg.total < 0:
        raise ConfigError(f"--total must be >= 0, got {cfg.total}")
    cra.check_layout(cfg.cra_layout)
    if cfg.on_bad_row not in ("error", "skip"):
        raise ConfigError(f"on_bad_row must be 'error' or 'skip', got {cfg.on_bad_row!r}")
    if not 0.0 <= cfg.mask_prob <= 1.0:
        raise ConfigError(f"--mask-prob must be in [0, 1], got {cfg.mask_prob}")
    if not any((cfg.snips, cfg.sgd, cfg.toolace, cfg.xlam)):
        raise ConfigError("give at least one input: --snips, --sgd, --toolace or --xlam")
    for name in ("snips", "sgd", "toolace", "xlam"):
        p = getattr(cfg, name)
        if p and not os.path.exists(p):
            raise DataError(f"--{name} {p}: no such file or directory")
    if cfg.max_tokens is not None and cfg.max_tokens < 2:
        raise ConfigError(f"--max-tokens must be at least 2, got {cfg.max_tokens}")


def convert_all(cfg: BuildConfig, thought_writer=None) -> tuple[dict[str, list[CalmExample]], list[tuple]]:
    """`({task: rows}, [(task, stage, LoadReport), ...])` for every input given."""
    check(cfg)
    by_task: dict[str, list[CalmExample]] = {t: [] for t in TASKS}
    reports: list[tuple[str, str, LoadReport]] = []

    def rep(task: str, stage: str, label: str) -> LoadReport:
        r = LoadReport(source=label, on_bad_row=cfg.on_bad_row)
        reports.append((task, stage, r))
        return r

    if cfg.snips:
        convs = list(sources.load("snips", cfg.snips, on_bad_row=cfg.on_bad_row,
                                  report=rep("dst", "source", f"snips:{cfg.snips}"), limit=cfg.limit))
        by_task["dst"] = dst.convert(convs, rep("dst", "convert", "dst"))
    toolace = []
    if cfg.toolace:
        toolace = list(sources.load("toolace", cfg.toolace, on_bad_row=cfg.on_bad_row,
                                    report=rep("toolace", "source", f"toolace:{cfg.toolace}"), limit=cfg.limit))
        by_task["toolace"] = fc.convert_toolace(toolace, rep("toolace", "convert", "toolace"))
    hammer_in = []
    if cfg.xlam:
        hammer_in = list(sources.load("xlam", cfg.xlam, on_bad_row=cfg.on_bad_row,
                                      report=rep("hammer", "source", f"xlam:{cfg.xlam}"), limit=cfg.limit))
    if cfg.hammer_toolace:
        hammer_in += toolace
    if hammer_in:
        by_task["hammer"] = fc.convert_hammer(hammer_in, rep("hammer", "convert", "hammer"), seed=cfg.seed,
                                              mask_prob=cfg.mask_prob)
    if cfg.sgd:
        convs = cra.load_sgd(cfg.sgd, on_bad_row=cfg.on_bad_row, report=rep("cra", "source", f"sgd:{cfg.sgd}"),
                             limit=cfg.limit)
        by_task["cra"] = cra.convert(convs, rep("cra", "convert", "cra"), thought_writer, layout=cfg.cra_layout)
    return by_task, reports


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------

class _Measure:
    """Token length / trained tokens of each row in the `alpaca` format; bad rows counted."""

    def __init__(self, tokenizer, max_tokens: int | None, on_bad_row: str):
        from jaxtool.data.formats import get_format
        from jaxtool.data.tokenize import TruncationReport

        self.tokenizer = tokenizer
        self.fmt = get_format(FORMAT, tokenizer=tokenizer) if tokenizer is not None else None
        self.max_tokens = max_tokens
        self.reports = {t: TruncationReport(max_length=max_tokens, on_bad_example=on_bad_row) for t in TASKS}
        self.lengths: dict[int, tuple[int, int]] = {}

    def __call__(self, ex: CalmExample) -> bool:
        """True when the row is kept (measured, or not measurable without a tokenizer)."""
        if self.fmt is None:
            return True
        key = id(ex)
        if key in self.lengths:
            return True
        from jaxtool.data.tokenize import tokenize_conversation

        rep = self.reports[ex.task]
        tok = tokenize_conversation(ex.to_conversation(), self.fmt, self.tokenizer, None, "drop", rep)
        if tok is None:
            return False
        if self.max_tokens is not None and len(tok) > self.max_tokens:
            rep.kept -= 1
            rep.drop("longer than max_tokens", f"{len(tok)} tokens > {self.max_tokens}")
            if rep.on_bad_example == "error":
                raise DataError(f"{ex.task} row {dict(ex.meta)}: {len(tok)} tokens > --max-tokens {self.max_tokens}")
            return False
        self.lengths[key] = (len(tok), tok.n_trained)
        return True


def build(cfg: BuildConfig, *, tokenizer=None, thought_writer=None) -> BuildResult:
    """Convert, mix and measure (module docstring). `tokenizer=None` skips token statistics (and
    `max_tokens`, which then must not be set)."""
    if cfg.max_tokens is not None and tokenizer is None:
        raise ConfigError("--max-tokens needs a tokenizer")
    weights = mix.parse_weights(cfg.weights)
    caps = mix.parse_task_numbers(cfg.caps, "--caps", integer=True)
    by_task, reports = convert_all(cfg, thought_writer)
    measure = _Measure(tokenizer, cfg.max_tokens, cfg.on_bad_row)
    if cfg.max_tokens is not None:  # length filter first, so the plan sees what is really usable
        by_task = {t: [ex for ex in rows if measure(ex)] for t, rows in by_task.items()}
    available = {t: len(rows) for t, rows in by_task.items()}
    counts = mix.plan_counts(available, weights, caps, cfg.total)
    chosen = {t: mix.select(by_task[t], counts[t], cfg.seed, t) for t in TASKS}
    chosen = {t: [ex for ex in rows if measure(ex)] for t, rows in chosen.items()}
    rows = mix.interleave(chosen, cfg.seed)
    summary = _summary(cfg, weights, caps, available, counts, chosen, reports, measure, thought_writer, tokenizer)
    return BuildResult(rows, summary)


def _pct(values: Sequence[int], q: float) -> int | None:
    return int(np.percentile(np.asarray(values), q, method="nearest")) if values else None


def _summary(cfg, weights, caps, available, counts, chosen, reports, measure: _Measure, writer, tokenizer) -> dict:
    total = sum(len(r) for r in chosen.values())
    wsum = sum(weights.values()) if isinstance(weights, dict) else 0.0
    tasks = {}
    for t in TASKS:
        rows = chosen[t]
        lens = [measure.lengths[id(ex)][0] for ex in rows if id(ex) in measure.lengths]
        trained = [measure.lengths[id(ex)][1] for ex in rows if id(ex) in measure.lengths]
        objectives = collections.Counter(str(ex.meta.get("objective")) for ex in rows)
        tasks[t] = {
            "available": available[t], "planned": counts[t], "selected": len(rows),
            "share": len(rows) / total if total else 0.0,
            "target_share": (weights.get(t, 0.0) / wsum) if wsum else None,
            "tokens": sum(lens) if tokenizer is not None else None,
            "trained_tokens": sum(trained) if tokenizer is not None else None,
            "p50": _pct(lens, 50), "p90": _pct(lens, 90), "p99": _pct(lens, 99), "max": max(lens) if lens else None,
            "objectives": dict(sorted(objectives.items())),
        }
    bad = []
    for task, stage, r in reports:
        for reason, n in r.skipped.most_common():
            row, detail = r.examples[reason]
            bad.append({"task": task, "stage": stage, "reason": reason, "rows": n, "first": f"row {row}: {detail}"})
    for t, r in measure.reports.items():
        for reason, n in r.dropped.most_common():
            bad.append({"task": t, "stage": "tokenize", "reason": reason, "rows": n, "first": r.examples.get(reason, "")})
    read = [{"task": task, "stage": stage, "source": r.source, "rows": r.rows, "kept": r.kept}
            for task, stage, r in reports]
    all_lens = [v[0] for v in measure.lengths.values()]
    return {
        "inputs": {"snips": cfg.snips, "sgd": cfg.sgd, "toolace": cfg.toolace, "xlam": cfg.xlam},
        "seed": cfg.seed, "weights": weights, "caps": caps, "total_requested": cfg.total,
        "mask_prob": cfg.mask_prob, "hammer_toolace": cfg.hammer_toolace, "cra_layout": cfg.cra_layout,
        "max_tokens": cfg.max_tokens,
        "format": FORMAT, "tokenizer": getattr(tokenizer, "name_or_path", None) if tokenizer is not None else None,
        "thoughts": getattr(writer, "name", "template") if writer is not None else "template",
        "thought_stats": dict(getattr(writer, "stats", {}) or {}),
        "tasks": tasks, "rows": total,
        "tokens": sum(t["tokens"] or 0 for t in tasks.values()) if tokenizer is not None else None,
        "trained_tokens": sum(t["trained_tokens"] or 0 for t in tasks.values()) if tokenizer is not None else None,
        "p50": _pct(all_lens, 50), "p90": _pct(all_lens, 90), "p99": _pct(all_lens, 99),
        "max": max(all_lens) if all_lens else None,
        "read": read, "bad_rows": bad,
    }


# --------------------------------------------------------------------------------------------
# reporting and writing
# --------------------------------------------------------------------------------------------

def _md(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    cells = [[cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(list(header)), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells])


def summary_table(s: dict) -> str:
    header = ["task", "available", "rows", "share", "target share", "tokens", "trained tokens",
              "p50 len", "p90 len", "p99 len", "max len", "objectives"]
    rows = []
    for t, v in s["tasks"].items():
        obj = ", ".join(f"{k} {n}" for k, n in v["objectives"].items())
        rows.append([t, v["available"], v["selected"], v["share"], v["target_share"], v["tokens"],
                     v["trained_tokens"], v["p50"], v["p90"], v["p99"], v["max"], obj])
    rows.append(["all", sum(v["available"] for v in s["tasks"].values()), s["rows"], 1.0 if s["rows"] else 0.0, None,
                 s["tokens"], s["trained_tokens"], s["p50"], s["p90"], s["p99"], s["max"], ""])
    out = [_md(header, rows)]
    read = [[r["task"], r["stage"], r["source"], r["rows"], r["kept"]] for r in s["read"]]
    out.append(_md(["task", "stage", "read by", "rows/turns in", "kept"], read))
    if s["bad_rows"]:
        out.append(_md(["task", "stage", "bad rows: reason", "rows", "first"],
                       [[b["task"], b["stage"], b["reason"], b["rows"], b["first"][:100]] for b in s["bad_rows"]]))
    else:
        out.append("bad rows: none")
    if s.get("thought_stats"):
        out.append("thoughts (" + s["thoughts"] + "): " + ", ".join(f"{k} {v}" for k, v in s["thought_stats"].items()))
    return "\n\n".join(out)


def write(result: BuildResult, out_dir: str) -> dict[str, str]:
    """`calm_it.jsonl`, `summary.md`, `summary.json` into out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"jsonl": os.path.join(out_dir, JSONL_NAME), "table": os.path.join(out_dir, "summary.md"),
             "summary": os.path.join(out_dir, "summary.json")}
    tmp = paths["jsonl"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for ex in result.rows:
            fh.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")
    os.replace(tmp, paths["jsonl"])
    with open(paths["table"], "w", encoding="utf-8") as fh:
        fh.write(result.table() + "\n")
    with open(paths["summary"], "w", encoding="utf-8") as fh:
        json.dump(result.summary, fh, ensure_ascii=False, indent=2)
        fh.write("\n")
    return paths
