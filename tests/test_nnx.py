"""jaxtool.models.nnx: each family as a Flax NNX module over the same pure functions (issue 29, first part)."""

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


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_module_is_the_pure_functions(family):
    """Same logits bit for bit as the family's `forward` on the same arrays; `nnx.split` gives back the
    parameter pytree training and checkpoints use, with logical axes as sharding metadata."""
    cfg = _tiny(family)
    m = CausalLM(cfg, rngs=nnx.Rngs(0))
    fam = family_of(cfg)
    if family == "qwen2":   # give the bias hook something to do (HF initialises biases to zero)
        m.params["layers"]["bq"][...] = jnp.full_like(m.params["layers"]["bq"][...], 0.3)
    ids = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 8)))
    _, state = nnx.split(m)
    pure = nnx.to_pure_dict(state)["params"]
    assert jax.tree.structure(pure) == jax.tree.structure(fam.init_params(cfg, jax.random.key(1)))
    np.testing.assert_array_equal(np.asarray(m(ids)), np.asarray(fam.forward(pure, ids, cfg)))
    specs = nnx.get_partition_spec(state)["params"]
    assert specs["layers"]["wq"].get_value() == jax.sharding.PartitionSpec(*fam.param_axes(cfg)["layers"]["wq"])


@pytest.mark.slow   # a grad compile (~30 s here under load); the module's forward is checked in the fast set
def test_user_written_nnx_training_loop_trains():
    """`nnx.Optimizer` + optax AdamW + `nnx.value_and_grad` on the module: the loss goes down, and the
    first loss equals the same loss computed with the pure forward."""
    cfg = _tiny("qwen3")
    m = CausalLM(cfg, rngs=nnx.Rngs(0))
    ids = jnp.asarray(np.random.RandomState(1).randint(0, cfg.vocab_size, (2, 10)))

    def nll(logits):
        lp = jax.nn.log_softmax(logits.astype(jnp.float32))
        return -jnp.mean(jnp.take_along_axis(lp, ids[:, 1:, None], -1))

    want0 = float(nll(family_of(cfg).forward(m.pure_params(), ids[:, :-1], cfg)))
    opt = nnx.Optimizer(m, optax.adamw(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        loss, grads = nnx.value_and_grad(lambda mm: nll(mm(ids[:, :-1])))(model)
        opt.update(model, grads)
        return loss

    losses = [float(step(m, opt)) for _ in range(2)]
    assert losses[0] == pytest.approx(want0, rel=1e-6)
    assert losses[-1] < losses[0]
