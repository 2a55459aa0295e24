"""Sharded execution on an 8-device CPU mesh equals single-device execution.

conftest.py sets XLA_FLAGS=--xla_force_host_platform_device_count=8 before JAX starts.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxtool import sharding
from jaxtool.errors import ConfigError
from jaxtool.models import llama

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 host devices (set by tests/conftest.py)")


def test_rules_resolve_with_divisibility():
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    assert sharding.logical_to_spec(("embed", "heads", "head_dim"), mesh, shape=(64, 4, 16)) == P("fsdp", "tensor", None)
    # 3 KV heads do not split over tensor=2: that dimension stays replicated
    assert sharding.logical_to_spec(("embed", "kv_heads", "head_dim"), mesh, shape=(64, 3, 16)) == P("fsdp", None, None)
    assert sharding.logical_to_spec(("batch", "seq"), mesh, shape=(8, 16)) == P(("data", "fsdp"), None)
    # batch 2 only divides by data: fsdp is dropped for it
    assert sharding.logical_to_spec(("batch", "seq"), mesh, shape=(2, 16)) == P("data", None)
    with pytest.raises(ConfigError, match="no rule"):
        sharding.logical_to_spec(("nonsense",), mesh)
    with pytest.raises(ConfigError, match="devices"):
        sharding.make_mesh(data=3, fsdp=1, tensor=1)
    assert sharding.make_mesh(data=1, fsdp=1, tensor=1).size == 1  # a sub-mesh of the first device


def test_sharded_forward_equals_single_device():
    cfg = llama.preset("tiny", num_layers=2)
    params = llama.init_params(cfg, jax.random.key(0), std=0.2)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (8, 32)), jnp.int32)
    seg = jnp.ones_like(tokens).at[:, 28:].set(0)
    want = np.asarray(jax.jit(llama.forward, static_argnums=2)(params, tokens, cfg, segment_ids=seg))

    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    p_shard = sharding.tree_shardings(llama.param_axes(cfg), params, mesh)
    sharded_params = jax.device_put(params, p_shard)
    assert sharded_params["layers"]["wq"].sharding.spec == P(None, "fsdp", "tensor", None)
    batch = sharding.shard_batch({"tokens": np.asarray(tokens), "seg": np.asarray(seg)}, mesh)
    out_sharding = sharding.named_sharding(("batch", "seq", "act_vocab"), mesh, shape=want.shape)
    with sharding.use_mesh(mesh):
        fwd = jax.jit(lambda p, t, s: llama.forward(p, t, cfg, segment_ids=s),
                      in_shardings=(p_shard, batch["tokens"].sharding, batch["seg"].sharding),
                      out_shardings=out_sharding)
        got = fwd(sharded_params, batch["tokens"], batch["seg"])
    assert got.sharding.spec == P(("data", "fsdp"), None, "tensor")
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


def test_sharded_kv_cache_decode_equals_single_device():
    cfg = llama.preset("tiny", num_layers=2)
    params = llama.init_params(cfg, jax.random.key(1), std=0.2)
    tokens = jnp.asarray(np.random.RandomState(1).randint(0, cfg.vocab_size, (4, 8)), jnp.int32)
    step = jax.jit(llama.forward_cached, static_argnums=4)
    want, _ = step(params, tokens, llama.init_cache(cfg, 4, 16), jnp.zeros(4, jnp.int32), cfg)

    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    p_shard = sharding.tree_shardings(llama.param_axes(cfg), params, mesh)
    cache = llama.init_cache(cfg, 4, 16)
    c_shard = sharding.tree_shardings(llama.cache_axes(), cache, mesh)
    with sharding.use_mesh(mesh):
        got, new_cache = step(jax.device_put(params, p_shard), sharding.shard_batch(np.asarray(tokens), mesh),
                              jax.device_put(cache, c_shard), jnp.zeros(4, jnp.int32), cfg)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)
