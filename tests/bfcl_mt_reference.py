"""Shared by the BFCL multi-turn tests: the official checker run as BFCL's runner runs it, and
perturbed predictions generated from the ground truth.

`official_verdict` is `bfcl_eval.eval_checker.eval_runner._evaluate_single_multi_turn_entry`'s
logic (bfcl-eval 2026.3.23) for results already in decoded form: that module cannot be imported
without BFCL's API-client dependencies, so its three wrapper checks (a list, one element per
ground-truth turn, empty steps dropped) are restated here from its source, and the checking itself
is BFCL's own `multi_turn_checker`, called unchanged. BFCL keeps simulator instances in a module's
`globals()` keyed by model name and entry id, so each call uses a fresh model name.
"""

from __future__ import annotations

import ast
import copy
import random
import uuid


def official_verdict(entry: dict, result) -> tuple[bool, str | None]:
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import is_empty_execute_response

    gt = entry["ground_truth"]
    if type(result) != list:  # noqa: E721 — the runner's own test
        return False, "multi_turn:inference_error"
    if len(result) != len(gt):
        return False, "multi_turn:force_terminated"
    decoded = [[step for step in turn if not is_empty_execute_response(step)] for turn in result]
    test_entry = {"id": entry["id"], "initial_config": copy.deepcopy(entry.get("initial_config", {})),
                  "involved_classes": list(entry["involved_classes"])}
    out = multi_turn_checker(decoded, gt, test_entry, entry["id"].rsplit("_", 1)[0], "m" + uuid.uuid4().hex)
    return out["valid"], out.get("error_type")


def _change_value(call: str, rng: random.Random) -> str | None:
    tree = ast.parse(call, mode="eval").body
    nodes = list(tree.args) + [k.value for k in tree.keywords]
    consts = [n for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, (str, int, float))
              and not isinstance(n.value, bool)]
    if not consts:
        return None
    n = rng.choice(consts)
    n.value = n.value + "_x" if isinstance(n.value, str) else n.value + 7
    return ast.unparse(tree)


def perturbations(gt: list[list[str]], seed: int) -> dict[str, list]:
    """name -> a predicted result (turns -> steps -> call strings) made from the ground truth."""
    rng = random.Random(seed)
    one_step = [[list(t)] if t else [] for t in gt]
    out: dict[str, list] = {"exact": one_step,
                            "steps_split": [[[c] for c in t] for t in gt],
                            "empty_steps_added": [[[], list(t), [""]] if t else [[]] for t in gt]}
    nonempty = [k for k, t in enumerate(gt) if t]
    calls = [(k, j) for k in nonempty for j in range(len(gt[k]))]
    if calls:
        k, j = rng.choice(calls)
        p = copy.deepcopy(gt)
        del p[k][j]
        out["call_dropped"] = [[t] if t else [] for t in p]
        p = copy.deepcopy(gt)
        changed = _change_value(p[k][j], rng)
        if changed:
            p[k][j] = changed
            out["value_changed"] = [[t] if t else [] for t in p]
        p = copy.deepcopy(gt)
        p[k].insert(j, p[k][j])
        out["call_duplicated"] = [[t] if t else [] for t in p]
        p = copy.deepcopy(gt)
        p[k] = list(reversed(p[k]))
        out["reordered"] = [[t] if t else [] for t in p]
        p = copy.deepcopy(gt)
        p[k] = []
        out["empty_turn"] = [[t] if t else [] for t in p]
        p = copy.deepcopy(gt)
        p[k].append("ls(a=True)" if rng.random() < 0.5 else "pwd()")
        out["call_added"] = [[t] if t else [] for t in p]
        p = copy.deepcopy(gt)
        p[k][j] = "no_such_function(x=1)"
        out["unknown_function"] = [[t] if t else [] for t in p]
    movable = [k for k in nonempty if k + 1 < len(gt)]
    if movable:
        k = rng.choice(movable)
        p = copy.deepcopy(gt)
        p[k + 1] = p[k][-1:] + p[k + 1]
        p[k] = p[k][:-1]
        out["call_moved_later"] = [[t] if t else [] for t in p]
        p = copy.deepcopy(gt)
        p[k] = p[k] + p[k + 1][:1]
        p[k + 1] = p[k + 1][1:]
        out["call_moved_earlier"] = [[t] if t else [] for t in p]
    empty = [k for k, t in enumerate(gt) if not t]
    if empty and calls:
        k = empty[0]
        src = gt[rng.choice(nonempty)]
        p = [[t] if t else [] for t in gt]
        p[k] = [[src[0]]]
        out["calls_where_none_belong"] = p
    out["turn_missing"] = one_step[:-1]
    out["not_a_list"] = "ls()"  # type: ignore[assignment]
    return out
