"""Sharding the Flax way on the NNX module (issue 29): `nnx.get_partition_spec` of the module's state
is jaxtool's PartitionSpec of every parameter, and the module created under `jax.jit` with
`out_shardings` (the `nnx.eval_shape` pattern) comes out sharded, never whole on one device.

conftest.py sets XLA_FLAGS=--xla_force_host_platform_device_count=8 before JAX starts."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxtool import sharding
from jaxtool.models import family_of, preset
from jaxtool.models.nnx import CausalLM

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 host devices (set by tests/conftest.py)")


def _random_params(cfg, seed=0):
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda s: jnp.asarray((0.2 * rng.standard_normal(s)).astype(np.float32)),
                        family_of(cfg).param_shapes(cfg), is_leaf=lambda s: isinstance(s, tuple))


def _specs(state):
    return jax.tree.map(lambda v: v.get_value(), nnx.get_partition_spec(state)["params"],
                        is_leaf=lambda v: isinstance(v, nnx.Variable))


def _jaxtool_specs(cfg, params, mesh):
    return jax.tree.map(lambda s: s.spec, sharding.tree_shardings(family_of(cfg).param_axes(cfg), params, mesh))


def test_partition_specs_are_jaxtools():
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    cfg = preset("tiny")   # every sharded dimension divides by its mesh axis
    m = CausalLM(cfg, params=_random_params(cfg))
    want = _jaxtool_specs(cfg, m.pure_params(), mesh)
    assert want["layers"]["wq"] == P(None, "fsdp", "tensor", None)   # the rules table, read independently
    assert want["lm_head"] == P("fsdp", "tensor")
    assert _specs(nnx.state(m)) == want
    # 3 KV heads do not split over tensor=2: jaxtool keeps that dimension replicated, and so does the
    # module built for the mesh (its per-parameter rules are resolved on the mesh)
    odd = dataclasses.replace(cfg, num_heads=6, num_kv_heads=3, head_dim=16)
    m3 = CausalLM(odd, params=_random_params(odd), mesh=mesh)
    want3 = _jaxtool_specs(odd, m3.pure_params(), mesh)
    assert want3["layers"]["wk"] == P(None, "fsdp", None, None)
    assert _specs(nnx.state(m3)) == want3
    assert m3.params["layers"]["wk"][...].sharding.spec == P(None, "fsdp", None, None)


def test_per_layer_view_partition_specs_are_jaxtools():
    """`LayeredLM` (the per-layer view for qwix) on a mesh: each layer's weights carry jaxtool's
    PartitionSpec of the parameter less its `layers` axis; a projection's 2-D kernel gets its
    input / output dimensions' mesh axes (head_dim is never sharded), including a dimension jaxtool
    leaves replicated because the mesh axis does not divide it (3 KV heads on tensor=2)."""
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    odd = dataclasses.replace(preset("tiny"), num_heads=6, num_kv_heads=3, head_dim=16)
    params = _random_params(odd)
    view = CausalLM(odd, params=params).per_layer()        # rules only: resolved without a mesh
    specs = jax.tree.map(lambda v: v.get_value(), nnx.get_partition_spec(nnx.state(view)),
                         is_leaf=lambda v: isinstance(v, nnx.Variable))
    assert specs["layers"][1]["wk"] == P("fsdp", "tensor") and specs["layers"][1]["wo"] == P("tensor", "fsdp")
    on_mesh = CausalLM(odd, params=params, mesh=mesh).per_layer()
    got = jax.tree.map(lambda v: v.get_value(), nnx.get_partition_spec(nnx.state(on_mesh)),
                       is_leaf=lambda v: isinstance(v, nnx.Variable))
    want = _jaxtool_specs(odd, params, mesh)["layers"]   # [layers, ...] specs of the stacked parameters
    assert want["wk"] == P(None, "fsdp", None, None)
    merged = {"wq": P("fsdp", "tensor"), "wk": P("fsdp", None), "wv": P("fsdp", None), "wo": P("tensor", "fsdp"),
              "w_gate": P("fsdp", "tensor"), "w_up": P("fsdp", "tensor"), "w_down": P("tensor", "fsdp")}
    for i in range(odd.num_layers):
        for name, spec in want.items():
            assert got["layers"][i][name] == merged.get(name, P(*spec[1:])), (i, name)
            assert on_mesh.layers[i].__dict__[name][...].sharding.spec == got["layers"][i][name]
    assert got["lm_head"] == P("fsdp", "tensor") and on_mesh.lm_head[...].sharding.spec == P("fsdp", "tensor")


@pytest.mark.slow   # an 8-device init program and two forwards (~13 s here under load)
def test_created_sharded_under_jit():
    """`nnx.eval_shape` -> `nnx.get_named_sharding` -> `jax.jit(init, out_shardings=...)`: every parameter
    is born sharded; the init program's per-device memory (outputs + temporaries) is less than the
    model, so the whole model never exists on one device; its logits equal those of the same arrays
    on one device."""
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    cfg = preset("tiny")
    abstract = nnx.eval_shape(lambda: CausalLM(cfg, rngs=nnx.Rngs(0), mesh=mesh))
    graphdef, abs_state = nnx.split(abstract)
    shardings = nnx.get_named_sharding(abs_state, mesh)
    init = jax.jit(lambda: nnx.state(CausalLM(cfg, rngs=nnx.Rngs(0), mesh=mesh)), out_shardings=shardings)
    mem = init.lower().compile().memory_analysis()
    model = nnx.merge(graphdef, init())
    full = sum(a.nbytes for a in jax.tree.leaves(model.pure_params()))
    assert mem.output_size_in_bytes + mem.temp_size_in_bytes < full
    wq = model.params["layers"]["wq"][...]
    assert wq.sharding.spec == P(None, "fsdp", "tensor", None)
    assert wq.addressable_shards[0].data.shape == (cfg.num_layers, cfg.hidden_size // 2, cfg.num_heads // 2,
                                                    cfg.head_dim)
    assert _specs(nnx.state(model)) == _jaxtool_specs(cfg, model.pure_params(), mesh)
    ref = CausalLM(cfg, params=jax.tree.map(lambda a: jax.device_put(np.asarray(a)), model.pure_params()))
    assert ref.params["layers"]["wq"][...].sharding.is_fully_replicated
    ids = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (8, 8)))
    fwd = nnx.jit(lambda m, x: m(x))
    np.testing.assert_allclose(np.asarray(fwd(model, ids)), np.asarray(fwd(ref, ids)), atol=1e-5)
