"""qwix (Google's JAX quantisation library, PyPI `qwix`, a test dependency) on the NNX module (issue 29).

What works: qwix's array API quantises the module's frozen base weights; NF4 with jaxtool's blocking
(64 consecutive values of the row-major flattened per-layer weight, absmax scale) gives exactly
jaxtool's NF4 weights, and logits equal to jaxtool's own NF4 base; int8 per output channel differs
from jaxtool's int8 only by qwix's scale (absmax / 127.5, values in [-128, 127]; jaxtool: absmax / 127,
[-127, 127]), and the logits differ by less than quantisation itself moves them.

What does not: qwix's model-level API (`qwix.quantize_model` with `PtqProvider`, and
`qwix.apply_lora_to_model` with `LoraProvider`) intercepts `einsum` / `dot_general` inside a module
and looks the weight operand up among that module's own `nnx.Param` attributes. The module's
weights are stacked over layers in one parameter tree and sliced inside `lax.scan` by the family's
pure functions, so qwix finds no weight: it returns the model unchanged (no quantised arrays, no LoRA
parameters, the same logits). The last test pins that, so docs/nnx.md is told when a qwix release
changes it. (LoRA on the module is jaxtool's own: `CausalLM.add_lora`, tests/test_nnx.py.)"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import qwix   # a test dependency (setup.py extra "test"): a missing qwix fails here, never skips
from flax import nnx

from jaxtool.models import family_of, preset, quant
from jaxtool.models.nnx import CausalLM

CFG = dataclasses.replace(preset("tiny"), num_layers=1)


def _params(seed=0):
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda s: jnp.asarray((0.2 * rng.standard_normal(s)).astype(np.float32)),
                        family_of(CFG).param_shapes(CFG), is_leaf=lambda s: isinstance(s, tuple))


def qwix_base(params, kind):
    """The user's code: every projection of the frozen base through qwix (quantise, dequantise)."""
    layers = dict(params["layers"])
    for name, (n_in, base_ndim) in family_of(CFG).projections.items():
        w = layers[name]
        n_lead = w.ndim - base_ndim
        if kind == "nf4":      # blocks of 64 of the flattened per-layer slice, one absmax scale per block
            blocks = w.reshape(w.shape[:n_lead] + (-1, quant.NF4_BLOCK))
            q = qwix.quantize(blocks, "nf4", channelwise_axes=tuple(range(n_lead + 1)))
            layers[name] = qwix.dequantize(q).reshape(w.shape)
        else:                  # one scale per output channel (and per layer)
            q = qwix.quantize(w, jnp.int8, channelwise_axes=tuple(range(n_lead)) + tuple(range(n_lead + n_in, w.ndim)))
            layers[name] = qwix.dequantize(q)
    return {**params, "layers": layers}


@pytest.mark.slow   # three forward compiles per kind (~9 s + 4 s here under load)
@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_qwix_base_matches_jaxtools_quantised_base(kind):
    params = _params()
    fam = family_of(CFG)
    ids = jnp.asarray(np.random.RandomState(1).randint(0, CFG.vocab_size, (2, 8)))
    ours = quant.quantize_params(params, kind, fam.projections)          # jaxtool's quantised base
    want = np.asarray(jax.jit(lambda p, x: fam.forward(p, x, CFG))(ours, ids))
    model = CausalLM(CFG, params=jax.jit(qwix_base, static_argnums=1)(params, kind))
    fwd = nnx.jit(lambda m, x: m(x))
    got = np.asarray(fwd(model, ids))
    plain = np.asarray(fwd(CausalLM(CFG, params=params), ids))
    w_q, w_j = model.params["layers"]["w_up"][...], quant.dequantize(ours["layers"]["w_up"])
    if kind == "nf4":
        np.testing.assert_array_equal(np.asarray(w_q), np.asarray(w_j))     # the same 4-bit codes and scales
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    else:
        j = ours["layers"]["w_up"]
        s_j = np.asarray(j.scales)                                          # absmax / 127 per output channel
        s_q = s_j * 127 / 127.5                                             # qwix: absmax / 127.5
        assert np.all(np.abs(np.asarray(w_q) - np.asarray(w_j)) <= (s_j + s_q) / 2 + 1e-7)
        assert not np.array_equal(np.asarray(w_q), np.asarray(w_j))
        # two roundings on different grids: the logits differ by the order of the quantisation error
        # itself (seen: 0.0175 apart, jaxtool's int8 0.0137 from float32), and qwix's base is as close
        # to the float32 model as jaxtool's
        err = np.max(np.abs(want - plain))
        assert np.max(np.abs(got - want)) <= 2 * err
        assert np.max(np.abs(got - plain)) <= 1.5 * err
    assert np.max(np.abs(want - plain)) > 1e-3        # quantisation did something


def test_qwix_model_api_finds_no_weight_in_the_module():
    """qwix.quantize_model / apply_lora_to_model: nothing quantised, no LoRA parameter, same logits."""
    model = CausalLM(CFG, params=_params())
    ids = jnp.asarray(np.random.RandomState(1).randint(0, CFG.vocab_size, (1, 6)))
    base = np.asarray(model(ids))
    ptq = qwix.quantize_model(model, qwix.PtqProvider([qwix.QuantizationRule(module_path=".*", weight_qtype="nf4")]),
                              ids)
    lora = qwix.apply_lora_to_model(model, qwix.LoraProvider([qwix.LoraRule(module_path=".*", rank=2, alpha=4.0)]),
                                    ids, rngs=nnx.Rngs(1))
    for m in (ptq, lora):
        leaves = jax.tree.leaves(nnx.state(m), is_leaf=lambda x: isinstance(x, qwix.QArray))
        assert not any(isinstance(x, qwix.QArray) for x in leaves)
        assert not [p for p, _ in jax.tree_util.tree_leaves_with_path(nnx.state(m, nnx.LoRAParam))]
        assert len(jax.tree.leaves(nnx.state(m))) == len(jax.tree.leaves(nnx.state(model)))
        np.testing.assert_array_equal(np.asarray(m(ids)), base)
