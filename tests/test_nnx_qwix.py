"""qwix (Google's JAX quantisation library, PyPI `qwix`, a test dependency) on the NNX module (issue 29).

qwix's array API (`qwix.quantize` / `dequantize`) quantises the module's frozen base weights: NF4 with
jaxtool's blocking (64 consecutive values of the row-major flattened per-layer weight, absmax scale)
gives exactly jaxtool's NF4 weights, and logits equal to jaxtool's own NF4 base; int8 per output
channel differs from jaxtool's int8 only by qwix's scale (absmax / 127.5, values in [-128, 127];
jaxtool: absmax / 127, [-127, 127]), and the logits differ by less than quantisation itself moves them.

qwix's model-level API (`qwix.quantize_model` with `PtqProvider`, `qwix.apply_lora_to_model` with
`LoraProvider`) intercepts `dot_general` / `einsum` inside a module's `__call__` and looks the weight
operand up among the `nnx.Param` attributes of the module whose call runs the matmul (qwix 0.1.8,
`_src/utils/flax_util.py` `get_current_module` / `find_param`). On `CausalLM` the layers are stacked in
one tree and sliced inside `lax.scan`: qwix finds no weight (pinned below). The per-layer view
`CausalLM.per_layer()` (`LayeredLM`: one submodule per layer, each projection its own Param, the block
run inside the layer's call by the same pure functions) is what it needs: PTQ (nf4, int8) quantises
every projection and the logits agree with jaxtool's quantised base; LoRA adds adapters that train
alone and compute what jaxtool's own LoRA computes."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import qwix   # a test dependency (setup.py extra "test"): a missing qwix fails here, never skips
from flax import nnx

from jaxtool.errors import ConfigError, JaxtoolError
from jaxtool.models import family_of, preset, quant
from jaxtool.models.nnx import CausalLM, LayeredLM
from jaxtool.models.run import DEFAULT_RUN, RunOptions

# qwix 0.1.8 calls Flax APIs that Flax 0.12 deprecates (`.value`, `VariableState`, `iter_modules`):
# ~3,600 DeprecationWarnings per run from qwix's own code, none from jaxtool's
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:qwix")

CFG = dataclasses.replace(preset("tiny"), num_layers=1)


def _params(seed=0, cfg=CFG):
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda s: jnp.asarray((0.2 * rng.standard_normal(s)).astype(np.float32)),
                        family_of(cfg).param_shapes(cfg), is_leaf=lambda s: isinstance(s, tuple))


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
        # itself (seen: 0.0151 apart, jaxtool's int8 0.0123 and qwix's 0.0136 from float32, logit range 2.9), and qwix's base is as close
        # to the float32 model as jaxtool's
        err = np.max(np.abs(want - plain))
        assert np.max(np.abs(got - want)) <= 2 * err
        assert np.max(np.abs(got - plain)) <= 1.5 * err
    assert np.max(np.abs(want - plain)) > 1e-3        # quantisation did something


# ============================================================================================
# the model-level API on the per-layer view (`CausalLM.per_layer()`, jaxtool.models.nnx.LayeredLM)
# ============================================================================================

CFG2 = dataclasses.replace(preset("tiny"), num_layers=2)
PROJ = tuple(family_of(CFG2).projections)          # wq wk wv wo w_gate w_up w_down


def _ids(shape=(2, 8)):
    return jnp.asarray(np.random.RandomState(1).randint(0, CFG2.vocab_size, shape))


_forward = jax.jit(lambda p, x, cfg, run: family_of(cfg).forward(p, x, cfg, run=run), static_argnums=(2, 3))


def _pure_logits(params, ids, cfg=CFG2, run=DEFAULT_RUN):
    return np.asarray(_forward(params, ids, cfg, run))


def _quantised(m) -> dict:
    """{(layer, weight) path: dtype of its codes} for every qwix QArray in the module's state."""
    out = {}
    for path, x in jax.tree_util.tree_leaves_with_path(nnx.state(m)):
        keys = re.findall(r"\[([^\]]+)\]", jax.tree_util.keystr(path))
        if "'qvalue'" in keys:
            out[tuple(k.strip("'") for k in keys[:keys.index("'array'")])] = x.dtype
    return out


def test_per_layer_view_is_the_parameter_tree_and_the_same_logits():
    """`nnx.split` of the view maps 1:1 onto the family's parameter tree (each projection as its 2-D
    kernel: a reshape; layers stacked), both ways; the logits are the pure functions' bit for bit."""
    params = _params(seed=3, cfg=CFG2)
    fam = family_of(CFG2)
    view = CausalLM(CFG2, params=params).per_layer()
    ids = _ids()
    np.testing.assert_array_equal(np.asarray(view(ids)), _pure_logits(params, ids))
    graph, state = nnx.split(view)
    pure = nnx.to_pure_dict(state)
    assert sorted(pure) == ["embed", "final_norm", "layers", "lm_head"] and sorted(pure["layers"]) == [0, 1]
    for i in range(2):
        assert sorted(pure["layers"][i]) == sorted(params["layers"])
        for name, a in params["layers"].items():   # the i-th slice, projections as [in, out]
            n_in = fam.projections[name][0] if name in fam.projections else None
            want = np.asarray(a[i]) if n_in is None else np.asarray(a[i]).reshape(
                int(np.prod(a.shape[1:1 + n_in])), -1)
            np.testing.assert_array_equal(np.asarray(pure["layers"][i][name]), want)
    back = view.pure_params()                       # and back: the family's tree
    assert jax.tree.structure(back) == jax.tree.structure(params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(view.stacked().pure_params()),
                                                      jax.tree.leaves(params)))
    again = nnx.merge(graph, state)
    np.testing.assert_array_equal(np.asarray(again(ids)), _pure_logits(params, ids))
    meta = view.layers[0].wq.get_metadata()        # logical axes, (heads, head_dim) merged into heads
    assert meta["out_sharding"] == ("embed", "heads")
    assert view.layers[0].wo.get_metadata()["out_sharding"] == ("heads", "embed")
    assert view.layers[1].attn_norm.get_metadata()["out_sharding"] == ("norm",)
    specs = nnx.get_partition_spec(state)
    assert specs["layers"][0]["wk"].get_value() == jax.sharding.PartitionSpec("fsdp", "tensor")


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_qwix_quantize_model_on_the_per_layer_view(kind):
    """`qwix.quantize_model(view, PtqProvider(...), ids)` replaces every projection of every layer by a
    QArray (norms and embeddings stay float), and its logits agree with jaxtool's own quantised base.

    Tolerance: the two are different roundings (int8: qwix's scale is absmax/127.5 with codes in
    [-128, 127], jaxtool's absmax/127 in [-127, 127], both per output channel; nf4: both use QLoRA's 16
    levels, jaxtool over blocks of 64 consecutive values along a row of the kernel — its output axis —
    qwix over tiles of 64 along the contracting axis, `tile_size=64`), so their logits differ by the
    order of quantisation's own error: we require |qwix - jaxtool| <= 2 x |jaxtool - float32| and
    qwix's error <= 1.5 x jaxtool's. Seen (one layer, random weights of std 0.2, logits of range 2.9):
    int8 0.0151 apart, errors 0.0136 (qwix) / 0.0123 (jaxtool); nf4 0.336 apart, 0.214 / 0.214."""
    params = _params(seed=0)
    fam = family_of(CFG)
    view = CausalLM(CFG, params=params).per_layer()
    ids = _ids()
    rule = qwix.QuantizationRule(module_path="layers/.*", weight_qtype=kind, tile_size=64 if kind == "nf4" else None)
    q = qwix.quantize_model(view, qwix.PtqProvider([rule]), ids)
    codes = {"nf4": jnp.uint4, "int8": jnp.int8}[kind]
    assert _quantised(q) == {("layers", str(i), n): codes for i in range(CFG.num_layers) for n in PROJ}
    for layer in q.layers:
        assert isinstance(layer.wq.array, qwix.QArray) and isinstance(layer.attn_norm, nnx.Param)
    assert isinstance(q.lm_head, nnx.Param) and isinstance(q.embed, nnx.Param)
    assert not _quantised(view)                                 # the input model is left as it was
    with pytest.raises(JaxtoolError, match="replaced by qwix's quantised arrays"):
        q.pure_params()                                         # no float tree to give back
    got = np.asarray(q(ids))
    plain = _pure_logits(params, ids, CFG)
    ours = jax.jit(lambda p: quant.quantize_params(p, kind, fam.projections))(params)   # jaxtool's quantised base
    want = _pure_logits(ours, ids, CFG)
    err = np.max(np.abs(want - plain))
    assert err > 1e-3                                           # quantisation did something
    assert np.max(np.abs(got - want)) <= 2 * err
    assert np.max(np.abs(got - plain)) <= 1.5 * err


def test_qwix_lora_on_the_per_layer_view_trains_only_the_adapters():
    """`qwix.apply_lora_to_model(view, LoraProvider(...), ids, rngs=)` adds an (A, B) pair of
    `nnx.LoRAParam`s next to every projection of every layer; B = 0 at init gives the base logits bit
    for bit; one `nnx.Optimizer(wrt=nnx.LoRAParam)` step with `nnx.DiffState(0, nnx.LoRAParam)` moves
    adapters only, and the adapted logits equal jaxtool's own LoRA (the pure functions with the same
    A, B attached, `lora_scale` = alpha / rank) — an independent formula for the same model."""
    from jaxtool.models import lora

    params = _params(seed=0)
    view = CausalLM(CFG, params=params).per_layer()
    ids = _ids()
    rank, alpha = 2, 4.0
    m = qwix.apply_lora_to_model(view, qwix.LoraProvider([qwix.LoraRule(module_path="layers/.*", rank=rank, alpha=alpha)]),
                                 ids, rngs=nnx.Rngs(1))
    adapters = nnx.to_pure_dict(nnx.state(m, nnx.LoRAParam))
    assert sorted(adapters) == ["layers"] and sorted(adapters["layers"]) == list(range(CFG.num_layers))
    assert sorted(adapters["layers"][0]) == sorted(f"{n}_lora_{p}" for n in PROJ for p in "ab")
    assert adapters["layers"][0]["wq_lora_a"].shape == (64, rank) and adapters["layers"][0]["wq_lora_b"].shape == (rank, 64)
    np.testing.assert_array_equal(np.asarray(m(ids)), _pure_logits(params, ids, CFG))   # B = 0: the base model
    base_before = nnx.to_pure_dict(nnx.state(m, nnx.Not(nnx.LoRAParam)))
    opt = nnx.Optimizer(m, optax.adam(1e-2), wrt=nnx.LoRAParam)
    targets = jnp.roll(ids, -1, axis=1)

    @nnx.jit
    def step(model, opt):
        def loss(model):
            logp = jax.nn.log_softmax(model(ids).astype(jnp.float32))
            return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))
        grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
        opt.update(model, grads)
        return grads

    grads = step(m, opt)
    assert sorted(nnx.to_pure_dict(grads)["layers"][0]) == sorted(adapters["layers"][0])   # adapters only
    base_after = nnx.to_pure_dict(nnx.state(m, nnx.Not(nnx.LoRAParam)))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(base_before), jax.tree.leaves(base_after)))
    new = nnx.to_pure_dict(nnx.state(m, nnx.LoRAParam))
    for i in range(CFG.num_layers):
        for k, b in new["layers"][i].items():   # every B left zero; A's gradient is 0 while B = 0, Adam keeps it
            assert np.array_equal(b, adapters["layers"][i][k]) == k.endswith("_a"), (i, k)

    # jaxtool's LoRA with the same adapters: A [in.., r], B [r, out..] stacked over layers
    shapes = family_of(CFG).param_shapes(CFG)["layers"]
    n_in = {n: family_of(CFG).projections[n][0] for n in PROJ}
    ours = {"layers": {}}
    for n in PROJ:
        ins, outs = shapes[n][1:1 + n_in[n]], shapes[n][1 + n_in[n]:]
        ours["layers"][f"{n}_lora_a"] = jnp.stack([new["layers"][i][f"{n}_lora_a"].reshape(ins + (rank,)) for i in range(CFG.num_layers)])
        ours["layers"][f"{n}_lora_b"] = jnp.stack([new["layers"][i][f"{n}_lora_b"].reshape((rank,) + outs) for i in range(CFG.num_layers)])
    want = _pure_logits(lora.attach(params, ours), ids, CFG, RunOptions(lora_scale=alpha / rank))
    got = np.asarray(m(ids))
    assert np.max(np.abs(got - _pure_logits(params, ids, CFG))) > 1e-3   # the step changed the model
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_per_layer_view_refuses_what_qwix_could_not_see():
    """A rematerialised layer (traced apart from its module) and jaxtool's own LoRA adapters (the view
    carries base weights only) are refused with the setting to change."""
    with pytest.raises(ConfigError, match="run.remat='none'"):
        LayeredLM(CFG, params=_params(), run=RunOptions(remat="full"))
    with pytest.raises(ConfigError, match="jaxtool LoRA adapters"):
        CausalLM(CFG, params=_params()).add_lora(2, nnx.Rngs(0), ("wq",)).per_layer()


def test_qwix_model_api_finds_no_weight_in_the_stacked_module():
    """On `CausalLM` itself (layers stacked, sliced inside `lax.scan`) qwix finds no weight: nothing is
    quantised, the logits are unchanged — use `per_layer()` (above)."""
    model = CausalLM(CFG, params=_params())
    ids = jnp.asarray(np.random.RandomState(1).randint(0, CFG.vocab_size, (1, 6)))
    ptq = qwix.quantize_model(model, qwix.PtqProvider([qwix.QuantizationRule(module_path=".*", weight_qtype="nf4")]),
                              ids)
    assert not _quantised(ptq)
    assert len(jax.tree.leaves(nnx.state(ptq))) == len(jax.tree.leaves(nnx.state(model)))
    np.testing.assert_array_equal(np.asarray(ptq(ids)), np.asarray(model(ids)))


@pytest.mark.slow   # two more quantised programs (~5 s here)
def test_qwix_rule_matching_the_root_quantises_the_output_layer():
    """`module_path=".*"` matches the root module too: qwix quantises the output layer's weight (untied
    `lm_head`), which the view hands to `unembed` as qwix left it; with tied embeddings it would
    quantise the embedding table, which the lookup cannot read: a clear error on the next call."""
    params = _params(seed=0, cfg=CFG2)
    ids = _ids()
    rules = [qwix.QuantizationRule(module_path=".*", weight_qtype="int8")]
    q = qwix.quantize_model(CausalLM(CFG2, params=params).per_layer(), qwix.PtqProvider(rules), ids)
    assert ("lm_head",) in _quantised(q) and len(_quantised(q)) == 2 * len(PROJ) + 1
    plain = _pure_logits(params, ids)
    ours = jax.jit(lambda p: quant.quantize_params(p, "int8", family_of(CFG2).projections))(params)
    err = np.max(np.abs(_pure_logits(ours, ids) - plain))      # jaxtool's int8 (projections only)
    assert 1e-3 < np.max(np.abs(np.asarray(q(ids)) - plain)) <= 2 * err

    tied = dataclasses.replace(CFG2, tie_embeddings=True)
    tq = qwix.quantize_model(CausalLM(tied, params=_params(seed=0, cfg=tied)).per_layer(), qwix.PtqProvider(rules), ids)
    assert ("embed",) in _quantised(tq)
    with pytest.raises(JaxtoolError, match="module_path='layers/"):
        tq(ids)


@pytest.mark.slow   # four programs: PTQ, LoRA, forward, training step (~8 s here)
def test_qwix_qlora_quantise_then_adapt():
    """QLoRA with qwix on the view, in two calls: `quantize_model` (nf4 base; `rngs=` so that the
    attribute qwix keeps them in stays a data attribute) then `apply_lora_to_model` with a `LoraRule`
    of the same `weight_qtype`. Every projection keeps its QArray and gets an adapter; B = 0 gives
    the PTQ model's logits bit for bit; an optimizer step moves the adapters and not the 4-bit base.
    (One `LoraRule(weight_qtype="nf4")` on the float view adapts only the weights whose kernel shape
    is unique in their layer: docs/nnx.md.)"""
    params = _params(seed=0, cfg=CFG2)
    ids = _ids()
    kw = dict(module_path="layers/.*", weight_qtype="nf4", tile_size=64)
    q = qwix.quantize_model(CausalLM(CFG2, params=params).per_layer(), qwix.PtqProvider([qwix.QuantizationRule(**kw)]),
                            ids, rngs=nnx.Rngs(0))
    ptq_logits = np.asarray(q(ids))
    m = qwix.apply_lora_to_model(q, qwix.LoraProvider([qwix.LoraRule(rank=2, alpha=4.0, **kw)]), ids, rngs=nnx.Rngs(1))
    assert _quantised(m) == {("layers", str(i), n): jnp.uint4 for i in range(2) for n in PROJ}
    adapters = nnx.to_pure_dict(nnx.state(m, nnx.LoRAParam))
    assert all(sorted(adapters["layers"][i]) == sorted(f"{n}_lora_{p}" for n in PROJ for p in "ab") for i in (0, 1))
    np.testing.assert_array_equal(np.asarray(m(ids)), ptq_logits)
    frozen = jax.tree.leaves(nnx.state(m, nnx.Not(nnx.LoRAParam)))
    opt = nnx.Optimizer(m, optax.adam(1e-2), wrt=nnx.LoRAParam)

    @nnx.jit
    def step(model, opt):
        grads = nnx.grad(lambda model: jnp.mean(model(ids) ** 2), argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
        opt.update(model, grads)

    step(m, opt)
    assert all(np.array_equal(a, b) for a, b in zip(frozen, jax.tree.leaves(nnx.state(m, nnx.Not(nnx.LoRAParam)))))
    new = nnx.to_pure_dict(nnx.state(m, nnx.LoRAParam))
    assert all(not np.array_equal(new["layers"][i][f"{n}_lora_b"], 0) for i in (0, 1) for n in PROJ)
    assert np.max(np.abs(np.asarray(m(ids)) - ptq_logits)) > 1e-4


@pytest.mark.slow   # three programs per family (~7 s each here)
@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_per_layer_view_and_qwix_ptq_for_the_other_families(family):
    """Qwen2 (q/k/v biases) and Qwen3 (q/k norms): the view's logits are the pure functions' per-layer
    (`scan_layers=False`) program's bit for bit (the scanned program may round differently: Qwen2
    3e-7 here), its biases and norms stay float under qwix's int8 PTQ and every projection is
    quantised, within the tolerance of the Llama test of jaxtool's int8 base."""
    from test_nnx import _random_params, _tiny

    cfg = _tiny(family)
    params, fam = _random_params(cfg), family_of(cfg)
    ids = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 8)))
    fwd = jax.jit(lambda p, x: fam.forward(p, x, cfg, run=RunOptions(scan_layers=False)))
    plain = np.asarray(fwd(params, ids))
    view = CausalLM(cfg, params=params).per_layer()
    np.testing.assert_array_equal(np.asarray(view(ids)), plain)
    # the pure functions' per-layer path also takes plain per-layer dicts (as `forward_cached` does)
    unstacked = {**params, "layers": tuple(jax.tree.map(lambda a, i=i: a[i], params["layers"]) for i in range(2))}
    np.testing.assert_array_equal(np.asarray(fwd(unstacked, ids)), plain)
    extra = {"qwen2": ("bq", "bk", "bv"), "qwen3": ("q_norm", "k_norm")}[family]
    assert set(extra) <= set(view.layers[0].names)
    q = qwix.quantize_model(view, qwix.PtqProvider([qwix.QuantizationRule(module_path="layers/.*", weight_qtype="int8")]),
                            ids)
    assert _quantised(q) == {("layers", str(i), n): jnp.int8 for i in range(cfg.num_layers) for n in PROJ}
    want = np.asarray(fwd(quant.quantize_params(params, "int8", fam.projections), ids))
    got, err = np.asarray(q(ids)), np.max(np.abs(want - plain))
    assert err > 1e-3 and np.max(np.abs(got - want)) <= 2 * err and np.max(np.abs(got - plain)) <= 1.5 * err
