"""Measuring an RL run: rewards of a model on held-out tasks with a bootstrap interval, and the
train / validation / held-out split of a task source that keeps them apart.

    split_source("bundled", "runs/rl_split", valid=0.15, heldout=0.25, seed=0)
    res = evaluate_rewards("runs/rl/checkpoints", ["conversations:runs/rl_split/heldout.jsonl"])
    res.summary()   # {"outcome": {"mean", "lo", "hi", "n"}, ...}

`evaluate_rewards` decodes with the rollout code the loop trains with (`jaxtool.rl.rollout`: the
same prompts, stop ids and parsing), `samples` per task (1 and temperature 0 = greedy), scores each
with the registered rewards and reports the mean per task, then the mean over tasks with a
percentile bootstrap interval over tasks (Efron & Tibshirani 1993, ch. 13).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from typing import Sequence

import numpy as np

from jaxtool.errors import DataError


def bootstrap_ci(values: Sequence[float], n: int = 10000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample the values with replacement n times."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n, x.size))].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def split_source(spec: str, out_dir: str, *, valid: float = 0.15, heldout: float = 0.25, seed: int = 0) -> dict:
    """Write `train.jsonl`, `valid.jsonl`, `heldout.jsonl` (jaxtool conversations) from one training
    source: a seeded permutation of its rows, the first `heldout` share held out, the next `valid`
    share for choosing hyperparameters, the rest for training. Rows the loader skips are counted."""
    from jaxtool.data.sources import LoadReport, load, parse_spec
    from jaxtool.eval.tool_tasks import bundled_train_path

    if not (0 <= valid < 1 and 0 < heldout < 1 and valid + heldout < 1):
        raise DataError(f"split fractions valid={valid}, heldout={heldout}: need 0 <= valid, 0 < heldout, sum < 1")
    src = f"conversations:{bundled_train_path()}" if spec == "bundled" else spec
    name, _ = parse_spec(src)
    rep = LoadReport(name, on_bad_row="skip")
    convs = list(load(src, on_bad_row="skip", report=rep))
    perm = np.random.default_rng(seed).permutation(len(convs))
    n_h, n_v = int(round(heldout * len(convs))), int(round(valid * len(convs)))
    parts = {"heldout": perm[:n_h], "valid": perm[n_h:n_h + n_v], "train": perm[n_h + n_v:]}
    os.makedirs(out_dir, exist_ok=True)
    out = {"source": spec, "seed": seed, "rows": len(convs), "skipped": dict(rep.skipped)}
    for part, idx in parts.items():
        with open(os.path.join(out_dir, f"{part}.jsonl"), "w", encoding="utf-8") as fh:
            for i in sorted(idx.tolist()):
                fh.write(json.dumps(convs[i].to_dict(), ensure_ascii=False) + "\n")
        out[part] = len(idx)
    with open(os.path.join(out_dir, "split.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    return out


@dataclasses.dataclass
class EvalResult:
    model: str
    tasks: list[str]
    per_task: dict[str, list[float]]     # reward name -> mean over the samples of each task
    per_task_std: dict[str, list[float]]  # reward name -> std over the samples of each task (a GRPO group)
    counts: dict
    wall_s: float
    samples: int
    temperature: float

    def summary(self, seed: int = 0) -> dict:
        out = {}
        for name, v in self.per_task.items():
            lo, hi = bootstrap_ci(v, seed=seed)
            out[name] = {"mean": float(np.mean(v)) if v else float("nan"), "lo": lo, "hi": hi, "n": len(v),
                         # the share of tasks whose samples disagree: the groups GRPO learns from
                         "varied": float(np.mean(np.asarray(self.per_task_std[name]) > 0)) if v else float("nan")}
        return out

    def to_dict(self) -> dict:
        return {"model": self.model, "samples": self.samples, "temperature": self.temperature,
                "wall_s": self.wall_s, "summary": self.summary(), "counts": self.counts,
                "tasks": self.tasks, "per_task": self.per_task, "per_task_std": self.per_task_std}


def evaluate_rewards(model_path: str, specs: Sequence[str], *, fmt: str = "pythonic", rewards=("outcome", "partial"),
                     samples: int = 1, temperature: float = 0.0, top_p: float = 1.0, max_tokens: int = 64,
                     batch: int = 8, seed: int = 0, limit: int = 0, guard: str = "bfcl", max_prompt_tokens: int = 1024,
                     target: str = "first_call", printer=print, model=None) -> EvalResult:
    """Rewards of `model_path` on the single-turn tasks of `specs` (see the module doc)."""
    from jaxtool.api import load_model
    from jaxtool.data.formats import get_format
    from jaxtool.rl import rewards as rew
    from jaxtool.rl.rollout import rollout
    from jaxtool.rl.tasks import source_tasks
    from jaxtool.sample.generate import Sampling

    t0 = time.time()
    m = model or load_model(model_path)
    tok = m.tokenizer
    f = get_format(fmt, tokenizer=tok)
    tasks, report = source_tasks(list(specs), f, target=target, limit=limit, guard=guard)
    counts: collections.Counter = collections.Counter({f"task: {k}": v for k, v in report.dropped.items()})
    prompts, kept = [], []
    for t in tasks:
        ids = tok.encode(f.prompt(t.prompt), add_special_tokens=False)
        if len(ids) > max_prompt_tokens:
            counts["task: prompt longer than max_prompt_tokens"] += 1
            continue
        prompts.append(ids)
        kept.append(t)
    if not kept:
        raise DataError(f"{list(specs)}: no usable task (counts: {dict(counts)})")
    stops = {tok.eos_token_id} | {tok.convert_tokens_to_ids(s) for s in f.stop_strings if s in tok.get_vocab()}
    stop_ids = sorted(int(s) for s in stops if s is not None)
    pad = m.config.pad_token_id if m.config.pad_token_id is not None else 0
    ctx = rew.RewardContext(f, counts)
    per_task: dict[str, list[float]] = {r: [] for r in rewards}
    order = np.argsort([len(p) for p in prompts], kind="stable")   # similar lengths share a batch
    scores: dict[int, dict[str, float]] = {}
    k = max(1, batch // samples)
    for start in range(0, len(order), k):
        idx = order[start:start + k].tolist()
        trajs = rollout(m.params, m.config, [prompts[i] for i in idx], fmt=f, tokenizer=tok, group_size=samples,
                        sampling=Sampling(temperature=temperature, top_p=top_p), stop_ids=stop_ids,
                        max_turn_tokens=max_tokens, max_response_tokens=max_tokens, max_turns=1,
                        seed=seed + start, run=m.run, pad_id=pad)
        for j, i in enumerate(idx):
            group = trajs[j * samples:(j + 1) * samples]
            scores[i] = {r: [rew.get(r)(kept[i], t, ctx) for t in group] for r in rewards}
            for t in group:
                counts[f"finish: {t.finish}"] += 1
        printer(f"  {min(start + k, len(order))}/{len(order)} tasks")
    per_std: dict[str, list[float]] = {r: [] for r in rewards}
    for i in range(len(kept)):
        for r in rewards:
            per_task[r].append(float(np.mean(scores[i][r])))
            per_std[r].append(float(np.std(scores[i][r])))
    return EvalResult(model_path, [t.id for t in kept], per_task, per_std, dict(counts), time.time() - t0, samples,
                      temperature)


__all__ = ["bootstrap_ci", "split_source", "evaluate_rewards", "EvalResult"]
