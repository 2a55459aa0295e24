"""The iTool loop (Zeng et al. 2025): warm-up, then iterations of buffer → search → pairs → filters →
SimPO, each stage resumable.

    from jaxtool.config import load_config
    from jaxtool.itool import ItoolConfig, run_itool
    summary = run_itool(load_config("configs/itool/smollm2.yaml", [], cls=ItoolConfig))

Run directory::

    RUN/config.yaml                    the resolved ItoolConfig
    RUN/data/examples.jsonl            the examples (prompt + gold answer), after every check
    RUN/data/report.json               conversations read, kept, dropped by reason (bad gold, bad schema, guard)
    RUN/data/buffer_init.json          the ids the replay buffer starts with (random 50%)
    RUN/warmup/split.json              the easy / medium / hard split and the thresholds it produced
    RUN/warmup/{easy,medium,hard}.jsonl          each level's train part; <level>_valid.jsonl its held-out 10%
    RUN/warmup/stage{1,2,3}_<level>/   each SFT stage's training run (its hf/, or best_hf/ — the checkpoint
                                       best on valid — is the next stage's model); warmup: mixed runs one
                                       stage, stage1_mixed/, on mixed.jsonl
    RUN/iter_K/buffer.json             perplexity of every buffer example, the selected queries
    RUN/iter_K/search.json             search settings, outcome verdicts by reason, pairs extracted
    RUN/iter_K/pairs.jsonl             every extracted pair: prompt, prefix, chosen, rejected, Q values,
                                       node depth, kept / dropped-by reason
    RUN/iter_K/filtered.json           pairs kept and dropped, by reason
    RUN/iter_K/train_pairs.jsonl       the kept pairs as {"chosen", "rejected"} conversations
    RUN/iter_K/train/                  the SimPO training run
    RUN/iter_K/model/                  the updated policy (HF directory)
    RUN/iter_K/metrics.json            wall time of each stage, pair counts, verdicts
    RUN/summary.json                   everything above in one file

Resume: every stage ends by writing a marker JSON atomically (`.done/<stage>.json`, with the stage's
result: e.g. the model it produced). A rerun of the same config skips every stage that has its
marker and starts at the first one that has none; a stage interrupted halfway is redone (a training
stage continues from its last checkpoint). Between runs `iterations` may grow and the keys that
only change how things are computed (`model.remat`, `mesh.*`, `buffer.batch_size`, ...; see
`RESUMABLE_CHANGES`) may change; any other changed key is refused, named.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable

from jaxtool.config import dump_yaml, read_yaml
from jaxtool.errors import ConfigError, DataError
from jaxtool.itool.buffer import initial_buffer, score_buffer, write_json
from jaxtool.itool.config import (RESUMABLE_CHANGES, ItoolConfig, stage_train_config, update_loss_overrides,
                                  validate)
from jaxtool.itool.difficulty import LEVELS, split_by_difficulty
from jaxtool.eval.tool_tasks import Example, load_examples, make_guard, read_examples, write_examples
from jaxtool.itool.pairs import PairRecord, read_jsonl, to_record, training_row, training_row_ids, write_jsonl
from jaxtool.itool.stages import Stage  # markers checked against their artifacts (issue 26)


def _valid_file(train_file: str) -> str:
    """`warmup/<level>.jsonl` -> `warmup/<level>_valid.jsonl`."""
    return train_file[:-len(".jsonl")] + "_valid.jsonl"


def _count_rows(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for ln in fh if ln.strip())


def _eval_losses(run_dir: str) -> dict[int, float]:
    """{step: valid loss} of a training run (its metrics.jsonl "eval" rows; the last row of a step wins)."""
    from jaxtool.train.metrics import read_metrics

    return {int(r["step"]): float(r["loss"]) for r in read_metrics(os.path.join(run_dir, "metrics.jsonl"))
            if r.get("split") == "eval" and r.get("loss") is not None}



def _check_same_config(run_dir: str, cfg: ItoolConfig) -> None:
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        return
    # a key the stored config lacks (added to jaxtool since the run started) counts as its default;
    # a key it has that no longer exists is ignored
    old = {**read_yaml_text(dump_yaml(type(cfg)())), **read_yaml(path)["__flat__"]}
    new = read_yaml_text(dump_yaml(cfg))
    changed = sorted(k for k in new if old.get(k) != new[k] and k not in RESUMABLE_CHANGES
                     and k != "run_dir")  # a moved or copied run directory resumes where it is
    if changed:
        raise ConfigError(f"{run_dir} was started with another config ({', '.join(changed)} differ); resume it "
                          f"with {path}, or choose another run_dir")


def read_yaml_text(text: str) -> dict:
    import yaml

    from jaxtool.config import _flatten

    return dict(_flatten(yaml.safe_load(text) or {}))


class ItoolRun:
    """One iTool run. `run()` executes (or resumes) every stage; stages are methods so tests can
    interrupt one."""

    def __init__(self, cfg: ItoolConfig, printer: Callable = print):
        self.cfg = validate(cfg)
        self.print = printer
        self.dir = cfg.run_dir
        self._model_cache: tuple[str, Any] | None = None
        self.ran: list[str] = []    # stages executed by this process (not skipped)

    # -- helpers -------------------------------------------------------------------------------
    def stage(self, directory: str, name: str, fn: Callable[[], dict]) -> dict:
        st = Stage(directory, name, self.dir, self.print)
        label = f"{os.path.relpath(directory, self.dir)}/{name}"
        if st.done():
            self.print(f"[itool] {label}: finished before, skipped")
            return st.result()
        self.print(f"\n== itool: {label} ==")
        t0 = time.time()
        result = fn()
        st.finish(result, time.time() - t0)
        self.ran.append(label)
        return result

    def model(self, path: str):
        if self._model_cache is None or self._model_cache[0] != path:
            from jaxtool.api import load_model

            self._model_cache = None
            m = load_model(path, dtype=self.cfg.model.param_dtype, compute_dtype=self.cfg.model.compute_dtype)
            if m.tokenizer is None:
                raise ConfigError(f"{path}: the model has no tokenizer")
            self._model_cache = (path, m)
        return self._model_cache[1]

    def fmt(self, tokenizer=None):
        from jaxtool.data.formats import get_format

        return get_format(self.cfg.data.format, tokenizer=tokenizer)

    def stop_ids(self, model) -> list[int]:
        from jaxtool.sample.jax_backend import stop_token_ids

        return stop_token_ids(model.tokenizer, model.config, self.fmt(model.tokenizer).stop_strings)

    # -- stages --------------------------------------------------------------------------------
    def _data(self) -> dict:
        c = self.cfg
        d = os.path.join(self.dir, "data")
        os.makedirs(d, exist_ok=True)
        guard = make_guard(c.data.guard, c.data.guard_data)
        fmt = self.fmt(None) if c.data.format != "chat_template" else self.fmt(self.model(c.model.path).tokenizer)
        examples, report = load_examples(c.data.train, fmt, target=c.data.target, limit=c.data.limit, guard=guard)
        self.print(str(report))
        if not examples:
            raise DataError(f"data.train {list(c.data.train)}: no usable examples (see {d}/report.json)")
        write_examples(os.path.join(d, "examples.jsonl"), examples)
        write_json(os.path.join(d, "report.json"), report.to_dict())
        buf = initial_buffer([e.id for e in examples], c.buffer.init_fraction, c.seed)
        write_json(os.path.join(d, "buffer_init.json"), {"init_fraction": c.buffer.init_fraction, "seed": c.seed,
                                                          "ids": buf})
        return {"examples": len(examples), "dropped": dict(report.dropped), "buffer": len(buf)}

    def examples(self) -> list[Example]:
        return read_examples(os.path.join(self.dir, "data", "examples.jsonl"))

    def _split(self) -> dict:
        """The easy / medium / hard split (§3.1), each level split again into train and valid
        (App. B.1: 90/10; floor(n · valid_fraction) examples of a level held out, chosen by the seed).
        warmup: mixed also writes the union of the three levels' parts (Fig. 6's mixed SFT)."""
        import random

        c = self.cfg
        d = os.path.join(self.dir, "warmup")
        os.makedirs(d, exist_ok=True)
        split = split_by_difficulty(self.examples())
        files, valid_sizes, mixed, mixed_valid = {}, {}, [], []
        for level, exs in split.levels.items():
            order = sorted(exs, key=lambda e: e.id)
            random.Random(f"{c.seed}:{level}").shuffle(order)
            n_valid = int(len(order) * c.curriculum.valid_fraction)
            held = {e.id for e in order[:n_valid]}
            train_part = [e for e in exs if e.id not in held]
            valid_part = [e for e in exs if e.id in held]
            files[level] = os.path.join(d, f"{level}.jsonl")
            write_examples(files[level], train_part)
            write_examples(_valid_file(files[level]), valid_part)
            valid_sizes[level] = len(valid_part)
            mixed += train_part
            mixed_valid += valid_part
        if c.warmup == "mixed":
            files["mixed"] = os.path.join(d, "mixed.jsonl")
            write_examples(files["mixed"], mixed)
            write_examples(_valid_file(files["mixed"]), mixed_valid)
        summary = split.summary()
        summary["assignment"] = {e.id: level for level, exs in split.levels.items() for e in exs}
        summary["score"] = split.scores
        summary["valid"] = {"fraction": c.curriculum.valid_fraction, "sizes": valid_sizes}
        write_json(os.path.join(d, "split.json"), summary)
        self.print(json.dumps(summary["levels"], indent=1))
        return {"files": files, "valid_files": {k: _valid_file(f) for k, f in files.items()},
                "sizes": {k: len(v) for k, v in split.levels.items()}, "valid_sizes": valid_sizes}

    def _sft_stage(self, k: int, level: str, model_path: str, data_file: str) -> dict:
        """One warm-up SFT stage on `data_file` (validated on its `_valid` file when it has rows; the
        checkpoint with the lowest valid loss is the stage's model under curriculum.select=best_valid)."""
        from jaxtool.train import train

        c = self.cfg
        n = _count_rows(data_file)
        if n == 0:
            return {"model": model_path, "skipped": f"no {level} examples"}
        run_dir = os.path.join(self.dir, "warmup", f"stage{k + 1}_{level}")
        cur = c.curriculum
        lr = (cur.mixed_lr or cur.lrs[0]) if level == "mixed" else cur.lrs[k]
        valid = _valid_file(data_file)
        n_valid = _count_rows(valid) if os.path.isfile(valid) else 0
        extra = list(cur.extra)
        tc = stage_train_config(c, model_path=model_path, train=f"conversations:{data_file}", run_dir=run_dir,
                                kind="sft", lr=lr, epochs=cur.epochs, batch_size=cur.batch_size,
                                schedule=cur.schedule, warmup_ratio=cur.warmup_ratio, extra=extra,
                                loss=("loss.type=sft",))
        batch = self._cap_batch(tc, n)
        if n_valid:  # App. B.1: evaluate on the held-out 10% (once per epoch unless eval_every), keep those checkpoints
            every = cur.eval_every or max(1, -(-n // tc.batch_size))
            if tc.max_steps:
                every = min(every, tc.max_steps)
            tc.data.valid = f"conversations:{valid}"
            tc.eval_every = every
            if cur.select == "best_valid":
                tc.save_every = every
                tc.keep = max(tc.keep, -(-max(tc.max_steps, cur.epochs * -(-n // tc.batch_size)) // every) + 1)
        res = train(tc, resume=True, printer=self.print)
        if res.status != "finished" or not res.hf_dir:
            raise DataError(f"warm-up stage {k + 1} ({level}) did not finish: {res.status}")
        out = {"model": res.hf_dir, "steps": res.steps, "examples": n, "valid_examples": n_valid, "batch_size": batch,
               "lr": lr, "last_loss": res.last_metrics.get("loss"), "train_wall_s": res.wall_s}
        if n_valid:
            evals = _eval_losses(run_dir)
            out["valid_loss"] = evals
            if cur.select == "best_valid" and evals:
                best = min(evals, key=lambda st: (evals[st], -st))   # ties: the later step
                out["best_step"] = best
                if best != res.steps and res.checkpoint_dir:
                    from jaxtool.api import load_model

                    m = load_model(res.checkpoint_dir, step=best, dtype=c.model.param_dtype)
                    out["model"] = m.save_hf(os.path.join(run_dir, "best_hf"), overwrite=True)
        return out

    @staticmethod
    def _cap_batch(tc, n: int) -> int:
        """Fewer examples than one batch: a batch of just those (the update is the same — losses are
        averaged over real units — without computing empty rows)."""
        if n < tc.batch_size:
            ga = max(1, tc.optim.grad_accum)
            tc.batch_size = max(ga, -(-n // ga) * ga)
        return tc.batch_size

    def _buffer(self, it_dir: str, model_path: str, buffer_ids: list[str]) -> dict:
        c = self.cfg
        model = self.model(model_path)
        by_id = {e.id: e for e in self.examples()}
        missing = [i for i in buffer_ids if i not in by_id]
        if missing:
            raise DataError(f"buffer ids {missing[:3]} are not among the examples")
        state = score_buffer(model, by_id, buffer_ids, self.fmt(model.tokenizer),
                             select_fraction=c.buffer.select_fraction, max_length=c.data.max_length,
                             batch_size=c.buffer.batch_size, length_multiple=c.buffer.length_multiple)
        state.update(model=model_path, iteration=os.path.basename(it_dir))
        write_json(os.path.join(it_dir, "buffer.json"), state)
        self.print(f"buffer: {state['scored']} scored (mean perplexity {state['mean_perplexity']}), "
                   f"{len(state['selected'])} selected")
        return {"selected": state["selected"], "scored": state["scored"], "not_scored": state["not_scored"],
                "mean_perplexity": state["mean_perplexity"]}

    def _search(self, it_dir: str, model_path: str, selected: list[str], iteration: int) -> dict:
        from jaxtool.data.tokenize import prompt_ids
        from jaxtool.eval.outcome import OutcomeJudge

        c = self.cfg
        model = self.model(model_path)
        fmt = self.fmt(model.tokenizer)
        by_id = {e.id: e for e in self.examples()}
        queries = [by_id[i] for i in selected]
        prompts = [prompt_ids(ex.prompt, fmt, model.tokenizer) for ex in queries]
        kept = queries
        stop = self.stop_ids(model)
        judge = OutcomeJudge(kept, fmt, model.tokenizer, stop,
                             length_limit=c.mcts.max_total_tokens if c.search == "mcts" else None)
        seed = c.seed + 1000 * iteration
        t0 = time.time()
        stats: dict = {}
        if c.search == "sample":
            raw = self._search_sample(model, prompts, stop, judge, seed)
        else:
            golds = None
            if c.mcts.eval_gold:  # Eq. 7 / Table 7: the Eval Prompt carries the ground truth
                from jaxtool.itool.search_adapter import gold_response_text

                golds = [gold_response_text(fmt, ex) for ex in queries]
            raw, stats = self._search_mcts(model, prompts, stop, judge, seed, golds)
        wall = time.time() - t0
        records = [to_record(p, kept, model.tokenizer, stop, fmt) for p in raw]
        write_jsonl(os.path.join(it_dir, "pairs_raw.jsonl"), [r.to_dict() for r in records])
        info = {"search": c.search, "queries": len(kept), "pairs": len(records), "outcomes": judge.summary(),
                "search_wall_s": round(wall, 3), "stats": stats,
                "settings": dataclasses.asdict(c.mcts if c.search == "mcts" else c.sample)}
        write_json(os.path.join(it_dir, "search.json"), info)
        self.print(f"search ({c.search}): {len(kept)} queries, {len(records)} pairs in {wall:.1f}s; "
                   f"outcomes {judge.summary()['verdicts']}")
        return {"pairs": len(records), "queries": len(kept), "outcomes": judge.summary()["verdicts"],
                "search_wall_s": round(wall, 3)}

    def _search_sample(self, model, prompts, stop, judge, seed) -> list:
        from jaxtool.itool.sample import sample_pairs

        s = self.cfg.sample
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        return sample_pairs(model.params, model.config, prompts, n=s.n, temperature=s.temperature, top_p=s.top_p,
                            max_new_tokens=s.max_new_tokens, stop_ids=stop, batch_queries=s.batch_queries,
                            seed=seed, pad_id=pad, outcome=judge, run=getattr(model, "run", None))

    def _search_mcts(self, model, prompts, stop, judge, seed, golds=None) -> tuple[list, dict]:
        from jaxtool.itool.search_adapter import run_mcts

        return run_mcts(model, prompts, self.fmt(model.tokenizer), self.cfg.mcts, stop, judge, seed, golds=golds)

    def _filter(self, it_dir: str, model_path: str) -> dict:
        from jaxtool.data.tokenize import control_markers

        c = self.cfg
        model = self.model(model_path)
        fmt = self.fmt(model.tokenizer)
        recs = [PairRecord(**r) for r in read_jsonl(os.path.join(it_dir, "pairs_raw.jsonl"))]
        from jaxtool.itool.search_adapter import filter_records

        if c.search == "sample":  # Q values are log-likelihoods here: only the similarity filter applies
            counts = filter_records(recs, c.filters.max_similarity, float("-inf"), float("-inf"))
        else:
            counts = filter_records(recs, c.filters.max_similarity, c.filters.min_q_gap, c.filters.min_chosen_q)
        by_id = {e.id: e for e in self.examples()}
        markers = control_markers(fmt, model.tokenizer)
        step_layout = c.pair_layout == "step" and c.search == "mcts"   # the sampler's pairs are whole responses
        rows = []
        for r in recs:
            if not r.kept:
                continue
            if step_layout:  # §3.2: prompt = query + path (context), chosen / rejected = the single steps
                from jaxtool.data.tokenize import prompt_ids

                row, why = training_row_ids(r, prompt_ids(by_id[r.query_id].prompt, fmt, model.tokenizer))
            else:
                row, why = training_row(r, by_id[r.query_id], markers)
            if row is not None:  # what the trainer will drop is counted here, by its reason
                why = self._untrainable(row, fmt, model.tokenizer)
            if why is not None:
                r.kept, r.reason = False, why
                counts[why] = counts.get(why, 0) + 1
                continue
            rows.append(row)
        for r in recs:  # the logged record: the query's last user turn as the prompt
            r.extra["prompt"] = by_id[r.query_id].query
        write_jsonl(os.path.join(it_dir, "pairs.jsonl"), [self._public(r) for r in recs])
        write_jsonl(os.path.join(it_dir, "train_pairs.jsonl"), rows)
        summary = {"extracted": len(recs), "kept": len(rows), "dropped": dict(sorted(counts.items())),
                   "filters": dataclasses.asdict(c.filters) if c.search == "mcts" else
                   {"max_similarity": c.filters.max_similarity}}
        write_json(os.path.join(it_dir, "filtered.json"), summary)
        self.print(f"pairs: {len(recs)} extracted, {len(rows)} kept, dropped {summary['dropped']}")
        return {"extracted": len(recs), "kept": len(rows), "dropped": summary["dropped"]}

    def update_max_length(self) -> int:
        """Longest SimPO row: a query (≤ data.max_length with its gold answer) plus a searched response."""
        c = self.cfg
        return c.data.max_length + (c.mcts.max_total_tokens if c.search == "mcts" else c.sample.max_new_tokens)

    def _untrainable(self, row: dict, fmt, tokenizer) -> str | None:
        """Why the trainer would drop this preference row (None when it will train on it): the same
        tokenization (`tokenize_pair`, truncation "drop") at the update's max_length."""
        from jaxtool.data.schema import Conversation
        from jaxtool.data.tokenize import TruncationReport, tokenize_pair

        if "prompt_ids" in row:  # the step layout: the ids as trained
            n = len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))
            return None if n <= self.update_max_length() else "not trainable: pair: too long"
        rep = TruncationReport(policy="drop", max_length=self.update_max_length(), on_bad_example="skip")
        got = tokenize_pair(Conversation.from_dict(row["chosen"], validate=False),
                            Conversation.from_dict(row["rejected"], validate=False), fmt, tokenizer,
                            self.update_max_length(), "drop", rep)
        return None if got is not None else f"not trainable: {next(iter(rep.dropped), 'dropped')}"

    @staticmethod
    def _public(r: PairRecord) -> dict:
        d = r.to_dict()
        extra = d.pop("extra")
        return {"query_id": d["query_id"], "prompt": extra.pop("prompt", None), "prefix": d["prefix"],
                "chosen": d["chosen"], "rejected": d["rejected"], "q_chosen": d["q_chosen"],
                "q_rejected": d["q_rejected"], "depth": d["depth"], "kept": d["kept"], "reason": d["reason"],
                **extra, "prefix_ids": d["prefix_ids"], "chosen_ids": d["chosen_ids"],
                "rejected_ids": d["rejected_ids"]}

    def _update(self, it_dir: str, model_path: str) -> dict:
        from jaxtool.train import train

        c = self.cfg
        pairs_file = os.path.join(it_dir, "train_pairs.jsonl")
        n = sum(1 for ln in open(pairs_file, encoding="utf-8") if ln.strip())
        if n == 0:
            self.print("no pairs kept: the policy is not updated this iteration")
            return {"model": model_path, "skipped": "no pairs kept"}
        u = c.simpo
        tc = stage_train_config(c, model_path=model_path, train=f"preference:{pairs_file}", max_length=self.update_max_length(),
                                run_dir=os.path.join(it_dir, "train"), kind="preference", lr=u.lr, epochs=u.epochs,
                                batch_size=u.batch_size, schedule=u.schedule, warmup_ratio=u.warmup_ratio,
                                extra=u.extra, loss=update_loss_overrides(u))
        batch = self._cap_batch(tc, n)
        res = train(tc, resume=True, printer=self.print)
        if res.status != "finished" or not res.hf_dir:
            raise DataError(f"the SimPO update of {it_dir} did not finish: {res.status}")
        out = os.path.join(it_dir, "model")
        if os.path.isdir(out):  # left by an attempt interrupted after the move
            shutil.rmtree(out)
        os.replace(res.hf_dir, out)
        self._model_cache = None
        return {"model": out, "steps": res.steps, "pairs": n, "batch_size": batch,
                "last": {k: res.last_metrics.get(k) for k in ("loss", "reward_margin", "accuracy")},
                "train_wall_s": res.wall_s}

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> dict:
        c = self.cfg
        t_all = time.time()
        os.makedirs(self.dir, exist_ok=True)
        _check_same_config(self.dir, c)
        with open(os.path.join(self.dir, "config.yaml"), "w") as fh:
            fh.write(dump_yaml(c))
        summary: dict[str, Any] = {"run_dir": self.dir, "search": c.search}
        summary["data"] = self.stage(self.dir, "data", self._data)
        model_path = c.model.path
        if c.warmup in ("run", "mixed"):
            split = self.stage(os.path.join(self.dir, "warmup"), "split", self._split)
            summary["warmup"] = {"mode": c.warmup, "split": split["sizes"], "stages": {}}
            for k, level in enumerate(LEVELS if c.warmup == "run" else ("mixed",)):
                name = f"stage{k + 1}_{level}"
                res = self.stage(os.path.join(self.dir, "warmup"), name,
                                 lambda k=k, level=level, mp=model_path: self._sft_stage(k, level, mp,
                                                                                        split["files"][level]))
                summary["warmup"]["stages"][name] = {**res, "wall_s": Stage(os.path.join(self.dir, "warmup"),
                                                                            name).wall()}
                model_path = res["model"]
        with open(os.path.join(self.dir, "data", "buffer_init.json"), encoding="utf-8") as fh:
            buffer_ids = json.load(fh)["ids"]
        summary["iterations"] = []
        for it in range(1, c.iterations + 1):
            d = os.path.join(self.dir, f"iter_{it}")
            os.makedirs(d, exist_ok=True)
            metrics: dict[str, Any] = {"iteration": it, "policy": model_path, "wall_s": {}}
            steps = [
                ("buffer", lambda: self._buffer(d, model_path, buffer_ids)),
                ("search", lambda: self._search(d, model_path, Stage(d, "buffer").result()["selected"], it)),
                ("filter", lambda: self._filter(d, model_path)),
                ("update", lambda: self._update(d, model_path)),
            ]
            for name, fn in steps:
                metrics[name] = self.stage(d, name, fn)
                metrics["wall_s"][name] = Stage(d, name).wall()
                write_json(os.path.join(d, "metrics.json"), metrics)
            metrics["wall_s"]["iteration"] = round(sum(metrics["wall_s"].values()), 3)
            write_json(os.path.join(d, "metrics.json"), metrics)
            summary["iterations"].append(metrics)
            model_path = metrics["update"]["model"]
        summary["final_model"] = model_path
        summary["wall_s_this_process"] = round(time.time() - t_all, 3)
        summary["stages_run_this_process"] = list(self.ran)
        write_json(os.path.join(self.dir, "summary.json"), summary)
        return summary


def run_itool(cfg: ItoolConfig, printer: Callable = print) -> dict:
    """Run (or resume) the iTool loop of `cfg`; returns the run summary (also in RUN/summary.json)."""
    return ItoolRun(cfg, printer=printer).run()
