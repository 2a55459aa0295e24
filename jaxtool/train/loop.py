"""The training loop, on one screen: next batch → jitted step → hooks.

    state, step, status = run_loop(state, batches, step_fn, start=0, total=N, hooks=hooks)

`step_fn(state, host_batch) -> (state, metrics)` is the jitted step (sharding included); `hooks`
(a `Hooks`) decides what happens around it — logging, evaluation, checkpoints, signals — so
applications (the iTool loop, experiments) reuse the same loop with their own hooks.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from typing import Callable

import jax

from jaxtool.errors import JaxtoolError


class NonFiniteLoss(JaxtoolError):
    """The loss or gradient norm became NaN/Inf: the run stops before saving a broken state."""


@dataclasses.dataclass
class Hooks:
    on_metrics: Callable[[int, dict], None] = lambda step, m: None   # log / progress bar
    on_step_end: Callable[[int], None] = lambda step: None           # evaluation, periodic checkpoints
    on_interrupt: Callable[[int], None] = lambda step: None          # checkpoint before stopping
    stop_requested: Callable[[int], bool] = lambda step: False       # SIGTERM/SIGINT or a test's interrupt


def run_loop(state, batches, step_fn, *, start: int, total: int, hooks: Hooks):
    """Run steps start+1 .. total (fewer if `batches` ends). Returns (state, last step, status)."""
    step = start
    while step < total:
        batch = next(batches, None)
        if batch is None:
            break
        t0 = time.time()
        state, metrics = step_fn(state, batch)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        step += 1
        metrics.update(step=step, step_s=time.time() - t0)
        if not (math.isfinite(metrics["loss"]) and math.isfinite(metrics.get("grad_norm", 0.0))):
            raise NonFiniteLoss(f"step {step}: loss {metrics['loss']}, grad norm {metrics.get('grad_norm')} — "
                                "stopping without saving (lower optim.lr, check the data, or enable optim.grad_clip)")
        hooks.on_metrics(step, metrics)
        if hooks.stop_requested(step):
            hooks.on_interrupt(step)
            return state, step, "interrupted"
        hooks.on_step_end(step)
    return state, step, "finished"


class SignalStop:
    """SIGTERM / SIGINT (a preemption notice, Ctrl-C) → stop after the current step. Use as a context."""

    def __init__(self, printer=print):
        self.requested = False
        self.print = printer
        self._old = {}

    def _handle(self, signum, _frame):
        self.print(f"\nreceived {signal.Signals(signum).name}: saving a checkpoint after this step")
        self.requested = True

    def __enter__(self):
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread
            self._old = {}
        return self

    def __exit__(self, *exc):
        for sig, h in self._old.items():
            signal.signal(sig, h)
        return False
