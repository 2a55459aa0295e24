"""Benchmark suites: several evaluators run on one model, one table and one chart.

The ``calm`` suite is the evaluation of CALM (Acikgoz et al. 2025, Section 4): MultiWOZ
dialogue-state tracking zero-shot (`jaxtool.eval.multiwoz`, joint goal accuracy), API-Bank level 1
and level 2 (`jaxtool.eval.apibank`, API-call accuracy and response ROUGE-L) and BFCL's AST
categories (`jaxtool.eval.bfcl`, BFCL's AST checker). Each benchmark is run through its own
evaluator's Python function with the same backend and chat format and writes its own files into a
subdirectory of the output (``multiwoz/``, ``apibank_l1/``, ``apibank_l2/``, ``bfcl/``: per-item
JSONL, summary JSON, markdown table, PNG); the suite adds ``suite.md`` (one table of the headline
numbers), ``suite.png`` (one chart) and ``suite_summary.json``.

Data: BFCL is read from the installed ``bfcl-eval`` package (or `bfcl_dir`); MultiWOZ and API-Bank
files are given by path. A benchmark whose data is not given is listed as "not run" with the flag
that would run it — never silently left out. Earlier suite results (their ``suite_summary.json``)
can be put beside the new one as extra columns, for before/after tables.

`limits` cut each benchmark to its first N items (MultiWOZ: dialogues; API-Bank: items; BFCL:
items per category); the table states them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Mapping, Sequence

from jaxtool.errors import ConfigError, DataError

SUITES = {"calm": ("multiwoz", "apibank_l1", "apibank_l2", "bfcl")}
TITLES = {"multiwoz": "MultiWOZ DST (zero-shot)", "apibank_l1": "API-Bank level 1", "apibank_l2": "API-Bank level 2",
          "bfcl": "BFCL AST"}
DATA_FLAGS = {"multiwoz": "--multiwoz-data", "apibank_l1": "--apibank-l1", "apibank_l2": "--apibank-l2"}


@dataclasses.dataclass
class SuiteData:
    multiwoz: str | None = None            # MultiWOZ 2.1-layout JSON
    multiwoz_ontology: str | None = None   # IC-DST ontology for value repair (optional)
    apibank_l1: str | None = None          # API-Bank level-1 items (Alpaca layout)
    apibank_l2: str | None = None          # API-Bank level-2 items
    bfcl_dir: str | None = None            # None: the installed bfcl-eval data
    bfcl_categories: tuple[str, ...] = ()  # () : BFCL's AST categories

    def check(self) -> None:
        for name in ("multiwoz", "multiwoz_ontology", "apibank_l1", "apibank_l2", "bfcl_dir"):
            p = getattr(self, name)
            if p and not os.path.exists(p):
                raise DataError(f"--{name.replace('_', '-')} {p}: no such file or directory")


@dataclasses.dataclass
class SuiteLimits:
    multiwoz: int | None = None
    apibank: int | None = None
    bfcl: int | None = None

    def check(self) -> None:
        for k, v in dataclasses.asdict(self).items():
            if v is not None and v < 1:
                raise ConfigError(f"--limit-{k} must be >= 1, got {v}")


@dataclasses.dataclass
class SuiteSettings:
    batch_size: int = 8
    max_new_tokens_multiwoz: int = 64
    max_new_tokens_apibank: int = 128
    max_new_tokens_bfcl: int = 256
    max_prompt_tokens_bfcl: int | None = None
    progress: bool = True


def _write_report(out: str, name: str, result, summary_extra: Mapping[str, Any], module, title: str) -> None:
    from jaxtool.eval.report import write_report

    header, rows = module.table_rows(result.summary)
    write_report(out, name, items=result.records, summary={**summary_extra, **result.summary}, header=header,
                 rows=rows, chart=module.chart_values(result.summary), chart_title=title)


def run_multiwoz(backend, fmt, out: str, data: SuiteData, limit: int | None, st: SuiteSettings) -> dict:
    from jaxtool.data.sources.base import LoadReport
    from jaxtool.eval import multiwoz
    from jaxtool.eval.multiwoz_data import load_dialogues

    report = LoadReport(f"multiwoz:{data.multiwoz}", "skip")
    dialogues = list(load_dialogues(data.multiwoz, on_bad_row="skip", report=report, limit=limit))
    if not dialogues:
        raise DataError(f"{data.multiwoz}: no MultiWOZ dialogues")
    ontology = multiwoz.load_ontology(data.multiwoz_ontology) if data.multiwoz_ontology else None
    result = multiwoz.evaluate_multiwoz(dialogues, backend, fmt, domain_source="predicted", ontology=ontology,
                                        batch_size=st.batch_size, max_new_tokens=st.max_new_tokens_multiwoz,
                                        progress=st.progress)
    _write_report(out, "multiwoz", result, {"benchmark": "multiwoz-dst", "data": data.multiwoz,
                                            "bad_rows": report.bad_rows}, multiwoz, TITLES["multiwoz"])
    s = result.summary
    return {"n": s["n_turns"], "unit": "turns", "metrics": {"JGA": s["jga"], "slot F1": s["slot_f1"]},
            "bad_rows": report.bad_rows}


def run_apibank(backend, fmt, out: str, path: str, level: int, limit: int | None, st: SuiteSettings) -> dict:
    from jaxtool.data.sources.base import LoadReport
    from jaxtool.eval import apibank
    from jaxtool.eval.apibank_data import load_items

    report = LoadReport(f"apibank:{path}", "skip")
    every = list(load_items(path, on_bad_row="skip", report=report))
    items = every[:limit] if limit else every
    if not items:
        raise DataError(f"{path}: no API-Bank items")
    library = apibank.ToolLibrary.from_items(every)
    result = apibank.evaluate_apibank(items, backend, fmt, level=level, batch_size=st.batch_size,
                                      max_new_tokens=st.max_new_tokens_apibank, library=library, progress=st.progress)
    name = f"apibank_l{level}"
    _write_report(out, name, result, {"benchmark": "api-bank", "data": path, "bad_rows": report.bad_rows,
                                      "tool_library_size": len(library.names)}, apibank, TITLES[name])
    s = result.summary
    return {"n": len(items), "unit": "items", "bad_rows": report.bad_rows,
            "metrics": {"API-call acc": s["api_accuracy"], "ROUGE-L": s["rouge_l"]},
            "counts": {"api items": s["api"]["n"], "response items": s["response"]["n"]}}


def run_bfcl(backend, fmt, fmt_name: str, out: str, data: SuiteData, limit: int | None, st: SuiteSettings,
             model_label: str) -> dict:
    from jaxtool.data.tokenize import prompt_ids
    from jaxtool.eval import bfcl

    cats = list(data.bfcl_categories or bfcl.AST_CATEGORIES)
    for c in cats:
        if c not in bfcl.AST_CATEGORIES:
            raise ConfigError(f"--bfcl-categories: {c!r} is not a BFCL AST category {list(bfcl.AST_CATEGORIES)}")
    style = bfcl.style_for_format(fmt_name, "auto")
    summary, _ = bfcl.evaluate(backend, fmt, prompt_ids, categories=cats, limit=limit, root=data.bfcl_dir,
                               style=style, out_dir=out, progress=st.progress,
                               settings={"model": model_label, "format": fmt_name}, batch_size=st.batch_size,
                               max_new_tokens=st.max_new_tokens_bfcl, max_prompt_tokens=st.max_prompt_tokens_bfcl)
    metrics = {}
    for agg in ("non_live_ast", "live_ast"):
        if agg in summary["aggregates"]:
            metrics[agg.replace("_", " ")] = summary["aggregates"][agg]["accuracy"]
    if "overall_unweighted" in summary:
        metrics["AST overall"] = summary["overall_unweighted"]
    return {"n": summary.get("items", 0), "unit": "items", "metrics": metrics,
            "categories": {c: v["accuracy"] for c, v in summary["categories"].items()}}


def run_suite(backend, fmt, fmt_name: str, out_dir: str, *, suite: str = "calm", data: SuiteData | None = None,
              limits: SuiteLimits | None = None, settings: SuiteSettings | None = None,
              model_label: str = "", label: str | None = None) -> dict:
    """Run every benchmark of `suite`; write the per-benchmark files and return the suite summary
    (also written as `suite_summary.json`)."""
    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r}; choose one of {list(SUITES)}")
    data = data or SuiteData()
    limits = limits or SuiteLimits()
    st = settings or SuiteSettings()
    data.check()
    limits.check()
    os.makedirs(out_dir, exist_ok=True)
    results: dict[str, dict] = {}
    for bench in SUITES[suite]:
        sub = os.path.join(out_dir, bench)
        t0 = time.time()
        if bench == "multiwoz":
            if not data.multiwoz:
                results[bench] = {"status": "not run", "reason": f"no data: give {DATA_FLAGS[bench]} FILE"}
                continue
            res = run_multiwoz(backend, fmt, sub, data, limits.multiwoz, st)
        elif bench in ("apibank_l1", "apibank_l2"):
            path = getattr(data, bench)
            if not path:
                results[bench] = {"status": "not run", "reason": f"no data: give {DATA_FLAGS[bench]} FILE"}
                continue
            res = run_apibank(backend, fmt, sub, path, int(bench[-1]), limits.apibank, st)
        else:
            res = run_bfcl(backend, fmt, fmt_name, sub, data, limits.bfcl, st, model_label)
        results[bench] = {"status": "ok", "dir": sub, "seconds": round(time.time() - t0, 1), **res}
        print(f"{TITLES[bench]}: " + ", ".join(f"{k} {v:.3f}" for k, v in res["metrics"].items())
              + f" ({res['n']} {res['unit']}, {time.time() - t0:.0f}s)", flush=True)
    summary = {"suite": suite, "label": label or model_label, "model": model_label, "format": fmt_name,
               "limits": dataclasses.asdict(limits), "data": dataclasses.asdict(data), "benchmarks": results}
    with open(os.path.join(out_dir, "suite_summary.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, ensure_ascii=False, indent=2, default=str)
        fh.write("\n")
    return summary


# --------------------------------------------------------------------------------------------
# one table, one chart (several runs side by side)
# --------------------------------------------------------------------------------------------

def read_summary(path: str) -> dict:
    """A `suite_summary.json` (or the directory holding one)."""
    p = os.path.join(path, "suite_summary.json") if os.path.isdir(path) else path
    try:
        with open(p, encoding="utf-8") as fh:
            s = json.load(fh)
    except OSError as e:
        raise DataError(f"{p}: cannot read a suite summary ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(s, dict) or not isinstance(s.get("benchmarks"), dict):
        raise DataError(f"{p}: not a suite summary (no 'benchmarks')")
    return s


def _label(s: Mapping[str, Any], i: int) -> str:
    return str(s.get("label") or s.get("model") or f"run {i + 1}")


def table_rows(summaries: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None
               ) -> tuple[list[str], list[list[Any]]]:
    """One row per (benchmark, metric), one column per run; `n` from the first run that has it."""
    labels = list(labels) if labels else [_label(s, i) for i, s in enumerate(summaries)]
    header = ["benchmark", "metric", "n"] + labels
    rows: list[list[Any]] = []
    benches: list[str] = []
    for s in summaries:
        benches += [b for b in s["benchmarks"] if b not in benches]
    for b in benches:
        metrics: list[str] = []
        for s in summaries:
            r = s["benchmarks"].get(b, {})
            metrics += [m for m in r.get("metrics", {}) if m not in metrics]
        if not metrics:
            rows.append([TITLES.get(b, b), "–", ""] + ["not run"] * len(summaries))
            continue
        for m in metrics:
            ns = [s["benchmarks"].get(b, {}).get("n") for s in summaries]
            n = next((x for x in ns if x is not None), "")
            unit = next((s["benchmarks"][b].get("unit") for s in summaries if b in s["benchmarks"]
                         and s["benchmarks"][b].get("unit")), "")
            vals = [s["benchmarks"].get(b, {}).get("metrics", {}).get(m) for s in summaries]
            rows.append([TITLES.get(b, b), m, f"{n} {unit}".strip()] + [v if v is not None else "not run" for v in vals])
    return header, rows


def limits_line(summaries: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for i, s in enumerate(summaries):
        lim = s.get("limits", {})
        txt = ", ".join(f"{k} {v}" for k, v in lim.items() if v is not None) or "none"
        parts.append(f"{_label(s, i)}: limits {txt}")
    not_run = sorted({f"{TITLES.get(b, b)} ({r.get('reason')})" for s in summaries
                      for b, r in s["benchmarks"].items() if r.get("status") == "not run"})
    return "; ".join(parts) + (("\nnot run: " + "; ".join(not_run)) if not_run else "")


def markdown(summaries: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None) -> str:
    from jaxtool.eval.report import markdown_table

    return markdown_table(*table_rows(summaries, labels)) + "\n\n" + limits_line(summaries)


def chart(path: str, summaries: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None,
          title: str = "CALM suite") -> None:
    """Grouped bars: one group per (benchmark, metric), one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    header, rows = table_rows(summaries, labels)
    runs = header[3:]
    def num(v):
        return isinstance(v, (int, float)) and math.isfinite(v)

    rows = [r for r in rows if any(num(v) for v in r[3:])]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows) * max(1, len(runs)) / 2 + 2), 4.0))
    width = 0.8 / max(1, len(runs))
    for j, run in enumerate(runs):
        xs = [i + (j - (len(runs) - 1) / 2) * width for i in range(len(rows))]
        ys = [r[3 + j] if num(r[3 + j]) else 0.0 for r in rows]
        bars = ax.bar(xs, ys, width, label=run)
        for b, y in zip(bars, ys):
            ax.annotate(f"{y:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                        fontsize=6)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r[0]}\n{r[1]}" for r in rows], rotation=35, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(title)
    if len(runs) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out_dir: str, summaries: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None
                  ) -> dict[str, str]:
    """`suite.md` and `suite.png` for `summaries` (the new run last, earlier ones first)."""
    paths = {"table": os.path.join(out_dir, "suite.md"), "chart": os.path.join(out_dir, "suite.png"),
             "summary": os.path.join(out_dir, "suite_summary.json")}
    with open(paths["table"], "w", encoding="utf-8") as fh:
        fh.write(markdown(summaries, labels) + "\n")
    chart(paths["chart"], summaries, labels)
    return paths
