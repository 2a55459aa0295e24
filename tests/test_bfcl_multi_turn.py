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


# --- inference: the batched loop, driven by a backend that answers with the ground truth ---------

class _GroundTruthBackend:
    """Answers each prompt from the ground truth of the entry it belongs to: at the first step of a
    turn the turn's calls (pythonic), after tool results a plain answer (no call, so the turn ends)."""

    name = "gt"

    def __init__(self, entries, tokenizer, mangle=None):
        self.tokenizer = tokenizer
        self.by_first_user = {e["question"][0][-1]["content"]: e for e in entries}
        self.calls = []
        self.mangle = mangle or {}

    def generate(self, prompts, *, max_new_tokens=256, stop_strings=(), temperature=0.0, top_k=0, top_p=1.0, seed=0):
        from jaxtool.sample.completion import Completion

        self.calls.append(len(prompts))
        outs = []
        for p in prompts:
            text = self.tokenizer.decode(p)
            users = text.split("<|im_start|>user\n")[1:]
            entry = self.by_first_user[users[0].split("<|im_end|>")[0]]
            turn = len(users) - 1
            last_role = text.rsplit("<|im_start|>", 2)[-2].split("\n", 1)[0]
            gt = entry["ground_truth"][turn]
            if last_role == "user" and gt:
                reply = "[" + ", ".join(self.mangle.get((entry["id"], turn), gt)) + "]"
            else:
                reply = "Done."
            outs.append(Completion(text=reply, token_ids=[1], finish_reason="stop"))
        return outs


def _keyword_only(entries, n):
    """Entries whose ground-truth calls use keyword arguments only: BFCL's pythonic decoder (and
    jaxtool's, which follows it) drops positional arguments, so `sort('a.pdf')` written by a model
    runs as `sort()`."""
    import ast

    def ok(e):
        return all(not ast.parse(c, mode="eval").body.args for t in e["ground_truth"] for c in t)
    return [e for e in entries if ok(e)][:n]


def _fmt_and_ids():
    from test_bfcl_run import CharTokenizer, FakeFormat, prompt_ids

    return FakeFormat(), prompt_ids, CharTokenizer()


@pytest.mark.parametrize("category", MULTI_TURN_CATEGORIES)
def test_inference_loop_replays_ground_truth_batched(category):
    from jaxtool.eval.bfcl.multi_turn_run import run_multi_turn

    fmt, prompt_ids, tok = _fmt_and_ids()
    entries = _keyword_only(read_multi_turn(category, limit=12), 3)
    backend = _GroundTruthBackend(entries, tok)
    recs = run_multi_turn(entries, backend, fmt, prompt_ids, batch_size=8, progress=False)
    assert [r["valid"] for r in recs] == [True] * 3, [r["error"] for r in recs]
    # every entry's step is decoded in the same generate call while entries remain
    assert backend.calls[0] == 3 and max(backend.calls) == 3
    seq = _GroundTruthBackend(entries, tok)
    recs_seq = run_multi_turn(entries, seq, fmt, prompt_ids, sequential=True, progress=False)
    assert [r["result"] for r in recs_seq] == [r["result"] for r in recs]
    assert max(seq.calls) == 1 and len(seq.calls) > len(backend.calls)


def test_inference_feeds_tool_results_and_held_out_functions():
    from jaxtool.eval.bfcl.multi_turn_run import ADDITIONAL_FUNCTION_PROMPT, run_multi_turn

    fmt, prompt_ids, tok = _fmt_and_ids()
    e = _keyword_only(read_multi_turn("multi_turn_miss_func", limit=12), 1)[0]
    seen = []

    class Spy(_GroundTruthBackend):
        def generate(self, prompts, **kw):
            seen.extend(self.tokenizer.decode(p) for p in prompts)
            return super().generate(prompts, **kw)

    (turn, names), = e["missed_function"].items()
    recs = run_multi_turn([e], Spy([e], tok), fmt, prompt_ids, progress=False)
    assert recs[0]["valid"]
    assert any("<|im_start|>tool\n" in s for s in seen)  # results come back as tool messages
    before = [s for s in seen if s.count("<|im_start|>user\n") <= int(turn)]
    after = [s for s in seen if s.count("<|im_start|>user\n") > int(turn)]
    assert all(f'"name": "{names[0]}"' not in s for s in before)
    assert all(ADDITIONAL_FUNCTION_PROMPT in s and f"'name': '{names[0]}'" in s for s in after)


def test_inference_wrong_call_fails_like_the_checker_and_step_limit_force_quits():
    from jaxtool.eval.bfcl.multi_turn_run import run_multi_turn

    fmt, prompt_ids, tok = _fmt_and_ids()
    e = read_multi_turn("multi_turn_base", limit=1)[0]
    rec = run_multi_turn([e], _GroundTruthBackend([e], tok, {(e["id"], 0): ["pwd()"]}), fmt, prompt_ids,
                         progress=False)[0]
    assert not rec["valid"] and (rec["valid"], rec["error_type"]) == official_verdict(e, rec["result"])

    class Looper(_GroundTruthBackend):
        def generate(self, prompts, **kw):
            from jaxtool.sample.completion import Completion
            return [Completion(text="[pwd()]", token_ids=[1]) for _ in prompts]

    rec = run_multi_turn([e], Looper([e], tok), fmt, prompt_ids, step_limit=3, progress=False)[0]
    assert rec["ended"] == "force_quit" and len(rec["result"][0]) == 4
    assert rec["error_type"] == "multi_turn:force_terminated"


def test_evaluate_runs_multi_turn_categories_and_writes_rescorable_predictions(tmp_path):
    from jaxtool import cli
    from jaxtool.eval.bfcl import run as bfcl_run

    fmt, prompt_ids, tok = _fmt_and_ids()
    entries = _keyword_only(read_multi_turn("multi_turn_base", limit=12), 2)
    # --limit takes the first N entries; make the backend know them all
    backend = _GroundTruthBackend(read_multi_turn("multi_turn_base", limit=12), tok)
    summary, records = bfcl_run.evaluate(backend, fmt, prompt_ids, categories=["multi_turn_base"], limit=2,
                                         out_dir=str(tmp_path), progress=False)
    assert summary["categories"]["multi_turn_base"]["total"] == 2 and "multi_turn_timing" in summary
    preds = tmp_path / "bfcl_predictions.jsonl"
    out = tmp_path / "v.json"
    assert cli.main(["eval", "bfcl-score", "--category", "multi_turn_base", "--predictions", str(preds),
                     "--out", str(out)]) == 0
    assert [v["valid"] for v in json.loads(out.read_text())["verdicts"]] == [r["valid"] for r in records]
    assert entries  # at least some keyword-only entries exist among the first 12


def test_category_lists_expand_all_and_multi_turn():
    from jaxtool.eval.bfcl.data import CATEGORIES
    from jaxtool.eval.bfcl.run import parse_categories

    assert parse_categories("all,multi_turn") == list(CATEGORIES) + list(MULTI_TURN_CATEGORIES)
    assert parse_categories("multi_turn_base,simple_java") == ["multi_turn_base", "simple_java"]
