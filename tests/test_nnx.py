"""jaxtool.models.nnx: each family as a Flax NNX module over the same pure functions (issue 29; docs/nnx.md).

The training loop against jaxtool's train step: tests/test_nnx_train.py; sharding: tests/test_nnx_sharding.py;
qwix: tests/test_nnx_qwix.py; `bench --nnx`: tests/test_nnx_bench.py."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtool.models import family_of, preset
from jaxtool.models.nnx import CausalLM


def _tiny(family):
    base = preset("tiny")
    if family == "llama":
        return base
    cls = family_of(preset("qwen2.5-0.5b" if family == "qwen2" else "qwen3-0.6b")).config_cls
    kw = {f: getattr(base, f) for f in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                                        "num_heads", "num_kv_heads", "head_dim")}
    return cls(**kw)


def _random_params(cfg, seed=0, std=0.2):
    """Host-random parameters of the family's shapes (no init program to compile)."""
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda s: jnp.asarray((std * rng.standard_normal(s)).astype(np.float32)),
                        family_of(cfg).param_shapes(cfg), is_leaf=lambda s: isinstance(s, tuple))


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_module_is_the_pure_functions(family):
    """Same logits bit for bit as the family's `forward` on the same arrays; `nnx.split` gives back the
    parameter pytree training and checkpoints use, with logical axes as sharding metadata."""
    cfg = _tiny(family)
    m = CausalLM(cfg, params=_random_params(cfg))   # random biases too: the qwen2 bias hook has work to do
    fam = family_of(cfg)
    ids = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 8)))
    _, state = nnx.split(m)
    pure = nnx.to_pure_dict(state)["params"]
    assert jax.tree.structure(pure) == jax.tree.structure(fam.param_shapes(cfg), is_leaf=lambda s: isinstance(s, tuple))
    assert all(a is b for a, b in zip(jax.tree.leaves(pure), jax.tree.leaves(m.pure_params())))
    np.testing.assert_array_equal(np.asarray(m(ids)), np.asarray(fam.forward(pure, ids, cfg)))
    wq = m.params["layers"]["wq"]
    assert wq.get_metadata()["out_sharding"] == fam.param_axes(cfg)["layers"]["wq"] == ("layers", "embed", "heads",
                                                                                         "head_dim")
    # the rules table travels with each parameter: `get_partition_spec` needs no context (meshes: test_nnx_sharding)
    specs = nnx.get_partition_spec(state)["params"]
    assert specs["layers"]["wq"].get_value() == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)


def test_load_model_module_and_save_hf_round_trip(tmp_path):
    """`jaxtool.load_model(path).module()` is the module over the loaded arrays; `module.save_hf` writes
    an HF directory that loads back (`load_model`, `CausalLM.from_pretrained`) to the same logits."""
    import jaxtool

    cfg = _tiny("qwen2")
    src = CausalLM(cfg, params=_random_params(cfg, seed=3))
    first = src.save_hf(str(tmp_path / "a"), dtype="float32")
    loaded = jaxtool.load_model(first)
    m = loaded.module()
    assert isinstance(m, CausalLM) and m.config == cfg
    assert m.params["layers"]["wq"][...] is loaded.params["layers"]["wq"]          # no copy
    again = CausalLM.from_pretrained(m.save_hf(str(tmp_path / "b"), dtype="float32"))
    ids = jnp.asarray(np.random.RandomState(2).randint(0, cfg.vocab_size, (2, 6)))
    fwd = nnx.jit(lambda mod, x: mod(x))
    want = np.asarray(fwd(src, ids))
    np.testing.assert_array_equal(np.asarray(fwd(m, ids)), want)
    np.testing.assert_array_equal(np.asarray(fwd(again, ids)), want)
    np.testing.assert_array_equal(loaded.logits(np.asarray(ids)), want)


def test_weight_decay_mask_reads_dicts_and_nnx_state():
    """The trainer's AdamW mask (`train.optim._norm_free_mask`): decay on matrices, not on norms (the
    stacked norms are 2-D) — for the dict tree and for the `nnx.State` that `nnx.Optimizer` hands it
    (before the fix the State came back as one `False`: no weight decay at all under nnx)."""
    from jaxtool.train.optim import _norm_free_mask

    cfg = _tiny("llama")
    shapes = family_of(cfg).param_shapes(cfg)
    params = jax.tree.map(lambda s: jnp.zeros(s, jnp.float32), shapes, is_leaf=lambda s: isinstance(s, tuple))
    want = {"embed": True, "final_norm": False, "lm_head": True,
            "layers": {"attn_norm": False, "mlp_norm": False, "wq": True, "wk": True, "wv": True, "wo": True,
                       "w_gate": True, "w_up": True, "w_down": True}}
    assert _norm_free_mask(params) == want
    state = nnx.state(CausalLM(cfg, params=params), nnx.Param)
    got = _norm_free_mask(state)
    assert nnx.to_pure_dict(got)["params"] == want


@pytest.mark.slow   # a grad compile and an HF round trip (~10 s here under load)
def test_lora_on_the_module_trains_only_the_adapters(tmp_path):
    """`add_lora`: adapters as `nnx.LoRAParam`; the forward equals the family's forward with the adapters
    attached (jaxtool.models.lora) at `run.lora_scale`; `nnx.DiffState(0, nnx.LoRAParam)` gives gradients
    for the adapters alone and `nnx.Optimizer(wrt=nnx.LoRAParam)` moves only them; `save_hf` merges."""
    from jaxtool.models import lora
    from jaxtool.models.run import RunOptions

    cfg = dataclasses.replace(_tiny("llama"), num_layers=1)
    m = CausalLM(cfg, params=_random_params(cfg), run=RunOptions(lora_scale=2.0)).add_lora(2, nnx.Rngs(5), ("wq", "w_up"))
    m.lora["layers"]["wq_lora_b"][...] = jnp.full_like(m.lora["layers"]["wq_lora_b"][...], 0.1)   # B = 0 at init
    ids = jnp.asarray(np.random.RandomState(4).randint(0, cfg.vocab_size, (2, 6)))
    fwd = nnx.jit(lambda mod, x: mod(x))
    base0 = jax.tree.map(jnp.copy, m.pure_params())
    want = family_of(cfg).forward(lora.attach(base0, m.adapters()), ids, cfg, run=m.run)
    got = fwd(m, ids)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert np.max(np.abs(np.asarray(got) - np.asarray(family_of(cfg).forward(base0, ids, cfg)))) > 1e-3
    assert sorted(m.adapters()["layers"]) == ["w_up_lora_a", "w_up_lora_b", "wq_lora_a", "wq_lora_b"]

    opt = nnx.Optimizer(m, optax.sgd(0.5), wrt=nnx.LoRAParam)

    @nnx.jit
    def step(model, opt):
        def loss(mod):
            return jnp.mean(jax.nn.log_softmax(mod(ids[:, :-1]).astype(jnp.float32))[..., 0])
        grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
        opt.update(model, grads)
        return grads

    grads = step(m, opt)
    names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(grads))}
    assert names == {f"['lora']['layers']['{k}']" for k in ("wq_lora_a", "wq_lora_b", "w_up_lora_a", "w_up_lora_b")}
    for a, b in zip(jax.tree.leaves(m.pure_params()), jax.tree.leaves(base0)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))       # the frozen base did not move
    # the export merges W + scale * A B: the saved model's logits are the adapted module's
    again = CausalLM.from_pretrained(m.save_hf(str(tmp_path / "merged"), dtype="float32"))
    np.testing.assert_allclose(np.asarray(fwd(again, ids)), np.asarray(fwd(m, ids)), atol=1e-5)


@pytest.mark.slow   # three eager programs (~6-10 s here under load)
def test_kv_cache_decoding_from_the_module():
    """`init_cache` + `forward_cached` (a prefill, then one more token) give the full forward's logits."""
    cfg = dataclasses.replace(_tiny("qwen3"), num_layers=1)
    m = CausalLM(cfg, params=_random_params(cfg, seed=7))
    ids = jnp.asarray(np.random.RandomState(8).randint(0, cfg.vocab_size, (2, 6)))
    full = np.asarray(m(ids))
    cache = m.init_cache(2, 16)
    logits, cache = m.forward_cached(ids[:, :5], cache, jnp.zeros((2,), jnp.int32), prefill=True)
    np.testing.assert_allclose(np.asarray(logits), full[:, :5], atol=1e-5)
    logits, cache = m.forward_cached(ids[:, 5:], cache, jnp.full((2,), 5, jnp.int32))
    np.testing.assert_allclose(np.asarray(logits)[:, 0], full[:, 5], atol=1e-5)
