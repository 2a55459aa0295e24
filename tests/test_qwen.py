"""The Qwen2 / Qwen2.5 and Qwen3 families against transformers' `Qwen2ForCausalLM` / `Qwen3ForCausalLM`.

One random tiny config per family, between them: q/k/v bias (Qwen2), per-head q/k RMSNorm (Qwen3),
tied (Qwen2) and untied (Qwen3) embeddings, GQA with 2 KV heads (Qwen2) and MQA with a head_dim that
is not hidden / heads (Qwen3: 64 / 4 heads, head_dim 24). Weights are drawn with std 0.2 and biases
with std 0.5 so logits are O(1-10) and a missing bias or norm cannot hide. Tolerance as Llama's
(tests/test_llama.py): float32 logits within 1e-4 max abs difference.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxtool
from jaxtool.config import LossConfig, OptimConfig, load_config
from jaxtool.data.batch import Batch, PairBatch, RefLogps
from jaxtool.errors import ConfigError
from jaxtool.models import family_for_hf, family_of, lora, preset, quant
from jaxtool.safetensors_io import open_checkpoint
from jaxtool.sample.generate import generate_ids
from jaxtool.train import steps
from jaxtool.train.optim import make_optimizer

V = 300
CASES = {
    "qwen2": dict(num_key_value_heads=2, tie_word_embeddings=True),
    "qwen3": dict(num_key_value_heads=1, head_dim=24, tie_word_embeddings=False),
}


def _hf_classes(family):
    import transformers

    prefix = {"qwen2": "Qwen2", "qwen3": "Qwen3"}[family]
    return getattr(transformers, prefix + "Config"), getattr(transformers, prefix + "ForCausalLM")


_BUILT: dict = {}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    return _build(request.param, tmp_path_factory)


def _build(family, tmp_path_factory):
    """(family, transformers model, its HF directory, our model loaded from it), built once per family."""
    if family in _BUILT:
        return _BUILT[family]
    hf_cfg_cls, model_cls = _hf_classes(family)
    torch.manual_seed(7)
    hc = hf_cfg_cls(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6, bos_token_id=1,
                    eos_token_id=2, **CASES[family])
    ref = model_cls(hc).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.5)
            elif p.ndim == 2:
                p.normal_(0.0, 0.2)
            else:
                p.uniform_(0.5, 1.5)
    d = str(tmp_path_factory.mktemp(family))
    ref.save_pretrained(d)
    _BUILT[family] = family, ref, d, jaxtool.load_model(d)
    return _BUILT[family]


PROMPTS = [[11, 250, 37, 4, 199, 60, 7], [3, 42, 128]]
_GREEDY: dict = {}


def ours_greedy(m):
    """Our greedy continuations of PROMPTS (decoded together: right-padded rows, KV cache), once per model."""
    if m.config.model_type not in _GREEDY:
        _GREEDY[m.config.model_type] = generate_ids(m.params, m.config, PROMPTS, max_new_tokens=8, chunk=8,
                                                    length_multiple=8).tokens
    return _GREEDY[m.config.model_type]


def torch_greedy(model, prompt):
    with torch.no_grad():
        return model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                              pad_token_id=0)[0, len(prompt):].tolist()


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.float().numpy()


def test_logits_match_transformers(case):
    family, ref, _, m = case
    assert m.config.model_type == family and m.family.name == family
    if family == "qwen2":
        assert "bq" in m.params["layers"] and "q_norm" not in m.params["layers"] and "lm_head" not in m.params
    else:
        assert "q_norm" in m.params["layers"] and "bq" not in m.params["layers"] and "lm_head" in m.params
        assert m.config.head_dim * m.config.num_heads != m.config.hidden_size
    ids = np.random.RandomState(0).randint(0, V, (2, 40))
    want, got = torch_logits(ref, ids), m.logits(ids)
    diff = float(np.abs(want - got).max())
    print(f"[parity] {family}: max |Δlogit| = {diff:.2e} (logit scale {np.abs(want).max():.1f})")
    assert diff <= 1e-4
    assert np.abs(want).max() > 1.0


def test_hf_round_trip_is_bit_identical_and_transformers_reads_the_export(case, tmp_path):
    """safetensors -> params -> safetensors: every tensor bit-identical to transformers' own save;
    the export loads in transformers with the same greedy continuation as ours."""
    family, ref, d, m = case
    out = str(tmp_path / "export")
    m.save_hf(out, dtype="float32")
    theirs, ours = open_checkpoint(d), open_checkpoint(out)
    assert set(ours) == set(theirs)
    for name in theirs:
        a, b = theirs[name].get(name), ours[name].get(name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    back_cfg, back_params, _ = jaxtool.load_model(out)
    assert back_cfg == m.config
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), back_params, m.params)

    _, model_cls = _hf_classes(family)
    exported = model_cls.from_pretrained(out, dtype=torch.float32).eval()
    assert [torch_greedy(exported, p) for p in PROMPTS] == ours_greedy(m)


def test_forward_cached_equals_forward(case):
    _, _, _, m = case
    fam, cfg = family_of(m.config), m.config
    rng = np.random.RandomState(4)
    lengths = np.array([9, 5])
    seqs = [rng.randint(3, V, 14) for _ in lengths]
    full = [m.logits(s[None])[0] for s in seqs]
    prompt = np.zeros((2, 9), np.int32)
    for i, n in enumerate(lengths):
        prompt[i, :n] = seqs[i][:n]
    step_fn = jax.jit(fam.forward_cached, static_argnums=4)
    cache = fam.init_cache(cfg, 2, 16)
    logits, cache = step_fn(m.params, jnp.asarray(prompt), cache, jnp.zeros(2, jnp.int32), cfg)
    for i, n in enumerate(lengths):
        assert np.abs(np.asarray(logits[i, :n]) - full[i][:n]).max() <= 1e-4
    pos = jnp.asarray(lengths)
    for step in range(4):
        tok = jnp.asarray([[seqs[i][lengths[i] + step]] for i in range(2)], jnp.int32)
        logits, cache = step_fn(m.params, tok, cache, pos, cfg)
        for i in range(2):
            assert np.abs(np.asarray(logits[i, 0]) - full[i][lengths[i] + step]).max() <= 1e-4
        pos = pos + 1


def test_greedy_generation_equals_transformers(case):
    """Two prompts of different lengths decoded together (right-padded, KV cache) against transformers'
    greedy `generate` of each prompt alone."""
    _, ref, _, m = case
    got = ours_greedy(m)
    assert got == [torch_greedy(ref, p) for p in PROMPTS]
    assert len(set(map(tuple, got))) > 1 and all(len(set(g)) > 1 for g in got)   # not one repeated token


def _batch(rng, B, L, turns):
    """Random rows: a 4-token prompt, then `turns` assistant turns of (L - 4) / turns tokens each."""
    m = np.zeros((B, L), np.int32)
    m[:, 4:] = 1
    turn = np.where(m > 0, (np.arange(L)[None, :] - 4) * turns // (L - 4), -1).astype(np.int32)
    return Batch(rng.randint(3, V, (B, L)).astype(np.int32), rng.randint(3, V, (B, L)).astype(np.int32), m, turn,
                 np.tile(np.arange(L, dtype=np.int32), (B, 1)), np.ones((B, L), np.int32), np.arange(B, dtype=np.int32))


# Each family and each objective trains in the fast set (qwen2 SFT, qwen3 DiaTool-DPO); the other two
# combinations are slow-marked (a train-step compile each).
@pytest.mark.parametrize("family,objective", [
    ("qwen2", "sft"), ("qwen3", "diatool_dpo"),
    pytest.param("qwen2", "diatool_dpo", marks=pytest.mark.slow),
    pytest.param("qwen3", "sft", marks=pytest.mark.slow)])
def test_lora_sft_and_diatool_dpo_steps_train(family, objective, tmp_path_factory):
    """A LoRA SFT step and a LoRA DiaTool-DPO step on the tiny model: finite losses that go down over
    a few steps on a fixed batch, adapters that move."""
    _, _, _, m = _build(family, tmp_path_factory)
    cfg = m.config
    adapters = lora.init_adapters(cfg, 4, (), jax.random.key(0))     # () = every projection of the family
    assert {k.rsplit("_lora_", 1)[0] for k in adapters["layers"]} == set(family_of(cfg).lora_targets)
    opt, _ = make_optimizer(OptimConfig(lr=3e-3), 100)
    rng = np.random.RandomState(1)
    T = 2
    sft = jax.tree.map(jnp.asarray, _batch(rng, 2, 12, T))
    ref = jax.tree.map(jnp.asarray, RefLogps.zeros(2, T))
    pairs = PairBatch(*(jax.tree.map(jnp.asarray, _batch(rng, 2, 12, T)) for _ in range(2)),
                      index=jnp.arange(2, dtype=jnp.int32), ref=ref)
    dpo = load_config(None, ["loss.type=diatool_dpo", "loss.beta=0.5", "loss.gamma=0.5"]).loss
    runs = {"sft": (LossConfig(type="sft"), sft, 0), "diatool_dpo": (dpo, pairs, T)}
    for lc, batch, turns in (runs[objective],):
        train = steps.make_train_step(cfg, lc, opt, use_lora=True, max_turns=turns, donate=False)
        step = lambda st, b, train=train: train(st, b, m.params)  # noqa: E731
        state = steps.TrainState(jnp.zeros((), jnp.int32), adapters, opt.init(adapters))
        losses = []
        for _ in range(3):
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
        print(f"[train] {family} {lc.type}: losses {losses}")
        assert all(np.isfinite(losses)) and losses[-1] < losses[0], (lc.type, losses)
        moved = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(state.trainable), jax.tree.leaves(adapters))]
        assert min(moved) > 0


def test_quantised_base_and_sharding_axes_cover_the_hooks(case):
    """int8 (Qwen2) / NF4 (Qwen3) bases quantise the family's projections only (biases and q/k norms stay plain), and
    every parameter, the hook parameters included, has one logical axis name per dimension."""
    family, _, _, m = case
    fam, cfg = family_of(m.config), m.config
    axes, shapes = fam.param_axes(cfg), fam.param_shapes(cfg)
    is_tuple = lambda x: isinstance(x, tuple)  # noqa: E731
    assert jax.tree.structure(axes, is_leaf=is_tuple) == jax.tree.structure(shapes, is_leaf=is_tuple)
    jax.tree.map(lambda a, s: len(a) == len(s) or pytest.fail(f"{a} vs {s}"), axes, shapes, is_leaf=is_tuple)
    hooks = ("bq", "bk", "bv") if family == "qwen2" else ("q_norm", "k_norm")
    assert all(h in axes["layers"] for h in hooks)
    for kind in ("int8",) if family == "qwen2" else ("nf4",):   # one format per family keeps it quick
        qp = quant.quantize_params(m.params, kind, fam.projections)
        assert all(quant.is_quantized(qp["layers"][n]) for n in fam.projections)
        assert not any(quant.is_quantized(qp["layers"][h]) for h in hooks)
        qaxes = quant.quantized_param_axes(axes, qp)
        assert jax.tree.structure(qaxes, is_leaf=is_tuple) == jax.tree.structure(qp)


# Qwen's model cards: total parameters, layers, query / KV heads, context (max_position_embeddings
# of config.json); these are the cards' numbers, not recomputed from the presets.
MODEL_CARDS = {
    "qwen2.5-0.5b": (0.49e9, 24, 14, 2, 32768),
    "qwen2.5-1.5b": (1.54e9, 28, 12, 2, 32768),
    "qwen2.5-7b": (7.61e9, 28, 28, 4, 32768),
    "qwen3-0.6b": (0.6e9, 28, 16, 8, 40960),
    "qwen3-1.7b": (1.7e9, 28, 16, 8, 40960),
    "qwen3-8b": (8.2e9, 36, 32, 8, 40960),
}


@pytest.mark.parametrize("name", sorted(MODEL_CARDS))
def test_presets_match_the_model_cards(name):
    total, layers, heads, kv, ctx = MODEL_CARDS[name]
    cfg = preset(name)
    assert family_of(cfg).name == ("qwen2" if name.startswith("qwen2") else "qwen3")
    assert (cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.max_position_embeddings) == (layers, heads, kv, ctx)
    unit = 0.1e9 if name in ("qwen3-0.6b", "qwen3-1.7b", "qwen3-8b") else 0.01e9  # the card's last digit
    assert abs(cfg.num_params() - total) <= unit, cfg.num_params()
    back = family_of(cfg).config_from_hf(cfg.to_hf())       # config.json round trip
    assert back == cfg


def test_config_errors_name_the_problem():
    base = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4)
    q2 = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], **base}
    assert family_for_hf(q2).config_from_hf(q2).qkv_bias
    with pytest.raises(ConfigError, match="use_sliding_window"):
        family_for_hf(q2).config_from_hf({**q2, "use_sliding_window": True})
    with pytest.raises(ConfigError, match="yarn"):
        family_for_hf(q2).config_from_hf({**q2, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    q3 = {**q2, "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]}
    with pytest.raises(ConfigError, match="attention_bias"):
        family_for_hf(q3).config_from_hf({**q3, "attention_bias": True})
    with pytest.raises(ConfigError, match="did you mean 'qwen3'"):
        family_for_hf({**q3, "model_type": "qwen"})
    with pytest.raises(ConfigError, match="did you mean 'qwen3-8b'"):
        preset("qwen3-8")
    with pytest.raises(ConfigError, match="num_hidden_layers must be an integer"):
        family_for_hf(q3).config_from_hf({**q3, "num_hidden_layers": "2"})


def test_one_call_loads_every_kind_of_path_the_same(case, tmp_path):
    """HF directory and jaxtool checkpoint of the same model: one call, the same (config, params)."""
    _, _, d, m = case
    ckpt = str(tmp_path / "ckpt")
    m.save(ckpt)
    for path in (d, ckpt):
        cfg, params, tok = jaxtool.load_model(path)
        assert cfg == m.config and type(cfg) is type(m.config)
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, m.params)
    assert os.path.isdir(ckpt)
