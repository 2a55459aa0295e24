"""QLoRA end to end on a tiny Llama: the frozen base is stored int8 / NF4, dequantised in each
matmul, LoRA trains on top, and export merges the adapters into the dequantised base."""

import os

import jax
import numpy as np
import pytest
import torch

from jaxtool.config import load_config
from jaxtool.errors import ConfigError
from jaxtool.models import family_of, quant
from jaxtool.train.trainer import Trainer

SEEDS = os.path.join(os.path.dirname(__file__), "fixtures", "diatool", "seeds.jsonl")


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_qlora_trains_on_a_quantised_base_and_exports(tiny_model_dir, tmp_path, kind):
    from transformers import AutoModelForCausalLM

    import jaxtool

    c = load_config(None, [f"model.path={tiny_model_dir}", f"run_dir={tmp_path / kind}", "progress=false",
                           "data.format=hermes", "data.max_length=512", "data.bucket_multiple=64",
                           f"data.train=conversations:{SEEDS}", "data.limit=4", "lora.enabled=true", "lora.rank=4",
                           "lora.alpha=8", f"lora.base_quant={kind}", "batch_size=2", "max_steps=3",
                           "optim.lr=1e-2", "export_hf=true"])
    t = Trainer(c)
    t.setup()
    w = t.frozen["layers"]["w_up"]
    assert quant.is_quantized(w) and w.kind == kind
    res = t.run()
    assert res.status == "finished" and np.isfinite(res.last_metrics["loss"])
    assert float(np.abs(np.asarray(t.state.trainable["layers"]["wq_lora_b"])).max()) > 0
    # the export = dequantised base + adapters; transformers reproduces jaxtool's logits of it
    ids = np.arange(3, 40)[None]
    merged = jaxtool.load_model(res.hf_dir)
    ref = AutoModelForCausalLM.from_pretrained(res.hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    assert np.abs(want - merged.logits(ids)).max() < 1e-4
    # ... and differs from the unquantised base by the quantisation error + the adapters only
    base = jaxtool.load_model(tiny_model_dir)
    deq = jax.tree.map(np.asarray, quant.dequantize_params(t.frozen, np.float32))
    err = max(float(np.abs(deq["layers"]["w_up"] - np.asarray(base.params["layers"]["w_up"])).max()), 1e-9)
    assert err < (0.01 if kind == "int8" else 0.2) * float(np.abs(np.asarray(base.params["layers"]["w_up"])).max())


def test_base_quant_needs_lora():
    with pytest.raises(ConfigError, match="lora.base_quant"):
        load_config(None, ["lora.base_quant=nf4"])


@pytest.mark.parametrize("kind", ["nf4"])   # int8 (the weight's own axes) runs in test_launch on a 2x2 mesh
def test_quantised_base_is_sharded_like_the_plain_one(tiny_model_dir, tmp_path, kind):
    """On a (data 1, fsdp 4, tensor 2) mesh of 8 host devices the quantised frozen weights are split
    over the chips (not replicated), and training on that mesh gives the single-device losses."""
    def run(mesh, name):
        c = load_config(None, [f"model.path={tiny_model_dir}", f"run_dir={tmp_path / name}", "progress=false",
                               "data.format=hermes", "data.max_length=512", "data.bucket_multiple=64",
                               f"data.train=conversations:{SEEDS}", "data.limit=4", "data.shuffle=false",
                               "lora.enabled=true", "lora.rank=4", "lora.alpha=8", f"lora.base_quant={kind}",
                               "batch_size=4", "max_steps=2", "optim.lr=1e-2", *mesh])
        t = Trainer(c)
        t.setup()
        return t, t.run()

    t, res = run(["mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2"], "mesh")
    for name in ("wq", "wo", "w_up", "w_down"):
        q = t.frozen["layers"][name]
        for arr, split in ((q.data, 4), (q.scales, 2)):   # int8 scales: per output channel (no input axis)
            shard = arr.sharding.shard_shape(arr.shape)
            assert np.prod(shard) * split <= np.prod(arr.shape), (name, arr.shape, shard, arr.sharding.spec)
    qleaves = [t.frozen["layers"][n] for n in family_of(t.model_cfg).lora_targets]
    per_chip = sum(int(np.prod(a.sharding.shard_shape(a.shape))) * a.dtype.itemsize for a in jax.tree.leaves(qleaves))
    assert per_chip * 3.5 <= quant.tree_nbytes(qleaves)   # before: replicated, per chip = total
    t1, res1 = run(["mesh.data=1", "mesh.fsdp=1", "mesh.tensor=1"], "one")
    assert res.last_metrics["loss"] == pytest.approx(res1.last_metrics["loss"], rel=1e-4)
