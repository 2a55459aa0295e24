"""`jaxtool rl`: the online loop — rollout -> reward -> advantage -> K update steps -> repeat.

    result = RLTrainer(load_config("configs/rl/smollm2_cpu.yaml", cls=RLConfig)).run()

One iteration (`rollout.prompts` tasks x `rollout.group_size` samples):
  1. rollout with the *current* trainable parameters — the rollout and the update read the same
     sharded arrays on the same mesh (for LoRA: the frozen base with the adapters attached), so there
     is no weight synchronisation step and no stale policy; `old_logps` are recomputed by one
     forward before the first update (exactly the sampling policy; ratio 1 at update 1);
  2. rewards (`jaxtool.rl.rewards`, weighted sum; per-turn allowed) and their verdicts counted;
  3. advantages (`jaxtool.rl.advantages`: sequence- or turn-level, group-relative);
  4. reference log-probs from frozen parameters (the LoRA base itself, or a frozen copy for full
     fine-tuning; skipped when beta = 0);
  5. `updates_per_rollout` optimizer steps (GRPO's mu) on the rollout batch with the registered
     objective (`loss.type`: grpo | dr_grpo | dapo);
  6. metrics to `RUN/metrics.jsonl` + TensorBoard, a checkpoint every `save_every` iterations.

Resume (`--resume`): params/adapters, optimizer state and the iteration are restored; the task
order and the sampling keys are functions of (seed, iteration) only, so a resumed run repeats
exactly what the uninterrupted run would have done (bit-identical on CPU).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time

import jax
import numpy as np

from jaxtool import checkpoint, sharding
from jaxtool.config import LoraConfig, LossConfig, MeshConfig, ModelConfig, OptimConfig, TrainConfig, dump_yaml, to_dict
from jaxtool.errors import CheckpointError, ConfigError, DataError
from jaxtool.models import lora
from jaxtool.rl import advantages as adv_mod
from jaxtool.rl import rewards as rew
from jaxtool.rl.rollout import rollout
from jaxtool.rl.step import aggregation_weights, make_update, policy_logps, token_advantages, trajectory_batch
from jaxtool.sample.generate import Sampling


@dataclasses.dataclass
class RLDataConfig:
    train: tuple[str, ...] = ()    # single-turn task sources ("xlam:path", conversations JSONL, "bundled")
    env_tasks: str = ""            # multi-turn tasks JSONL (see jaxtool.rl.tasks)
    format: str = "hermes"         # chat format of prompts, parsing and tool messages
    limit: int = 0                 # first N tasks of each source (0 = all)
    target: str = "first_call"     # which assistant turn of a source dialogue is the gold answer
    guard: str = "bfcl"            # drop BFCL test queries from the training tasks: bfcl | none
    guard_data: str = ""           # BFCL data directory ("" = the installed bfcl_eval package)
    max_prompt_tokens: int = 1024  # longer prompts are dropped and counted


@dataclasses.dataclass
class RolloutConfig:
    prompts: int = 4               # tasks per iteration
    group_size: int = 4            # G samples per task
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_turn_tokens: int = 128     # one assistant turn
    max_response_tokens: int = 256  # all response tokens (sampled + tool results)
    max_turns: int = 1             # assistant turns per trajectory (multi-turn env tasks: > 1)
    length_multiple: int = 32      # shape buckets (fewer compiles)
    dynamic_sampling: bool = False  # DAPO: replace zero-variance groups by resampled groups with variance
    max_resample_rounds: int = 3   # extra rollouts per iteration at most (dynamic_sampling)


@dataclasses.dataclass
class RewardConfig:
    functions: tuple[str, ...] = ("outcome",)   # entries of jaxtool.rl.rewards.REWARDS
    weights: tuple[float, ...] = (1.0,)
    advantage: str = "sequence"    # sequence | turn
    turn_gamma: float = 1.0        # discount of the turn-level return to go


@dataclasses.dataclass
class RLConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=1e-6, schedule="constant"))
    loss: LossConfig = dataclasses.field(default_factory=lambda: LossConfig(type="grpo"))
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    data: RLDataConfig = dataclasses.field(default_factory=RLDataConfig)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
    iterations: int = 10
    updates_per_rollout: int = 1   # K optimizer steps per rollout batch (GRPO's mu)
    seed: int = 0
    run_dir: str = "runs/rl"
    save_every: int = 0            # iterations; 0 = only at the end (and on SIGTERM/SIGINT)
    keep: int = 3
    progress: bool = True


def validate(c: RLConfig) -> None:
    def need(ok, key, msg):
        if not ok:
            raise ConfigError(f"{key} {msg}")
    need(c.loss.objective.kind == "rl", "loss.type", f"must be an RL objective (grpo, dr_grpo, dapo), got {c.loss.type!r}")
    need(c.rollout.group_size >= 2, "rollout.group_size", f"must be >= 2 (advantages are relative to the group), "
         f"got {c.rollout.group_size}")
    need(c.rollout.prompts >= 1, "rollout.prompts", f"must be >= 1, got {c.rollout.prompts}")
    need(c.rollout.max_turns >= 1, "rollout.max_turns", f"must be >= 1, got {c.rollout.max_turns}")
    need(c.rollout.max_turn_tokens >= 1 and c.rollout.max_response_tokens >= c.rollout.max_turn_tokens,
         "rollout.max_response_tokens", "must be >= rollout.max_turn_tokens >= 1")
    need(c.iterations >= 1, "iterations", f"must be >= 1, got {c.iterations}")
    need(c.updates_per_rollout >= 1, "updates_per_rollout", f"must be >= 1, got {c.updates_per_rollout}")
    need(len(c.reward.functions) == len(c.reward.weights) and c.reward.functions, "reward.weights",
         f"needs one weight per reward function ({len(c.reward.functions)}), got {len(c.reward.weights)}")
    for name in c.reward.functions:
        rew.get(name)
    need(c.reward.advantage in ("sequence", "turn"), "reward.advantage", f"must be sequence or turn, got {c.reward.advantage!r}")
    rows = c.rollout.prompts * c.rollout.group_size
    need(c.optim.grad_accum >= 1 and rows % c.optim.grad_accum == 0, "optim.grad_accum",
         f"must be >= 1 and divide rollout.prompts x rollout.group_size = {rows}, got {c.optim.grad_accum}")
    need(c.loss.params.aggregation in ("sequence_mean", "token_mean", "constant"), "loss.aggregation",
         f"must be sequence_mean, token_mean or constant, got {c.loss.params.aggregation!r}")


def train_config(c: RLConfig) -> TrainConfig:
    """The TrainConfig whose state code (`build_state`) the RL loop reuses."""
    loss = dataclasses.replace(c.loss, reference="online" if c.loss.params.beta else "precomputed")
    return TrainConfig(model=c.model, lora=c.lora, optim=c.optim, loss=loss, mesh=c.mesh, seed=c.seed,
                       run_dir=c.run_dir, keep=c.keep)


_UPDATES: dict = {}


def _process_rows(tree, mesh, rows: int):
    """This process's block of rows of a whole-batch pytree (`sharding.data_shard`)."""
    idx, count = sharding.data_shard(mesh, rows)
    if count == 1:
        return tree
    if rows % count:
        raise ConfigError(f"rollout.prompts x rollout.group_size = {rows} rows do not split over {count} process "
                          "blocks of the mesh: make it a multiple of the data x fsdp devices")
    k = rows // count
    return jax.tree.map(lambda x: np.asarray(x)[idx * k:(idx + 1) * k], tree)


class _NoLog:
    """The metrics log of processes other than 0 (process 0 writes the run's metrics)."""

    def write(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


@dataclasses.dataclass
class RLResult:
    run_dir: str
    iterations: int
    status: str
    history: list
    counts: dict
    wall_s: float


class RLTrainer:
    def __init__(self, cfg: RLConfig, printer=print, tasks=None, model=None):
        validate(cfg)
        self.cfg = cfg
        self.print = printer if jax.process_index() == 0 else (lambda *a, **k: None)
        self._tasks, self._model = tasks, model

    # -- setup --------------------------------------------------------------------------------
    def setup(self):
        from jaxtool.api import load_model
        from jaxtool.data.formats import get_format
        from jaxtool.train.state import build_state

        c = self.cfg
        t0 = time.time()
        model = self._model or load_model(
            c.model.path, dtype=c.model.param_dtype, compute_dtype=c.model.compute_dtype, remat=c.model.remat,
            lora_scale=(c.lora.alpha / c.lora.rank) if c.lora.enabled else 1.0, attention=c.model.attention,
            logits_chunk=c.model.logits_chunk)
        if model.tokenizer is None:
            raise CheckpointError(f"{c.model.path}: the model has no tokenizer; RL needs one")
        self.model_cfg, self.run_options, self.tokenizer = model.config, model.run, model.tokenizer
        self.fmt = get_format(c.data.format, tokenizer=self.tokenizer)
        self.print(f"model: {model} (loaded in {time.time() - t0:.1f}s)")
        self.counts: collections.Counter = collections.Counter()
        self.tasks = self._tasks if self._tasks is not None else self._load_tasks()
        self.prompt_ids = []
        kept = []
        for t in self.tasks:
            try:
                ids = self.tokenizer.encode(self.fmt.prompt(t.prompt), add_special_tokens=False)
            except DataError as e:
                self.counts[f"task: prompt does not render ({type(e).__name__})"] += 1
                continue
            if len(ids) > c.data.max_prompt_tokens:
                self.counts["task: prompt longer than data.max_prompt_tokens"] += 1
                continue
            kept.append(t)
            self.prompt_ids.append(ids)
        self.tasks = kept
        if len(self.tasks) < 1:
            raise DataError(f"no usable RL task (counts: {dict(self.counts)})")
        self.setup_ = build_state(train_config(c), model, c.iterations * c.updates_per_rollout, 0)
        self.state, self.mesh, self.frozen = self.setup_.state, self.setup_.mesh, self.setup_.frozen
        self.use_lora = c.lora.enabled
        hp = c.loss.params
        # one compiled update per (model, objective, optimizer, mesh) in a process (tests, resumed runs)
        key = (self.model_cfg, self.run_options, self.use_lora, c.loss.type, hp, repr(c.optim),
               c.iterations * c.updates_per_rollout, repr(self.setup_.state_shardings))
        if key not in _UPDATES:
            _UPDATES[key] = make_update(self.setup_.optimizer, cfg=self.model_cfg, run=self.run_options,
                                        use_lora=self.use_lora, obj=c.loss.objective, hp=hp,
                                        state_shardings=self.setup_.state_shardings,
                                        micro_batches=c.optim.grad_accum)
        self.update = _UPDATES[key]
        tok = self.tokenizer
        stops = {tok.eos_token_id} | {tok.convert_tokens_to_ids(s) for s in self.fmt.stop_strings
                                      if s in tok.get_vocab()}
        self.stop_ids = sorted(int(s) for s in stops if s is not None)
        self.pad_id = self.model_cfg.pad_token_id if self.model_cfg.pad_token_id is not None else 0
        self.print(f"{len(self.tasks)} tasks; trainable parameters {self.setup_.num_trainable / 1e6:.2f}M "
                   f"({'LoRA r=%d' % c.lora.rank if self.use_lora else 'full'}); mesh {dict(self.mesh.shape)}")

    def _load_tasks(self):
        from jaxtool.rl import tasks as T

        c = self.cfg
        if not (c.data.train or c.data.env_tasks):
            raise ConfigError("data.train (single-turn task sources) or data.env_tasks (multi-turn tasks) must name "
                              "the tasks")
        out = []
        if c.data.train:
            ts, report = T.source_tasks(c.data.train, self.fmt, target=c.data.target, limit=c.data.limit,
                                        guard=c.data.guard, guard_data=c.data.guard_data)
            self.print(str(report))
            for reason, n in report.dropped.items():
                self.counts[f"task: {reason}"] += n
            out += ts
        if c.data.env_tasks:
            from jaxtool.eval.tool_tasks import make_guard

            out += T.env_tasks(c.data.env_tasks, c.data.limit, guard=make_guard(c.data.guard, c.data.guard_data),
                               dropped=self.counts)
        return out

    # -- one iteration ------------------------------------------------------------------------
    def _task_indices(self, it: int) -> list[int]:
        """The tasks of iteration `it`: epochs of seeded permutations (a function of seed and it)."""
        n, k = len(self.tasks), self.cfg.rollout.prompts
        out = []
        pos = it * k
        while len(out) < k:
            epoch, off = divmod(pos, n)
            perm = np.random.default_rng([self.cfg.seed, epoch]).permutation(n)
            out.append(int(perm[off]))
            pos += 1
        return out

    def policy_params(self):
        """The parameters the rollout decodes with: the very arrays being trained (no copy, no sync)."""
        return lora.attach(self.frozen, self.state.trainable) if self.use_lora else self.state.trainable

    def _roll(self, idx: list[int], seed: int, counts) -> tuple[list, list, list]:
        """Rollout of tasks `idx` (G samples each) and their per-turn rewards: (tasks, trajs, rewards)."""
        c, r = self.cfg, self.cfg.rollout
        tasks = [self.tasks[i] for i in idx]
        sampling = Sampling(temperature=r.temperature, top_k=r.top_k, top_p=r.top_p)
        t0 = time.time()
        trajs = rollout(self.policy_params(), self.model_cfg, [self.prompt_ids[i] for i in idx], fmt=self.fmt,
                        tokenizer=self.tokenizer, group_size=r.group_size,
                        make_env=lambda p: tasks[p].make_env(), sampling=sampling, stop_ids=self.stop_ids,
                        max_turn_tokens=r.max_turn_tokens, max_response_tokens=r.max_response_tokens,
                        max_turns=r.max_turns, seed=seed, run=self.run_options, pad_id=self.pad_id,
                        length_multiple=r.length_multiple)
        self._t_rollout += time.time() - t0   # decoding (and tool calls) only; rewards are timed apart
        ctx = rew.RewardContext(self.fmt, counts)
        rewards = [rew.rewards_to_turns(tasks[t.prompt_index], t, c.reward.functions, c.reward.weights, ctx)
                   for t in trajs]
        return tasks, trajs, rewards

    def iteration(self, it: int) -> dict:
        c, r = self.cfg, self.cfg.rollout
        hp = c.loss.params
        idx = self._task_indices(it)
        G = r.group_size
        self._t_rollout = 0.0
        counts = collections.Counter()
        seed = int(np.random.default_rng([c.seed, it, 7]).integers(2**31))
        tasks, trajs, turn_rewards = self._roll(idx, seed, counts)
        if r.dynamic_sampling:
            # DAPO §3.2 (Yu et al. 2025, Eq. 11's constraint 0 < |{correct}| < G): a group whose samples
            # all got the same reward has advantage 0 and no policy gradient; over-sample fresh batches
            # of tasks and put their groups with reward variance in those slots, at most
            # `max_resample_rounds` extra rollouts. Tasks and keys of round k are functions of
            # (seed, iteration, k): a resumed run resamples the same way.
            def flat(g):
                return [x for grp in g for x in grp]

            def varied(rw):
                return len({round(sum(x), 9) for x in rw}) > 1

            g_tasks = list(tasks)
            g_trajs = [trajs[p * G:(p + 1) * G] for p in range(len(idx))]
            g_rew = [turn_rewards[p * G:(p + 1) * G] for p in range(len(idx))]
            for k in range(r.max_resample_rounds):
                empty = [p for p in range(len(idx)) if not varied(g_rew[p])]
                if not empty:
                    break
                rng = np.random.default_rng([c.seed, it, 11, k])
                extra_idx = rng.integers(0, len(self.tasks), size=len(idx)).tolist()
                scratch = collections.Counter()   # verdicts of groups not kept are not counted as trained
                e_tasks, e_trajs, e_rew = self._roll(extra_idx, int(rng.integers(2**31)), scratch)
                counts["dynamic sampling: extra rollouts"] += 1
                for q in range(len(extra_idx)):
                    grp = e_rew[q * G:(q + 1) * G]
                    if empty and varied(grp):
                        p = empty.pop(0)
                        g_tasks[p], g_trajs[p], g_rew[p] = e_tasks[q], e_trajs[q * G:(q + 1) * G], grp
                        counts["dynamic sampling: groups replaced"] += 1
            tasks, trajs, turn_rewards = g_tasks, flat(g_trajs), flat(g_rew)
            if any(not varied(g) for g in g_rew):
                counts["dynamic sampling: zero-variance groups kept (rounds exhausted)"] += sum(
                    not varied(g) for g in g_rew)
        t_roll = self._t_rollout
        for t in trajs:
            counts[f"finish: {t.finish}"] += 1
            if t.finish == "length":
                counts["bad: rollout never closed its turn"] += 1
            if t.finish == "env_error":
                counts["bad: environment error"] += 1
        for k, v in list(counts.items()):
            if k.endswith("gold unusable"):
                counts["bad: gold answer does not parse"] += v
        a_seq, a_turn, zero = adv_mod.compute_advantages(turn_rewards, G, mode=c.reward.advantage,
                                                         scale=hp.scale_advantages, ddof=hp.std_ddof,
                                                         gamma=c.reward.turn_gamma)
        if zero:
            counts["bad: zero-variance group"] += zero
        batch = trajectory_batch(trajs, self.pad_id, r.length_multiple)
        adv = token_advantages(batch, a_seq, a_turn)
        weights = aggregation_weights(batch, hp, r.max_response_tokens)
        t1 = time.time()
        with sharding.use_mesh(self.mesh):
            # every process holds the whole rollout (it ran the same host loop); each contributes the
            # rows its devices hold (one process: all of them)
            dev, adv_d, w_d = sharding.shard_batch(_process_rows((batch, adv, weights), self.mesh, len(trajs)),
                                                   self.mesh)
            kw = dict(cfg=self.model_cfg, run=self.run_options, use_lora=self.use_lora)
            # K = 1: old = current inside the step (no extra forward); K > 1: frozen before update 1
            old = policy_logps(self.state.trainable, self.frozen, dev, **kw) if c.updates_per_rollout > 1 else None
            ref = None
            if hp.beta:  # frozen reference: the LoRA base itself, or build_state's frozen copy
                rp = self.setup_.ref_params
                ref = policy_logps(lora.attach(rp, None) if self.use_lora else rp, None, dev,
                                   **{**kw, "use_lora": False})
            ms = []
            for _ in range(c.updates_per_rollout):
                self.state, m = self.update(self.state, self.frozen, dev, old, ref, adv_d, w_d)
                ms.append(sharding.to_host(m))
        t_upd = time.time() - t1
        totals = np.array([sum(x) for x in turn_rewards])
        groups = totals.reshape(-1, G)
        n_sampled = int(np.asarray(batch.loss_mask).sum())
        n_all = sum(len(t.prompt_ids) + len(t.ids) for t in trajs)
        last = ms[-1]
        rec = {"step": it + 1, "reward_mean": float(totals.mean()), "reward_std": float(groups.std(axis=1).mean()),
               "reward_group_std": [float(x) for x in groups.std(axis=1)],
               "kl": float(last["kl"]), "clip_fraction": float(np.mean([float(x["clipped"]) for x in ms])),
               "loss": float(last["loss"]), "grad_norm": float(last["grad_norm"]),
               "response_len": float(np.mean([t.num_sampled for t in trajs])),
               "turns": float(np.mean([t.num_turns for t in trajs])),
               "rollout_tokens_per_s": n_sampled / max(t_roll, 1e-9),
               "update_tokens_per_s": n_all * c.updates_per_rollout / max(t_upd, 1e-9),
               "rollout_s": t_roll, "update_s": t_upd, "counts": dict(counts)}
        self.counts.update(counts)
        self.last_trajs = trajs
        return rec

    # -- checkpoints --------------------------------------------------------------------------
    def _save(self, it: int) -> None:
        if it in self.ckpt.steps():
            return
        key = "adapters" if self.use_lora else "params"
        self.ckpt.save(it, {key: self.state.trainable, "opt_state": self.state.opt_state},
                       {"step": it, "num_tasks": len(self.tasks), "seed": self.cfg.seed})
        self.print(f"saved checkpoint iteration {it} -> {self.ckpt.dir}")

    def _restore(self) -> int:
        if self.ckpt.latest_step() is None:
            return 0
        key = "adapters" if self.use_lora else "params"
        abstract = {key: checkpoint.abstract_like(self.state.trainable),
                    "opt_state": checkpoint.abstract_like(self.state.opt_state)}
        step, items, meta, damaged = self.ckpt.restore_newest_good(abstract, verify="all", warn=self.print)
        if meta.get("num_tasks") not in (None, len(self.tasks)):
            raise CheckpointError(f"{self.ckpt.dir}: iteration {step} was saved with {meta['num_tasks']} tasks, this "
                                  f"run has {len(self.tasks)}; resume with the same data (or a new run_dir)")
        for bad in damaged:
            self.print(f"moved damaged checkpoint step {bad.step} aside -> {self.ckpt.quarantine(bad.step)}")
        from jaxtool.train.steps import TrainState

        self.state = TrainState(jax.device_put(np.asarray(step * self.cfg.updates_per_rollout, np.int32),
                                               self.setup_.state_shardings.step), items[key], items["opt_state"])
        return step

    # -- the run ------------------------------------------------------------------------------
    def run(self, resume: bool = False, interrupt_at: int | None = None) -> RLResult:
        from tqdm import tqdm

        from jaxtool.train.loop import SignalStop
        from jaxtool.train.metrics import MetricsLog

        c = self.cfg
        ckpt_dir = os.path.join(c.run_dir, "checkpoints")
        if not resume and os.path.isdir(ckpt_dir) and checkpoint.Checkpointer(ckpt_dir, create=False).steps():
            raise ConfigError(f"{c.run_dir} already holds checkpoints: pass --resume to continue it, "
                              "or choose another run_dir")
        if not hasattr(self, "state"):
            self.setup()
        os.makedirs(c.run_dir, exist_ok=True)
        if jax.process_index() == 0:
            with open(os.path.join(c.run_dir, "config.yaml"), "w") as fh:
                fh.write(dump_yaml(c))
        meta = {"kind": "rl", "base_model": c.model.path, "config": to_dict(c)}
        if self.use_lora:
            meta["lora"] = {"rank": c.lora.rank, "alpha": c.lora.alpha, "targets": list(c.lora.targets),
                            "scale": c.lora.alpha / c.lora.rank}
        checkpoint.write_meta(ckpt_dir, self.model_cfg, meta)
        if jax.process_index() == 0:
            self.tokenizer.save_pretrained(os.path.join(ckpt_dir, "tokenizer"))
        self.ckpt = checkpoint.Checkpointer(ckpt_dir, keep=c.keep)
        start = self._restore() if resume else 0
        if resume:
            self.print(f"resuming from iteration {start}" if start else "no checkpoint to resume: starting at 0")
        log = MetricsLog(c.run_dir, start) if jax.process_index() == 0 else _NoLog()  # one writer per run dir
        bar = tqdm(total=c.iterations, initial=start, desc="rl", unit="it", disable=not c.progress or jax.process_index() != 0, dynamic_ncols=True)
        history, status, it = [], "finished", start
        t_start = time.time()
        try:
            with SignalStop(self.print) as sig:
                while it < c.iterations:
                    rec = self.iteration(it)
                    it += 1
                    history.append(rec)
                    log.write({"split": "train", **{k: v for k, v in rec.items() if k not in ("counts", "reward_group_std")},
                               **{f"count/{k}": v for k, v in rec["counts"].items()}})
                    bar.update(1)
                    bar.set_postfix({"reward": f"{rec['reward_mean']:.3f}", "kl": f"{rec['kl']:.4f}"}, refresh=False)
                    if sig.requested or it == interrupt_at:
                        self._save(it)
                        status = "interrupted"
                        break
                    if c.save_every and it % c.save_every == 0 and it < c.iterations:
                        self._save(it)
                if status == "finished":
                    self._save(it)
        finally:
            bar.close()
            log.close()
            self.ckpt.wait()
        if jax.process_index() == 0:
            with open(os.path.join(c.run_dir, "counts.json"), "w") as fh:
                json.dump(dict(self.counts.most_common()), fh, indent=1)
        if status != "finished":
            self.print(f"stopped at iteration {it}; continue with: jaxtool rl --config {os.path.join(c.run_dir, 'config.yaml')} --resume")
        return RLResult(c.run_dir, it, status, history, dict(self.counts), time.time() - t_start)


__all__ = ["RLConfig", "RLDataConfig", "RolloutConfig", "RewardConfig", "RLTrainer", "RLResult", "validate",
           "train_config"]
