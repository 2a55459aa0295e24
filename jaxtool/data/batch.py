"""Typed batches: the one definition of what a training batch holds.

    Batch      : inputs, targets, loss_mask, turn_ids, positions, segment_ids  — each [B, L] int32
                 (targets are shifted by one; loss_mask 1 where a target is trained; turn_ids the
                 assistant-turn index of each trained target, -1 elsewhere; positions restart and
                 segment_ids count 1, 2, … per packed example, 0 = padding), plus index [B]: the
                 dataset example of each row (-1 for an empty row; the first example of a packed row).
    PairBatch  : chosen, rejected (two Batches with aligned rows), index [B], and ref (RefLogps | None).
    RefLogps   : reference log-probs per row — chosen_seq, rejected_seq [B], chosen_turns,
                 rejected_turns [B, T] — a column of the preference dataset gathered by `index`.

All three are registered pytree dataclasses (they go through `jax.jit`, `device_put` and
sharding like dicts did). `batch["inputs"]` reads a feature by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

FEATURES = ("inputs", "targets", "loss_mask", "turn_ids", "positions", "segment_ids")


class _ByName:
    def __getitem__(self, name: str):
        return getattr(self, name)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, name: str) -> bool:
        return any(f.name == name for f in dataclasses.fields(self)) and getattr(self, name) is not None

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch(_ByName):
    inputs: Any
    targets: Any
    loss_mask: Any
    turn_ids: Any
    positions: Any
    segment_ids: Any
    index: Any = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.inputs.shape)

    def features(self) -> dict:
        return {k: getattr(self, k) for k in FEATURES}

    @staticmethod
    def empty(rows: int, length: int, pad_id: int = 0) -> "Batch":
        """Host arrays of a padded batch with nothing in it (the pipeline fills rows in place)."""
        return Batch(inputs=np.full((rows, length), pad_id, np.int32),
                     targets=np.full((rows, length), pad_id, np.int32),
                     loss_mask=np.zeros((rows, length), np.int32),
                     turn_ids=np.full((rows, length), -1, np.int32),
                     positions=np.zeros((rows, length), np.int32),
                     segment_ids=np.zeros((rows, length), np.int32),
                     index=np.full((rows,), -1, np.int32))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RefLogps(_ByName):
    chosen_seq: Any
    rejected_seq: Any
    chosen_turns: Any
    rejected_turns: Any

    def side(self, name: str) -> dict:
        """{"seq", "turns"} of one side, the layout preference objectives read."""
        return {"seq": getattr(self, f"{name}_seq"), "turns": getattr(self, f"{name}_turns")}

    @staticmethod
    def zeros(n: int, max_turns: int) -> "RefLogps":
        T = max(max_turns, 1)
        return RefLogps(np.zeros(n, np.float32), np.zeros(n, np.float32),
                        np.zeros((n, T), np.float32), np.zeros((n, T), np.float32))

    def take(self, index) -> "RefLogps":
        """Rows `index` (−1 → zeros: empty rows carry no pair)."""
        idx = np.asarray(index)
        safe = np.maximum(idx, 0)
        keep = (idx >= 0).astype(np.float32)
        return RefLogps(self.chosen_seq[safe] * keep, self.rejected_seq[safe] * keep,
                        self.chosen_turns[safe] * keep[:, None], self.rejected_turns[safe] * keep[:, None])


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PairBatch(_ByName):
    chosen: Batch
    rejected: Batch
    index: Any = None
    ref: RefLogps | None = None

    def both(self) -> Batch:
        """Chosen rows then rejected rows as one [2B, L] batch (one forward for both sides)."""
        import jax.numpy as jnp

        return Batch(**{k: jnp.concatenate([getattr(self.chosen, k), getattr(self.rejected, k)], axis=0)
                        for k in FEATURES})
