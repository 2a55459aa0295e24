"""Scoring BFCL items: one verdict per item, per-category accuracy, BFCL's aggregates, the report,
and scoring a predictions file from any model (`jaxtool eval bfcl-score`).

Aggregates (`summarize`), named as BFCL's leaderboard names them:
- `non_live_ast`: unweighted mean of the accuracies of the Non-Live AST categories run (simple_python,
  simple_java, simple_javascript, multiple, parallel, parallel_multiple), each counted once;
  BFCL's own Non-Live (simple = mean of the three languages first) is in `bfcl_scores` below;
- `live_ast`: item-weighted accuracy over live_simple, live_multiple, live_parallel,
  live_parallel_multiple (BFCL weights the live categories by size);
- `irrelevance`: unweighted mean of irrelevance and live_irrelevance; `relevance`: live_relevance;
- `overall_unweighted`: mean of the per-category accuracies of every category run;
- `overall_weighted`: correct items / items over every category run.
An aggregate lists the categories it used and those it lacked (`missing`); with `--limit` the
numbers are on the first N items of each category (`complete: false`).

`bfcl_scores` (`bfcl_scores()`): BFCL's leaderboard groups and both overall scores, labelled — the
installed V4 weighting and the V3 Overall that iTool and CALM report — by BFCL's own rules
(categories not run count 0, and are listed).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence

from jaxtool.errors import DataError, json_error_text
from jaxtool.eval.bfcl.checker import Verdict, check_ast, check_relevance, language_of
from jaxtool.eval.bfcl.data import AST_CATEGORIES, RELEVANCE_CATEGORIES, BFCLItem
from jaxtool.eval.bfcl.decode import (Call, DecodeError, calls_from_json, decode_json, decode_pythonic,
                                     decode_source_call)

SYNTAXES = ("pythonic", "json")

AGGREGATES = {
    "non_live_ast": (("simple_python", "simple_java", "simple_javascript", "multiple", "parallel",
                      "parallel_multiple"), "unweighted"),
    "live_ast": (("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple"), "weighted"),
    "irrelevance": (("irrelevance", "live_irrelevance"), "unweighted"),
    "relevance": (("live_relevance",), "unweighted"),
}


def decode_text(text: str, syntax: str = "pythonic", category: str = "simple_python") -> list[Call] | DecodeError:
    if syntax == "pythonic":
        language = language_of(category)
        return decode_pythonic(text) if language == "python" else decode_source_call(text, language)
    if syntax == "json":
        return decode_json(text)
    raise DataError(f"--format must be one of {SYNTAXES}, got {syntax!r}")


def score_item(item: BFCLItem, calls: Sequence[Call] | DecodeError, *, underscore_names: bool = False) -> Verdict:
    """The verdict for one item given the model's decoded calls (or why decoding failed)."""
    if item.category in RELEVANCE_CATEGORIES:
        return check_relevance(item.category, calls)
    if item.ground_truth is None:
        raise DataError(f"BFCL item {item.id}: category {item.category} needs a ground truth")
    return check_ast(item.category, item.functions, calls, item.ground_truth, underscore_names=underscore_names)


# ------------------------------------------------------------------------------------------------
# summaries and reports
# ------------------------------------------------------------------------------------------------

def category_score(valid: Iterable[bool]) -> dict:
    valid = list(valid)
    correct = sum(1 for v in valid if v)
    return {"correct": correct, "total": len(valid), "accuracy": correct / len(valid) if valid else float("nan")}


def summarize(valid_by_category: Mapping[str, Sequence[bool]], *,
              complete: Mapping[str, bool] | None = None) -> dict:
    """Per-category scores plus BFCL's aggregates (see the module docstring)."""
    cats = {c: category_score(v) for c, v in valid_by_category.items() if len(v)}
    out: dict[str, Any] = {"categories": cats, "aggregates": {}}
    for name, (members, rule) in AGGREGATES.items():
        used = [c for c in members if c in cats]
        if not used:
            continue
        if rule == "weighted":
            correct = sum(cats[c]["correct"] for c in used)
            total = sum(cats[c]["total"] for c in used)
            acc = correct / total
        else:
            acc = sum(cats[c]["accuracy"] for c in used) / len(used)
        out["aggregates"][name] = {"accuracy": acc, "rule": f"{rule} mean", "categories": used,
                                   "missing": [c for c in members if c not in cats]}
    if cats:
        out["overall_unweighted"] = sum(c["accuracy"] for c in cats.values()) / len(cats)
        total = sum(c["total"] for c in cats.values())
        out["overall_weighted"] = sum(c["correct"] for c in cats.values()) / total
        out["items"] = total
    if complete is not None:
        out["complete"] = all(complete.get(c, False) for c in cats)
    if cats:
        out["bfcl_scores"] = bfcl_scores(cats)
    return out


# BFCL's leaderboard groups (bfcl-eval 2026.3.23, eval_checker/eval_runner_helper.py).
SIMPLE_LANGUAGES = ("simple_python", "simple_java", "simple_javascript")
NON_LIVE_GROUP = ("simple", "multiple", "parallel", "parallel_multiple")  # "simple" = mean of SIMPLE_LANGUAGES
LIVE_GROUP = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
IRRELEVANCE_GROUP = ("irrelevance", "live_irrelevance")
MULTI_TURN_GROUP = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")
AGENTIC_GROUPS = (("web_search_base", "web_search_no_snippet"), ("memory_kv", "memory_vector", "memory_rec_sum"))
V4_WEIGHTS = {"non_live": 10, "live": 10, "irrelevance": 10, "multi_turn": 30, "agentic": 40}
DATA_NOTE = ("computed on the BFCL V4 data shipped in bfcl-eval 2026.3.23; iTool and CALM report BFCL V3, whose "
             "snapshot differs (V3 had no agentic categories and other live/multi-turn items)")


def bfcl_scores(cats: Mapping[str, Mapping[str, Any]]) -> dict:
    """BFCL's leaderboard numbers from per-category scores, by the installed runner's own rules:

    - Non-Live = unweighted mean of simple, multiple, parallel, parallel_multiple, where simple is the
      unweighted mean of simple_python, simple_java, simple_javascript;
    - Live = item-weighted mean of the four live AST categories;
    - Irrelevance = unweighted mean of irrelevance and live_irrelevance; Relevance = live_relevance;
    - Multi-Turn = unweighted mean of the four multi-turn categories;
    - Agentic = unweighted mean of web search (base, no_snippet) and memory (kv, vector, rec_sum);
    - `v4_overall` = the installed version's weighting, 10 Non-Live + 10 Live + 10 Irrelevance +
      30 Multi-Turn + 40 Agentic (percent);
    - `v3_overall` = the V3 leaderboard's Overall that iTool and CALM report: the unweighted mean of
      Live, Non-Live and Multi-Turn (Relevance / Irrelevance reported beside it).

    As BFCL computes them, a category that was not run counts as accuracy 0 inside its group (BFCL
    shows the group as N/A); every group lists the categories it used and those `missing`, and
    `complete` says whether nothing was missing. jaxtool does not run the agentic categories (web
    search needs the network; memory needs BFCL's prerequisite conversations), so `v4_overall` is at
    most 60% here: read it with `missing`."""
    def acc(c):
        return cats[c]["accuracy"] if c in cats else 0.0

    def group(members, value):
        return {"accuracy": value, "categories": [c for c in members if c in cats],
                "missing": [c for c in members if c not in cats]}

    simple = sum(acc(c) for c in SIMPLE_LANGUAGES) / 3
    non_live = (simple + sum(acc(c) for c in NON_LIVE_GROUP[1:])) / 4
    live_n = sum(cats[c]["total"] for c in LIVE_GROUP if c in cats)
    live = sum(cats[c]["correct"] for c in LIVE_GROUP if c in cats) / live_n if live_n else 0.0
    irrelevance = sum(acc(c) for c in IRRELEVANCE_GROUP) / 2
    multi_turn = sum(acc(c) for c in MULTI_TURN_GROUP) / 4
    agentic = sum(sum(acc(c) for c in g) / len(g) for g in AGENTIC_GROUPS) / len(AGENTIC_GROUPS)
    groups = {
        "non_live": group(SIMPLE_LANGUAGES + NON_LIVE_GROUP[1:], non_live),
        "non_live_simple": group(SIMPLE_LANGUAGES, simple),
        "live": group(LIVE_GROUP, live),
        "irrelevance": group(IRRELEVANCE_GROUP, irrelevance),
        "relevance": group(("live_relevance",), acc("live_relevance")),
        "multi_turn": group(MULTI_TURN_GROUP, multi_turn),
        "agentic": group(tuple(c for g in AGENTIC_GROUPS for c in g), agentic),
    }
    v4 = sum(V4_WEIGHTS[k] * groups[k]["accuracy"] for k in V4_WEIGHTS) / sum(V4_WEIGHTS.values())
    v4_members = [c for k in V4_WEIGHTS for c in groups[k]["categories"] + groups[k]["missing"]]
    v3_members = [c for k in ("non_live", "live", "multi_turn") for c in groups[k]["categories"] + groups[k]["missing"]]
    return {
        "groups": groups,
        "v4_overall": {"accuracy": v4, "rule": "BFCL V4 (installed bfcl-eval 2026.3.23): 10% Non-Live + 10% Live + "
                                                "10% Irrelevance + 30% Multi-Turn + 40% Agentic",
                       "missing": [c for c in v4_members if c not in cats]},
        "v3_overall": {"accuracy": (live + non_live + multi_turn) / 3,
                       "rule": "BFCL V3 Overall (as iTool / CALM report it): unweighted mean of Non-Live, Live, "
                               "Multi-Turn; Relevance / Irrelevance reported beside it",
                       "missing": [c for c in v3_members if c not in cats]},
        "data": DATA_NOTE,
    }


def table_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["category", "correct", "total", "accuracy"]
    rows: list[list[Any]] = []
    for c, s in summary["categories"].items():
        rows.append([c, s["correct"], s["total"], s["accuracy"]])
    for name, a in summary["aggregates"].items():
        label = f"{name} ({a['rule']}" + (f"; missing {', '.join(a['missing'])})" if a["missing"] else ")")
        rows.append([label, "", "", a["accuracy"]])
    if "overall_unweighted" in summary:
        rows.append(["overall (unweighted mean of categories)", "", "", summary["overall_unweighted"]])
        rows.append(["overall (item-weighted)", "", summary["items"], summary["overall_weighted"]])
    scores = summary.get("bfcl_scores")
    if scores:
        for name, g in scores["groups"].items():
            rows.append([f"BFCL {name}" + (f" (not run, counted 0: {', '.join(g['missing'])})" if g["missing"] else ""),
                         "", "", g["accuracy"]])
        for key in ("v3_overall", "v4_overall"):
            o = scores[key]
            rows.append([f"BFCL {key} [{o['rule']}]" + (f" (not run, counted 0: {len(o['missing'])} categories)"
                                                       if o["missing"] else ""), "", "", o["accuracy"]])
    return header, rows


def write_bfcl_report(out_dir: str, records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                      name: str = "bfcl") -> dict[str, str]:
    """`<name>_items.jsonl`, `<name>_summary.json`, `<name>.md`, `<name>.png` in out_dir."""
    from jaxtool.eval.report import write_report

    header, rows = table_rows(summary)
    chart = {c: s["accuracy"] for c, s in summary["categories"].items()}
    return write_report(out_dir, name, items=records, summary=summary, header=header, rows=rows, chart=chart,
                        chart_title="BFCL accuracy per category")


# ------------------------------------------------------------------------------------------------
# predictions files
# ------------------------------------------------------------------------------------------------

def prediction_calls(row: Mapping[str, Any], syntax: str, where: str,
                     category: str = "simple_python") -> list[Call] | DecodeError:
    """The calls of one predictions row.

    `{"id", "calls": [{"name", "arguments"}, ...]}` — already-parsed calls (`[]`: no call;
    `null`: the output could not be parsed); `{"id", "text": "..."}` — raw output, decoded with
    `syntax` (`null`: the model gave no output; the item counts as unparseable); `{"id", "result":
    ...}` — BFCL's own result files: a string is read like "text", a list is BFCL's layout for
    function-calling models, `[{"func_name": "<JSON arguments>" or {arguments}}, ...]`.
    """
    if "calls" in row:
        calls = row["calls"]
        if calls is None:
            return DecodeError(str(row.get("error") or "the output could not be parsed into calls"))
        if not isinstance(calls, list):
            raise DataError(f"{where}: field 'calls' must be a list of {{\"name\", \"arguments\"}} objects or null, "
                            f"got {type(calls).__name__}")
        decoded = calls_from_json(calls)
        if isinstance(decoded, DecodeError):
            raise DataError(f"{where}: field 'calls': {decoded.reason}")
        return decoded
    for key in ("text", "result"):
        if key in row:
            value = row[key]
            if value is None:
                return DecodeError(f"no output (field {key!r} is null)")
            if key == "result" and isinstance(value, (list, dict)):
                return fc_result_calls(value)
            if not isinstance(value, str):
                raise DataError(f"{where}: field {key!r} must be a string"
                                + (" or BFCL's list of {name: arguments} objects" if key == "result" else "")
                                + f", got {type(value).__name__}")
            return decode_text(value, syntax, category)
    raise DataError(f"{where}: expected a field 'calls' (a list) or 'text' (a string)")


def fc_result_calls(result: Any) -> list[Call] | DecodeError:
    """BFCL's result layout for function-calling models (its `decode_ast` for FC handlers): a list
    of one-key objects `{function name: arguments}`, the arguments a JSON object or its text (a
    single object is one call). What does not fit is the model's failure, as in BFCL: the item is
    unparseable, the file still scores."""
    entries = [result] if isinstance(result, dict) else result
    calls: list[dict] = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict) or len(entry) != 1:
            return DecodeError(f"result[{k}]: expected an object {{function name: arguments}}, got "
                               + (f"{len(entry)} keys" if isinstance(entry, dict) else type(entry).__name__))
        (name, args), = entry.items()
        calls.append({"name": name, "arguments": args})
    return calls_from_json(calls)


def _lines(path: str):
    """(1-based line number, text) of a JSONL file; a line that is not UTF-8 is an error naming it."""
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, start=1):
            try:
                yield i, raw.decode("utf-8-sig" if i == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}, row {i}: not UTF-8 text (byte {e.start + 1} of the line)") from None


def read_predictions(path: str, known_ids: Iterable[str], category: str,
                     syntax: str = "pythonic") -> dict[str, list[Call] | DecodeError]:
    """id -> decoded calls, for a JSONL predictions file; unknown or repeated ids are errors naming the row."""
    known = set(known_ids)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    out: dict[str, list[Call] | DecodeError] = {}
    for i, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}, row {i}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not JSON ({json_error_text(e)})") from None
        except (ValueError, RecursionError) as e:  # a 5000-digit integer, absurd nesting
            raise DataError(f"{where}: not readable JSON ({type(e).__name__})") from None
        if not isinstance(row, Mapping) or not isinstance(row.get("id"), str):
            raise DataError(f"{where}: expected an object with a string field 'id'")
        rid = row["id"]
        if rid not in known:
            raise DataError(f"{where}: id {rid!r} is not an item of BFCL category {category}")
        if rid in out:
            raise DataError(f"{where}: id {rid!r} appears a second time")
        out[rid] = prediction_calls(row, syntax, where, category)
    return out


def select_ids(all_ids: Sequence[str], predictions: Mapping[str, Any], requested: Sequence[str] | None = None,
               all_items: bool = False) -> list[str]:
    """The ids to score, in dataset order: every id (`all_items`), the `requested` ones, or (default)
    the ids that have a prediction."""
    if all_items:
        return list(all_ids)
    if requested is not None:
        want = set(requested)
        return [i for i in all_ids if i in want]
    return [i for i in all_ids if i in predictions]


def score_predictions(items: Sequence[BFCLItem], predictions: Mapping[str, list[Call] | DecodeError], *,
                      underscore_names: bool = False) -> dict:
    """One verdict per item, in dataset order; items without a prediction fail as "missing_prediction"."""
    verdicts, missing = [], []
    for item in items:
        if item.id in predictions:
            v = score_item(item, predictions[item.id], underscore_names=underscore_names)
        else:
            missing.append(item.id)
            v = Verdict(False, "missing_prediction", "no prediction for this id")
        verdicts.append({"id": item.id, **v.to_dict()})
    score = category_score(v["valid"] for v in verdicts)
    return {**score, "missing": len(missing), "missing_ids": missing, "verdicts": verdicts}


__all__ = ["AST_CATEGORIES", "RELEVANCE_CATEGORIES", "SYNTAXES", "decode_text", "score_item", "summarize",
           "table_rows", "write_bfcl_report", "read_predictions", "score_predictions", "select_ids", "prediction_calls",
           "fc_result_calls"]
