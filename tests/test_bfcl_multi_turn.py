"""BFCL multi-turn scoring (jaxtool.eval.bfcl.multi_turn) against BFCL's own checker, run here.

Predictions are generated from the ground truth with perturbations (tests/bfcl_mt_reference.py):
steps split, calls moved across turns, values changed, calls dropped / added / duplicated /
reordered, empty turns, calls in turns where none belong, unknown functions, missing turns. For
every category, jaxtool's verdict (valid + error type) must agree with the official one on >= 99%
of the cases (the fast test: the first 3 entries of each category; the slow one: 25).
"""

import json

import pytest

from bfcl_mt_reference import official_verdict, perturbations
from jaxtool.eval.bfcl.multi_turn import MULTI_TURN_CATEGORIES, check_multi_turn, read_multi_turn, score_multi_turn


def _agreement(category, n):
    entries = read_multi_turn(category, limit=n)
    cases = agree = 0
    kinds = set()
    disagreements = []
    for idx, e in enumerate(entries):
        for name, pred in perturbations(e["ground_truth"], seed=idx).items():
            ours = check_multi_turn(e, pred)
            ref_valid, ref_type = official_verdict(e, pred)
            cases += 1
            kinds.add((name, ref_valid))
            if (ours.valid, ours.error_type) == (ref_valid, ref_type):
                agree += 1
            else:
                disagreements.append((e["id"], name, (ours.valid, ours.error_type), (ref_valid, ref_type)))
    return cases, agree, kinds, disagreements


@pytest.mark.parametrize("category", MULTI_TURN_CATEGORIES)
def test_verdicts_agree_with_official_checker(category):
    cases, agree, kinds, dis = _agreement(category, 3)
    assert cases >= 30
    # the perturbations produce both outcomes, so agreement is not trivial
    assert any(v for _, v in kinds) and any(not v for _, v in kinds)
    assert agree / cases >= 0.99, dis


@pytest.mark.slow
@pytest.mark.parametrize("category", MULTI_TURN_CATEGORIES)
def test_verdicts_agree_with_official_checker_more_entries(category):
    cases, agree, _, dis = _agreement(category, 25)
    print(f"{category}: {agree}/{cases} verdicts agree")
    assert agree / cases >= 0.99, dis


def test_ground_truth_passes_and_error_types_are_bfcls():
    e = read_multi_turn("multi_turn_base", limit=1)[0]
    gt = e["ground_truth"]
    assert check_multi_turn(e, [[t] for t in gt]).valid
    assert check_multi_turn(e, "x").error_type == "multi_turn:inference_error"
    assert check_multi_turn(e, [[t] for t in gt][:-1]).error_type == "multi_turn:force_terminated"
    empty = [[t] for t in gt]
    empty[0] = [[]]
    assert check_multi_turn(e, empty).error_type == "multi_turn:empty_turn_model_response"


def test_irrelevance_rule_runner_default_and_strict_option():
    # miss_func entries have a turn with an empty ground truth (the model should not act there)
    e = next(x for x in read_multi_turn("multi_turn_miss_func", limit=10) if any(not t for t in x["ground_truth"]))
    gt = e["ground_truth"]
    k = next(i for i, t in enumerate(gt) if not t)
    pred = [[t] if t else [] for t in gt]
    pred[k] = [["pwd()"]] if "GorillaFileSystem" in e["involved_classes"] else [[gt[0][0]]]
    runner = check_multi_turn(e, pred)
    strict = check_multi_turn(e, pred, irrelevance="strict")
    assert runner.valid == official_verdict(e, pred)[0]
    if runner.valid:
        assert not strict.valid and strict.error_type == "multi_turn:irrelevance_error:decoder_success"
    assert check_multi_turn(e, [[t] if t else [] for t in gt], irrelevance="strict").valid


def test_score_multi_turn_counts_missing_ids():
    es = read_multi_turn("multi_turn_base", limit=3)
    out = score_multi_turn(es, {es[0]["id"]: [[t] for t in es[0]["ground_truth"]]})
    assert (out["correct"], out["total"], out["missing"]) == (1, 3, 2)
    assert [v["id"] for v in out["verdicts"]] == [e["id"] for e in es]


def test_bfcl_score_cli_multi_turn(tmp_path, capsys):
    from jaxtool import cli

    es = read_multi_turn("multi_turn_miss_param", limit=3)
    bad = [[t] for t in es[1]["ground_truth"]]
    bad[0] = []
    rows = [{"id": es[0]["id"], "result": [[t] for t in es[0]["ground_truth"]]}, {"id": es[1]["id"], "result": bad}]
    p = tmp_path / "mt.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "v.json"
    assert cli.main(["eval", "bfcl-score", "--category", "multi_turn_miss_param", "--predictions", str(p),
                     "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r["correct"], r["total"], r["category_items"], r["irrelevance"]) == (1, 2, 200, "runner")
    assert r["verdicts"][1]["error_type"] == official_verdict(es[1], bad)[1]
    assert "2 of the category's 200 items" in capsys.readouterr().out
    p.write_text(json.dumps({"id": es[0]["id"], "result": [["ls()"]] * len(es[0]["ground_truth"])}) + "\n")  # a turn that is not a list of steps
    assert cli.main(["eval", "bfcl-score", "--category", "multi_turn_miss_param", "--predictions", str(p),
                     "--out", str(out)]) == 2
    assert "turn 0, step 0" in capsys.readouterr().err
