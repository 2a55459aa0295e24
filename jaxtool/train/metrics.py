"""A run's metrics: `metrics.jsonl` (one JSON object per logged step; non-finite numbers as null),
TensorBoard event files, and the loss / margin / accuracy curves PNG."""

from __future__ import annotations

import json
import math
import os

import jax


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def read_metrics(path: str) -> list[dict]:
    """Rows of a metrics.jsonl; a torn last line (a kill mid-write) is ignored."""
    rows = []
    if not os.path.isfile(path):
        return rows
    with open(path, encoding="utf-8", errors="replace") as fh:
        for ln in fh:
            if not ln.strip():
                continue
            try:
                rows.append(json.loads(ln))
            except json.JSONDecodeError:
                continue
    return rows


class MetricsLog:
    """metrics.jsonl + TensorBoard, appended (a resumed run continues the same files, trimmed to
    the step it resumes from)."""

    def __init__(self, run_dir: str, resume_step: int):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        if os.path.exists(self.path):
            keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            with open(self.path, "w") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in keep)
        self.fh = open(self.path, "a")
        self.tb = None
        if jax.process_index() == 0:
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(os.path.join(run_dir, "tb"), purge_step=resume_step + 1)
            except ImportError:  # accelerator images may lack it: metrics.jsonl is the record
                self.tb = None

    def write(self, record: dict) -> None:
        self.fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self.fh.flush()
        if self.tb is not None:
            prefix = "eval/" if record.get("split") == "eval" else "train/"
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step" and math.isfinite(v):
                    self.tb.add_scalar(prefix + k, v, record["step"])

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


def plot_curves(metrics_path: str, out_png: str) -> str | None:
    """Loss, reward margin and preference accuracy (train and eval) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    if not rows:
        return None
    keys = [k for k in ("loss", "reward_margin", "accuracy") if any(r.get(k) is not None for r in rows)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys):
        for split, style in (("train", "-"), ("eval", "o--")):
            pts = [(r["step"], r[k]) for r in rows if r.get("split") == split and r.get(k) is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, label=split, markersize=4)
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
