"""A training run: data → state on the mesh → (reference column) → the loop → checkpoints → export.

    result = Trainer(load_config("configs/simpo_smollm2.yaml")).run()      # or jaxtool.train.train(cfg)

Run directory layout::

    RUN/config.yaml            the resolved config
    RUN/metrics.jsonl          one JSON line per logged step (and "eval" lines)
    RUN/tb/                    TensorBoard event files
    RUN/checkpoints/           Orbax steps: params (or LoRA adapters) + optimizer state + data-iterator state
    RUN/reference.npz          precomputed reference log-probs (preference training), by example
    RUN/curves.png             loss / reward-margin / accuracy curves
    RUN/hf/                    the final model as an HF directory (export_hf=true; LoRA merged)

Resume (`resume=True`) restores params/adapters, optimizer state, step and the data iterator, so the
loss curve of an interrupted run continues exactly as an uninterrupted one (bit-identical on CPU).
SIGTERM / SIGINT save a checkpoint at the end of the current step and stop cleanly. The pieces live
in their own modules: `state` (mesh, shardings, optimizer, jitted steps), `reference` (the
reference column), `loop` (the loop and its hooks), `metrics` (logs and curves).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxtool import checkpoint, sharding
from jaxtool.config import TrainConfig, dump_yaml, to_dict
from jaxtool.errors import CheckpointError, ConfigError, DataError
from jaxtool.models import lora, quant
from jaxtool.train import reference, steps
from jaxtool.train.loop import Hooks, SignalStop, run_loop
from jaxtool.train.metrics import MetricsLog, plot_curves
from jaxtool.train.state import build_state


@dataclasses.dataclass
class TrainResult:
    run_dir: str
    steps: int
    status: str                       # "finished" | "interrupted"
    last_metrics: dict
    eval_metrics: dict | None
    wall_s: float
    tokens_per_s: float
    hf_dir: str | None = None
    checkpoint_dir: str | None = None


class Trainer:
    def __init__(self, cfg: TrainConfig, printer=print):
        self.cfg = cfg
        self.print = printer if jax.process_index() == 0 else (lambda *a, **k: None)

    # -- setup --------------------------------------------------------------------------------
    def _validate(self):
        c = self.cfg
        kind = c.loss.objective.kind
        if c.data.kind != kind:
            raise ConfigError(f"loss.type={c.loss.type!r} trains on {kind} data, but data.kind={c.data.kind!r}"
                              + (" (SFT data has no pairs)" if kind == "preference" else
                                 " (pick a preference loss: dpo, simpo, diatool_dpo, ...)"))
        if c.batch_size % c.optim.grad_accum:
            raise ConfigError(f"batch_size={c.batch_size} must be a positive multiple of optim.grad_accum="
                              f"{c.optim.grad_accum}")
        if c.data.packing and c.data.kind == "preference":
            raise ConfigError("data.packing is for SFT only: preference losses need one pair per row")

    def setup(self):
        from jaxtool.api import load_model

        c = self.cfg
        self._validate()
        self._check_data_paths()
        # the run's one mesh (a mesh that cannot fit fails here, before any load/compile)
        self.mesh = sharding.make_mesh(c.mesh.data, c.mesh.fsdp, c.mesh.tensor)
        t0 = time.time()
        model = load_model(c.model.path, dtype=c.model.param_dtype, compute_dtype=c.model.compute_dtype,
                           remat=c.model.remat, lora_scale=(c.lora.alpha / c.lora.rank) if c.lora.enabled else 1.0,
                           attention=c.model.attention, logits_chunk=c.model.logits_chunk, packed=c.data.packing)
        if model.tokenizer is None:
            raise CheckpointError(f"{c.model.path}: the model has no tokenizer; training needs one")
        self.model_cfg, self.run_options, self.tokenizer = model.config, model.run, model.tokenizer
        self.print(f"model: {model} (loaded in {time.time() - t0:.1f}s)")
        self._prepare_data()
        all_batches = self.train_ds.num_batches or sum(1 for _ in self.train_ds)
        self.steps_per_epoch = max(1, -(-all_batches // c.epochs))
        self.total_steps = min(all_batches, c.max_steps) if c.max_steps else all_batches
        self.setup_ = build_state(c, model, self.total_steps, self.max_turns, mesh=self.mesh)
        self.state, self.mesh, self.frozen = self.setup_.state, self.setup_.mesh, self.setup_.frozen
        self.use_lora = c.lora.enabled
        self.print(f"trainable parameters: {self.setup_.num_trainable / 1e6:.2f}M "
                   f"({'LoRA r=%d' % c.lora.rank if self.use_lora else 'full'}); mesh {dict(self.mesh.shape)}; "
                   f"{self.total_steps} steps")
        self._reference_done = False
        sharding.barrier("setup")  # every process loaded and placed its part before the first collective

    def _prepare_data(self):
        from jaxtool.data.formats import get_format
        from jaxtool.data.pipeline import BatchConfig, preference_batches, sft_batches
        from jaxtool.train.data import tokenize_data

        c = self.cfg
        fmt = get_format(c.data.format, tokenizer=self.tokenizer)
        self.train_tok = tokenize_data(c.data.train, c.data, c.data.kind, fmt, self.tokenizer)
        if len(self.tokenizer) > self.model_cfg.vocab_size:
            raise ConfigError(f"format {c.data.format!r} added tokens {self.train_tok.report.added_tokens} the "
                              f"model's vocabulary ({self.model_cfg.vocab_size}) lacks; pick a format native to "
                              "this model (e.g. hermes for SmolLM2/Qwen, llama3_json for Llama 3)")
        if self.train_tok.load_report is not None:
            self.print(str(self.train_tok.load_report))
        self.print(str(self.train_tok.report))
        self._write_data_report()
        if not self.train_tok.examples:
            raise DataError(f"{c.data.train}: no usable training examples (see the report above)")
        self.valid_tok = tokenize_data(c.data.valid, c.data, c.data.kind, fmt, self.tokenizer) if c.data.valid else None
        pad = self.model_cfg.pad_token_id if self.model_cfg.pad_token_id is not None else 0
        # the rows of each global batch this process reads: those its devices hold on the mesh
        shard = (sharding.data_shard(self.mesh, c.batch_size)
                 if jax.process_count() > 1 else (0, 1))
        self.batch_config = BatchConfig(global_batch_size=c.batch_size, max_length=c.data.max_length,
                                        packing=c.data.packing, bucket_multiple=c.data.bucket_multiple,
                                        seed=c.seed, shuffle=c.data.shuffle, num_epochs=c.epochs, pad_id=pad,
                                        process_index=shard[0], process_count=shard[1])
        make = preference_batches if c.data.kind == "preference" else sft_batches
        self.train_ds = make(self.train_tok.examples, self.batch_config)
        if self.train_ds.report.kept == 0:
            raise DataError(f"{c.data.train}: every example was skipped by the batcher: {dict(self.train_ds.report.skipped)}")
        eval_cfg = dataclasses.replace(self.batch_config, shuffle=False, num_epochs=1)
        self.valid_ds = make(self.valid_tok.examples, eval_cfg) if self.valid_tok and self.valid_tok.examples else None
        self.max_turns = self._max_turns()
        self.data_fingerprint = reference.dataset_fingerprint(self.train_ds)

    def _write_data_report(self) -> None:
        """RUN/data_report.json: rows read, kept and skipped by reason; examples dropped by tokenization."""
        if jax.process_index() != 0:
            return
        import json

        lr = self.train_tok.load_report
        report = {"train": self.cfg.data.train, "on_bad_row": self.cfg.data.on_bad_row,
                  "load": None if lr is None else {"rows": lr.rows, "kept": lr.kept, "skipped": dict(lr.skipped),
                                                   "first": {k: [str(v[0]), v[1]] for k, v in lr.examples.items()}},
                  "tokenize": self.train_tok.report.summary()}
        os.makedirs(self.cfg.run_dir, exist_ok=True)
        with open(os.path.join(self.cfg.run_dir, "data_report.json"), "w") as fh:
            json.dump(report, fh, indent=1, default=str)

    def _check_data_paths(self) -> None:
        """Local data files named by the recipe exist — checked before any model loads."""
        for key in ("train", "valid"):
            spec = getattr(self.cfg.data, key)
            if not spec:
                continue
            path = spec.split(":", 1)[1] if ":" in spec and not os.path.exists(spec) else spec
            local = path.startswith(("/", "./", "../", "~")) or path.endswith((".json", ".jsonl", ".parquet"))
            if local and not os.path.exists(os.path.expanduser(path)):
                raise DataError(f"data.{key}={spec}: {path}: no such file or directory (checked before loading "
                                "the model)")

    def _max_turns(self) -> int:
        c = self.cfg
        if c.loss.max_turns:
            return c.loss.max_turns
        if not c.loss.objective.needs_turns:
            return 0
        exs = [e for pair in self.train_tok.examples for e in pair]
        if self.valid_tok:
            exs += [e for pair in self.valid_tok.examples for e in pair]
        return max(int(e.turn_ids.max()) + 1 for e in exs)

    def _n_logits(self, batch) -> int | None:
        if not self.cfg.selective_logits:
            return None
        return sharding.agree_max(steps.batch_logits_budget(batch))  # one program on every process

    # -- reference column -----------------------------------------------------------------------
    def _ensure_reference(self) -> None:
        """Reference log-probs of the train and held-out pairs: one pass each, cached in the run dir,
        joined to the batches by example index."""
        c = self.cfg
        if self._reference_done or not (c.loss.objective.needs_reference and c.loss.reference == "precomputed"):
            return
        t0 = time.time()
        os.makedirs(c.run_dir, exist_ok=True)
        model_id = reference.model_id(c.model)
        for ds, name in ((self.train_ds, "reference.npz"), (self.valid_ds, "reference_valid.npz")):
            if ds is not None:
                ds.with_reference(reference.precompute(ds, self.setup_, self.max_turns, os.path.join(c.run_dir, name),
                                                       model_id, self._n_logits, self.print))
        self._reference_done = True
        self.print(f"reference log-probs precomputed in {time.time() - t0:.1f}s")

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self) -> dict | None:
        if self.valid_ds is None:
            return None
        self._ensure_reference()
        totals: dict[str, float] = {}
        with sharding.use_mesh(self.mesh):
            for batch in self.valid_ds:
                out = jax.device_get(self.setup_.eval_step(self.state.trainable, sharding.shard_batch(batch, self.mesh),
                                                           n_logits=self._n_logits(batch)))
                for k, v in out.items():
                    totals[k] = totals.get(k, 0.0) + float(v)
        count = max(totals.pop("count", 0.0), 1.0)
        res = {"loss": totals.pop("loss_sum") / count}
        if self.cfg.data.kind == "sft":
            res["perplexity"] = float(math.exp(min(res["loss"], 50.0)))
        res.update({k: v / count for k, v in totals.items() if k != "tokens"})
        return res

    # -- checkpoints --------------------------------------------------------------------------
    def _ckpt_meta(self) -> dict:
        c = self.cfg
        meta = {"kind": "train", "base_model": c.model.path, "config": to_dict(c)}
        if self.use_lora:
            meta["lora"] = {"rank": c.lora.rank, "alpha": c.lora.alpha, "targets": list(c.lora.targets),
                            "scale": c.lora.alpha / c.lora.rank}
        return meta

    def save(self, it) -> None:
        step = int(self.state.step)
        if step in self.ckpt.steps():  # resumed at the last step (nothing left to train): already on disk
            self.print(f"checkpoint step {step} is already saved -> {self.ckpt.dir}")
            return
        items = {("adapters" if self.use_lora else "params"): self.state.trainable, "opt_state": self.state.opt_state}
        self.ckpt.save(step, items, {"step": step, "data_state": it.get_state(),
                                     "data_fingerprint": self.data_fingerprint, "batch_size": self.cfg.batch_size,
                                     "mesh": dict(self.mesh.shape), "process_count": jax.process_count()})
        self.print(f"saved checkpoint step {step} -> {self.ckpt.dir}")

    def restore_latest(self) -> tuple[int, dict | None]:
        """Restore the newest checkpoint of the run into `self.state`; (step, data-iterator state)."""
        if not hasattr(self, "ckpt"):
            self.ckpt = checkpoint.Checkpointer(os.path.join(self.cfg.run_dir, "checkpoints"), keep=self.cfg.keep)
        if self.ckpt.latest_step() is None:
            return 0, None
        key = "adapters" if self.use_lora else "params"
        abstract = {key: checkpoint.abstract_like(self.state.trainable),
                    "opt_state": checkpoint.abstract_like(self.state.opt_state)}
        # every file of the step checked against its manifest; a damaged step is named (step, file) and
        # the newest intact one restored instead
        step, items, meta, damaged = self.ckpt.restore_newest_good(abstract, verify="all", warn=self.print)
        saved_on = f"mesh {meta.get('mesh', '?')} on {meta.get('process_count', '?')} process(es)"
        this_on = f"mesh {dict(self.mesh.shape)} on {jax.process_count()} process(es)"
        for field, now in (("data_fingerprint", self.data_fingerprint), ("batch_size", self.cfg.batch_size)):
            if field in meta and meta[field] != now:
                raise CheckpointError(f"{self.ckpt.dir}: step {step} was saved with {field}={meta[field]!r} ({saved_on}), "
                                      f"this run has {now!r} ({this_on}); resume with the same data and batch_size "
                                      "(or start a new run_dir)")
        for bad in damaged:  # newer than `step`: moved aside so this run can write those step numbers again
            self.print(f"moved damaged checkpoint step {bad.step} aside -> {self.ckpt.quarantine(bad.step)}")
        if saved_on != this_on:  # arrays were re-sharded by the restore; the data position is global
            self.print(f"re-sharded step {step} from {saved_on} onto {this_on}")
        self.state = steps.TrainState(jax.device_put(np.asarray(step, np.int32),
                                                     self.setup_.state_shardings.step), items[key], items["opt_state"])
        return step, meta.get("data_state")

    # -- the run ------------------------------------------------------------------------------
    def run(self, resume: bool = False, interrupt_at: int | None = None) -> TrainResult:
        """Train. `interrupt_at` (tests) behaves as a SIGTERM arriving during that step."""
        c = self.cfg
        run_dir, ckpt_dir = c.run_dir, os.path.join(c.run_dir, "checkpoints")
        with RunDirLock(run_dir):
            return self._run(run_dir, ckpt_dir, resume, interrupt_at)

    def _run(self, run_dir: str, ckpt_dir: str, resume: bool, interrupt_at: int | None) -> TrainResult:
        c = self.cfg
        if not resume and os.path.isdir(ckpt_dir) and checkpoint.Checkpointer(ckpt_dir, create=False).steps():
            raise ConfigError(f"{run_dir} already holds checkpoints: pass --resume to continue it, "
                              "or choose another run_dir")
        if not hasattr(self, "state"):
            self.setup()
        os.makedirs(run_dir, exist_ok=True)
        if jax.process_index() == 0:
            with open(os.path.join(run_dir, "config.yaml"), "w") as fh:
                fh.write(dump_yaml(c))
        checkpoint.write_meta(ckpt_dir, self.model_cfg, self._ckpt_meta())
        if jax.process_index() == 0:
            self.tokenizer.save_pretrained(os.path.join(ckpt_dir, "tokenizer"))
        self.ckpt = checkpoint.Checkpointer(ckpt_dir, keep=c.keep)
        self._ensure_reference()  # from the initial parameters, so before any checkpoint is restored
        start, data_state = self.restore_latest() if resume else (0, None)
        if resume:
            self.print(f"resuming from step {start}" if start else "no checkpoint to resume: starting at step 0")
        it = self.train_ds.iterator(data_state)
        log = MetricsLog(run_dir, start) if jax.process_index() == 0 else _NoLog()  # one writer per run dir
        index_log = _index_log(run_dir)
        from tqdm import tqdm

        bar = tqdm(total=self.total_steps, initial=start, desc="train", unit="step",
                   disable=not c.progress or jax.process_index() != 0, dynamic_ncols=True)
        last: dict = {}
        tokens = [0.0]

        def on_metrics(step, m):
            m.update(tokens_per_s=m["tokens"] / max(m["step_s"], 1e-9), epoch=(step - 1) // self.steps_per_epoch)
            if self._last_total is not None:  # every token of the batch, padding excluded (trained + context)
                m.update(total_tokens=self._last_total, total_tokens_per_s=self._last_total / max(m["step_s"], 1e-9))
            last.clear()
            last.update(m)
            if index_log is not None:
                index_log.write(f'{{"step": {step}, "process": {jax.process_index()}, "index": {self._last_index}}}\n')
                index_log.flush()
            tokens[0] += m["tokens"]
            if step % c.log_every == 0 or step == self.total_steps:
                log.write({"split": "train", **m})
            bar.update(1)
            bar.set_postfix(_postfix(m), refresh=False)

        def on_step_end(step):
            if c.eval_every and step % c.eval_every == 0 and self.valid_ds is not None:
                log.write({"split": "eval", "step": step, **self.evaluate()})
            if c.save_every and step % c.save_every == 0 and step < self.total_steps:
                self.save(it)

        self._last_total = None
        said = []

        def step_fn(state, batch):
            self._last_index = [int(i) for i in batch.index] if index_log is not None else None
            self._last_total = _real_tokens(batch) if jax.process_count() == 1 else None
            self.state, m = self.setup_.train_step(state, sharding.shard_batch(batch, self.mesh),
                                                   n_logits=self._n_logits(batch))
            if not said:  # once per run, after the first step traced the model: the kernel that runs
                from jaxtool.ops import attention

                said.append(True)
                self.print(f"compute {self.run_options.resolved_compute_dtype}; attention "
                           f"{attention.describe_resolutions()}")
            return self.state, m

        t_start, ev = time.time(), None
        try:
            with SignalStop(self.print) as sig, sharding.use_mesh(self.mesh):
                hooks = Hooks(on_metrics=on_metrics, on_step_end=on_step_end, on_interrupt=lambda s: self.save(it),
                              stop_requested=lambda s: sharding.any_process(sig.requested or s == interrupt_at))
                self.state, step, status = run_loop(self.state, it, step_fn, start=start, total=self.total_steps,
                                                    hooks=hooks)
                bar.close()
                if status == "finished":
                    self.save(it)
                    if self.valid_ds is not None:
                        ev = self.evaluate()
                        log.write({"split": "eval", "step": step, **ev})
        except sharding.RUNTIME_ERRORS as e:
            if jax.process_count() == 1:
                raise
            raise sharding.peer_failure(e, self.ckpt.dir, self.ckpt.latest_step()) from e
        finally:
            log.close()
            if index_log is not None:
                index_log.close()
            self.ckpt.wait()
        wall = time.time() - t_start
        hf_dir = None
        if status == "finished":
            if jax.process_index() == 0:
                plot_curves(os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "curves.png"))
            if c.export_hf:  # every process: the export gathers the sharded parameters
                hf_dir = self.export_hf(os.path.join(run_dir, "hf"))
        else:
            self.print(f"stopped at step {step}; continue with: jaxtool train {os.path.join(run_dir, 'config.yaml')} --resume")
        return TrainResult(run_dir=run_dir, steps=step, status=status, last_metrics=last, eval_metrics=ev,
                           wall_s=wall, tokens_per_s=tokens[0] / max(wall, 1e-9), hf_dir=hf_dir, checkpoint_dir=ckpt_dir)

    # -- export -------------------------------------------------------------------------------
    def merged_params(self):
        if self.use_lora:
            base = quant.dequantize_params(self.frozen, jnp.float32) if self.cfg.lora.base_quant != "none" else self.frozen
            return lora.merge(base, self.state.trainable, self.cfg.lora.alpha / self.cfg.lora.rank)
        return self.state.trainable

    def export_hf(self, out_dir: str) -> str:
        from jaxtool.convert import save_hf

        params = sharding.to_host(self.merged_params())  # every process joins the gather
        if jax.process_index() == 0:
            save_hf(out_dir, self.model_cfg, params, self.tokenizer, overwrite=True)
        self.print(f"exported HF model -> {out_dir}")
        return out_dir


class _NoLog:
    """The metrics log of processes other than 0 (process 0 writes the run's metrics)."""

    def write(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


DATA_LOG_ENV = "JAXTOOL_DATA_LOG"


class RunDirLock:
    """An exclusive lock on a run directory (`RUN/.jaxtool.lock`, `fcntl.flock`), held for the whole
    run by process 0: a second `jaxtool train` into the same run_dir stops at once with a named error
    instead of interleaving metrics.jsonl and checkpoints with the first. The kernel drops the lock
    when the process dies (kill -9 included), so a stale lock file never blocks a resume."""

    NAME = ".jaxtool.lock"

    def __init__(self, run_dir: str):
        self.run_dir, self.fh = run_dir, None

    def __enter__(self):
        if jax.process_index() != 0:
            return self
        import fcntl

        try:
            os.makedirs(self.run_dir, exist_ok=True)
            self.fh = open(os.path.join(self.run_dir, self.NAME), "a+")
        except OSError as e:
            raise ConfigError(f"run_dir={self.run_dir}: cannot create the run directory's lock file: "
                              f"{e.strerror or e}") from None
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.seek(0)
            holder = self.fh.read().strip()
            self.fh.close()
            self.fh = None
            raise ConfigError(f"run_dir={self.run_dir} is in use by another jaxtool run"
                              + (f" ({holder})" if holder else "") + ": wait for it to finish, or choose "
                              "another run_dir") from None
        self.fh.seek(0)
        self.fh.truncate()
        import socket

        self.fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self.fh.flush()
        return self

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.close()  # closing the file releases the flock
            self.fh = None
        return False


def _index_log(run_dir: str):
    """With JAXTOOL_DATA_LOG=1: RUN/data_index.p<process>.jsonl, one line per step with the dataset
    example of each row this process read (audits per-process data sharding)."""
    if os.environ.get(DATA_LOG_ENV, "") in ("", "0"):
        return None
    return open(os.path.join(run_dir, f"data_index.p{jax.process_index()}.jsonl"), "a")


def _real_tokens(batch) -> int | None:
    """Tokens of a host batch that are not padding (segment id 0), both sides of a pair."""
    parts = [batch.chosen, batch.rejected] if hasattr(batch, "chosen") else [batch]
    try:
        return int(sum(np.count_nonzero(np.asarray(b.segment_ids)) for b in parts))
    except (AttributeError, TypeError):
        return None


def _postfix(m: dict) -> dict:
    """The progress bar: trained tokens/s (loss-masked, what the loss sees) and all tokens/s
    (prompt, tool results and trained tokens; padding excluded), each labelled."""
    out = {"loss": f"{m['loss']:.4f}", "trained tok/s": f"{m['tokens_per_s']:.0f}"}
    if m.get("total_tokens_per_s") is not None:
        out["total tok/s"] = f"{m['total_tokens_per_s']:.0f}"
    if "reward_margin" in m:
        out["margin"] = f"{m['reward_margin']:.3f}"
        out["acc"] = f"{m['accuracy']:.2f}"
    return out


__all__ = ["Trainer", "TrainResult", "plot_curves"]
