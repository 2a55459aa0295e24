"""The training loop: SFT and preference training, LoRA or full, on any device mesh, with exact resume.

    result = Trainer(load_config("configs/quickstart_sft.yaml")).run()

Run directory layout::

    RUN/config.yaml            the resolved config
    RUN/metrics.jsonl          one JSON line per logged step (and "eval" lines)
    RUN/tb/                    TensorBoard event files
    RUN/checkpoints/           Orbax steps: params (or LoRA adapters) + optimizer state + data-iterator state
    RUN/reference.npz          precomputed reference log-probs (preference training)
    RUN/curves.png             loss / reward-margin / accuracy curves
    RUN/hf/                    the final model as an HF directory (export_hf=true; LoRA merged)

Resume (`resume=True`) restores params/adapters, optimizer state, step and the data iterator, so the
loss curve of an interrupted run continues exactly as an uninterrupted one (bit-identical on CPU).
SIGTERM / SIGINT save a checkpoint at the end of the current step and stop cleanly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtool import checkpoint, sharding
from jaxtool.config import TrainConfig, dump_yaml, to_dict
from jaxtool.errors import CheckpointError, ConfigError, DataError
from jaxtool.models import llama, lora
from jaxtool.train import steps
from jaxtool.train.optim import make_optimizer

log = logging.getLogger(__name__)


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


class _Metrics:
    """metrics.jsonl + TensorBoard, appended (a resumed run continues the same files)."""

    def __init__(self, run_dir: str, resume_step: int):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        if os.path.exists(self.path):  # drop lines past the checkpoint we resume from
            with open(self.path) as fh:
                keep = [ln for ln in fh if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            with open(self.path, "w") as fh:
                fh.writelines(keep)
        self.fh = open(self.path, "a")
        self.tb = None
        if jax.process_index() == 0:
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(os.path.join(run_dir, "tb"), purge_step=resume_step + 1)
            except ImportError:  # pragma: no cover - tensorboardX is a dependency
                self.tb = None

    def write(self, record: dict) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.tb is not None:
            prefix = "eval/" if record.get("split") == "eval" else "train/"
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(prefix + k, v, record["step"])

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


class Trainer:
    def __init__(self, cfg: TrainConfig, printer=print):
        self.cfg = cfg
        self.print = printer if jax.process_index() == 0 else (lambda *a, **k: None)
        self._stop = False

    # ---------------------------------------------------------------------------------------
    # setup
    # ---------------------------------------------------------------------------------------
    def _validate(self):
        c = self.cfg
        if c.data.kind == "sft" and c.loss.type != "sft":
            raise ConfigError(f"loss.type={c.loss.type!r} needs data.kind=preference (SFT data has no pairs)")
        if c.data.kind == "preference" and c.loss.type == "sft":
            raise ConfigError("data.kind=preference needs a preference loss (loss.type=dpo, diatool_dpo, ...)")
        if c.batch_size < 1 or c.batch_size % c.optim.grad_accum:
            raise ConfigError(f"batch_size={c.batch_size} must be a positive multiple of optim.grad_accum="
                              f"{c.optim.grad_accum}")
        if c.data.packing and c.data.kind == "preference":
            raise ConfigError("data.packing is for SFT only: preference losses need one pair per row")

    def setup(self):
        from jaxtool.api import load_model
        from jaxtool.data.formats import get_format
        from jaxtool.data.pipeline import BatchConfig, preference_batches, sft_batches
        from jaxtool.train.data import tokenize_data

        c = self.cfg
        self._validate()
        t0 = time.time()
        model = load_model(c.model.path, dtype=c.model.param_dtype, compute_dtype=c.model.compute_dtype,
                           remat=c.model.remat, lora_scale=(c.lora.alpha / c.lora.rank) if c.lora.enabled else 1.0)
        self.model_cfg, self.tokenizer = model.config, model.tokenizer
        if self.tokenizer is None:
            raise CheckpointError(f"{c.model.path}: the model has no tokenizer; training needs one")
        self.print(f"model: {model} (loaded in {time.time() - t0:.1f}s)")
        self.fmt = get_format(c.data.format, tokenizer=self.tokenizer)
        # data
        self.train_tok = tokenize_data(c.data.train, c.data, c.data.kind, self.fmt, self.tokenizer)
        if len(self.tokenizer) > self.model_cfg.vocab_size:
            raise ConfigError(f"format {c.data.format!r} added tokens {self.train_tok.report.added_tokens} the "
                              f"model's vocabulary ({self.model_cfg.vocab_size}) lacks; pick a format native to "
                              "this model (e.g. hermes for SmolLM2/Qwen, llama3_json for Llama 3)")
        self.print(str(self.train_tok.report))
        if not self.train_tok.examples:
            raise DataError(f"{c.data.train}: no usable training examples (see the report above)")
        self.valid_tok = (tokenize_data(c.data.valid, c.data, c.data.kind, self.fmt, self.tokenizer)
                          if c.data.valid else None)
        pad = self.model_cfg.pad_token_id if self.model_cfg.pad_token_id is not None else 0
        self.batch_config = BatchConfig(global_batch_size=c.batch_size, max_length=c.data.max_length,
                                        packing=c.data.packing, bucket_multiple=c.data.bucket_multiple,
                                        seed=c.seed, shuffle=c.data.shuffle, num_epochs=c.epochs, pad_id=pad)
        make = preference_batches if c.data.kind == "preference" else sft_batches
        self.train_ds = make(self.train_tok.examples, self.batch_config)
        if self.train_ds.report.kept == 0:
            raise DataError(f"{c.data.train}: every example was skipped by the batcher: {dict(self.train_ds.report.skipped)}")
        eval_cfg = dataclasses.replace(self.batch_config, shuffle=False, num_epochs=1)
        self.valid_ds = make(self.valid_tok.examples, eval_cfg) if self.valid_tok and self.valid_tok.examples else None
        self.max_turns = self._max_turns()
        # steps
        all_epochs = self.train_ds.num_batches or self._count_batches(self.train_ds)
        self.steps_per_epoch = max(1, -(-all_epochs // c.epochs))
        self.total_steps = min(all_epochs, c.max_steps) if c.max_steps else all_epochs
        # mesh + parameters
        self.mesh = sharding.make_mesh(c.mesh.data, c.mesh.fsdp, c.mesh.tensor)
        p_sh = sharding.tree_shardings(llama.param_axes(self.model_cfg), model.params, self.mesh)
        params = jax.device_put(model.params, p_sh)
        self.use_lora = c.lora.enabled
        if self.use_lora:
            adapters = lora.init_adapters(self.model_cfg, c.lora.rank, c.lora.targets, jax.random.key(c.seed))
            a_sh = sharding.tree_shardings(lora.adapter_axes(adapters), adapters, self.mesh)
            self.trainable, self.frozen = jax.device_put(adapters, a_sh), params
            n_train = lora.num_params(adapters)
        else:
            self.trainable, self.frozen = params, None
            n_train = self.model_cfg.num_params()
        self.print(f"trainable parameters: {n_train / 1e6:.2f}M ({'LoRA r=%d' % c.lora.rank if self.use_lora else 'full'})"
                   f"; mesh {dict(self.mesh.shape)}; {self.total_steps} steps")
        self.ref_params = None
        if steps.needs_reference(c.loss) and c.loss.reference == "online":
            # LoRA: the frozen base is the reference (no copy). Full fine-tuning: a frozen copy.
            self.ref_params = self.frozen if self.use_lora else jax.tree.map(jnp.copy, params)
        self.optimizer, self.schedule = make_optimizer(c.optim, self.total_steps)
        t_sh = jax.tree.map(lambda x: x.sharding, self.trainable)
        o_sh = optimizer_state_shardings(jax.eval_shape(self.optimizer.init, self.trainable), t_sh, self.mesh)
        opt_state = jax.jit(self.optimizer.init, out_shardings=o_sh)(self.trainable)
        self.state_shardings = steps.TrainState(sharding.replicated(self.mesh), t_sh, o_sh)
        self.state = steps.TrainState(jax.device_put(jnp.zeros((), jnp.int32), sharding.replicated(self.mesh)),
                                      self.trainable, opt_state)
        kw = dict(cfg=self.model_cfg, lc=c.loss, use_lora=self.use_lora, max_turns=self.max_turns)
        self._train_step = jax.jit(
            lambda st, b, fr, rp, n_logits: steps.train_step(st, b, fr, rp, optimizer=self.optimizer,
                                                             grad_accum=c.optim.grad_accum, schedule=self.schedule,
                                                             n_logits=n_logits, **kw),
            donate_argnums=(0,), out_shardings=(self.state_shardings, None), static_argnames=("n_logits",))
        self._eval_step = jax.jit(lambda tr, b, fr, rp, n_logits: steps.eval_step(tr, b, fr, rp, n_logits=n_logits, **kw),
                                  static_argnames=("n_logits",))
        self._ref_step = jax.jit(lambda p, b, n_logits: steps.pair_reference(p, b, self.model_cfg, self.max_turns,
                                                                             n_logits),
                                 static_argnames=("n_logits",))
        self.reference = self.valid_reference = None
        self._reference_done = False

    def _n_logits(self, batch: dict) -> int | None:
        if not self.cfg.selective_logits:
            return None
        masks = [batch["chosen"]["loss_mask"], batch["rejected"]["loss_mask"]] if "chosen" in batch else [batch["loss_mask"]]
        budgets = [steps.logits_budget(m) for m in masks]
        return None if any(b is None for b in budgets) else max(budgets)

    def _max_turns(self) -> int:
        if self.cfg.loss.max_turns:
            return self.cfg.loss.max_turns
        if self.cfg.data.kind != "preference":
            return 0
        exs = [e for pair in self.train_tok.examples for e in pair]
        if self.valid_tok:
            exs += [e for pair in self.valid_tok.examples for e in pair]
        return max(int(e.turn_ids.max()) + 1 for e in exs)

    @staticmethod
    def _count_batches(ds) -> int:
        return sum(1 for _ in ds)

    # ---------------------------------------------------------------------------------------
    # reference log-probs (one pass before training)
    # ---------------------------------------------------------------------------------------
    def _precompute_reference(self, ds, path: str | None):
        """Per-example reference values {side: {"seq": [N], "turns": [N, T]}} in dataset order."""
        if path and os.path.isfile(path):
            with np.load(path) as z:
                return {side: {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(side + "/")}
                        for side in ("chosen", "rejected")}
        n = len(ds.plan.streams[0])
        T = max(self.max_turns, 1)
        ref = {s: {"seq": np.zeros(n, np.float32), "turns": np.zeros((n, T), np.float32)} for s in ("chosen", "rejected")}
        ref_params = lora.attach(self.frozen, None) if self.use_lora else self.trainable
        one_pass = dataclasses.replace(ds.config, shuffle=False, num_epochs=1)
        from jaxtool.data.pipeline import BatchDataset

        it = iter(BatchDataset(ds.plan.streams, one_pass, ds.report))
        with sharding.use_mesh(self.mesh):
            for batch in it:
                rows = it.last_rows
                vals = jax.device_get(self._ref_step(ref_params, sharding.shard_batch(batch, self.mesh),
                                                     n_logits=self._n_logits(batch)))
                for b, items in enumerate(rows):
                    for item in items:
                        for s in ("chosen", "rejected"):
                            ref[s]["seq"][item] = vals[s]["seq"][b]
                            if self.max_turns:
                                ref[s]["turns"][item] = vals[s]["turns"][b]
        if path and jax.process_index() == 0:
            np.savez(path, **{f"{s}/{k}": v for s in ref for k, v in ref[s].items()})
        return ref

    def _ensure_reference(self) -> None:
        """Precompute reference log-probs once (train and held-out sets), cached in the run dir."""
        c = self.cfg
        if self._reference_done or not (c.data.kind == "preference" and steps.needs_reference(c.loss)
                                        and c.loss.reference == "precomputed"):
            return
        t0 = time.time()
        os.makedirs(c.run_dir, exist_ok=True)
        self.reference = self._precompute_reference(self.train_ds, os.path.join(c.run_dir, "reference.npz"))
        if self.valid_ds is not None:
            self.valid_reference = self._precompute_reference(self.valid_ds,
                                                              os.path.join(c.run_dir, "reference_valid.npz"))
        self._reference_done = True
        self.print(f"reference log-probs precomputed in {time.time() - t0:.1f}s")

    def _attach_reference(self, batch: dict, rows, ref) -> dict:
        B = batch["chosen"]["inputs"].shape[0]
        T = max(self.max_turns, 1)
        out = {}
        for s in ("chosen", "rejected"):
            seq = np.zeros(B, np.float32)
            turns = np.zeros((B, T), np.float32)
            for b, items in enumerate(rows):
                if items:
                    seq[b] = ref[s]["seq"][items[0]]
                    turns[b] = ref[s]["turns"][items[0]]
            out[s] = {"seq": seq, "turns": turns}
        return {**batch, "ref": out}

    # ---------------------------------------------------------------------------------------
    # evaluation
    # ---------------------------------------------------------------------------------------
    def evaluate(self) -> dict | None:
        if self.valid_ds is None:
            return None
        self._ensure_reference()
        totals: dict[str, float] = {}
        it = iter(self.valid_ds)
        with sharding.use_mesh(self.mesh):
            for batch in it:
                if self.valid_reference is not None:
                    batch = self._attach_reference(batch, it.last_rows, self.valid_reference)
                out = jax.device_get(self._eval_step(self.state.trainable, sharding.shard_batch(batch, self.mesh),
                                                     self.frozen, self.ref_params, n_logits=self._n_logits(batch)))
                for k, v in out.items():
                    totals[k] = totals.get(k, 0.0) + float(v)
        count = max(totals.pop("count", 0.0), 1.0)
        res = {"loss": totals.pop("loss_sum") / count}
        if self.cfg.data.kind == "sft":
            res["perplexity"] = float(math.exp(min(res["loss"], 50.0)))
        res.update({k: v / count for k, v in totals.items() if k not in ("tokens", "nll_sum")})
        return res

    # ---------------------------------------------------------------------------------------
    # checkpoints
    # ---------------------------------------------------------------------------------------
    def _ckpt_meta(self) -> dict:
        c = self.cfg
        meta = {"kind": "train", "base_model": c.model.path, "config": to_dict(c)}
        if self.use_lora:
            meta["lora"] = {"rank": c.lora.rank, "alpha": c.lora.alpha, "targets": list(c.lora.targets),
                            "scale": c.lora.alpha / c.lora.rank}
        return meta

    def save(self, it) -> None:
        step = int(self.state.step)
        items = {("adapters" if self.use_lora else "params"): self.state.trainable, "opt_state": self.state.opt_state}
        self.ckpt.save(step, items, {"step": step, "data_state": it.get_state()})
        self.print(f"saved checkpoint step {step} -> {self.ckpt.dir}")

    def _restore(self) -> tuple[int, dict | None]:
        step = self.ckpt.latest_step()
        if step is None:
            return 0, None
        key = "adapters" if self.use_lora else "params"
        abstract = {key: checkpoint.abstract_like(self.state.trainable),
                    "opt_state": checkpoint.abstract_like(self.state.opt_state)}
        items, meta = self.ckpt.restore(abstract, step)
        self.state = steps.TrainState(jnp.asarray(step, jnp.int32), items[key], items["opt_state"])
        return step, meta.get("data_state")

    # ---------------------------------------------------------------------------------------
    # the loop
    # ---------------------------------------------------------------------------------------
    def _on_signal(self, signum, _frame):
        self.print(f"\nreceived {signal.Signals(signum).name}: saving a checkpoint after this step")
        self._stop = True

    def run(self, resume: bool = False, interrupt_at: int | None = None) -> TrainResult:
        """Train. `interrupt_at` (tests) behaves as a SIGTERM arriving during that step."""
        c = self.cfg
        run_dir = c.run_dir
        ckpt_dir = os.path.join(run_dir, "checkpoints")
        if not resume and os.path.isdir(ckpt_dir) and checkpoint.Checkpointer(ckpt_dir, create=False).steps():
            raise ConfigError(f"{run_dir} already holds checkpoints: pass --resume to continue it, "
                              "or choose another run_dir")
        if not hasattr(self, "state"):
            self.setup()
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "config.yaml"), "w") as fh:
            fh.write(dump_yaml(c))
        checkpoint.write_meta(ckpt_dir, self._export_config(), self._ckpt_meta())
        if self.tokenizer is not None and jax.process_index() == 0:
            self.tokenizer.save_pretrained(os.path.join(ckpt_dir, "tokenizer"))
        self.ckpt = checkpoint.Checkpointer(ckpt_dir, keep=c.keep)
        # reference log-probs: from the initial parameters, so before any checkpoint is restored
        self._ensure_reference()
        start_step, data_state = self._restore() if resume else (0, None)
        if resume:
            self.print(f"resuming from step {start_step}" if start_step else "no checkpoint to resume: starting at step 0")
        it = self.train_ds.iterator(data_state)
        metrics_log = _Metrics(run_dir, start_step)
        handlers = {}
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self._on_signal)
        except ValueError:  # not the main thread
            handlers = {}
        from tqdm import tqdm

        bar = tqdm(total=self.total_steps, initial=start_step, desc="train", unit="step",
                   disable=not c.progress or jax.process_index() != 0, dynamic_ncols=True)
        t_start, tokens_done, last, status = time.time(), 0.0, {}, "finished"
        step = start_step
        try:
            with sharding.use_mesh(self.mesh):
                while step < self.total_steps:
                    try:
                        batch = next(it)
                    except StopIteration:
                        break
                    if self.reference is not None:
                        batch = self._attach_reference(batch, it.last_rows, self.reference)
                    t0 = time.time()
                    self.state, m = self._train_step(self.state, sharding.shard_batch(batch, self.mesh),
                                                     self.frozen, self.ref_params, n_logits=self._n_logits(batch))
                    m = {k: float(v) for k, v in jax.device_get(m).items()}
                    dt = time.time() - t0
                    step += 1
                    tokens_done += m["tokens"]
                    m.update(step=step, tokens_per_s=m["tokens"] / max(dt, 1e-9), step_s=dt,
                             epoch=(step - 1) // self.steps_per_epoch)
                    last = m
                    if step % max(1, c.log_every) == 0 or step == self.total_steps:
                        metrics_log.write({"split": "train", **m})
                    bar.update(1)
                    bar.set_postfix(self._postfix(m), refresh=False)
                    if interrupt_at is not None and step == interrupt_at:
                        self._stop = True
                    if c.eval_every and step % c.eval_every == 0 and self.valid_ds is not None:
                        ev = self.evaluate()
                        metrics_log.write({"split": "eval", "step": step, **ev})
                    if self._stop:
                        self.save(it)
                        status = "interrupted"
                        break
                    if c.save_every and step % c.save_every == 0 and step < self.total_steps:
                        self.save(it)
            bar.close()
            ev = None
            if status == "finished":
                self.save(it)
                if self.valid_ds is not None:
                    ev = self.evaluate()
                    metrics_log.write({"split": "eval", "step": step, **ev})
        finally:
            metrics_log.close()
            for sig, h in handlers.items():
                signal.signal(sig, h)
            self.ckpt.wait()
        wall = time.time() - t_start
        hf_dir = None
        if status == "finished":
            plot_curves(os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "curves.png"))
            if c.export_hf:
                hf_dir = self.export_hf(os.path.join(run_dir, "hf"))
        if status == "interrupted":
            self.print(f"stopped at step {step}; continue with: jaxtool train {os.path.join(run_dir, 'config.yaml')} --resume")
        return TrainResult(run_dir=run_dir, steps=step, status=status, last_metrics=last, eval_metrics=ev,
                           wall_s=wall, tokens_per_s=tokens_done / max(wall, 1e-9), hf_dir=hf_dir,
                           checkpoint_dir=ckpt_dir)

    def _postfix(self, m: dict) -> dict:
        out = {"loss": f"{m['loss']:.4f}", "tok/s": f"{m['tokens_per_s']:.0f}"}
        if "reward_margin" in m:
            out["margin"] = f"{m['reward_margin']:.3f}"
            out["acc"] = f"{m['accuracy']:.2f}"
        return out

    # ---------------------------------------------------------------------------------------
    # export
    # ---------------------------------------------------------------------------------------
    def _export_config(self) -> llama.LlamaConfig:
        return self.model_cfg.replace(lora_scale=1.0)

    def merged_params(self):
        if self.use_lora:
            return lora.merge(self.frozen, self.state.trainable, self.cfg.lora.alpha / self.cfg.lora.rank)
        return self.state.trainable

    def export_hf(self, out_dir: str) -> str:
        from jaxtool.convert import save_hf

        save_hf(out_dir, self._export_config(), jax.device_get(self.merged_params()), self.tokenizer, overwrite=True)
        self.print(f"exported HF model -> {out_dir}")
        return out_dir


def optimizer_state_shardings(abstract_opt_state, trainable_shardings, mesh):
    """Optimizer moments take the sharding of the parameter they track (matched by the parameter's
    key path at the end of the moment's path); counters and scalars are replicated."""
    by_path = {}
    for path, sh in jax.tree_util.tree_flatten_with_path(trainable_shardings)[0]:
        by_path[tuple(str(getattr(k, "key", k)) for k in path)] = sh
    depth = max((len(k) for k in by_path), default=0)

    def pick(path, leaf):
        keys = tuple(str(getattr(k, "key", k)) for k in path if hasattr(k, "key"))
        for n in range(depth, 0, -1):
            sh = by_path.get(keys[-n:])
            if sh is not None and len(sh.spec) <= len(leaf.shape):
                return sh
        return sharding.replicated(mesh)

    return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)


def plot_curves(metrics_path: str, out_png: str) -> str | None:
    """Loss, reward margin and preference accuracy (train and eval) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(ln) for ln in open(metrics_path) if ln.strip()]
    if not rows:
        return None
    keys = [k for k in ("loss", "reward_margin", "accuracy") if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys):
        for split, style in (("train", "-"), ("eval", "o--")):
            pts = [(r["step"], r[k]) for r in rows if r.get("split") == split and k in r]
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
