"""Training batches from tokenized conversations: deterministic, sharded per process, resumable.

Built on grain: the order of examples is a `grain.MapDataset` of example indices, shuffled by seed
(reshuffled every epoch) and repeated; a `BatchDataset` (a `grain.IterDataset`) turns that index
stream into numpy batches by **padding** each global batch to a length bucket or **packing**
several examples into each row. Its iterator has `get_state()` / `set_state()` (small JSON dicts),
so a resumed run continues with exactly the batches it would have seen.

SFT batches are `jaxtool.data.batch.Batch` (int32 `[B, L]` features, B = per-process batch size,
and `index [B]`, the dataset example of each row); preference batches are `PairBatch` (chosen and
rejected Batches with aligned rows, ready to be concatenated into one `[2B, L]` forward pass, plus
`index` and, once `with_reference` has attached the column, the rows' reference log-probs `ref`).
Each example of n tokens contributes n-1 (input, target) positions, so no target ever crosses into
the next packed example.

Multi-host: every process walks the same global index stream (it is cheap: indices and lengths),
builds the same *global* batch layout (bucket length, packing), and materialises only its own
contiguous block of rows `[process_index * B, (process_index + 1) * B)`. Shapes and step counts are
therefore identical on every process, and the local arrays are what
`jax.make_array_from_process_local_data` expects for a batch-sharded global array of
`global_batch_size` rows.

Nothing is dropped silently: examples longer than `max_length` (after the input/target shift) or
without any trained token are counted in `PipelineReport.skipped`; with `drop_remainder=True` the
examples of an unfinished last batch are counted in `remainder_dropped`; otherwise that batch is
completed with empty rows (all-zero `loss_mask`, `segment_ids` 0).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Sequence

import grain
import numpy as np

from jaxtool.data.batch import FEATURES, Batch, PairBatch, RefLogps
from jaxtool.data.tokenize import TokenizedConversation
from jaxtool.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """How to batch.

    global_batch_size: rows per step over all processes (B per process = global / process_count)
    max_length       : longest row L (input positions, i.e. tokens - 1 per example)
    packing          : pack several examples per row (first-fit) instead of one padded example per row
    buckets          : padding mode — allowed row lengths; default multiples of `bucket_multiple`
                       up to `max_length` (plus `max_length` itself). Fewer distinct shapes means fewer
                       recompiles; packing always uses L = max_length.
    seed, shuffle    : example order (reshuffled each epoch); shuffle=False keeps dataset order
    num_epochs       : passes over the data; None repeats forever
    drop_remainder   : padding mode, finite epochs: drop (and count) the examples of an unfinished
                       last batch instead of completing it with empty rows
    pad_id           : id written into padding positions of `inputs`/`targets`
    process_index/count: default `jax.process_index()` / `jax.process_count()`
    """

    global_batch_size: int
    max_length: int
    packing: bool = False
    buckets: tuple[int, ...] | None = None
    bucket_multiple: int = 128
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = 1
    drop_remainder: bool = False
    pad_id: int = 0
    process_index: int | None = None
    process_count: int | None = None

    def processes(self) -> tuple[int, int]:
        if self.process_index is None or self.process_count is None:
            import jax

            pi = jax.process_index() if self.process_index is None else self.process_index
            pc = jax.process_count() if self.process_count is None else self.process_count
        else:
            pi, pc = self.process_index, self.process_count
        return int(pi), int(pc)

    def bucket_sizes(self) -> tuple[int, ...]:
        if self.packing:
            return (self.max_length,)
        if self.buckets:
            return tuple(sorted(set(int(b) for b in self.buckets)))
        step = max(1, int(self.bucket_multiple))
        sizes = list(range(step, self.max_length + 1, step))
        if not sizes or sizes[-1] != self.max_length:
            sizes.append(self.max_length)
        return tuple(sizes)

    def validate(self) -> "BatchConfig":
        pi, pc = self.processes()
        if self.global_batch_size <= 0:
            raise ConfigError(f"global_batch_size must be positive, got {self.global_batch_size}")
        if self.max_length < 1:
            raise ConfigError(f"max_length must be positive, got {self.max_length}")
        if pc < 1 or not 0 <= pi < pc:
            raise ConfigError(f"process_index {pi} is not in [0, process_count={pc})")
        if self.global_batch_size % pc:
            raise ConfigError(f"global_batch_size {self.global_batch_size} is not divisible by "
                              f"process_count {pc}")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ConfigError(f"num_epochs must be >= 1 or None, got {self.num_epochs}")
        sizes = self.bucket_sizes()
        if sizes[0] < 1 or sizes[-1] < self.max_length:
            raise ConfigError(f"buckets {list(sizes)} must be positive and reach max_length {self.max_length}")
        return self


@dataclasses.dataclass
class PipelineReport:
    """What went into the batches and what did not (by reason)."""

    examples: int = 0
    kept: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    remainder_dropped: int = 0
    empty_rows_last_batch: int = 0  # padding mode, finite epochs, drop_remainder=False

    def summary(self) -> dict:
        return {"examples": self.examples, "kept": self.kept, "skipped": dict(self.skipped),
                "remainder_dropped": self.remainder_dropped, "empty_rows_last_batch": self.empty_rows_last_batch}

    def __str__(self) -> str:
        lines = [f"batching: {self.examples} examples, {self.kept} used, {sum(self.skipped.values())} skipped"]
        lines += [f"  {n:6d} × {reason}" for reason, n in self.skipped.most_common()]
        if self.remainder_dropped:
            lines.append(f"  {self.remainder_dropped} examples of the unfinished last batch dropped (drop_remainder)")
        if self.empty_rows_last_batch:
            lines.append(f"  last batch completed with {self.empty_rows_last_batch} empty rows")
        return "\n".join(lines)


def example_features(ex: TokenizedConversation | dict) -> dict[str, np.ndarray]:
    """Shift one example into (inputs, targets, loss_mask, turn_ids), each of length n-1."""
    if isinstance(ex, TokenizedConversation):
        ids, mask, turns = ex.input_ids, ex.loss_mask, ex.turn_ids
    else:
        ids, mask, turns = (np.asarray(ex[k]) for k in ("input_ids", "loss_mask", "turn_ids"))
    ids = np.asarray(ids, dtype=np.int32)
    return {
        "inputs": ids[:-1],
        "targets": ids[1:],
        "loss_mask": np.asarray(mask, dtype=np.int32)[1:],
        "turn_ids": np.asarray(turns, dtype=np.int32)[1:],
    }


def _check(feats: dict, max_length: int) -> str | None:
    n = len(feats["inputs"])
    if n < 1:
        return "shorter than 2 tokens"
    if n > max_length:
        return "too long"
    if not feats["loss_mask"].any():
        return "no trained tokens"
    return None


@dataclasses.dataclass
class _Plan:
    """Everything the batch iterator needs, shared by all its copies."""

    streams: list[list[dict]]  # [stream][item] -> features (1 stream: SFT, 2: chosen/rejected)
    lengths: np.ndarray  # [stream, item]
    config: BatchConfig
    process_index: int
    process_count: int
    buckets: tuple[int, ...]
    ref: RefLogps | None = None   # per-example reference log-probs (preference data), gathered by index

    @property
    def local_batch(self) -> int:
        return self.config.global_batch_size // self.process_count

    def bucket(self, need: int) -> int:
        for b in self.buckets:
            if b >= need:
                return b
        return self.buckets[-1]

    def build(self, rows: list[list[int]], length: int) -> Batch | PairBatch:
        cfg = self.config
        index = np.array([row[0] if row else -1 for row in rows], np.int32)
        out = []
        for s, feats in enumerate(self.streams):
            batch = Batch.empty(len(rows), length, cfg.pad_id)
            for b, row in enumerate(rows):
                off = 0
                for seg, item in enumerate(row, start=1):
                    f = feats[item]
                    n = len(f["inputs"])
                    for key in ("inputs", "targets", "loss_mask", "turn_ids"):
                        batch[key][b, off:off + n] = f[key]
                    batch.positions[b, off:off + n] = np.arange(n, dtype=np.int32)
                    batch.segment_ids[b, off:off + n] = seg
                    off += n
            out.append(batch.replace(index=index))
        if len(out) == 1:
            return out[0]
        return PairBatch(out[0], out[1], index=index, ref=self.ref.take(index) if self.ref is not None else None)


class BatchIterator(grain.DatasetIterator):
    """Iterator over batches. `get_state()` is a JSON-able dict; `set_state()` resumes from it.

    `last_rows` holds, for the last batch, the dataset indices of the examples in each local row
    (the batch's `index` holds the first of each row).
    """

    def __init__(self, parent: grain.DatasetIterator, plan: _Plan):
        super().__init__(parent)
        self._plan = plan
        self._pending: tuple[int, Any] | None = None  # an example read but not yet placed, + state before it
        self.last_rows: list[list[int]] = []

    def _read(self) -> tuple[int | None, Any]:
        before = self._parent.get_state()
        try:
            return int(next(self._parent)), before
        except StopIteration:
            return None, before

    def __next__(self) -> Batch | PairBatch:
        plan = self._plan
        G = plan.config.global_batch_size
        if plan.config.packing:
            rows, length = self._pack(G, plan.config.max_length)
        else:
            items: list[int] = []
            while len(items) < G:
                item, _ = self._read()
                if item is None:
                    break
                items.append(item)
            if not items:
                raise StopIteration
            rows = [[i] for i in items] + [[] for _ in range(G - len(items))]
            length = plan.bucket(int(plan.lengths[:, items].max()))
        p, B = plan.process_index, plan.local_batch
        local = rows[p * B:(p + 1) * B]
        self.last_rows = [list(r) for r in local]
        return plan.build(local, length)

    def _pack(self, G: int, L: int) -> tuple[list[list[int]], int]:
        plan = self._plan
        used = np.zeros((plan.lengths.shape[0], G), np.int64)
        rows: list[list[int]] = [[] for _ in range(G)]
        placed = 0
        while True:
            if self._pending is not None:
                item, before = self._pending
                self._pending = None
            else:
                item, before = self._read()
                if item is None:
                    break
            need = plan.lengths[:, item][:, None]
            fits = np.all(used + need <= L, axis=0)
            if not fits.any():
                self._pending = (item, before)  # opens the next batch
                break
            r = int(np.argmax(fits))  # first fit
            rows[r].append(item)
            used[:, r] += need[:, 0]
            placed += 1
        if placed == 0:
            raise StopIteration
        return rows, L

    def get_state(self) -> dict:
        parent = self._pending[1] if self._pending is not None else self._parent.get_state()
        return {"parent": _jsonable(parent)}

    def set_state(self, state: dict) -> None:
        self._parent.set_state(state["parent"])
        self._pending = None


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    return x


class BatchDataset(grain.IterDataset):
    """A `grain.IterDataset` of batches (see module docstring). Iterate it, or call `iterator(state)`.

    report      : `PipelineReport` — examples used and skipped
    num_batches : batches per run for finite epochs in padding mode (None otherwise)
    """

    def __init__(self, streams: list[list[dict]], config: BatchConfig, report: PipelineReport):
        config.validate()
        pi, pc = config.processes()
        n = len(streams[0])
        lengths = np.array([[len(f["inputs"]) for f in feats] for feats in streams], dtype=np.int64).reshape(len(streams), n)
        order = grain.MapDataset.range(n)
        if config.shuffle and n:
            order = order.shuffle(seed=config.seed)
        order = order.repeat(config.num_epochs)
        self.num_batches = None
        G = config.global_batch_size
        if config.num_epochs is not None and not config.packing:
            total = n * config.num_epochs
            if config.drop_remainder:
                report.remainder_dropped = total % G
                order = order[: total - total % G]
                self.num_batches = total // G
            else:
                report.empty_rows_last_batch = (G - total % G) % G
                self.num_batches = -(-total // G)
        super().__init__(order.to_iter_dataset())
        self.plan = _Plan(streams, lengths, config, pi, pc, config.bucket_sizes())
        self.report = report
        self.config = config

    @property
    def local_batch_size(self) -> int:
        """Rows per batch on this process (global_batch_size / process_count)."""
        return self.plan.local_batch

    def __iter__(self) -> BatchIterator:
        return BatchIterator(self._parent.__iter__(), self.plan)

    def iterator(self, state: dict | None = None) -> BatchIterator:
        it = self.__iter__()
        if state is not None:
            it.set_state(state)
        return it

    def __len__(self) -> int:
        """Examples (pairs) kept in the dataset."""
        return len(self.plan.streams[0])

    def with_reference(self, ref: RefLogps) -> "BatchDataset":
        """Attach per-example reference log-probs (arrays over the dataset's examples, in dataset
        order): every PairBatch then carries its rows' values as `batch.ref`, joined by index."""
        if len(self.plan.streams) != 2:
            raise ConfigError("reference log-probs apply to preference data only")
        if len(ref.chosen_seq) != len(self):
            raise ConfigError(f"reference log-probs cover {len(ref.chosen_seq)} pairs, the dataset holds {len(self)}")
        self.plan.ref = ref
        return self

    def one_pass(self) -> "BatchDataset":
        """The same examples once, in dataset order, no shuffle (e.g. a reference precompute pass)."""
        cfg = dataclasses.replace(self.config, shuffle=False, num_epochs=1, drop_remainder=False)
        return BatchDataset(self.plan.streams, cfg, self.report)

    def __str__(self) -> str:
        c = self.config
        mode = "packed" if c.packing else f"padded to buckets {list(self.plan.buckets)}"
        return (f"BatchDataset({len(self.plan.streams[0])} examples, global batch {c.global_batch_size}, "
                f"process {self.plan.process_index}/{self.plan.process_count}, {mode})")


def sft_batches(examples: Sequence[TokenizedConversation | dict], config: BatchConfig) -> BatchDataset:
    """SFT batches from tokenized examples (`TokenizedConversation` or dicts with input_ids,
    loss_mask, turn_ids). Examples that cannot train are skipped and counted in `.report`."""
    config.validate()
    report = PipelineReport(examples=len(examples))
    feats = []
    for ex in examples:
        f = example_features(ex)
        why = _check(f, config.max_length)
        if why:
            report.skipped[why] += 1
            continue
        feats.append(f)
    report.kept = len(feats)
    return BatchDataset([feats], config, report)


def preference_batches(pairs: Sequence[tuple[TokenizedConversation | dict, TokenizedConversation | dict]],
                       config: BatchConfig) -> BatchDataset:
    """Preference batches `{"chosen", "rejected"}` with aligned rows. A pair is skipped (counted) when
    either side cannot train."""
    config.validate()
    report = PipelineReport(examples=len(pairs))
    chosen, rejected = [], []
    for c, r in pairs:
        fc, fr = example_features(c), example_features(r)
        why = _check(fc, config.max_length) or _check(fr, config.max_length)
        if why:
            report.skipped[why] += 1
            continue
        chosen.append(fc)
        rejected.append(fr)
    report.kept = len(chosen)
    return BatchDataset([chosen, rejected], config, report)
