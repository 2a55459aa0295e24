"""The loss registry and the `loss:` tagged union: every objective goes through one step path."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtool import losses, objectives
from jaxtool.config import LossConfig, dump_yaml, load_config
from jaxtool.data.batch import Batch, PairBatch
from jaxtool.errors import ConfigError
from jaxtool.models import llama
from jaxtool.train import steps


def _stats(rng, B=3, T=2):
    side = lambda: {"seq": jnp.asarray(rng.normal(-20, 3, B), jnp.float32),  # noqa: E731
                    "len": jnp.asarray(rng.randint(1, 9, B), jnp.float32),
                    "turns": jnp.asarray(rng.normal(-8, 2, (B, T)), jnp.float32),
                    "turn_mask": jnp.asarray([[1, 1], [1, 0], [1, 1]], bool)}
    return {"chosen": side(), "rejected": side()}


@pytest.mark.parametrize("name", [n for n in objectives.names() if objectives.get(n).kind == "preference"])
def test_each_preference_entry_is_its_loss_function(name):
    rng = np.random.RandomState(0)
    pol, ref = _stats(rng), _stats(rng)
    hp = objectives.make_hparams(name)
    got, _ = objectives.get(name).compute(pol, ref, hp)
    c, r, rc, rr = pol["chosen"], pol["rejected"], ref["chosen"], ref["rejected"]
    want = {
        "dpo": lambda: losses.dpo_loss(c["seq"], r["seq"], rc["seq"], rr["seq"], hp.beta),
        "ipo": lambda: losses.dpo_loss(c["seq"], r["seq"], rc["seq"], rr["seq"], hp.beta, loss_type="ipo"),
        "hinge": lambda: losses.dpo_loss(c["seq"], r["seq"], rc["seq"], rr["seq"], hp.beta, loss_type="hinge"),
        "simpo": lambda: losses.simpo_loss(c["seq"], r["seq"], c["len"], r["len"], 2.0, 0.5),
        "orpo": lambda: losses.orpo_loss(c["seq"], r["seq"], c["len"], r["len"], 0.1),
        "dmpo": lambda: losses.dmpo_loss(c["turns"], rc["turns"], c["turn_mask"], r["turns"], rr["turns"],
                                         r["turn_mask"], 0.1, 0.5),
        "diatool_dpo": lambda: losses.diatool_dpo_loss(c["turns"], rc["turns"], c["turn_mask"], r["turns"],
                                                       rr["turns"], r["turn_mask"], 0.5, 0.5, 0.0),
    }[name]()[0]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)


def test_sft_entry_matches_losses_sft_loss():
    rng = np.random.RandomState(1)
    logits = jnp.asarray(rng.normal(size=(2, 5, 11)), jnp.float32)
    targets = jnp.asarray(rng.randint(0, 11, (2, 5)))
    mask = jnp.asarray([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    per_token, _ = objectives.get("sft").compute({"token_logps": losses.logps_from_logits(logits, targets),
                                                  "loss_mask": mask}, None, objectives.NoParams())
    np.testing.assert_allclose(float(jnp.sum(per_token) / jnp.sum(mask)), float(losses.sft_loss(logits, targets, mask)),
                               rtol=1e-6)


def test_loss_config_is_a_tagged_union():
    c = load_config(None, ["loss.type=simpo", "loss.beta=2.5", "loss.gamma=0.7"])
    assert isinstance(c.loss.params, objectives.SimPOParams) and (c.loss.beta, c.loss.gamma) == (2.5, 0.7)
    d = load_config(None, ["loss.type=diatool_dpo", "loss.margin=2", "loss.use_phi=false"])
    assert isinstance(d.loss.params, objectives.DiaToolParams) and d.loss.margin == 2.0 and d.loss.use_phi is False
    # order of keys does not matter: the type is resolved first
    e = load_config(None, ["loss.margin=1.5", "loss.type=diatool_dpo"])
    assert e.loss.margin == 1.5
    with pytest.raises(ConfigError, match="not a hyper-parameter of loss.type='dpo'"):
        load_config(None, ["loss.type=dpo", "loss.margin=2.0"])
    with pytest.raises(ConfigError, match="loss.use_phi expects bool"):
        load_config(None, ["loss.type=diatool_dpo", "loss.use_phi=maybe"])
    # the YAML written to a run dir reads back to the same config
    text = dump_yaml(d)
    assert "margin: 2.0" in text and "params" not in text


def test_a_new_objective_is_one_entry(tmp_path):
    """Registering an entry is all it takes for the step (and the config) to train with it."""
    @dataclasses.dataclass(frozen=True)
    class Params:
        tau: float = 1.0

    def compute(pol, ref, hp):  # a margin-free "prefer chosen by sequence log-prob" objective
        h = pol["chosen"]["seq"] - pol["rejected"]["seq"]
        return -jax.nn.log_sigmoid(h / hp.tau), {"reward_margin": h}

    objectives.register(objectives.Objective("test_seq_pref", Params, "preference", compute))
    try:
        c = load_config(None, ["loss.type=test_seq_pref", "loss.tau=2.0", "data.kind=preference"])
        assert c.loss.tau == 2.0
        cfg = llama.preset("tiny")
        params = llama.init_params(cfg, jax.random.key(0))

        def side(seed):
            r = np.random.RandomState(seed)
            m = np.zeros((2, 8), np.int32)
            m[:, 4:] = 1
            return Batch(r.randint(3, 500, (2, 8)).astype(np.int32), r.randint(3, 500, (2, 8)).astype(np.int32), m,
                         np.where(m > 0, 0, -1).astype(np.int32), np.tile(np.arange(8, dtype=np.int32), (2, 1)),
                         np.ones((2, 8), np.int32), np.arange(2, dtype=np.int32))

        batch = PairBatch(side(1), side(2), index=np.arange(2, dtype=np.int32))
        loss, (count, sums) = steps._micro_loss(params, None, None, batch, cfg=cfg, lc=c.loss, use_lora=False,
                                                max_turns=0)
        # independent: sequence log-probs from the plain forward
        def seqlp(b):
            lp = jax.nn.log_softmax(llama.forward(params, jnp.asarray(b.inputs), cfg), -1)
            tok = jnp.take_along_axis(lp, jnp.asarray(b.targets)[..., None], -1)[..., 0]
            return jnp.sum(tok * b.loss_mask, -1)
        want = -jax.nn.log_sigmoid((seqlp(batch.chosen) - seqlp(batch.rejected)) / 2.0)
        np.testing.assert_allclose(float(loss), float(jnp.sum(want)), rtol=1e-5)
        assert float(count) == 2.0
    finally:
        objectives.REGISTRY.pop("test_seq_pref")


def test_loss_config_attribute_errors_name_the_type():
    lc = LossConfig(type="dpo")
    with pytest.raises(AttributeError, match="loss.type='dpo'"):
        _ = lc.margin


def test_nested_loss_defaults_survive_loading():
    """A config class whose nested TrainConfigs set their own loss hyper-parameters (the quickstart's
    DiaTool-DPO β 0.5 / γ 0.5 / ρ 2.0) keeps them when loaded without a YAML file, and a YAML / override
    key changes only that key."""
    from jaxtool.commands.quickstart import QuickstartConfig

    hp = load_config(None, [], cls=QuickstartConfig).dpo.loss.params
    assert (hp.beta, hp.gamma, hp.margin) == (0.5, 0.5, 2.0)
    hp = load_config(None, ["dpo.loss.margin=1.0"], cls=QuickstartConfig).dpo.loss.params
    assert (hp.beta, hp.gamma, hp.margin) == (0.5, 0.5, 1.0)
    hp = load_config(None, ["dpo.loss.type=dpo"], cls=QuickstartConfig).dpo.loss.params
    assert isinstance(hp, objectives.DPOParams) and not hasattr(hp, "margin")


def test_print_config_shows_the_field_comments(capsys):
    """CONTRIBUTING's promise: each hyper-parameter's comment is what `jaxtool train --print-config`
    readers see. The comment text is written here by hand (from objectives.DiaToolParams and
    config.ModelConfig), and the printed YAML loads back to the plain dump."""
    import yaml

    from jaxtool.cli import main
    from jaxtool.config import dump_yaml, load_config

    assert main(["train", "--print-config", "loss.type=diatool_dpo", "loss.gamma=0.25"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "  gamma: 0.25  # turn discount of phi (DiaTool-DPO Eq. 1)" in lines
    assert "  use_psi: true  # total-turn normalisation psi (Table 3 ablation: false)" in lines
    assert ('  compute_dtype: auto  # matmuls: "auto" = bfloat16 on GPU/TPU, float32 on CPU; or "float32" / '
            '"bfloat16"') in lines
    # a comment continued on the next source line is joined
    assert any(ln.startswith("  max_prompt_length: 0  # drop (and count) examples whose prompt") and
               ln.endswith("is longer; 0 = no limit") for ln in lines)
    assert yaml.safe_load(out) == yaml.safe_load(dump_yaml(load_config(None, ["loss.type=diatool_dpo",
                                                                              "loss.gamma=0.25"])))


def test_every_hyper_parameter_has_a_comment():
    """The docs promise every objective field is commented (it is the --print-config reader's help)."""
    from jaxtool.config_doc import field_comments

    for name in objectives.names():
        hp = objectives.get(name).hparams
        missing = [f.name for f in dataclasses.fields(hp) if not field_comments(hp).get(f.name)]
        assert missing == [], f"{name}: {hp.__name__} fields without a comment: {missing}"
