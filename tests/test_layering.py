"""The package's layering, read statically: every module under jaxtool/ is parsed with `ast` and its
imports (module level and inside functions alike) become edges of an import graph.

- no import cycles (a module never imports, even lazily, a module that imports it back);
- `jaxtool.data` is a bottom layer: it imports nothing from the layers built on it (sampling,
  evaluation, the applications, training, the command line);
- argument parsing lives in one home: only `jaxtool.cli` and `jaxtool.commands.*` import argparse,
  and the command line is the top layer: nothing else imports it;
- the model seam holds: only `jaxtool.models.*` imports a model family's package
  (`jaxtool.models.llama`, `.qwen2`, `.qwen3`, ...); everything else reaches a model through
  `jaxtool.models.family_of(cfg)`.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jaxtool")

# Import cycles tolerated for now, each named with its reason. Nothing else may form a cycle.
KNOWN_CYCLES: set[frozenset[str]] = set()

DATA_MUST_NOT_IMPORT = ("jaxtool.sample", "jaxtool.eval", "jaxtool.diatool", "jaxtool.itool", "jaxtool.calm",
                        "jaxtool.train", "jaxtool.commands")
# jaxtool.envs (tool environments) sits on data and below sampling/evaluation/applications/training.
ENVS_MUST_NOT_IMPORT = ("jaxtool.sample", "jaxtool.eval", "jaxtool.diatool", "jaxtool.itool", "jaxtool.calm",
                        "jaxtool.train", "jaxtool.commands", "jaxtool.experiment", "jaxtool.models")
ARGPARSE_HOMES = ("jaxtool.cli", "jaxtool.commands")


def _modules() -> dict[str, str]:
    """module name -> file path, for every .py file under jaxtool/."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
        for f in sorted(filenames):
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), os.path.dirname(ROOT))[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join(rel)] = os.path.join(dirpath, f)
    return out


MODULES = _modules()


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(name: str, path: str) -> list[str]:
    """Every module name `name` imports (absolute, relative resolved), anywhere in the file except
    under `if TYPE_CHECKING:`."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), filename=path)
    is_pkg = path.endswith("__init__.py")
    package = name if is_pkg else name.rpartition(".")[0]
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{mod}.{a.name}"
                found.append(sub if sub in MODULES else mod)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


GRAPH = {name: sorted({m for m in _imports(name, path) if m in MODULES and m != name})
         for name, path in MODULES.items()}
ALL_IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_graph_sees_the_package():
    # the reader is not vacuous: it finds the modules and the edges we know are there
    assert {"jaxtool.cli", "jaxtool.data.sources", "jaxtool.eval.bfcl.run",
            "jaxtool.commands.eval_bfcl"} <= set(MODULES)
    assert "jaxtool.eval.bfcl.checker" in GRAPH["jaxtool.eval.bfcl.run"]  # module level
    assert "jaxtool.commands._registry" in GRAPH["jaxtool.cli"]
    assert "jaxtool.data.formats" in GRAPH["jaxtool.eval.textgen"]  # inside a function


def test_cycle_finder_finds_cycles():
    assert _strongly_connected({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert _strongly_connected({"a": ["b"], "b": []}) == []


def test_no_import_cycles():
    cycles = [c for c in _strongly_connected(GRAPH) if frozenset(c) not in KNOWN_CYCLES]
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m == "jaxtool.data" or m.startswith("jaxtool.data.")))
def test_data_layer_imports_no_higher_layer(module):
    bad = [m for m in ALL_IMPORTS[module] if any(m == p or m.startswith(p + ".") for p in DATA_MUST_NOT_IMPORT)]
    assert bad == [], f"{module} imports {bad}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m == "jaxtool.envs" or m.startswith("jaxtool.envs.")))
def test_envs_layer_imports_no_higher_layer(module):
    bad = [m for m in ALL_IMPORTS[module] if any(m == p or m.startswith(p + ".") for p in ENVS_MUST_NOT_IMPORT)]
    assert bad == [], f"{module} imports {bad}"


def test_data_layer_does_not_import_envs():
    bad = {m: [i for i in ALL_IMPORTS[m] if i == "jaxtool.envs" or i.startswith("jaxtool.envs.")]
           for m in MODULES if m == "jaxtool.data" or m.startswith("jaxtool.data.")}
    assert {m: v for m, v in bad.items() if v} == {}


def test_nothing_below_the_command_line_imports_it():
    homes = ARGPARSE_HOMES + ("jaxtool.__main__",)
    below = [m for m in MODULES if not any(m == h or m.startswith(h + ".") for h in homes)]
    bad = {m: [i for i in ALL_IMPORTS[m] if any(i == h or i.startswith(h + ".") for h in ARGPARSE_HOMES)]
           for m in below}
    assert {m: v for m, v in bad.items() if v} == {}


def test_argparse_only_in_the_command_line_home():
    users = sorted(m for m, imps in ALL_IMPORTS.items() if "argparse" in imps)
    outside = [m for m in users if not any(m == h or m.startswith(h + ".") for h in ARGPARSE_HOMES)]
    assert users and outside == []


# The applications sit side by side on sample/eval: none imports another. What two of them share lives
# below them (the LLM-writer client and cache in jaxtool.sample.llm_writer, the benchmark split guard in
# jaxtool.eval.split_guard). `jaxtool.experiment` is the one layer above them: an experiment reproduces
# an application's table, so it may run that application (experiment.diatool runs the DiaTool-DPO
# builder), but no application imports an experiment.
APPLICATIONS = ("jaxtool.diatool", "jaxtool.calm", "jaxtool.itool", "jaxtool.rl", "jaxtool.experiment")
EXPERIMENT_MAY_IMPORT = ("jaxtool.diatool", "jaxtool.calm", "jaxtool.itool")


def _app_of(module: str) -> str | None:
    return next((a for a in APPLICATIONS if module == a or module.startswith(a + ".")), None)


def test_applications_do_not_import_each_other():
    bad = {}
    for m, imps in ALL_IMPORTS.items():
        app = _app_of(m)
        if app is None:
            continue
        allowed = EXPERIMENT_MAY_IMPORT if app == "jaxtool.experiment" else ()
        other = sorted({i for i in imps if _app_of(i) not in (None, app) and _app_of(i) not in allowed})
        if other:
            bad[m] = other
    assert bad == {}, f"applications importing another application: {bad}"


def test_application_rule_is_not_vacuous():
    assert _app_of("jaxtool.calm.thoughts") == "jaxtool.calm" and _app_of("jaxtool.sample.llm_writer") is None
    assert "jaxtool.sample.llm_writer" in GRAPH["jaxtool.calm.thoughts"]
    assert "jaxtool.eval.split_guard" in ALL_IMPORTS["jaxtool.eval.tool_tasks"]


def _family_packages() -> list[str]:
    """Every model family's package: the sub-packages of jaxtool.models (a directory with __init__.py)."""
    root = os.path.join(ROOT, "models")
    return sorted(f"jaxtool.models.{d}" for d in os.listdir(root)
                  if os.path.isfile(os.path.join(root, d, "__init__.py")))


def test_family_packages_found():
    assert {"jaxtool.models.llama", "jaxtool.models.qwen2", "jaxtool.models.qwen3"} <= set(_family_packages())


def test_only_models_imports_a_family_package():
    families = _family_packages()
    outside = [m for m in MODULES if not (m == "jaxtool.models" or m.startswith("jaxtool.models."))]
    bad = {m: sorted({i for i in ALL_IMPORTS[m] if any(i == f or i.startswith(f + ".") for f in families)})
           for m in outside}
    assert {m: v for m, v in bad.items() if v} == {}, "reach models through jaxtool.models.family_of(cfg)"
