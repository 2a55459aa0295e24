"""Checkpoint integrity (issue 17, items 8, 10, 13, 16, 17, 19): a manifest per step, checked on
restore; a damaged step is named (step and file) and a resumed run falls back to the newest intact
step; the parameters convert even when only the training metadata is damaged; resuming with other
data or another batch size is refused.

Damage is made by the test itself (a flipped bit, a truncation, a deleted file) and the expected
hashes are computed here with hashlib, independently of jaxtool's manifest code."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from jaxtool import checkpoint
from jaxtool.errors import CheckpointCorruptError, CheckpointError

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "fixtures", "diatool", "seeds.jsonl")


def tree(step: int) -> dict:
    return {"w": jnp.arange(4096, dtype=jnp.float32) * step, "b": {"x": jnp.full((32, 8), float(step))}}


def abstract() -> dict:
    return checkpoint.abstract_like(tree(1))


def files_of(step_dir: str, item: str = "") -> list[str]:
    """Paths relative to the step directory, '/'-separated, the manifest excluded."""
    root = os.path.join(step_dir, item) if item else step_dir
    out = [os.path.relpath(p, step_dir).replace(os.sep, "/") for p in glob.glob(os.path.join(root, "**"), recursive=True)
           if os.path.isfile(p)]
    return sorted(f for f in out if f != checkpoint.MANIFEST)


def flip_bit(path: str, rng: random.Random) -> None:
    data = bytearray(open(path, "rb").read())
    i = rng.randrange(len(data))
    data[i] ^= 1 << rng.randrange(8)
    open(path, "wb").write(bytes(data))


def damage(path: str, how: str, rng: random.Random) -> None:
    if how == "bit flip":
        flip_bit(path, rng)
    elif how == "truncated":
        os.truncate(path, os.path.getsize(path) // 2)
    else:
        os.remove(path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint directory with steps 1, 2, 3 (params, opt_state, meta), kept pristine: tests copy it."""
    d = str(tmp_path_factory.mktemp("ck") / "run")
    ck = checkpoint.Checkpointer(d, keep=5)
    for s in (1, 2, 3):
        ck.save(s, {"params": tree(s), "opt_state": {"m": jnp.zeros(16) + s}}, {"step": s, "data_state": {"i": s}})
    ck.close()
    return d


@pytest.fixture
def ck_dir(saved, tmp_path):
    d = str(tmp_path / "run")
    shutil.copytree(saved, d)
    return d


def test_manifest_lists_every_file_with_size_and_sha256(ck_dir):
    for s in (1, 2, 3):
        step_dir = os.path.join(ck_dir, str(s))
        manifest = json.load(open(os.path.join(step_dir, checkpoint.MANIFEST)))
        assert manifest["hash"] == "sha256" and manifest["step"] == s
        want = {}
        for rel in files_of(step_dir):
            data = open(os.path.join(step_dir, rel), "rb").read()
            want[rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        assert manifest["files"] == want
        assert any(r.startswith("params/") for r in want) and any(r.startswith("meta/") for r in want)
        newest = max(os.path.getmtime(os.path.join(step_dir, r)) for r in want)
        assert os.path.getmtime(os.path.join(step_dir, checkpoint.MANIFEST)) >= newest  # written last


@pytest.mark.parametrize("how", ["bit flip", "truncated", "deleted"])
def test_any_damage_to_a_params_file_is_named_with_step_and_file(ck_dir, how):  # 8, 16
    rng = random.Random(f"{how}")
    step_dir = os.path.join(ck_dir, "3")
    pristine = step_dir + ".orig"
    shutil.copytree(step_dir, pristine)
    names = files_of(step_dir, "params")
    assert len(names) >= 5
    for rel in names:
        shutil.rmtree(step_dir)
        shutil.copytree(pristine, step_dir)
        damage(os.path.join(step_dir, rel), how, rng)
        ck = checkpoint.Checkpointer(ck_dir, create=False)
        with pytest.raises(CheckpointCorruptError) as e:
            ck.restore({"params": abstract()}, 3)
        ck.close()
        assert e.value.step == 3 and e.value.file == rel
        assert f"checkpoint step 3 is damaged: {rel}: " in str(e.value)


def test_single_bit_flips_in_parameter_data_never_load(ck_dir):  # 16: the 18 trials
    rng = random.Random(16)
    step_dir = os.path.join(ck_dir, "3")
    pristine = step_dir + ".orig"
    shutil.copytree(step_dir, pristine)
    data_files = [r for r in files_of(step_dir, "params") if os.path.getsize(os.path.join(step_dir, r)) > 1000]
    for _ in range(18):
        shutil.rmtree(step_dir)
        shutil.copytree(pristine, step_dir)
        rel = rng.choice(data_files)
        flip_bit(os.path.join(step_dir, rel), rng)
        ck = checkpoint.Checkpointer(ck_dir, create=False)
        with pytest.raises(CheckpointCorruptError, match="sha256 mismatch"):
            ck.restore({"params": abstract()}, 3)
        ck.close()


def test_restore_falls_back_to_the_newest_intact_step(ck_dir):  # 19
    rng = random.Random(19)
    damage(os.path.join(ck_dir, "3", files_of(os.path.join(ck_dir, "3"), "params")[-1]), "bit flip", rng)
    warned = []
    ck = checkpoint.Checkpointer(ck_dir, create=False)
    step, items, meta, bad = ck.restore_newest_good({"params": abstract()}, warn=warned.append)
    assert step == 2 and meta == {"step": 2, "data_state": {"i": 2}} and [e.step for e in bad] == [3]
    np.testing.assert_array_equal(items["params"]["w"], np.arange(4096, dtype=np.float32) * 2)
    assert "checkpoint step 3 is damaged: params/" in warned[0] and "falling back to step 2" in warned[1]
    # every step damaged: one error naming each
    for s in (1, 2):
        damage(os.path.join(ck_dir, str(s), "meta", "metadata"), "truncated", rng)
    with pytest.raises(CheckpointCorruptError, match=r"no intact checkpoint step to restore: step 3: params/.*"
                                                     r"step 2: meta/metadata; step 1: meta/metadata"):
        ck.restore_newest_good({"params": abstract()}, warn=warned.append)
    ck.close()


def test_damaged_training_metadata_does_not_block_the_parameters(ck_dir):  # 19
    for rel in files_of(os.path.join(ck_dir, "3"), "meta") + files_of(os.path.join(ck_dir, "3"), "opt_state"):
        open(os.path.join(ck_dir, "3", rel), "wb").write(b"\x00garbage")
    ck = checkpoint.Checkpointer(ck_dir, create=False)
    items, meta = ck.restore({"params": abstract()}, 3, with_meta=False)
    np.testing.assert_array_equal(items["params"]["w"], np.arange(4096, dtype=np.float32) * 3)
    with pytest.raises(CheckpointCorruptError, match="step 3 is damaged: meta/"):
        ck.restore({"params": abstract()}, 3)
    with pytest.raises(CheckpointCorruptError, match="step 3 is damaged: (meta|opt_state)/"):
        ck.restore({"params": abstract()}, 3, with_meta=False, verify="all")
    ck.close()


def test_a_step_without_manifest_restores_and_an_unreadable_one_is_named(ck_dir):
    step_dir = os.path.join(ck_dir, "3")
    os.remove(os.path.join(step_dir, checkpoint.MANIFEST))  # an older jaxtool's step
    ck = checkpoint.Checkpointer(ck_dir, create=False)
    items, _ = ck.restore({"params": abstract()}, 3)
    np.testing.assert_array_equal(items["params"]["w"], np.arange(4096, dtype=np.float32) * 3)
    biggest = max(files_of(step_dir, "params"), key=lambda r: os.path.getsize(os.path.join(step_dir, r)))
    os.remove(os.path.join(step_dir, biggest))
    with pytest.raises(CheckpointCorruptError, match="checkpoint step 3 could not be read") as e:
        ck.restore({"params": abstract()}, 3)
    assert e.value.step == 3
    ck.close()


def test_async_save_gets_its_manifest_and_quarantine_frees_the_step(tmp_path):
    d = str(tmp_path / "run")
    ck = checkpoint.Checkpointer(d, keep=5)
    ck.save(1, {"params": tree(1)}, {"step": 1}, wait=False)
    ck.save(2, {"params": tree(2)}, {"step": 2}, wait=False)  # the first save's manifest is written here
    assert os.path.isfile(os.path.join(d, "1", checkpoint.MANIFEST))
    ck.wait()
    assert ck.verify(2) is True
    moved = ck.quarantine(2)
    assert moved.endswith("2.damaged") and os.path.isdir(moved) and ck.steps() == [1]
    ck.save(2, {"params": tree(5)}, {"step": 2})  # the step number can be written again
    items, _ = ck.restore({"params": abstract()}, 2)
    np.testing.assert_array_equal(items["params"]["w"], np.arange(4096, dtype=np.float32) * 5)
    ck.close()


# -- through the public entry points: jaxtool.load_model and `jaxtool convert` ---------------------

@pytest.fixture(scope="module")
def run_ckpt(tmp_path_factory):
    """A full fine-tuning run's checkpoint directory (tiny Llama): steps 1 and 2 of params + optimizer
    state + training meta, as the Trainer writes them."""
    import jax

    from jaxtool.models import llama
    from jaxtool.models.family import family_of

    cfg = llama.preset("tiny")
    d = str(tmp_path_factory.mktemp("run") / "checkpoints")
    checkpoint.write_meta(d, cfg, {"kind": "train", "base_model": "tiny"})
    ck = checkpoint.Checkpointer(d, keep=3)
    params = {}
    for s in (1, 2):
        params[s] = family_of(cfg).init_params(cfg, jax.random.key(s))
        ck.save(s, {"params": params[s], "opt_state": {"mu": jax.tree.map(jnp.zeros_like, params[s])}},
                {"step": s, "data_state": {"next": s}})
    ck.close()
    return d, cfg, params


def test_convert_names_a_damaged_step_and_exports_when_only_meta_is_damaged(run_ckpt, tmp_path, capsys, caplog):  # 8, 19
    from safetensors.numpy import load_file

    from jaxtool import cli

    src, cfg, params = run_ckpt
    d = str(tmp_path / "checkpoints")
    shutil.copytree(src, d)
    big = max(files_of(os.path.join(d, "2"), "params"), key=lambda r: os.path.getsize(os.path.join(d, "2", r)))
    os.truncate(os.path.join(d, "2", big), 100)
    rc = cli.main(["convert", "orbax-to-hf", "--ckpt", d, "--out", str(tmp_path / "hf2"), "--step", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and f"checkpoint step 2 is damaged: {big}: file is 100 bytes" in err
    # without --step: the newest intact step, and it says so
    rc = cli.main(["convert", "orbax-to-hf", "--ckpt", d, "--out", str(tmp_path / "hf1")])
    assert rc == 0 and "falling back to step 1" in caplog.text and "step 2 is damaged" in caplog.text
    emb = load_file(os.path.join(tmp_path / "hf1", "model.safetensors"))["model.embed_tokens.weight"]
    np.testing.assert_array_equal(emb, np.asarray(params[1]["embed"]))
    # step 1's training metadata damaged: its parameters still convert
    shutil.rmtree(d)
    shutil.copytree(src, d)
    for rel in files_of(os.path.join(d, "1"), "meta"):
        open(os.path.join(d, "1", rel), "w").write('{"step": 1, "data_st')
    rc = cli.main(["convert", "orbax-to-hf", "--ckpt", d, "--out", str(tmp_path / "hfm"), "--step", "1"])
    assert rc == 0, capsys.readouterr().err
    emb = load_file(os.path.join(tmp_path / "hfm", "model.safetensors"))["model.embed_tokens.weight"]
    np.testing.assert_array_equal(emb, np.asarray(params[1]["embed"]))


@pytest.mark.parametrize("content", [b"{oops", b'{"format": "jax\xfftool"}', b"[1, 2]",
                                     b'{"format": "jaxtool", "model": 5}',
                                     b'{"format": "jaxtool", "model": {"vocab_size": 8}}'])
def test_damaged_checkpoint_metadata_file_is_a_named_error(run_ckpt, tmp_path, content):
    import jaxtool

    src, _, _ = run_ckpt
    d = str(tmp_path / "checkpoints")
    shutil.copytree(src, d)
    open(os.path.join(d, checkpoint.META_FILE), "wb").write(content)
    with pytest.raises(CheckpointError, match=checkpoint.META_FILE):
        jaxtool.load_model(d)


# -- a training run: load report, resume checks, fallback ------------------------------------------

def _rows(n0, n1):
    with open(SEEDS, encoding="utf-8") as fh:
        return [json.loads(ln) for ln in fh][n0:n1]


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """Three SFT steps (a checkpoint at each) on data with two bad rows, skipped."""
    from jaxtool.config import load_config
    from jaxtool.train.trainer import Trainer

    root = tmp_path_factory.mktemp("train")
    data = root / "sft.jsonl"
    with open(data, "wb") as fh:
        for r in _rows(0, 6):
            fh.write((json.dumps(r) + "\n").encode())
        fh.write(b"{not json\n[1, 2]\n")
    other = root / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in _rows(6, 12)))
    base = [f"model.path={tiny_model_dir}", f"run_dir={root / 'run'}", "progress=false", "data.format=hermes",
            "data.max_length=512", "data.bucket_multiple=64", "batch_size=2", "save_every=1", "keep=5",
            "optim.lr=1e-3", "data.shuffle=false", "data.on_bad_row=skip", "epochs=3"]

    def make(*extra, data_path=data, printer=None):
        cfg = load_config(None, base + [f"data.train=conversations:{data_path}", *extra])
        return Trainer(cfg, printer=printer or (lambda *a, **k: None))

    lines: list[str] = []
    result = make("max_steps=3", printer=lambda *a, **k: lines.append(" ".join(map(str, a)))).run()
    assert result.status == "finished" and result.steps == 3
    return {"make": make, "lines": lines, "run_dir": str(root / "run"), "other": other}


def test_sft_skip_prints_the_load_report(trained):  # 13
    text = "\n".join(trained["lines"])
    assert "8 rows read, 6 kept, 2 skipped" in text
    assert "1 × invalid json" in text and "1 × not an object" in text
    with open(os.path.join(trained["run_dir"], "data_report.json")) as fh:  # issue 26: the counts are written too
        written = json.load(fh)
    assert written["load"]["rows"] == 8 and written["load"]["kept"] == 6
    assert written["load"]["skipped"] == {"invalid json": 1, "not an object": 1}
    # issue 26: progress and metrics carry trained and total tokens/s, labelled
    with open(os.path.join(trained["run_dir"], "metrics.jsonl")) as fh:
        rows = [json.loads(x) for x in fh if x.strip()]
    train_rows = [r for r in rows if r.get("split") == "train"]
    assert train_rows and all(r["total_tokens"] > r["tokens"] > 0 for r in train_rows)
    from jaxtool.train.trainer import _postfix

    bar = _postfix(train_rows[-1])
    assert set(bar) >= {"trained tok/s", "total tok/s"} and float(bar["total tok/s"]) > float(bar["trained tok/s"])


def test_resume_with_other_data_or_batch_size_is_refused(trained):  # 10, 17
    t = trained["make"]("max_steps=4", data_path=trained["other"])
    t.setup()
    with pytest.raises(CheckpointError, match="data_fingerprint"):
        t.restore_latest()
    t = trained["make"]("max_steps=4", "batch_size=1")
    t.setup()
    with pytest.raises(CheckpointError, match="batch_size=2"):
        t.restore_latest()


def test_resume_falls_back_past_a_damaged_step(trained, tmp_path):  # 19 (and 9: a torn metrics line)
    run = str(tmp_path / "run")
    shutil.copytree(trained["run_dir"], run)
    step3 = os.path.join(run, "checkpoints", "3")
    rel = max(files_of(step3, "params"), key=lambda r: os.path.getsize(os.path.join(step3, r)))
    flip_bit(os.path.join(step3, rel), random.Random(3))
    with open(os.path.join(run, "metrics.jsonl"), "a") as fh:
        fh.write('{"split": "train", "step": 4, "lo')
    lines: list[str] = []
    t = trained["make"]("max_steps=4", f"run_dir={run}", printer=lambda *a, **k: lines.append(" ".join(map(str, a))))
    result = t.run(resume=True)
    text = "\n".join(lines)
    assert f"checkpoint step 3 is damaged: {rel}: contents differ" in text
    assert "falling back to step 2" in text and "resuming from step 2" in text
    assert os.path.isdir(step3 + ".damaged") and result.status == "finished" and result.steps == 4
    rows = [json.loads(ln) for ln in open(os.path.join(run, "metrics.jsonl"))]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    original = {r["step"]: r for r in map(json.loads, open(os.path.join(trained["run_dir"], "metrics.jsonl")))}
    assert train_rows[2]["loss"] == original[3]["loss"]  # step 3 redone from step 2: the same step
    assert sorted(checkpoint.Checkpointer(os.path.join(run, "checkpoints"), create=False).steps()) == [1, 2, 3, 4]
    # resuming the finished run: nothing to train, the last step is not written twice
    again = trained["make"]("max_steps=4", f"run_dir={run}").run(resume=True)
    assert again.status == "finished" and again.steps == 4


# -- issue 26: safetensors I/O through the `safetensors` library ----------------------------------------

def _read_by_hand(path: str) -> dict:
    """An independent reader of the safetensors format (8-byte little-endian header length, JSON
    header, raw little-endian bytes), written here from the format's description."""
    import struct

    import ml_dtypes

    kinds = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32}
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    (n,) = struct.unpack("<Q", bytes(raw[:8]))
    header = json.loads(bytes(raw[8:8 + n]))
    header.pop("__metadata__", None)
    return {name: np.frombuffer(raw[8 + n + info["data_offsets"][0]:8 + n + info["data_offsets"][1]],
                                dtype=kinds[info["dtype"]]).reshape(info["shape"])
            for name, info in header.items()}


@pytest.mark.slow  # exports SmolLM2-135M (bf16, 270 MB) and reads it twice
def test_exported_smollm2_reads_agree_tensor_for_tensor(tmp_path):
    import jaxtool
    from jaxtool.safetensors_io import open_checkpoint

    out = str(tmp_path / "hf")
    jaxtool.load_model("smollm2").save_hf(out, dtype="bfloat16")
    by_name = open_checkpoint(out)
    files = sorted({f.path for f in by_name.values()})
    reference = {}
    for f in files:
        reference.update(_read_by_hand(f))
    assert sorted(by_name) == sorted(reference) and len(reference) > 10
    for name, f in by_name.items():
        got = f.get(name)
        assert got.dtype == reference[name].dtype and got.shape == reference[name].shape, name
        np.testing.assert_array_equal(got.view(np.uint16) if got.dtype.itemsize == 2 else got,
                                      reference[name].view(np.uint16) if got.dtype.itemsize == 2 else reference[name])


def test_safetensors_damage_is_a_named_error(tmp_path):
    from jaxtool.safetensors_io import SafetensorsFile, save_file

    p = str(tmp_path / "m.safetensors")
    save_file({"a": np.arange(64, dtype=np.float32), "b": np.ones((4, 4), np.int32)}, p, {"format": "pt"})
    f = SafetensorsFile(p)
    np.testing.assert_array_equal(f.get("a"), np.arange(64, dtype=np.float32))
    assert f.metadata == {"format": "pt"} and f.shape("b") == (4, 4)
    assert _read_by_hand(p)["b"].sum() == 16  # the library's file, read by the independent reader
    with pytest.raises(CheckpointError, match="no tensor 'c'"):
        f.get("c")
    os.truncate(p, os.path.getsize(p) - 10)
    with pytest.raises(CheckpointError, match="m.safetensors: not a readable safetensors file"):
        SafetensorsFile(p)
    open(p, "wb").write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        SafetensorsFile(p)
    with pytest.raises(CheckpointError, match="cannot store"):
        save_file({"z": np.array(["x"], dtype=object)}, str(tmp_path / "o.safetensors"))
