"""BFCL's own single-turn AST checker, imported from the installed bfcl-eval package, and the
perturbed predictions whose upstream verdicts are frozen in tests/fixtures/bfcl_upstream_verdicts.jsonl.

`bfcl_eval.eval_checker.ast_eval.ast_checker` imports `bfcl_eval.constants.model_config`, which
imports every API client BFCL supports (anthropic, openai, ...; not installed: bfcl-eval is installed
--no-deps). The checker uses that table only to ask whether a model rewrites "." to "_" in function
names; `upstream_ast_checker()` puts a one-entry stand-in table in its place (a model that does
not), imports the checker, and removes the stand-in again.

Regenerate the fixture (after a bfcl-eval upgrade):  python tests/bfcl_upstream.py
"""

from __future__ import annotations

import copy
import json
import os
import random
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "fixtures", "bfcl")
FIXTURE = os.path.join(HERE, "fixtures", "bfcl_upstream_verdicts.jsonl")
MODEL = "stub_model"


def upstream_ast_checker():
    """(ast_checker, Language) from the installed bfcl-eval, or None when it cannot be imported."""
    key = "bfcl_eval.constants.model_config"
    saved = sys.modules.get(key)
    stub = types.ModuleType(key)
    stub.MODEL_CONFIG_MAPPING = {"stub/model": types.SimpleNamespace(underscore_to_dot=False)}
    sys.modules[key] = stub
    try:
        from bfcl_eval.constants.enums import Language
        from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
    except ImportError:
        return None
    finally:
        if saved is None:
            sys.modules.pop(key, None)
        else:
            sys.modules[key] = saved
    return ast_checker, Language


def upstream_verdict(checker, item, output: list[dict]) -> tuple[bool, str | None]:
    ast_checker, Language = checker
    lang = (Language.JAVA if item.category == "simple_java" else
            Language.JAVASCRIPT if item.category == "simple_javascript" else Language.PYTHON)
    try:
        r = ast_checker(copy.deepcopy(list(item.functions)), copy.deepcopy(output),
                        copy.deepcopy(list(item.ground_truth)), lang, item.category, MODEL)
    except Exception as e:  # noqa: BLE001 — the upstream checker raising is itself a verdict to record
        return False, f"upstream_exception:{type(e).__name__}"
    return bool(r["valid"]), (None if r["valid"] else r.get("error_type"))


def _first(vals):
    for v in vals:
        if v != "":
            return True, v
    return False, None


def _java_source(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "new ArrayList<>(Arrays.asList(" + ", ".join(_java_source(x) if not isinstance(x, str) else f'"{x}"'
                                                          for x in v) + "))"
    if isinstance(v, dict):
        return "new HashMap<String, Object>() {{ " + " ".join(
            f'put("{k}", {_java_source(x) if not isinstance(x, str) else chr(34) + x + chr(34)});'
            for k, x in v.items()) + " }}"
    return str(v)


def _js_source(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def gold_output(item, encode=None) -> list[dict]:
    docs = {d["name"]: d for d in item.functions}
    out = []
    for entry in item.ground_truth:
        (name, params), = entry.items()
        required = docs[name]["parameters"].get("required", [])
        args = {}
        for p, vals in params.items():
            if "" in vals and p not in required:
                continue
            found, v = _first(vals)
            if not found:
                v = ""
            args[p] = encode(v) if encode else v
        out.append({name: args})
    return out


def _wrong(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 7
    if isinstance(v, float):
        return v + 0.5
    if isinstance(v, str):
        return v + "_x"
    if isinstance(v, list):
        return v[:-1] if v else ["x"]
    if isinstance(v, dict):
        return {**v, "x": 1}
    return "x"


def perturbed_outputs(item, rng: random.Random) -> dict[str, list[dict]]:
    """name -> a decoded model output for `item` (BFCL's [{name: {param: value}}] layout)."""
    lang = item.category
    enc = _java_source if lang == "simple_java" else _js_source if lang == "simple_javascript" else None
    gold = gold_output(item, enc)
    outs = {"gold": gold}
    if enc:
        outs["gold_raw_values"] = gold_output(item)  # Python values where source text is expected
        quoted = copy.deepcopy(gold)
        for call in quoted:
            for name, args in call.items():
                for k, v in args.items():
                    args[k] = f'"{v}"'
        outs["gold_quoted"] = quoted
    first_name, first_args = next(iter(gold[0].items()))
    outs["wrong_name"] = [{first_name + "_v2": first_args}] + gold[1:]
    outs["extra_param"] = [{first_name: {**first_args, "unexpected_param": "1" if enc else 1}}] + gold[1:]
    if first_args:
        k = rng.choice(sorted(first_args))
        changed = copy.deepcopy(gold)
        v = changed[0][first_name][k]
        changed[0][first_name][k] = (v + "0" if enc and isinstance(v, str) else _wrong(v))
        outs["value_changed"] = changed
        dropped = copy.deepcopy(gold)
        del dropped[0][first_name][k]
        outs["param_dropped"] = dropped
        typed = copy.deepcopy(gold)
        v = typed[0][first_name][k]
        typed[0][first_name][k] = [v] if not isinstance(v, list) else {"v": v}
        outs["wrong_type"] = typed
        if not enc and isinstance(v, str):
            case = copy.deepcopy(gold)
            case[0][first_name][k] = v.upper().replace(" ", "")
            outs["string_normalised"] = case
        if not enc and isinstance(v, int) and not isinstance(v, bool):
            as_float = copy.deepcopy(gold)
            as_float[0][first_name][k] = float(v)
            outs["int_as_float"] = as_float
    outs["extra_call"] = gold + [gold[0]]
    if len(gold) > 1:
        outs["call_dropped"] = gold[1:]
        outs["reordered"] = list(reversed(gold))
    outs["no_call"] = []
    return outs


def generate() -> list[dict]:
    sys.path.insert(0, os.path.dirname(HERE))
    from jaxtool.eval.bfcl import data as src

    checker = upstream_ast_checker()
    if checker is None:
        raise SystemExit("bfcl-eval is not importable")
    rows = []
    for cat in src.AST_CATEGORIES:
        for idx, item in enumerate(src.read_category(cat, root=ROOT)):
            rng = random.Random(f"{item.id}")
            for name, out in perturbed_outputs(item, rng).items():
                valid, etype = upstream_verdict(checker, item, out)
                rows.append({"id": item.id, "category": cat, "perturbation": name, "model_output": out,
                             "valid": valid, "error_type": etype})
    return rows


if __name__ == "__main__":
    rows = generate()
    with open(FIXTURE, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows ({sum(r['valid'] for r in rows)} valid) to {FIXTURE}")
