"""BFCL multi-turn: reading the entries and scoring a model's decoded calls as BFCL's runner does.

Data (BFCL v4, shipped in `bfcl_eval/data`): `BFCL_v4_multi_turn_<kind>.json` rows
`{"id", "question": [[messages of turn 0], [turn 1], ...], "initial_config": {class: config},
"involved_classes": [...], "missed_function"?: {"turn": [names]}, "excluded_function"?: [names]}`
and `possible_answer/...` rows `{"id", "ground_truth": [[call strings of turn 0], ...]}`.

A model's result, in BFCL's decoded form: turns -> steps -> call strings,
`[[["cd(folder='x')", "ls()"], ["mv(...)"]], [], ...]` (one list of steps per user turn).

Scoring follows `bfcl_eval/eval_checker/eval_runner.py::_evaluate_single_multi_turn_entry` and
`multi_turn_eval/multi_turn_checker.py::multi_turn_checker` (bfcl-eval 2026.3.23):

1. the result must be a list (else `multi_turn:inference_error`) with one element per ground-truth
   turn (else `multi_turn:force_terminated`, what BFCL records when a model hit the step limit);
2. steps that decode to no call (`[]`, `[""]`) are dropped;
3. turn by turn, the model's steps run on one set of simulator instances (`jaxtool.envs.bfcl.BFCLEnv`)
   and the turn's ground truth on another, both persisting across turns; then, for every turn
   whose ground truth is non-empty:
   - empty-turn rule: the model made at least one call this turn (`multi_turn:empty_turn_model_response`);
   - state check: every public attribute of every ground-truth instance equals the model
     instance's (`multi_turn:instance_state_mismatch`);
   - response check: this turn's ground-truth results are an unordered sub-multiset of *all* the
     model's results so far, earlier turns included (`multi_turn:execution_response_mismatch`).
   Turns with an empty ground truth (the model should not act) are executed but not checked.
4. The runner imports `multi_turn_irrelevance_checker` but never calls it, so by default a model
   calling functions in a turn whose ground truth is empty is not penalised
   (`irrelevance="runner"`). `irrelevance="strict"` applies that checker too: such a turn fails
   with `multi_turn:irrelevance_error:decoder_success` (checked after the rest passes).

The simulators are BFCL's own classes; calls are parsed and dispatched, never evaluated (see
`jaxtool.envs.bfcl` for how that differs from BFCL's executor and why).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence

from jaxtool.envs.bfcl import BFCLEnv
from jaxtool.errors import DataError, json_error_text
from jaxtool.eval.bfcl.checker import OK, Verdict
from jaxtool.eval.bfcl.data import MULTI_TURN_CATEGORIES, VERSION_PREFIX, data_dir

IRRELEVANCE_RULES = ("runner", "strict")
STEP_LIMIT = 20  # bfcl_eval.constants.default_prompts.MAXIMUM_STEP_LIMIT


def is_multi_turn(category: str) -> bool:
    return category in MULTI_TURN_CATEGORIES


def _jsonl(path: str) -> Iterable[tuple[int, Any]]:
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file (BFCL multi-turn data; install bfcl-eval or pass --data-dir)")
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, row {i}: not JSON ({json_error_text(e)})") from None


def read_multi_turn(category: str, *, root: str | None = None, limit: int | None = None) -> list[dict]:
    """The category's entries, each with its `ground_truth` added (file order)."""
    if category not in MULTI_TURN_CATEGORIES:
        raise DataError(f"unknown BFCL multi-turn category {category!r}; expected one of "
                        f"{', '.join(MULTI_TURN_CATEGORIES)}")
    root = root or data_dir()
    qpath = os.path.join(root, f"{VERSION_PREFIX}_{category}.json")
    apath = os.path.join(root, "possible_answer", f"{VERSION_PREFIX}_{category}.json")
    answers = {}
    for i, rec in _jsonl(apath):
        if not isinstance(rec, Mapping) or not isinstance(rec.get("id"), str) \
                or not isinstance(rec.get("ground_truth"), list):
            raise DataError(f"{apath}, row {i}: expected {{\"id\": str, \"ground_truth\": [[call strings]]}}")
        answers[rec["id"]] = rec["ground_truth"]
    out = []
    for i, rec in _jsonl(qpath):
        if limit is not None and len(out) >= limit:
            break
        where = f"{qpath}, row {i}"
        if not isinstance(rec, Mapping) or not isinstance(rec.get("id"), str):
            raise DataError(f"{where}: expected an object with a string field 'id'")
        for field in ("question", "involved_classes"):
            if not isinstance(rec.get(field), list):
                raise DataError(f"{where}: field {field!r} must be a list")
        if rec["id"] not in answers:
            raise DataError(f"{where}: id {rec['id']!r} has no ground truth in {apath}")
        gt = answers[rec["id"]]
        if len(gt) != len(rec["question"]):
            raise DataError(f"{where}: {len(rec['question'])} question turns but {len(gt)} ground-truth turns")
        out.append({**rec, "ground_truth": gt})
    return out


def _is_empty(step_or_turn: Sequence) -> bool:
    """BFCL's `is_empty_execute_response`."""
    return len(step_or_turn) == 0 or (len(step_or_turn) == 1 and len(step_or_turn[0]) == 0)


def _compare(model_env: BFCLEnv, gt_env: BFCLEnv) -> tuple[bool, dict]:
    diffs = {}
    for cname, gt_inst in gt_env.instances.items():
        m_inst = model_env.instances[cname]
        for attr, gt_val in vars(gt_inst).items():
            if attr.startswith("_"):
                continue
            m_val = getattr(m_inst, attr)
            if m_val != gt_val:
                diffs[f"{cname}.{attr}"] = {"model": repr(m_val)[:200], "ground_truth": repr(gt_val)[:200]}
    return not diffs, diffs


def _missing(expected: Sequence[str], got: Sequence[str]) -> list[str]:
    pool = list(got)
    miss = []
    for item in expected:
        try:
            pool.remove(item)
        except ValueError:
            miss.append(item)
    return miss


def decoded_steps(turn: Any, where: str) -> list[list[str]]:
    """One turn of a decoded result: its non-empty steps (BFCL drops steps with no call)."""
    if not isinstance(turn, list):
        raise DataError(f"{where}: a turn must be a list of steps (each a list of call strings), "
                        f"got {type(turn).__name__}")
    steps = []
    for k, step in enumerate(turn):
        if not isinstance(step, list) or not all(isinstance(c, str) for c in step):
            raise DataError(f"{where}, step {k}: a step must be a list of call strings")
        if not _is_empty(step):
            steps.append(step)
    return steps


def check_multi_turn(entry: Mapping[str, Any], result: Any, *, irrelevance: str = "runner",
                     where: str = "result") -> Verdict:
    """The verdict for one entry (with its `ground_truth`) given the model's decoded result."""
    if irrelevance not in IRRELEVANCE_RULES:
        raise DataError(f"irrelevance rule must be one of {IRRELEVANCE_RULES}, got {irrelevance!r}")
    gt_turns = entry["ground_truth"]
    if not isinstance(result, list):
        return Verdict(False, "multi_turn:inference_error", "the model did not output a list of model responses")
    if len(result) != len(gt_turns):
        return Verdict(False, "multi_turn:force_terminated",
                       f"{len(result)} model turns for {len(gt_turns)} ground-truth turns")
    turns = [decoded_steps(t, f"{where}, turn {k}") for k, t in enumerate(result)]
    model_env, gt_env = BFCLEnv(), BFCLEnv()
    model_env.reset(entry)
    gt_env.reset(entry)
    all_model_results: list[str] = []
    for k, (gt, steps) in enumerate(zip(gt_turns, turns)):
        for step in steps:
            all_model_results += [r.content for r in model_env.step_strings(step)]
        gt_results = [r.content for r in gt_env.step_strings(gt)]
        if gt and not steps:
            return Verdict(False, "multi_turn:empty_turn_model_response", f"model response list is empty for turn {k}")
        if not gt:
            continue
        ok, diffs = _compare(model_env, gt_env)
        if not ok:
            return Verdict(False, "multi_turn:instance_state_mismatch",
                           f"turn {k}: state differs from the ground truth's: {json.dumps(diffs)[:1000]}")
        miss = _missing(gt_results, all_model_results)
        if miss:
            return Verdict(False, "multi_turn:execution_response_mismatch",
                           f"turn {k}: the model's results so far lack {len(miss)} of this turn's ground-truth "
                           f"results: {json.dumps(miss)[:1000]}")
    if irrelevance == "strict":
        for k, (gt, steps) in enumerate(zip(gt_turns, turns)):
            if not gt and not _is_empty(steps):
                return Verdict(False, "multi_turn:irrelevance_error:decoder_success",
                               f"the model made calls in turn {k}, where it should not")
    return OK


def read_multi_turn_predictions(path: str, known_ids: Iterable[str], category: str) -> dict[str, Any]:
    """id -> the `result` field of each row of a JSONL predictions file (BFCL's decoded form)."""
    known = set(known_ids)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    out: dict[str, Any] = {}
    for i, row in _jsonl(path):
        where = f"{path}, row {i}"
        if not isinstance(row, Mapping) or not isinstance(row.get("id"), str):
            raise DataError(f"{where}: expected an object with a string field 'id'")
        rid = row["id"]
        if rid not in known:
            raise DataError(f"{where}: id {rid!r} is not an item of BFCL category {category}")
        if rid in out:
            raise DataError(f"{where}: id {rid!r} appears a second time")
        if "result" not in row:
            raise DataError(f"{where}: expected a field 'result' (turns -> steps -> call strings)")
        out[rid] = row["result"]
    return out


def score_multi_turn(entries: Sequence[Mapping[str, Any]], predictions: Mapping[str, Any], *,
                     irrelevance: str = "runner", path: str = "predictions") -> dict:
    """One verdict per entry (dataset order); entries without a prediction fail as "missing_prediction"."""
    verdicts, missing = [], []
    for e in entries:
        if e["id"] in predictions:
            v = check_multi_turn(e, predictions[e["id"]], irrelevance=irrelevance, where=f"{path}, id {e['id']}")
        else:
            missing.append(e["id"])
            v = Verdict(False, "missing_prediction", "no prediction for this id")
        verdicts.append({"id": e["id"], **v.to_dict()})
    correct = sum(1 for v in verdicts if v["valid"])
    return {"correct": correct, "total": len(verdicts),
            "accuracy": correct / len(verdicts) if verdicts else float("nan"),
            "missing": len(missing), "missing_ids": missing, "verdicts": verdicts}


__all__ = ["IRRELEVANCE_RULES", "MULTI_TURN_CATEGORIES", "STEP_LIMIT", "check_multi_turn", "decoded_steps",
           "is_multi_turn", "read_multi_turn", "read_multi_turn_predictions", "score_multi_turn"]
