"""Writing evaluation results: per-item JSONL, summary JSON, a markdown table and a PNG bar chart.

Every evaluator ends with `write_report(out_dir, name, items, summary, table_rows, chart)` so all
benchmarks leave the same four artifacts behind.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence


def write_jsonl(path: str, rows: Iterable[Mapping[str, Any]]) -> int:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False, default=_jsonable) + "\n")
            n += 1
    return n


def write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=2, default=_jsonable)
        fh.write("\n")


def _jsonable(o: Any):
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    return str(o)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}" if abs(v) >= 1000 or v == 0 else f"{v:.3f}"
    return str(v)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table; floats to 3 decimals."""
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(list(header)), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def bar_chart(path: str, values: Mapping[str, float], title: str, ylabel: str = "accuracy",
              ylim: tuple[float, float] | None = (0.0, 1.0)) -> None:
    """A PNG bar chart of `values` (category -> number)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    names = list(values)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3.6))
    bars = ax.bar(range(len(names)), [values[n] for n in names], color="#4C72B0")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim:
        ax.set_ylim(*ylim)
    for b, n in zip(bars, names):
        ax.annotate(_cell(values[n]), (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir: str, name: str, *, items: Iterable[Mapping[str, Any]], summary: Mapping[str, Any],
                 header: Sequence[str], rows: Sequence[Sequence[Any]], chart: Mapping[str, float] | None = None,
                 chart_title: str | None = None) -> dict[str, str]:
    """Write `<name>_items.jsonl`, `<name>_summary.json`, `<name>.md` and `<name>.png` into out_dir.

    Returns the paths written, keyed by kind, and prints nothing (callers print the table).
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "items": os.path.join(out_dir, f"{name}_items.jsonl"),
        "summary": os.path.join(out_dir, f"{name}_summary.json"),
        "table": os.path.join(out_dir, f"{name}.md"),
    }
    write_jsonl(paths["items"], items)
    write_json(paths["summary"], summary)
    with open(paths["table"], "w", encoding="utf-8") as fh:
        fh.write(markdown_table(header, rows) + "\n")
    if chart:
        paths["chart"] = os.path.join(out_dir, f"{name}.png")
        bar_chart(paths["chart"], chart, chart_title or name)
    return paths
