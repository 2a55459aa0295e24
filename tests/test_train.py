"""Training end to end on a tiny Llama: SFT overfits a small set, DiaTool-DPO makes the held-out reward
margin positive, an interrupted-and-resumed run equals an uninterrupted one bit for bit, a sharded
step equals the single-device step, LoRA leaves the base frozen and exports merged weights that
transformers reproduces."""

import json
import os

import jax
import numpy as np
import pytest
import torch

from jaxtool.config import load_config
from jaxtool.errors import ConfigError
from jaxtool.train.trainer import Trainer

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
SEEDS = os.path.join(FIX, "diatool", "seeds.jsonl")


def cfg(tiny_model_dir, run_dir, *overrides):
    base = [f"model.path={tiny_model_dir}", f"run_dir={run_dir}", "progress=false", "data.format=hermes",
            "data.max_length=512", "data.bucket_multiple=64"]
    return load_config(None, base + list(overrides))


def metrics(run_dir, split="train"):
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        return [r for r in map(json.loads, fh) if r["split"] == split]


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    """DiaTool-DPO pairs built from the seed fixtures with the real builder (rules augmenter)."""
    from jaxtool.diatool import RulesAugmenter, build, collect_seeds
    from jaxtool.data.schema import Conversation

    out = str(tmp_path_factory.mktemp("pairs"))
    convs = [Conversation.from_dict(json.loads(ln)) for ln in open(SEEDS, encoding="utf-8")]
    seeds, _ = collect_seeds([(c.meta.get("id", str(i)), c) for i, c in enumerate(convs)])
    build(seeds, RulesAugmenter(seed=0), out, subset="all", valid_fraction=0.25, rng_seed=0, progress=False)
    return out


def test_sft_drives_training_loss_near_zero(tiny_model_dir, tmp_path):
    c = cfg(tiny_model_dir, tmp_path / "sft", f"data.train=conversations:{SEEDS}", "data.limit=2",
            "batch_size=2", "epochs=60", "optim.lr=5e-3", "optim.schedule=constant", "log_every=1")
    res = Trainer(c).run()
    losses = [m["loss"] for m in metrics(res.run_dir)]
    print(f"[sft] loss {losses[0]:.3f} -> {losses[-1]:.4f} in {len(losses)} steps")
    assert res.status == "finished" and len(losses) == 60
    assert losses[0] > 5.0 and losses[-1] < 0.05


def test_diatool_dpo_makes_held_out_margin_positive(tiny_model_dir, tmp_path, pairs_dir):
    c = cfg(tiny_model_dir, tmp_path / "dpo", "data.kind=preference",
            f"data.train=diatool:{pairs_dir}/train.jsonl", f"data.valid=diatool:{pairs_dir}/valid.jsonl",
            "loss.type=diatool_dpo", "loss.beta=0.5", "loss.gamma=0.5", "loss.margin=2.0",
            "batch_size=8", "epochs=2", "optim.lr=1e-3", "optim.schedule=constant",
            "data.bucket_multiple=512")  # one padded shape: one compilation of the step and of the evaluation
    trainer = Trainer(c)
    trainer.setup()
    before = trainer.evaluate()
    res = trainer.run()
    after = res.eval_metrics
    print(f"[dpo] held-out margin {before['reward_margin']:.3f} -> {after['reward_margin']:.3f}, "
          f"accuracy {before['accuracy']:.2f} -> {after['accuracy']:.2f}")
    assert abs(before["reward_margin"]) < 1e-4  # policy == reference before training
    assert after["reward_margin"] > 0.5 and after["accuracy"] > 0.6
    assert os.path.isfile(os.path.join(res.run_dir, "curves.png"))


def test_interrupted_and_resumed_run_is_bit_identical(tiny_model_dir, tmp_path, pairs_dir):
    common = ["data.kind=preference", f"data.train=diatool:{pairs_dir}/train.jsonl", "loss.type=diatool_dpo",
              "batch_size=4", "max_steps=6", "optim.lr=1e-3", "optim.warmup_steps=2", "data.limit=64",
              "data.bucket_multiple=512"]  # one padded shape: one compilation per program
    full = Trainer(cfg(tiny_model_dir, tmp_path / "full", *common)).run()
    t1 = Trainer(cfg(tiny_model_dir, tmp_path / "cut", *common))
    part = t1.run(interrupt_at=3)
    assert part.status == "interrupted" and part.steps == 3
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(cfg(tiny_model_dir, tmp_path / "cut", *common)).run()
    t2 = Trainer(cfg(tiny_model_dir, tmp_path / "cut", *common))
    rest = t2.run(resume=True)
    assert rest.status == "finished" and rest.steps == 6
    a, b = metrics(full.run_dir), metrics(rest.run_dir)
    assert [m["step"] for m in b] == list(range(1, 7))
    assert [m["loss"] for m in a] == [m["loss"] for m in b]
    assert [m["grad_norm"] for m in a] == [m["grad_norm"] for m in b]
    ta = jax.tree.leaves(Trainer.merged_params(_reload(tiny_model_dir, full.run_dir, common)))
    tb = jax.tree.leaves(t2.merged_params())
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(ta, tb))


def _reload(tiny_model_dir, run_dir, common):
    t = Trainer(cfg(tiny_model_dir, run_dir, *common))
    t.setup()
    t.restore_latest()
    return t


def assert_same_update(p, q, lr):
    """Parameters after one AdamW step from the same start. Adam's first update is ~lr·sign(g), so a
    gradient within float32 rounding of zero can move its weight by up to 2·lr differently under
    another summation order; every other weight must agree to 1e-6 and at most 0.1% may differ."""
    for x, y in zip(jax.tree.leaves(p), jax.tree.leaves(q)):
        d = np.abs(np.asarray(x) - np.asarray(y))
        assert d.max() <= 2 * lr + 1e-6 and np.mean(d > 1e-6) < 1e-3


def test_sharded_step_equals_single_device(tiny_model_dir, tmp_path, pairs_dir):
    common = ["data.kind=preference", f"data.train=diatool:{pairs_dir}/train.jsonl", "loss.type=diatool_dpo",
              "loss.reference=online", "batch_size=8", "max_steps=1", "optim.lr=1e-3", "data.limit=16"]
    one = Trainer(cfg(tiny_model_dir, tmp_path / "one", *common, "mesh.data=1", "mesh.fsdp=1", "mesh.tensor=1"))
    r1 = one.run()
    eight = Trainer(cfg(tiny_model_dir, tmp_path / "eight", *common, "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"))
    r8 = eight.run()
    assert one.mesh.size == 1 and dict(eight.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert eight.state.trainable["layers"]["w_up"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    np.testing.assert_allclose(r8.last_metrics["loss"], r1.last_metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(r8.last_metrics["grad_norm"], r1.last_metrics["grad_norm"], rtol=1e-4)
    assert_same_update(one.state.trainable, eight.state.trainable, lr=1e-3)


def test_lora_freezes_base_and_exports_merged_weights(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    import jaxtool

    c = cfg(tiny_model_dir, tmp_path / "lora", f"data.train=conversations:{SEEDS}", "data.limit=4",
            "lora.enabled=true", "lora.rank=4", "lora.alpha=8", "batch_size=2", "max_steps=4", "optim.lr=1e-2",
            "export_hf=true")
    t = Trainer(c)
    t.setup()
    base_before = jax.tree.map(np.asarray, t.frozen)
    res = t.run()
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(base_before), jax.tree.leaves(t.frozen)))
    assert float(np.abs(np.asarray(t.state.trainable["layers"]["wq_lora_b"])).max()) > 0  # adapters moved
    merged = jaxtool.load_model(res.hf_dir)
    ids = np.arange(3, 40)[None]
    ref = AutoModelForCausalLM.from_pretrained(res.hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    assert np.abs(want - merged.logits(ids)).max() < 1e-4
    # the run's checkpoint (adapters only) loads as the merged model too
    from_ckpt = jaxtool.load_model(res.checkpoint_dir)
    assert np.abs(from_ckpt.logits(ids) - merged.logits(ids)).max() < 1e-5
    assert np.abs(jaxtool.load_model(tiny_model_dir).logits(ids) - merged.logits(ids)).max() > 1e-3


def test_precomputed_and_online_reference_agree(tiny_model_dir, tmp_path, pairs_dir):
    common = ["data.kind=preference", f"data.train=diatool:{pairs_dir}/train.jsonl", "loss.type=dpo",
              "batch_size=4", "max_steps=2", "optim.lr=1e-3", "data.limit=8", "lora.enabled=true",
              "data.bucket_multiple=512"]  # one padded shape: one compilation per program
    pre = Trainer(cfg(tiny_model_dir, tmp_path / "pre", *common, "loss.reference=precomputed")).run()
    onl = Trainer(cfg(tiny_model_dir, tmp_path / "onl", *common, "loss.reference=online")).run()
    a, b = metrics(pre.run_dir), metrics(onl.run_dir)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x["loss"], y["loss"], rtol=1e-5)
        np.testing.assert_allclose(x["reward_margin"], y["reward_margin"], atol=1e-5)


def test_dpo_reuses_the_diatool_reference_cache(tiny_model_dir, tmp_path, pairs_dir):
    """Plain DPO needs only sequence sums; DiaTool-DPO's cache (same pairs, same model, per-turn sums
    too) serves it, and gives the sums DPO computes itself."""
    import shutil

    from jaxtool.train import reference

    common = ["data.kind=preference", f"data.train=diatool:{pairs_dir}/train.jsonl", "batch_size=4",
              "data.limit=8", "loss.reference=precomputed"]
    dia = Trainer(cfg(tiny_model_dir, tmp_path / "dia", *common, "loss.type=diatool_dpo"))
    dia.setup()
    dia._ensure_reference()
    assert dia.max_turns > 1
    dpo = Trainer(cfg(tiny_model_dir, tmp_path / "dpo", *common, "loss.type=dpo"))
    dpo.setup()
    assert dpo.max_turns == 0
    (tmp_path / "dpo").mkdir(exist_ok=True)   # setup() now creates (and locks) the run dir
    shutil.copyfile(tmp_path / "dia" / "reference.npz", tmp_path / "dpo" / "reference.npz")
    model_id = reference.model_id(dpo.cfg.model)
    said = []
    cached = reference.precompute(dpo.train_ds, dpo.setup_, 0, str(tmp_path / "dpo" / "reference.npz"), model_id,
                                  dpo._n_logits, said.append)
    fresh = reference.precompute(dpo.train_ds, dpo.setup_, 0, None, model_id, dpo._n_logits, said.append)
    assert said == []   # served from the cache, nothing recomputed
    np.testing.assert_allclose(cached.chosen_seq, fresh.chosen_seq, rtol=1e-5)
    np.testing.assert_allclose(cached.rejected_seq, fresh.rejected_seq, rtol=1e-5)
    assert cached.chosen_turns.shape == fresh.chosen_turns.shape and not cached.chosen_turns.any()
    # a cache with fewer turns, another model or other data does not serve
    key = json.dumps({"data": "d", "model": "m", "max_turns": 3})
    assert reference.cache_serves(key, "d", "m", 3) and reference.cache_serves(key, "d", "m", 0)
    assert not reference.cache_serves(key, "d", "m", 4) and not reference.cache_serves(key, "d", "other", 0)
    assert not reference.cache_serves(key, "other", "m", 0) and not reference.cache_serves("not json", "d", "m", 0)


def test_gradient_accumulation_equals_one_big_batch(tiny_model_dir, tmp_path):
    common = [f"data.train=conversations:{SEEDS}", "data.limit=4", "batch_size=4", "max_steps=1",
              "optim.lr=1e-3", "data.shuffle=false"]
    a = Trainer(cfg(tiny_model_dir, tmp_path / "a", *common, "optim.grad_accum=1"))
    b = Trainer(cfg(tiny_model_dir, tmp_path / "b", *common, "optim.grad_accum=2"))
    ra, rb = a.run(), b.run()
    np.testing.assert_allclose(ra.last_metrics["loss"], rb.last_metrics["loss"], rtol=1e-5)
    assert_same_update(a.state.trainable, b.state.trainable, lr=1e-3)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):
        load_config(None, ["optim.learning_rate=1e-3"])
    with pytest.raises(ConfigError, match="did you mean 'loss.beta'"):
        load_config(None, ["loss.betta=0.1"])
    with pytest.raises(ConfigError, match="batch_size expects int"):
        load_config(None, ["batch_size=eight"])
    with pytest.raises(ConfigError, match="loss.type must be one of"):
        load_config(None, ["loss.type=kto"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'optim.lrr'; did you mean 'optim.lr'"):
        load_config(str(bad))


def test_recipes_load_with_the_papers_hyperparameters():
    here = os.path.join(os.path.dirname(__file__), "..", "configs")
    c = load_config(os.path.join(here, "diatool_dpo", "llama3_8b.yaml"))
    assert (c.loss.type, c.loss.beta, c.loss.gamma, c.loss.margin) == ("diatool_dpo", 0.5, 0.5, 2.0)
    assert (c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps, c.optim.schedule) == (1e-7, 0.0, 150, "linear")
    assert (c.optim.b1, c.optim.b2, c.optim.eps) == (0.9, 0.999, 1e-8)
    assert (c.batch_size, c.epochs, c.data.max_length, c.data.max_prompt_length) == (8, 1, 8192, 4096)
    assert c.model.compute_dtype == "bfloat16"
    ab = {n: load_config(os.path.join(here, "diatool_dpo", f"llama3_8b_{n}.yaml")).loss
          for n in ("no_phi", "no_psi", "no_margin", "plain_dpo")}
    assert (ab["no_phi"].use_phi, ab["no_phi"].use_psi, ab["no_phi"].margin) == (False, True, 2.0)
    assert (ab["no_psi"].use_phi, ab["no_psi"].use_psi) == (True, False)
    assert ab["no_margin"].margin == 0.0
    assert (ab["plain_dpo"].use_phi, ab["plain_dpo"].use_psi, ab["plain_dpo"].margin) == (False, False, 0.0)
