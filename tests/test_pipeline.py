"""Batching pipeline: deterministic order, every example exactly once per epoch, exact resume,
consistent sharding across processes, correct packing (segments, positions, no cross-segment
targets), aligned preference rows, and counted skips."""

import collections
import json

import numpy as np
import pytest

from formats_samples import chat_conv, functionchat_convs, weather_conv
from jaxtool.data.formats import get_format
from jaxtool.data.pipeline import BatchConfig, example_features, preference_batches, sft_batches
from jaxtool.data.tokenize import tokenize_conversation
from jaxtool.errors import ConfigError


def make_examples(n=37, seed=0, min_len=3, max_len=40):
    """Synthetic tokenized examples; token ids encode (example, position) so rows can be traced."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        ids = (np.arange(length) + 1000 * (i + 1)).astype(np.int32)
        mask = (rng.random(length) < 0.5).astype(np.int32)
        mask[-1] = 1
        turns = np.where(mask == 1, rng.integers(0, 3), -1).astype(np.int32)
        out.append({"input_ids": ids, "loss_mask": mask, "turn_ids": turns})
    return out


def example_of(token):
    return int(token) // 1000 - 1


def cfg(**kw):
    base = dict(global_batch_size=4, max_length=32, bucket_multiple=8, seed=3, process_index=0, process_count=1)
    base.update(kw)
    return BatchConfig(**base)


def rows_of(batch):
    """Example indices in each row, read back from the token ids (segment by segment)."""
    out = []
    for b in range(batch["inputs"].shape[0]):
        seg, row = batch["segment_ids"][b], []
        for s in range(1, seg.max() + 1):
            row.append(example_of(batch["inputs"][b][seg == s][0]))
        out.append(row)
    return out


def same(a, b):
    import jax

    la, lb = jax.tree_util.tree_flatten(a), jax.tree_util.tree_flatten(b)
    return la[1] == lb[1] and all(np.array_equal(x, y) for x, y in zip(la[0], lb[0]))


# ----------------------------------------------------------------------------------------------
# order, coverage, determinism
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("packing", [False, True])
def test_every_example_once_per_epoch_and_deterministic(packing):
    exs = make_examples()
    kept = [i for i, e in enumerate(exs) if len(e["input_ids"]) - 1 <= 32]
    ds = sft_batches(exs, cfg(packing=packing, num_epochs=2))
    batches = list(ds)
    seen = [i for b in batches for r in rows_of(b) for i in r]
    assert collections.Counter(seen) == collections.Counter(kept * 2)
    # epochs are reshuffled
    first, second = seen[: len(kept)], seen[len(kept):]
    if not packing:
        assert sorted(first) == sorted(kept) and first != second
    # same config -> same batches; another seed -> another order
    assert all(same(a, b) for a, b in zip(batches, list(sft_batches(exs, cfg(packing=packing, num_epochs=2)))))
    other = [i for b in sft_batches(exs, cfg(packing=packing, num_epochs=2, seed=4)) for r in rows_of(b) for i in r]
    assert other != seen


def test_no_shuffle_keeps_dataset_order():
    exs = make_examples(n=10, max_len=20)
    seen = [i for b in sft_batches(exs, cfg(shuffle=False)) for r in rows_of(b) for i in r]
    assert seen == list(range(10))


def test_padding_rows_and_buckets():
    exs = make_examples(n=10, max_len=30)
    ds = sft_batches(exs, cfg(global_batch_size=4))
    assert ds.plan.buckets == (8, 16, 24, 32)
    batches = list(ds)
    assert len(batches) == ds.num_batches == 3
    for batch in batches:
        L = batch["inputs"].shape[1]
        longest = max(len(exs[i]["input_ids"]) - 1 for r in rows_of(batch) for i in r)
        assert L in (8, 16, 24, 32) and L >= longest and (L == 8 or L - 8 < longest)
        for key in ("inputs", "targets", "loss_mask", "turn_ids", "positions", "segment_ids"):
            assert batch[key].dtype == np.int32 and batch[key].shape == batch["inputs"].shape
    # 10 examples, batch 4: the last batch is completed with 2 empty rows, reported
    assert rows_of(batches[-1])[2:] == [[], []]
    assert ds.report.empty_rows_last_batch == 2
    assert batches[-1]["loss_mask"][2:].sum() == 0 and (batches[-1]["segment_ids"][2:] == 0).all()


def test_drop_remainder_is_counted():
    ds = sft_batches(make_examples(n=10, max_len=30), cfg(global_batch_size=4, drop_remainder=True))
    assert len(list(ds)) == ds.num_batches == 2
    assert ds.report.remainder_dropped == 2 and "2 examples of the unfinished last batch dropped" in str(ds.report)


def test_features_of_a_padded_row_are_the_shifted_example():
    exs = make_examples(n=8, max_len=30)
    for batch in sft_batches(exs, cfg(global_batch_size=2)):
        for b, row in enumerate(rows_of(batch)):
            (i,) = row
            f = example_features(exs[i])
            n = len(f["inputs"])
            for key in ("inputs", "targets", "loss_mask", "turn_ids"):
                assert np.array_equal(batch[key][b, :n], f[key])
            assert np.array_equal(batch["positions"][b, :n], np.arange(n))
            assert (batch["segment_ids"][b, :n] == 1).all() and (batch["segment_ids"][b, n:] == 0).all()
            assert (batch["loss_mask"][b, n:] == 0).all() and (batch["turn_ids"][b, n:] == -1).all()
            assert np.array_equal(f["targets"][:-1], f["inputs"][1:])  # next-token targets


# ----------------------------------------------------------------------------------------------
# packing
# ----------------------------------------------------------------------------------------------

def test_packed_rows_reassemble_into_the_examples():
    exs = make_examples(n=40, max_len=20)
    ds = sft_batches(exs, cfg(packing=True, global_batch_size=3))
    n_segments = 0
    for batch in ds:
        assert batch["inputs"].shape == (3, 32)
        for b in range(3):
            seg = batch["segment_ids"][b]
            used = int((seg > 0).sum())
            assert (seg[:used] > 0).all() and (seg[used:] == 0).all()  # segments first, padding after
            for s in range(1, seg.max() + 1):
                sel = seg == s
                i = example_of(batch["inputs"][b][sel][0])
                f = example_features(exs[i])
                for key in ("inputs", "targets", "loss_mask", "turn_ids"):
                    assert np.array_equal(batch[key][b][sel], f[key])  # targets never cross a boundary
                assert np.array_equal(batch["positions"][b][sel], np.arange(sel.sum()))
                n_segments += 1
            assert (batch["loss_mask"][b][seg == 0] == 0).all() and (batch["turn_ids"][b][seg == 0] == -1).all()
    assert n_segments == ds.report.kept == 40
    # several examples share rows: packing actually packs
    assert n_segments > 2 * len(list(ds))


# ----------------------------------------------------------------------------------------------
# resume
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("preference", [False, True])
def test_resume_from_saved_state_sees_exactly_the_same_batches(packing, preference):
    exs = make_examples(n=30)
    if preference:
        others = make_examples(n=30, seed=1)
        ds = preference_batches(list(zip(exs, others)), cfg(packing=packing, num_epochs=2))
    else:
        ds = sft_batches(exs, cfg(packing=packing, num_epochs=2))
    reference = list(ds)
    assert len(reference) > 6
    for k in (0, 1, 5, len(reference) - 1, len(reference)):
        it = iter(ds)
        for _ in range(k):
            next(it)
        state = json.loads(json.dumps(it.get_state()))  # JSON-able, survives a checkpoint
        resumed = list(ds.iterator(state))
        assert len(resumed) == len(reference) - k
        assert all(same(a, b) for a, b in zip(resumed, reference[k:]))


def test_resume_with_endless_epochs():
    ds = sft_batches(make_examples(n=9, max_len=20), cfg(num_epochs=None))
    it = iter(ds)
    head = [next(it) for _ in range(7)]  # runs past the end of the first epoch
    state = it.get_state()
    nxt = [next(it) for _ in range(5)]
    again = ds.iterator(state)
    assert all(same(a, next(again)) for a in nxt)
    assert ds.num_batches is None and len(head) == 7


# ----------------------------------------------------------------------------------------------
# sharding
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("packing", [False, True])
def test_processes_split_the_global_batch_consistently(packing):
    exs = make_examples(n=45)
    single = list(sft_batches(exs, cfg(packing=packing, global_batch_size=4)))
    shards = [list(sft_batches(exs, cfg(packing=packing, global_batch_size=4, process_index=p, process_count=2)))
              for p in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(single)
    for step, full in enumerate(single):
        a, b = shards[0][step], shards[1][step]
        assert a["inputs"].shape == b["inputs"].shape == (2, full["inputs"].shape[1])
        for key in full:
            assert np.array_equal(np.concatenate([a[key], b[key]]), full[key])


def test_config_errors():
    with pytest.raises(ConfigError, match="not divisible by process_count 3"):
        sft_batches(make_examples(n=4), cfg(global_batch_size=4, process_count=3, process_index=0))
    with pytest.raises(ConfigError, match="process_index 2"):
        sft_batches(make_examples(n=4), cfg(process_index=2, process_count=2))
    with pytest.raises(ConfigError, match="reach max_length"):
        sft_batches(make_examples(n=4), cfg(buckets=(8, 16)))


def test_default_process_comes_from_jax():
    c = BatchConfig(global_batch_size=2, max_length=16)
    assert c.processes() == (0, 1)


# ----------------------------------------------------------------------------------------------
# skips, preference alignment, real tokenized data
# ----------------------------------------------------------------------------------------------

def test_unusable_examples_are_counted():
    exs = make_examples(n=5, max_len=20)
    long = {"input_ids": np.arange(40), "loss_mask": np.ones(40, np.int32), "turn_ids": np.zeros(40, np.int32)}
    untrained = {"input_ids": np.arange(5), "loss_mask": np.zeros(5, np.int32), "turn_ids": np.full(5, -1, np.int32)}
    single = {"input_ids": np.arange(1), "loss_mask": np.ones(1, np.int32), "turn_ids": np.zeros(1, np.int32)}
    ds = sft_batches(exs + [long, untrained, single], cfg())
    assert ds.report.kept == 5
    assert ds.report.skipped == {"too long": 1, "no trained tokens": 1, "shorter than 2 tokens": 1}
    assert "1 × too long" in str(ds.report)


@pytest.mark.parametrize("packing", [False, True])
def test_preference_rows_are_aligned(packing):
    chosen, rejected = make_examples(n=20, seed=5), make_examples(n=20, seed=6)
    rejected = [{**r, "input_ids": r["input_ids"] + 500} for r in rejected]  # tell them apart: x500 ids
    ds = preference_batches(list(zip(chosen, rejected)), cfg(packing=packing))
    assert ds.report.kept == sum(len(c["input_ids"]) <= 33 and len(r["input_ids"]) <= 33
                                 for c, r in zip(chosen, rejected))
    for batch in ds:
        c, r = batch["chosen"], batch["rejected"]
        assert c["inputs"].shape == r["inputs"].shape
        assert rows_of(c) == rows_of(r)  # row b holds the same pair(s) on both sides
        for b, row in enumerate(rows_of(c)):
            for s, i in enumerate(row, start=1):
                assert np.array_equal(c["targets"][b][c["segment_ids"][b] == s], chosen[i]["input_ids"][1:])
                assert np.array_equal(r["targets"][b][r["segment_ids"][b] == s], rejected[i]["input_ids"][1:])


def test_real_conversations_train_exactly_their_assistant_tokens(smollm2_tokenizer):
    """End to end: conversations -> hermes -> SmolLM2 ids -> packed batches; the targets under the
    loss mask decode to the assistant turns, in order, per turn id."""
    fmt, tok = get_format("hermes"), smollm2_tokenizer
    convs = [weather_conv(), chat_conv()] + functionchat_convs()
    exs = [tokenize_conversation(c, fmt, tok) for c in convs]
    ds = sft_batches(exs, BatchConfig(global_batch_size=2, max_length=2048, packing=True, shuffle=False,
                                      process_index=0, process_count=1))
    assert ds.report.kept == len(exs) and not ds.report.skipped
    got = []
    for batch in ds:
        for b in range(batch["inputs"].shape[0]):
            for s in range(1, batch["segment_ids"][b].max() + 1):
                sel = batch["segment_ids"][b] == s
                tgt, mask, turn = batch["targets"][b][sel], batch["loss_mask"][b][sel], batch["turn_ids"][b][sel]
                got.append([tok.decode(tgt[(mask == 1) & (turn == k)].tolist()) for k in range(turn.max() + 1)])
    expected = []
    for ex in exs:
        expected.append([tok.decode(ex.input_ids[ex.turn_ids == k].tolist()) for k in range(ex.n_turns)])
    assert sorted(map(tuple, got)) == sorted(map(tuple, expected))
    assert ("ok<|im_end|>",) * 3 in set(map(tuple, got))
