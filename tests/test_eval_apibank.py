"""API-Bank scoring: ROUGE-L against hand-computed values, call extraction / parsing / matching, the
offline ToolSearcher rule, and the evaluator + command on real level-3 slices."""

import argparse
import json
import os

import pytest

from dialog_fakes import FakeFormat, ScriptedBackend, fake_prompt_ids, install_fake_stack
from jaxtool.commands.eval_apibank import register as register_apibank
from jaxtool.data.calls import ParseError
from jaxtool.data.schema import ToolCall
from jaxtool.errors import DataError
from jaxtool.eval.apibank import (ToolLibrary, api_calls_match, api_values_equal, evaluate_apibank,
                                  parse_api_request, parse_gold_request, score_api_item, score_response_item,
                                  toolsearcher_matches)
from jaxtool.eval.apibank_data import load_items
from jaxtool.eval.rouge import lcs_length, lcs_tokens, rouge_l, rouge_l_apibank

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "api_bank")
API = os.path.join(FIX, "lv3-api-train-slice.json")
RESP = os.path.join(FIX, "lv3-response-train-slice.json")


# --------------------------------------------------------------------------------------------
# ROUGE-L, hand-computed
# --------------------------------------------------------------------------------------------

def test_lcs():
    assert lcs_length("the cat is on the mat".split(), "the cat sat on the mat".split()) == 5
    assert lcs_length([], ["a"]) == 0
    # tie: the back-trace drops the second sequence's element first
    assert lcs_tokens(["a", "b"], ["b", "a"]) == ["b"]


def test_rouge_l_sentence_level():
    # LCS("the cat sat on the mat", "the cat is on the mat") = 5 of 6 and 6 tokens
    s = rouge_l("the cat sat on the mat", "the cat is on the mat")
    assert (s.precision, s.recall, s.f1) == pytest.approx((5 / 6, 5 / 6, 5 / 6))
    # hyp a b c d, ref b d a: LCS = "b d" -> P = 2/4, R = 2/3, F = 2PR/(P+R) = 4/7
    s = rouge_l("a b c d", "b d a")
    assert (s.precision, s.recall, s.f1) == pytest.approx((0.5, 2 / 3, 4 / 7))
    assert rouge_l("", "x").f1 == 0.0 and rouge_l("The X", "the x").f1 == 0.0
    assert rouge_l("The X", "the x", lowercase=True).f1 == pytest.approx(1.0)


def test_rouge_l_apibank_distinct_words():
    # distinct words: ref {the cat is on mat} = 5, hyp {the cat sat on mat} = 5;
    # LCS words {the, cat, on, mat} = 4 -> P = R = 0.8, F = 2*0.64/(1.6 + 1e-8)
    s = rouge_l_apibank("the cat sat on the mat", "the cat is on the mat")
    assert (s.precision, s.recall) == (0.8, 0.8)
    assert s.f1 == pytest.approx(2 * 0.64 / (1.6 + 1e-8), abs=1e-12)


def test_rouge_l_apibank_splits_sentences_at_periods():
    # ref -> ["The result is 33", "0"], hyp -> ["The result is 33", "Thanks"]; union LCS = 4 words,
    # m = n = 5 distinct words -> 0.8; the sentence-level score of the same pair is 2/3.
    assert rouge_l_apibank("The result is 33. Thanks", "The result is 33.0.").f1 == pytest.approx(0.8, abs=1e-7)
    assert rouge_l("The result is 33. Thanks", "The result is 33.0.").f1 == pytest.approx(2 / 3)


def test_rouge_l_apibank_union_over_reference_sentences_uses_the_tie_rule():
    # ref sentences [a b] and [a]; hyp [b a]. LCS([a b], [b a]) back-traces to "b", LCS([a], [b a]) is "a";
    # union {a, b} = 2 = m = n -> F = 2/(2 + 1e-8). Picking "a" for the first sentence would give 0.5.
    assert rouge_l_apibank("b a", "a b. a").f1 == pytest.approx(2 / (2 + 1e-8), abs=1e-12)
    assert rouge_l_apibank("", "a").f1 == 0.0 and rouge_l_apibank("...", "a").f1 == 0.0


def test_response_scoring_strips_ai_prefix():
    s = score_response_item("AI: The result is 33.", "The result is 33.")
    assert s["rouge_l"] == pytest.approx(1.0, abs=1e-7) and s["rouge_l_lcs"] == 1.0
    empty = score_response_item("", "AI: hi\n")
    assert (empty["rouge_1"], empty["rouge_2"], empty["rouge_l"], empty["rouge_l_lcs"]) == (0.0, 0.0, 0.0, 0.0)


def test_response_summary_rouge_1_2_and_corpus_bleu_by_hand():
    from jaxtool.eval.apibank import summarise

    recs = [{"kind": "response", **score_response_item("AI: the cat sat on a mat", "AI: the cat sat on the mat")},
            {"kind": "response", **score_response_item("hello there", "hello there")}]
    s = summarise(recs)["response"]
    # ROUGE-1 (distinct unigrams), pair 1: hyp {the, cat, sat, on, a, mat} 6, ref {the, cat, sat, on, mat} 5,
    # overlap 5 -> P 5/6, R 1; pair 2: P = R = 1
    f1 = 2 * (5 / 6) / (5 / 6 + 1 + 1e-8)
    assert s["rouge_1"] == pytest.approx((f1 + 2 / (2 + 1e-8)) / 2)
    # ROUGE-2: hyp bigrams {the cat, cat sat, sat on, on a, a mat}, ref {.., on the, the mat}: 3/5 and 3/5
    assert s["rouge_2"] == pytest.approx((2 * 0.36 / (1.2 + 1e-8) + 2 / (2 + 1e-8)) / 2)
    # corpus BLEU sums the counts: p1 (5+2)/(6+2), p2 (3+1)/(5+1), p3 2/4, p4 1/3, BP 1
    assert s["bleu_4"] == pytest.approx(100 * (7 / 8 * 4 / 6 * 2 / 4 * 1 / 3) ** 0.25)


# --------------------------------------------------------------------------------------------
# calls
# --------------------------------------------------------------------------------------------

def test_parse_api_request_forms():
    (c,) = parse_api_request("Sure.\nAPI-Request: [QueryStock(stock_code='MSFT', date='2022-02-04')]->{...}")
    assert c == ToolCall("QueryStock", {"stock_code": "MSFT", "date": "2022-02-04"})
    (c,) = parse_api_request("API-Request: [GetOccupationSalary(occupation=Financial Analyst, location=London)]")
    assert dict(c.arguments) == {"occupation": "Financial Analyst", "location": "London"}
    (c,) = parse_api_request("[ExpertOpinion(condition='lung cancer', time=2034-01-01 10:00:00)]")
    assert dict(c.arguments) == {"condition": "lung cancer", "time": "2034-01-01 10:00:00"}
    calls = parse_api_request("API-Request: [RatioCalculator(value1=80, value2=600), RatioCalculator(value1=90, value2=800)]")
    assert [dict(c.arguments) for c in calls] == [{"value1": 80, "value2": 600}, {"value1": 90, "value2": 800}]
    assert isinstance(parse_api_request("I will call QueryStock now."), ParseError)
    assert isinstance(parse_api_request("API-Request: QueryStock(stock_code='MSFT')"), ParseError)
    assert parse_gold_request("API-Request: PharmacyLocator(location=New York)")[0].arguments == {"location": "New York"}


def test_values_compare_as_api_bank_text():
    assert api_values_equal(75, "75") and api_values_equal("75.0", 75) and api_values_equal(" Bali ", "Bali")
    assert not api_values_equal("bali", "Bali")
    assert api_values_equal(True, "true") and not api_values_equal(True, "1")
    assert api_values_equal(["a", 1], ["a", "1"]) and not api_values_equal(["a"], "a")


def test_call_matching_rules():
    gold = [ToolCall("QueryStock", {"stock_code": "MSFT", "date": "2022-02-04"})]
    assert api_calls_match([ToolCall("QueryStock", {"date": "2022-02-04", "stock_code": "MSFT"})], gold)[0]
    assert not api_calls_match([ToolCall("Querystock", {"stock_code": "MSFT", "date": "2022-02-04"})], gold)[0]
    assert not api_calls_match([ToolCall("QueryStock", {"stock_code": "MSFT"})], gold)[0]
    assert not api_calls_match([ToolCall("QueryStock", {"stock_code": "MSFT", "date": "2022-02-04", "x": 1})], gold)[0]
    assert not api_calls_match([ToolCall("QueryStock", {"stock_code": "AAPL", "date": "2022-02-04"})], gold)[0]
    assert not api_calls_match(gold + gold, gold)[0]


# --------------------------------------------------------------------------------------------
# ToolSearcher
# --------------------------------------------------------------------------------------------

LIB = ToolLibrary({"QueryHistoryToday": "This API queries the history of a given user today.",
                   "QueryStock": "This API queries the stock price of a given stock.",
                   "DeleteAgenda": "The API for deleting a schedule item includes parameters for token, content, time."},
                  retrieved={"stock price lookup": "QueryStock"})


def ts(k, **extra):
    return ToolCall("ToolSearcher", {"keywords": k, **extra})


def test_toolsearcher_same_words_same_tool_or_recorded_tool():
    assert toolsearcher_matches([ts("Query  stock")], ts("query stock"), None)[0]          # same words, folded
    assert LIB.search("stock price") == "QueryStock" == LIB.search("query the stock")
    assert toolsearcher_matches([ts("stock price")], ts("query the stock"), LIB)[0]      # same retrieved tool
    assert LIB.search("stock price lookup") == "QueryStock"
    assert toolsearcher_matches([ts("the stock")], ts("stock price lookup"), LIB)[0]


def test_toolsearcher_other_tool_or_other_call_fails():
    ok, why = toolsearcher_matches([ts("delete agenda")], ts("query stock"), LIB)
    assert not ok and "'DeleteAgenda'" in why
    assert not toolsearcher_matches([ToolCall("QueryStock", {"stock_code": "X"})], ts("query stock"), LIB)[0]
    assert not toolsearcher_matches([ts("query stock")], ts("query stock", location="NY"), LIB)[0]
    assert not toolsearcher_matches([ts("stock price")], ts("query the stock"), None)[0]   # no library: words only
    assert LIB.search("zzz qqq") is None


def test_library_from_recorded_results_in_the_data():
    items = list(load_items(API))
    lib = ToolLibrary.from_items(items)
    assert "HealthcareProviderAppointmentChecker" in lib.names and "GetUserToken" not in lib.retrieved.values()
    assert lib.retrieved["healthcare provider appointment availability checker"] == "HealthcareProviderAppointmentChecker"


def test_gold_answers_score_as_correct_except_bracketless_gold():
    items = list(load_items(API))
    lib = ToolLibrary.from_items(items)
    results = [score_api_item(it.expected, it.expected, lib) for it in items]
    wrong = [(it.row, r["reason"]) for it, r in zip(items, results) if not r["correct"]]
    # slice record 14 is level-3 record 515, whose gold has no brackets; a prediction needs them
    assert wrong == [(14, "no API call")]


# --------------------------------------------------------------------------------------------
# evaluator and command
# --------------------------------------------------------------------------------------------

def _respond(prompt):
    if "Generate a response as an AI assistant" in prompt:
        return "AI: The total cost is $4400.0."
    if "Find a cardiologist in Los Angeles" in prompt and "HealthcareProviderAppointmentChecker(" not in prompt:
        return "API-Request: [ToolSearcher(keywords='healthcare provider appointment availability checker')]"
    if "wellness retreat" in prompt.lower() and "ToolSearcher(keywords='wellness retreats in Bali')" not in prompt:
        return "API-Request: [ToolSearcher(keywords='Wellness Retreats in bali')]"
    if "TotalCostCalculator" in prompt:
        return "API-Request: [TotalCostCalculator(price=2000, num_of_people='2')]"
    return "I don't know."


def test_evaluate_apibank_scores_items():
    items = [it for it in load_items(API)][:8] + list(load_items(RESP))[:2]
    backend = ScriptedBackend(_respond)
    r = evaluate_apibank(items, backend, FakeFormat(), prompt_fn=fake_prompt_ids, batch_size=4, level=3)
    got = [(rec["row"], rec["kind"], rec.get("correct")) for rec in r.records]
    assert got[:8] == [(0, "api", True), (1, "api", False), (2, "api", False), (3, "api", False),
                       (4, "api", True), (5, "api", False), (6, "api", False), (7, "api", True)]
    s = r.summary
    assert s["api"] == {"n": 8, "correct": 3, "accuracy": 3 / 8}
    assert s["api_toolsearcher"]["n"] == 4 and s["api_toolsearcher"]["correct"] == 2
    assert s["api_other"] == {"n": 4, "correct": 1, "accuracy": 0.25}
    assert s["response"]["n"] == 2
    expected_rouge = [rouge_l_apibank("The total cost is $4400.0.", it.expected[3:].strip()).f1
                      for it in list(load_items(RESP))[:2]]
    assert s["rouge_l"] == pytest.approx(sum(expected_rouge) / 2)
    # the prompt is instruction (system) + input (user)
    assert backend.prompts[0].startswith("tools: []\nsystem: \nGenerate an API request")


@pytest.fixture
def fake_stack(monkeypatch):
    created = []
    install_fake_stack(monkeypatch, lambda kind, model, **kw: created.append(ScriptedBackend(_respond)) or created[-1])
    return created


def parse(argv):
    parser = argparse.ArgumentParser()
    register_apibank(parser.add_subparsers())
    return parser.parse_args(argv)


def test_apibank_command(fake_stack, tmp_path, capsys):
    args = parse(["apibank", "--model", "m", "--data", API, "--out", str(tmp_path), "--limit", "8", "--no-progress"])
    assert args.func(args) == 0
    summary = json.load(open(tmp_path / "apibank_l2_summary.json"))  # ToolSearcher gold -> level 2
    assert summary["api"] == {"n": 8, "correct": 3, "accuracy": 0.375} and summary["level"] == 2
    assert summary["tool_library_size"] > 5
    assert len(open(tmp_path / "apibank_l2_items.jsonl").readlines()) == 8
    assert os.path.getsize(tmp_path / "apibank_l2.png") > 0
    assert "API-call accuracy" in open(tmp_path / "apibank_l2.md").read()
    assert "API-call accuracy" in capsys.readouterr().out


def test_apibank_command_rejects_unreadable_gold_before_loading(fake_stack, tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps([{"instruction": "i", "input": "x", "expected_output": "API-Request: [Broken(a='1')"}]))
    args = parse(["apibank", "--model", "m", "--data", str(p), "--out", str(tmp_path)])
    assert parse_gold_request("API-Request: [Broken(a='1')").reason == "no API call"
    with pytest.raises(DataError, match="row 0: expected output is not an API request"):
        args.func(args)
    assert fake_stack == []
