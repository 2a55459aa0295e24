"""Optimizer and learning-rate schedule from `OptimConfig`: AdamW (Loshchilov & Hutter 2019) with
global-norm clipping, linear warmup, then linear decay / cosine decay / constant."""

from __future__ import annotations

import jax
import optax

from jaxtool.config import OptimConfig
from jaxtool.errors import ConfigError


def warmup_steps(cfg: OptimConfig, total_steps: int) -> int:
    if cfg.warmup_steps:
        return int(cfg.warmup_steps)
    return int(round(cfg.warmup_ratio * total_steps))


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    if cfg.lr < 0:
        raise ConfigError(f"optim.lr must be >= 0, got {cfg.lr}")
    total = max(1, int(total_steps))
    warm = min(warmup_steps(cfg, total), total)
    rest = max(1, total - warm)
    if cfg.schedule == "linear":
        after = optax.linear_schedule(cfg.lr, 0.0, rest)
    elif cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(cfg.lr, rest)
    elif cfg.schedule == "constant":
        after = optax.constant_schedule(cfg.lr)
    else:
        raise ConfigError(f"optim.schedule must be linear, cosine or constant, got {cfg.schedule!r}")
    if warm == 0:
        return after
    # as transformers' get_linear_schedule_with_warmup: lr * step / warm, reaching lr at step `warm`
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warm), after], [warm])


def make_optimizer(cfg: OptimConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    sched = schedule(cfg, total_steps)
    parts = []
    if cfg.grad_clip and cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    parts.append(optax.adamw(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                             mask=_norm_free_mask))
    return optax.chain(*parts), sched


def _norm_free_mask(params):
    """Weight decay on matrices only: not on norm weights (stacked norms are 2-D, hence the name test).

    Any pytree: a dict of arrays, or an `nnx.State` (whose leaves sit under `nnx.Param` nodes, so
    the name is the last dict key of the path), as `nnx.Optimizer(model, tx)` passes it."""

    def leaf(path, x):
        keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        return getattr(x, "ndim", 0) >= 2 and not (keys and str(keys[-1]).endswith("norm"))

    return jax.tree_util.tree_map_with_path(leaf, params)
