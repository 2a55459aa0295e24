"""The command line's one home: every command parses under `jaxtool.commands`, helps a newcomer, and
the one table loader skips commands not in this installation but never hides a broken import."""

import argparse
import subprocess
import sys

import pytest

from jaxtool import cli
from jaxtool.commands import _registry
from jaxtool.commands import data as data_group
from jaxtool.commands import eval as eval_group


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_table_entry_is_a_module_of_the_command_home():
    for table in (cli.COMMANDS, data_group.SUBCOMMANDS, eval_group.SUBCOMMANDS):
        assert table and all(module.startswith("jaxtool.commands.") for _, module in table)
        assert len({name for name, _ in table}) == len(table)


@pytest.mark.parametrize("argv", [[], ["data"], ["eval"], ["train"], ["bench"], ["convert"], ["quickstart"],
                                  ["data", "inspect"], ["data", "build-diatool"], ["eval", "bfcl"],
                                  ["eval", "bfcl-score"], ["eval", "dialog"], ["eval", "apibank"],
                                  ["eval", "multiwoz"]])
def test_help_works_and_shows_examples(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: jaxtool")
    if argv not in (["convert"], ["quickstart"]):  # those two describe their few forms in prose
        assert "Examples:" in out or "Start here:" in out


def test_every_command_and_subcommand_has_a_one_line_help():
    parser = cli.build_parser()
    groups = {"": parser, **{name: p for name, p in _subparsers(parser).items() if name in ("data", "eval")}}
    for group, p in groups.items():
        (action,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        helps = {c.dest: c.help for c in action._choices_actions}
        assert set(helps) == set(action.choices), group
        assert all(h and "\n" not in h for h in helps.values()), (group, helps)


def test_python_dash_m_jaxtool_runs_the_cli():
    res = subprocess.run([sys.executable, "-m", "jaxtool", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "usage: jaxtool" in res.stdout and "eval" in res.stdout


def test_loader_registers_present_modules_and_skips_missing_ones(tmp_path, monkeypatch):
    (tmp_path / "jt_ok_cmd.py").write_text(
        "def register(sub):\n    sub.add_parser('ok', help='fine').set_defaults(func=lambda a: 7)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    _registry.add_commands(sub, [("gone", "jaxtool.commands.no_such_command"), ("ok", "jt_ok_cmd")])
    assert set(_subparsers(parser)) == {"ok"}
    args = parser.parse_args(["ok"])
    assert args.func(args) == 7


def test_loader_raises_a_broken_import_inside_a_present_module(tmp_path, monkeypatch):
    (tmp_path / "jt_broken_cmd.py").write_text("import jt_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sub = argparse.ArgumentParser().add_subparsers()
    with pytest.raises(ModuleNotFoundError) as e:
        _registry.add_commands(sub, [("broken", "jt_broken_cmd")])
    assert e.value.name == "jt_dependency_that_is_not_installed"


def test_a_group_without_its_subcommand_prints_its_help(capsys):
    assert cli.main(["eval"]) == 1 and "BENCHMARK" in capsys.readouterr().out
    assert cli.main(["data"]) == 1 and "DATA_COMMAND" in capsys.readouterr().out


def _leaf_parsers(parser, path=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for a in subs:
        for name, p in a.choices.items():
            yield from _leaf_parsers(p, path + (name,))


def test_every_command_with_overrides_takes_them_after_its_flags():
    """`jaxtool quickstart --no-progress out=x` must work like `jaxtool train CFG --resume k=v`: every
    command with a key=value positional is marked for cli.main to collect trailing overrides."""
    with_overrides = [path for path, p in _leaf_parsers(cli.build_parser())
                      if any(a.dest == "overrides" and a.nargs == "*" for a in p._actions)]
    assert {("train",), ("quickstart",), ("itool",)} <= set(with_overrides), with_overrides
    for path, p in _leaf_parsers(cli.build_parser()):
        if path in with_overrides:
            assert p.get_default("_overrides") == "overrides", path


@pytest.mark.parametrize("argv", [["quickstart", "seed=3", "--no-progress"], ["itool", "seed=3", "--no-progress"],
                                  ["experiment", "diatool", "seed=3", "--no-progress"]])
def test_overrides_after_flags_reach_the_config_loader(argv, tmp_path, capsys):
    missing = str(tmp_path / "missing.yaml")
    rc = cli.main(argv + ["--config", missing, "seed=4"])   # overrides before and after the flags
    err = capsys.readouterr().err
    assert rc == 2 and "unrecognized arguments" not in err and "missing.yaml" in err, err


# -- issue 26: one recipe convention; third-party advisories silenced -------------------------------

@pytest.mark.parametrize("argv, recipe, key", [
    (["train"], "configs/sft/smollm2_lora.yaml", "max_steps"),
    (["itool"], "configs/itool/smollm2.yaml", "iterations"),
    (["experiment", "diatool"], "configs/experiments/diatool_sgd_smollm2.yaml", "seed"),
])
def test_every_recipe_command_takes_the_recipe_positionally_and_as_config(capsys, argv, recipe, key):
    import os

    import yaml

    recipe = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), recipe)
    outs = []
    for form in ([recipe, f"{key}=3", "--print-config"], ["--config", recipe, f"{key}=3", "--print-config"],
                 ["--print-config", "--config", recipe, f"{key}=3"]):
        assert cli.main([*argv, *form]) == 0, capsys.readouterr().err
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] == outs[2] and yaml.safe_load(outs[0])[key] == 3
    assert cli.main([*argv, recipe, "--config", recipe, "--print-config"]) == 2
    assert "two recipes" in capsys.readouterr().err


def test_quickstart_takes_its_settings_positionally_and_as_config(tmp_path):
    p = tmp_path / "qs.yaml"
    p.write_text("seed: 5\n")
    parser = cli.build_parser()
    for form in ([str(p), "sft_dialogues=3"], ["--config", str(p), "sft_dialogues=3"]):
        args = parser.parse_args(["quickstart", *form])
        from jaxtool.commands._recipe import recipe_and_overrides

        assert recipe_and_overrides(args.config_flag, None, args.overrides) == (str(p), ["sft_dialogues=3"])


@pytest.mark.slow  # a child process that imports transformers (~15-30 s here)
def test_pytorch_not_found_advisory_is_silenced(tmp_path):
    """Without PyTorch (jaxtool's own install), transformers' import prints an advisory about models
    that a jaxtool user never needs; the command line silences it. torch is hidden from the child."""
    import os

    seeds = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "diatool", "seeds.jsonl")
    code = ("import sys, importlib.util\n"
            "orig = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda n, *a, **k: None if n.split('.')[0] == 'torch' else orig(n, *a, **k)\n"
            "from jaxtool import cli\n"
            f"sys.exit(cli.main(['data', 'inspect', {seeds!r}, '--mark', 'brackets', '--limit', '1']))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "TRANSFORMERS_VERBOSITY")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "PyTorch was not found" not in r.stdout + r.stderr


def test_eval_batch_size_reaches_the_backend(monkeypatch):
    """`--batch-size` is the backend's batch too (it used to stay at the backend default of 8, so
    `eval bfcl --batch-size 16` decoded two batches of 8)."""
    import argparse

    from jaxtool.commands import _model_args
    from jaxtool.sample import backend

    seen = {}
    monkeypatch.setattr(backend, "load_backend", lambda kind, model, **kw: seen.update(kind=kind, model=model, **kw))
    _model_args.load_backend_from_args(argparse.Namespace(backend="jax", model="m", batch_size=16))
    assert seen == {"kind": "jax", "model": "m", "batch_size": 16}
    seen.clear()
    _model_args.load_backend_from_args(argparse.Namespace(backend="jax", model="m"))
    assert seen == {"kind": "jax", "model": "m"}
