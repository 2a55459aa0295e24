"""Fuzz suite (issue 17): random corruptions of the inputs users hand to jaxtool — JSONL rows, YAML
recipes and key=value overrides, HF config.json files, checkpoint files — through the public entry
points (`jaxtool.cli.main([...])` in process, `jaxtool.load_model`, the source registry's `load`).

The property everywhere: the outcome is a `jaxtool.errors.JaxtoolError` whose message names the
file / row / key (on the command line: exit code 2 and one `jaxtool CMD: error: ...` line), or a
success in which every bad row is counted — never any other exception type. For checkpoints, a
load that succeeds must give back exactly the parameters that were saved (no silent corruption).

Hypothesis runs derandomized (the same examples every run) with no example database, so the suite
is reproducible; the example counts keep it to seconds."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxtool import cli
from jaxtool.errors import JaxtoolError

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "fixtures", "diatool", "seeds.jsonl")
RECIPE = os.path.join(os.path.dirname(HERE), "configs", "sft", "smollm2_lora.yaml")


def fuzz(n: int):
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


with open(SEEDS, encoding="utf-8") as _fh:
    SEED_LINES = [ln.rstrip("\n") for ln in _fh]


# -- strategies -----------------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.integers(-3, 3)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=3)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=3), max_leaves=8)


def _paths(value, prefix=()):
    """Every path (tuple of keys/indices) inside a decoded JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _set(value, path, new):
    if not path:
        return new
    node = value
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = new
    return value


@st.composite
def structural_mutation(draw, doc):
    """`doc` (a JSON value) with one node replaced, deleted, or given an extra key."""
    doc = json.loads(json.dumps(doc))
    paths = list(_paths(doc))
    path = draw(st.sampled_from(paths))
    op = draw(st.sampled_from(["replace", "delete", "add"]))
    if op == "delete" and path:
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        del parent[path[-1]]
        return doc
    if op == "add":
        parent = doc
        for k in path:
            parent = parent[k]
        if isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_values)
            return doc
    return _set(doc, path, draw(json_values))


@st.composite
def byte_mutation(draw, data: bytes):
    """`data` with a flipped bit, a truncation, an insertion of random bytes or a deleted span."""
    op = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
    i = draw(st.integers(0, max(len(data) - 1, 0)))
    if op == "flip" and data:
        b = bytearray(data)
        b[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(b)
    if op == "truncate":
        return data[:i]
    if op == "insert":
        return data[:i] + draw(st.binary(min_size=1, max_size=6)) + data[i:]
    j = draw(st.integers(i, min(len(data), i + 20)))
    return data[:i] + data[j:]


@st.composite
def jsonl_file(draw):
    """A few seed lines, some mutated structurally (valid JSON, odd schema) or byte-wise."""
    n = draw(st.integers(1, 4))
    lines = []
    for k in range(n):
        line = SEED_LINES[draw(st.integers(0, len(SEED_LINES) - 1))]
        kind = draw(st.sampled_from(["keep", "structure", "bytes"]))
        if kind == "structure":
            lines.append((json.dumps(draw(structural_mutation(json.loads(line))), allow_nan=True) + "\n").encode())
        elif kind == "bytes":
            lines.append(draw(byte_mutation(line.encode())) + b"\n")
        else:
            lines.append(line.encode() + b"\n")
    return b"".join(lines)


def _scratch():
    return tempfile.mkdtemp(prefix="jaxtool_fuzz_")


def assert_named(e: BaseException, *anchors: str) -> None:
    """A JaxtoolError whose message names one of `anchors` (a file, a key, "row")."""
    assert isinstance(e, JaxtoolError), f"{type(e).__name__}: {e}"
    assert any(a in str(e) for a in anchors), f"{e!r} names none of {anchors}"


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of `jaxtool ARGV` in process; exit 2 must come with one error line
    (jaxtool's own, or argparse's usage error) and no traceback."""
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse: usage errors exit 2 with "jaxtool ...: error: ..."
        rc = e.code
    out, err = capsys.readouterr()
    if rc == 2:
        last = err.strip().splitlines()[-1]
        assert last.startswith("jaxtool") and ": error: " in last and "Traceback" not in err, err
        if last.startswith(f"jaxtool {argv[0]}: error: "):  # jaxtool's own: one line, nothing above it
            assert err.strip().count(": error: ") == 1, err
    return rc, out, err


def count_rows(data: bytes) -> int:
    """Rows a JSONL reader must account for: lines with text, and lines that are not UTF-8."""
    n = 0
    for i, ln in enumerate(data.split(b"\n")):
        try:
            n += bool(ln.decode("utf-8-sig" if i == 0 else "utf-8").strip())
        except UnicodeDecodeError:
            n += 1
    return n


# -- JSONL rows -------------------------------------------------------------------------------------

@fuzz(120)
@given(data=jsonl_file(), mode=st.sampled_from(["skip", "error"]))
def test_jsonl_rows_through_the_source_loader(data, mode):
    from jaxtool.data.sources import load
    from jaxtool.data.sources.base import LoadReport

    d = _scratch()
    try:
        path = os.path.join(d, "rows.jsonl")
        open(path, "wb").write(data)
        report = LoadReport("conversations", on_bad_row=mode)
        try:
            kept = list(load(f"conversations:{path}", on_bad_row=mode, report=report))
        except Exception as e:  # noqa: BLE001 - the property under test
            assert_named(e, "row ", "conversations")
            assert mode == "error" or "fields" in str(e)  # skip mode stops only on an ambiguous layout
            return
        assert len(kept) == report.kept and report.rows == report.kept + report.bad_rows
        assert report.rows == count_rows(data)
    finally:
        shutil.rmtree(d)


@fuzz(60)
@given(data=jsonl_file(), mode=st.sampled_from(["skip", "error"]))
def test_preference_rows(data, mode):
    from jaxtool.data.sources.base import LoadReport
    from jaxtool.train.data import read_preference_rows

    lines = [ln for ln in data.split(b"\n") if ln.strip()]
    rows = b"".join(b'{"chosen": ' + ln + b', "rejected": ' + lines[0] + b"}\n" for ln in lines)
    d = _scratch()
    try:
        path = os.path.join(d, "pairs.jsonl")
        open(path, "wb").write(rows)
        report = LoadReport(path, on_bad_row=mode)
        try:
            pairs = read_preference_rows(path, on_bad_row=mode, report=report)
        except Exception as e:  # noqa: BLE001
            assert_named(e, path)
            return
        assert len(pairs) == report.kept and report.rows == report.kept + report.bad_rows == len(lines)
    finally:
        shutil.rmtree(d)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    from conftest import make_tiny_tokenizer

    d = tmp_path_factory.mktemp("tok")
    make_tiny_tokenizer(SEED_LINES).save_pretrained(str(d))
    return str(d)


@fuzz(15)
@given(data=jsonl_file(), mode=st.sampled_from(["skip", "error"]), fmt=st.sampled_from(["hermes", "llama3_json",
                                                                                         "pythonic"]))
def test_jsonl_rows_through_data_inspect(tok_dir, capsys, data, mode, fmt):
    d = _scratch()
    try:
        path = os.path.join(d, "rows.jsonl")
        open(path, "wb").write(data)
        rc, out, err = run_cli(capsys, "data", "inspect", f"conversations:{path}", "--tokenizer", tok_dir,
                               "--format", fmt, "--on-bad-row", mode, "--mark", "brackets")
        assert rc in (0, 2), (rc, err)
        if rc == 0:
            bad = count_rows(data) - int(out.split(" rows read, ")[1].split()[0])
            assert f"{bad} skipped" in out
    finally:
        shutil.rmtree(d)


# -- YAML recipes and overrides ---------------------------------------------------------------------

def _recipe_keys():
    from jaxtool.config import TrainConfig, _all_keys

    return _all_keys(TrainConfig)


KEYS = _recipe_keys()
yaml_values = st.recursive(json_scalars | st.text(alphabet="[]{}*&!:#|>-'\" ab1.e", max_size=10),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
                           max_leaves=6)


@st.composite
def recipe_text(draw):
    kind = draw(st.sampled_from(["dict", "bytes", "base"]))
    if kind == "bytes":
        return draw(byte_mutation(open(RECIPE, "rb").read()))
    doc: dict = {}
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(KEYS) | st.text(max_size=10))
        node = doc
        *heads, last = key.split(".")
        for h in heads:
            node = node.setdefault(h, {}) if isinstance(node.get(h, {}), dict) else node
        node[last] = draw(yaml_values)
    if kind == "base":
        doc["base"] = draw(st.sampled_from(["r.yaml", "", "missing.yaml"]) | yaml_values)
    return yaml.safe_dump(doc, allow_unicode=draw(st.booleans())).encode()


override = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS) | st.text(max_size=8),
                     st.text(max_size=12) | st.sampled_from(["[1", "{a", "*x", "!!python/name:os.system", "1e400",
                                                             "nan", "-inf", "0", "-1", "null", "~", "&a b"]))


@fuzz(200)
@given(text=recipe_text(), overrides=st.lists(override, max_size=3))
def test_recipes_and_overrides_through_the_cli(capsys, text, overrides):
    d = _scratch()
    try:
        path = os.path.join(d, "r.yaml")
        open(path, "wb").write(text)
        rc, out, err = run_cli(capsys, "train", "--print-config", path, *overrides)
        assert rc in (0, 2), (rc, err)
        if rc == 2:
            assert "r.yaml" in err or "command line" in err or "override" in err or any(
                k.split(".")[-1] in err for k in KEYS), err
    finally:
        shutil.rmtree(d)


# -- HF config.json ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """config.json + model.safetensors of the tiny preset (no tokenizer files)."""
    import jax

    from jaxtool.convert import save_hf
    from jaxtool.models import llama
    from jaxtool.models.family import family_of

    cfg = llama.preset("tiny")
    d = str(tmp_path_factory.mktemp("hf") / "m")
    save_hf(d, cfg, jax.device_get(family_of(cfg).init_params(cfg, jax.random.key(0))))
    return d


def _model_copy(hf_dir):
    d = os.path.join(_scratch(), "m")
    shutil.copytree(hf_dir, d)
    return d


@fuzz(60)
@given(data=st.data())
def test_config_json_structure(hf_dir, data):
    import jaxtool

    d = _model_copy(hf_dir)
    try:
        hf = json.load(open(os.path.join(d, "config.json")))
        mutated = data.draw(structural_mutation(hf))
        open(os.path.join(d, "config.json"), "w").write(json.dumps(mutated, allow_nan=True))
        try:
            jaxtool.load_model(d)
        except Exception as e:  # noqa: BLE001
            assert_named(e, "config.json", d)
    finally:
        shutil.rmtree(os.path.dirname(d))


@fuzz(40)
@given(data=st.data())
def test_config_json_bytes(hf_dir, data):
    import jaxtool

    d = _model_copy(hf_dir)
    try:
        raw = open(os.path.join(d, "config.json"), "rb").read()
        open(os.path.join(d, "config.json"), "wb").write(data.draw(byte_mutation(raw)))
        try:
            jaxtool.load_model(d)
        except JaxtoolError as e:  # any other type escapes (the xfail names the one known today)
            assert_named(e, "config.json", d)
    finally:
        shutil.rmtree(os.path.dirname(d))


# -- checkpoint files -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_ckpt(tmp_path_factory):
    """A jaxtool checkpoint of the tiny preset and its parameters as numpy arrays."""
    import jax

    from jaxtool import checkpoint
    from jaxtool.models import llama
    from jaxtool.models.family import family_of

    cfg = llama.preset("tiny")
    params = family_of(cfg).init_params(cfg, jax.random.key(1))
    d = str(tmp_path_factory.mktemp("ckpt") / "c")
    checkpoint.save_params(d, cfg, params)
    files = sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)
    return d, files, [np.asarray(x) for x in jax.tree.leaves(params)]


@fuzz(25)
@given(data=st.data())
def test_checkpoint_files(model_ckpt, data):
    import jax

    import jaxtool

    src, files, leaves = model_ckpt
    d = os.path.join(_scratch(), "c")
    shutil.copytree(src, d)
    try:
        rel = data.draw(st.sampled_from(files))
        path = os.path.join(d, rel)
        op = data.draw(st.sampled_from(["bytes", "delete", "replace"]))
        if op == "delete":
            os.remove(path)
        elif op == "replace":
            open(path, "wb").write(data.draw(st.binary(max_size=64)))
        else:
            open(path, "wb").write(data.draw(byte_mutation(open(path, "rb").read())))
        try:
            model = jaxtool.load_model(d)
        except Exception as e:  # noqa: BLE001
            assert_named(e, d, "step 0")
            return
        got = [np.asarray(x) for x in jax.tree.leaves(model.params)]
        assert all(np.array_equal(a, b) for a, b in zip(got, leaves)), f"{rel} ({op}) loaded different parameters"
    finally:
        shutil.rmtree(os.path.dirname(d))


# -- issue 26: the classes of the third probe round ------------------------------------------------

@fuzz(8)
@given(data=st.data())
def test_checkpoint_manifest_edits_and_damage(model_ckpt, data):
    """The manifest edited (entries dropped, emptied, deleted) together with damage to a params file:
    a load either gives back exactly the saved parameters or is a named error — never damaged weights."""
    import jax

    import jaxtool
    from jaxtool import checkpoint

    src, files, leaves = model_ckpt
    d = os.path.join(_scratch(), "c")
    shutil.copytree(src, d)
    try:
        mrel = next(f for f in files if f.endswith(checkpoint.MANIFEST))
        mpath = os.path.join(d, mrel)
        manifest = json.load(open(mpath))
        op = data.draw(st.sampled_from(["drop some", "empty", "delete"]))
        if op == "delete":
            os.remove(mpath)
        else:
            keep = data.draw(st.lists(st.sampled_from(sorted(manifest["files"])), unique=True)) if op == "drop some" else []
            manifest["files"] = {k: v for k, v in manifest["files"].items() if k in keep}
            json.dump(manifest, open(mpath, "w"))
        params_files = [f for f in files if "/params/" in f and "/d/" in f]
        if params_files and data.draw(st.booleans()):
            path = os.path.join(d, data.draw(st.sampled_from(params_files)))
            raw = bytearray(open(path, "rb").read())
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
            open(path, "wb").write(bytes(raw))
        try:
            model = jaxtool.load_model(d)
        except Exception as e:  # noqa: BLE001
            assert_named(e, d, "step 0")
            return
        got = [np.asarray(x) for x in jax.tree.leaves(model.params)]
        assert op == "delete" or all(np.array_equal(a, b) for a, b in zip(got, leaves)), f"{op}: damaged weights loaded"
    finally:
        shutil.rmtree(os.path.dirname(d))


arg_values = (st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"])
              | st.text(max_size=6) | st.integers(-5, 5))


@fuzz(40)
@given(value=arg_values, extra_key=st.none() | st.text(min_size=1, max_size=6),
       surrogate=st.booleans(), mode=st.sampled_from(["skip", "error"]))
def test_call_arguments_and_text_through_the_source_loader(value, extra_key, surrogate, mode):
    """Arguments that are NaN / Infinity / 1e999 (as JSON text the decoder accepts), keys the tool
    schema does not list, and lone surrogates in content: kept only when they can be a training
    target, else a counted bad row (skip) or an error naming the row (error)."""
    from jaxtool.data.sources import load
    from jaxtool.data.sources.base import LoadReport

    row = json.loads(SEED_LINES[0])
    literal = value if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity", "1e999") else json.dumps(value)
    args = '{"location": ' + literal + ("" if extra_key is None else f', {json.dumps(extra_key)}: 1') + "}"
    row["messages"][1]["tool_calls"][0]["function"]["arguments"] = args
    if surrogate:
        row["messages"][0]["content"] += "\ud800"
    d = _scratch()
    try:
        path = os.path.join(d, "rows.jsonl")
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as fh:
            fh.write(json.dumps(row) + "\n")  # ensure_ascii: the surrogate is written as the escape \ud800
        decoded = json.loads(args)
        finite = all(not isinstance(v, float) or v == v and abs(v) != float("inf") for v in decoded.values())
        off_schema = bool(set(decoded) - {"location", "unit"})
        bad = surrogate or not finite or off_schema
        report = LoadReport("conversations", on_bad_row=mode)
        try:
            kept = list(load(f"conversations:{path}", on_bad_row=mode, report=report))
        except Exception as e:  # noqa: BLE001
            assert mode == "error" and bad, f"{type(e).__name__}: {e}"
            assert_named(e, "row 0")
            return
        assert len(kept) == (0 if bad else 1) and report.bad_rows == int(bad)
    finally:
        shutil.rmtree(d)


@fuzz(25)
@given(text=st.sampled_from(["seed: 1\n", "optim:\n  lr: 1.0e-4\n", "batch_size: 8\n", "epochs: 1\n"]),
       dup=st.booleans(), depth=st.integers(0, 400), digits=st.integers(1, 6000))
def test_recipe_yaml_edge_cases(capsys, text, dup, depth, digits):
    """Duplicate keys, deep nesting and long integers in a recipe: a named error (exit 2, one line)
    or a printed config — never a RecursionError / ValueError traceback."""
    d = _scratch()
    try:
        body = text + (text if dup else "") + ("deep: " + "[" * depth + "]" * depth + "\n" if depth else "")
        body += "seed: " + "7" * digits + "\n" if not dup else ""
        p = os.path.join(d, "r.yaml")
        open(p, "w").write(body)
        rc, out, err = run_cli(capsys, "train", p, "--print-config")
        assert rc in (0, 2)
        if dup and depth < 99:
            assert rc == 2 and "given twice" in err
    finally:
        shutil.rmtree(d)


@fuzz(40)
@given(content=st.binary(max_size=80) | st.sampled_from([b"{}", b"[]", b'{"result": []}', b'{"result": {}, "artifacts": 5}',
                                                         b'{"result": {}, "artifacts": {"data/examples.jsonl": {}}}']))
def test_itool_stage_marker_bytes(content):
    """Any bytes in an iTool stage marker: the stage is either trusted (a valid marker whose
    artifacts check out) or redone with a message — never an exception."""
    from jaxtool.itool.stages import Stage

    d = _scratch()
    try:
        os.makedirs(os.path.join(d, ".done"))
        open(os.path.join(d, ".done", "data.json"), "wb").write(content)
        said = []
        done = Stage(d, "data", d, printer=said.append).done()
        assert done or said
        if done:
            assert isinstance(Stage(d, "data", d).result(), dict)
    finally:
        shutil.rmtree(d)
