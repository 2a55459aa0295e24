"""jaxtool.registry.Registry and the tables built on it: lazy "module:attr" entries, closest-name
errors of the right JaxtoolError subclass, refusal to replace, and registering an objective from
another module (the way a new loss in its own file plugs in)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from jaxtool.errors import ConfigError, DataError, JaxtoolError
from jaxtool.registry import Registry, closest_names, import_target, split_target


def test_lazy_entry_is_imported_on_first_get_only(tmp_path, monkeypatch):
    (tmp_path / "h2_lazy_mod.py").write_text("LOADED = True\nTHING = object()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("widget", ConfigError)
    reg.register("w", "h2_lazy_mod:THING")
    assert "h2_lazy_mod" not in sys.modules          # registering and listing import nothing
    assert reg.names() == ("w",) and "w" in reg and len(reg) == 1
    assert "h2_lazy_mod" not in sys.modules
    got = reg.get("w")
    assert got is sys.modules["h2_lazy_mod"].THING and reg.get("w") is got
    assert reg.target("w") == "h2_lazy_mod:THING"     # the table keeps the string
    sys.modules.pop("h2_lazy_mod", None)


def test_unknown_name_is_the_registry_error_with_closest_names_first():
    reg = Registry("data source", DataError)
    for n in ("glaive", "xlam", "toolace"):
        reg.register(n, "jaxtool.data.sources.glaive:load")
    with pytest.raises(DataError) as e:
        reg.get("glaiv", source="train.yaml")
    msg = str(e.value)
    assert msg.startswith("train.yaml: unknown data source 'glaiv' (did you mean 'glaive'?)")
    assert msg.endswith("known data sources: glaive, xlam, toolace") or msg.endswith(
        "known data sources: glaive, toolace, xlam")
    assert msg.split("known data sources: ")[1].split(", ")[0] == "glaive"
    assert closest_names("tolace", ["xlam", "glaive", "toolace"]) == ["toolace", "glaive", "xlam"]
    with pytest.raises(TypeError):
        Registry("x", ValueError)  # only JaxtoolError subclasses


def test_register_refuses_to_replace_and_checks_targets():
    reg = Registry("thing", ConfigError)
    reg.register("a", "m.n:f")
    reg.register("a", "m.n:f")                       # the same entry again: a no-op
    with pytest.raises(ValueError, match="thing 'a' is already registered as m.n:f; not replacing it with m.n:g"):
        reg.register("a", "m.n:g")
    reg.register("a", "m.n:g", replace=True)
    assert reg.target("a") == "m.n:g"
    for name, target in (("", "m:f"), ("a:b", "m:f"), ("x", "nocolon"), ("x", ":f"), ("x", "m:")):
        with pytest.raises(ValueError):
            reg.register(name, target)
    with pytest.raises(ValueError):
        split_target("a:b:c")


def test_absent_module_and_missing_attribute_are_named():
    with pytest.raises(DataError, match="source 'x' is registered but its module jaxtool_no_such_mod is not present"):
        import_target("jaxtool_no_such_mod:f", what="source", name="x", error=DataError)
    assert import_target("jaxtool_no_such_mod:f", absent=None) is None
    with pytest.raises(ConfigError, match="registered as jaxtool.errors:Nope but jaxtool.errors has no 'Nope'"):
        import_target("jaxtool.errors:Nope")


def test_every_table_answers_a_typo_with_its_error_class():
    from jaxtool import objectives
    from jaxtool.data import sources
    from jaxtool.data.formats import get_format
    from jaxtool.eval import suite
    from jaxtool.models.family import get_family

    cases = [(lambda: objectives.get("dpp"), ConfigError, "did you mean 'dpo'"),
             (lambda: get_format("hermse"), ConfigError, "did you mean 'hermes'"),
             (lambda: sources.resolve("glaiv"), DataError, "known sources: glaive"),
             (lambda: suite.run_suite(None, None, "hermes", "/nonexistent", suite="clam"), ConfigError,
              "did you mean 'calm'"),
             (lambda: get_family("lama", "m/config.json"), ConfigError,
              r"m/config.json: model_type='lama' is not supported \(did you mean 'llama'\?\)")]
    for call, cls, text in cases:
        with pytest.raises(cls, match=text) as e:
            call()
        assert isinstance(e.value, JaxtoolError)


def test_an_objective_registered_from_another_module(tmp_path, monkeypatch):
    """How a loss living in its own module (e.g. GRPO) plugs in: eagerly, by `register(Objective)`
    when its module is imported, or lazily, by a `"module:ATTR"` line that resolves on first use;
    `loss.type=<name>` then validates its fields like any built-in objective."""
    from jaxtool import objectives
    from jaxtool.config import load_config

    (tmp_path / "h2_my_loss.py").write_text(textwrap.dedent('''
        import dataclasses
        from jaxtool import objectives

        @dataclasses.dataclass(frozen=True)
        class MyParams:
            scale: float = 2.0      # multiplies the NLL

        def _compute(pol, _ref, hp):
            return -pol["token_logps"] * hp.scale, {}

        EAGER = objectives.register(objectives.Objective("h2_eager", MyParams, "sft", _compute))
        LAZY = objectives.Objective("h2_lazy", MyParams, "sft", _compute)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        objectives.register("h2_lazy", "h2_my_loss:LAZY")
        assert "h2_lazy" in objectives.names() and "h2_my_loss" not in sys.modules
        lazy = objectives.get("h2_lazy")                 # imports the module, which also registers h2_eager
        assert lazy.name == "h2_lazy" and "h2_eager" in objectives.names()
        assert objectives.get("h2_eager").hparams is lazy.hparams
        c = load_config(None, ["loss.type=h2_lazy", "loss.scale=3.0"])
        assert c.loss.objective is lazy and c.loss.params.scale == 3.0
        with pytest.raises(ConfigError, match="did you mean 'loss.scale'"):
            load_config(None, ["loss.type=h2_lazy", "loss.scal=3.0"])
        with pytest.raises(ValueError, match="already registered"):
            objectives.register(objectives.Objective("h2_lazy", lazy.hparams, "sft", lambda *a: None))
        with pytest.raises(ValueError, match="kind must be"):
            objectives.register(objectives.Objective("h2_bad", lazy.hparams, "bogus", lambda *a: None))
    finally:
        for n in ("h2_lazy", "h2_eager"):
            objectives.TABLE.unregister(n)
        sys.modules.pop("h2_my_loss", None)
    assert "h2_lazy" not in objectives.names()
