"""LLM judge against a local HTTP server that plays an OpenAI-compatible /v1/chat/completions endpoint
(real HTTP round trips), with FunctionChat-Bench's real rubric files."""

import json
import os
import socket

import pytest

from dialog_fakes import Endpoint
from jaxtool.data.schema import Tool, ToolCall, assistant, system, user
from jaxtool.eval.judge import Prediction, TurnCase
from jaxtool.eval.llm_judge import JudgeError, LLMJudge, fill_rubric, load_rubrics, parse_verdict

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "functionchat_bench")
RUBRICS = load_rubrics(FIX)
STOCK = Tool("get_stock_price", "주식 가격 조회", {"type": "object",
                                               "properties": {"stock_name": {"type": "string", "description": "주식 이름"}},
                                               "required": ["stock_name"]})
GOLD = assistant(None, [ToolCall("get_stock_price", {"stock_name": "마이크로소프트"})])
CONTEXT = (system("AI assistant로서..."), user("지금 마이크로소프트 주식 가격 얼마야?"))
ACC_RAW = '{"stock_name": ["Microsoft", "MSFT(Microsoft Corporation)"]}'


def case(pred_args, turn_type="call", gold=GOLD):
    pred = Prediction(text="x", tool_calls=(ToolCall("get_stock_price", pred_args),)) if pred_args is not None \
        else Prediction(text="무엇을 도와드릴까요?", content="무엇을 도와드릴까요?")
    return TurnCase(turn_type, (STOCK,), CONTEXT, gold, pred, {"stock_name": ["Microsoft", "MSFT(Microsoft Corporation)"]},
                    acceptable_raw=ACC_RAW)


def make_judge(ep, tmp_path=None, **kw):
    kw.setdefault("backoff", 0.0)
    return LLMJudge(base_url=ep.base_url, model="judge-model", api_key="sk-test", rubrics=RUBRICS,
                    cache_path=str(tmp_path / "cache.jsonl") if tmp_path else None, **kw)


def verdict_text(word):
    return f"제출된 응답을 검토했습니다.\n{word}\n{word}"


def test_exact_match_call_needs_no_request_and_mismatch_asks_the_llm(tmp_path):
    with Endpoint(lambda body, n: (200, verdict_text("pass"))) as ep:
        j = make_judge(ep, tmp_path)
        v = j.judge(case({"stock_name": "msft(Microsoft Corporation)"}))
        assert v.passed and v.judge == "exact" and ep.requests == []
        v = j.judge(case({"stock_name": "MS"}))
        assert v.passed and v.judge == "llm" and len(ep.requests) == 1
    req = ep.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "judge-model" and req["body"]["temperature"] == 0.1
    prompt = req["body"]["messages"][0]["content"]
    assert req["body"]["messages"][0]["role"] == "user"
    assert prompt.startswith("You are evaluating a response submitted for a specific function call task")
    assert '"arguments": "{\\"stock_name\\": \\"MS\\"}"' in prompt          # [Submission]
    assert json.dumps(ACC_RAW, ensure_ascii=False) in prompt               # [Acceptable Arguments]
    assert '"name": "get_stock_price", "description": "주식 가격 조회"' in prompt  # [Available Functions]


def test_fill_rubric_replaces_every_placeholder():
    for t, template in RUBRICS.items():
        gold = GOLD if t == "call" else assistant("주식 이름을 알려주세요.")
        text = fill_rubric(template, case({"stock_name": "MS"}, turn_type=t, gold=gold))
        for name in ("tools", "query", "ground_truth", "response", "acceptable_arguments"):
            assert "{" + name + "}" not in text
        assert '"content": "지금 마이크로소프트 주식 가격 얼마야?"' in text
    assert fill_rubric("{x} {tools}", case(None))[:4] == "{x} "


def test_fail_verdict_and_korean_verdicts():
    with Endpoint(lambda body, n: (200, "이유 ...\n결과: 불합격\n불합격")) as ep:
        assert not make_judge(ep).judge(case(None, turn_type="slot", gold=assistant("주식 이름을 알려주세요."))).passed


def test_server_errors_and_unparseable_verdicts_are_retried(tmp_path):
    replies = {1: (500, "overloaded"), 2: (429, "slow down"), 3: (200, "I cannot decide."), 4: (200, verdict_text("fail"))}
    with Endpoint(lambda body, n: replies[n]) as ep:
        v = make_judge(ep, tmp_path, max_retries=3).judge(case({"stock_name": "Apple"}))
    assert not v.passed and v.judge == "llm" and len(ep.requests) == 4


def test_unparseable_after_all_retries_is_a_fail_and_not_cached(tmp_path):
    with Endpoint(lambda body, n: (200, "hmm")) as ep:
        j = make_judge(ep, tmp_path, max_retries=2)
        v = j.judge(case({"stock_name": "Apple"}))
        assert not v.passed and "unparseable" in v.reason and len(ep.requests) == 3
        assert not (tmp_path / "cache.jsonl").exists()


def test_client_errors_stop_at_once():
    with Endpoint(lambda body, n: (401, "bad key")) as ep:
        with pytest.raises(JudgeError, match="HTTP 401"):
            make_judge(ep, max_retries=5).judge(case({"stock_name": "Apple"}))
    assert len(ep.requests) == 1


def test_unreachable_endpoint_fails_after_bounded_retries():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    j = LLMJudge(base_url=f"http://127.0.0.1:{port}/v1", model="m", rubrics=RUBRICS, max_retries=1, backoff=0.0,
                 timeout=2.0)
    with pytest.raises(JudgeError, match="failed 2 times"):
        j.judge(case({"stock_name": "Apple"}))
    assert j.requests == 2


def test_cache_resumes_without_new_requests(tmp_path):
    cases = [case({"stock_name": "Apple"}), case({"stock_name": "MS"}),
             case(None, turn_type="slot", gold=assistant("주식 이름을 알려주세요."))]
    ms = '\\"stock_name\\": \\"MS\\"'  # the MS submission, as it appears JSON-encoded in the prompt

    def script(body, n):
        return 200, verdict_text("pass" if ms in body["messages"][0]["content"] else "fail")

    with Endpoint(script) as ep:
        first = [make_judge(ep, tmp_path).judge(c).passed for c in cases]
        assert len(ep.requests) == 3
        again = make_judge(ep, tmp_path)
        second = [again.judge(c).passed for c in cases]
        assert len(ep.requests) == 3 and again.requests == 0
    assert first == second == [False, True, False]
    # a torn last line (interrupted write) is ignored
    with open(tmp_path / "cache.jsonl", "a") as fh:
        fh.write('{"key": "abc", "pas')
    with Endpoint(script) as ep:
        assert make_judge(ep, tmp_path).judge(cases[1]).passed and ep.requests == []


@pytest.mark.parametrize("text,expected", [
    ("reasoning...\npass\npass", True),
    ("reasoning...\nfail\nfail", False),
    ("Submission is a pass.\n\nfail\nfail", False),
    ("응답이 기준을 충족합니다.\n통과\n통과", True),
    ("결론\n불합격", False),
    ("The answer could pass or fail depending...\nFinal: PASS", True),
    ("It passed the criteria.\nPassed", True),
    ("pass or fail", None),
    ("no decision here\nmaybe\nunclear", None),
    ("I will check the passport.\nfailed", False),
    ("", None),
])
def test_parse_verdict(text, expected):
    assert parse_verdict(text) is expected


def _section(text, name):
    return text.split(f"[{name}]:\n", 1)[1].split("\n\n", 1)[0]


def test_rubric_sections_follow_functionchat_shapes():
    from jaxtool.eval import functionchat_data as functionchat
    from jaxtool.eval.dialog import collect_turns

    # Dialog item: the query keeps call ids, the ground truth drops them; text gold has tool_calls null
    dialog = list(functionchat.load(os.path.join(FIX, "dialog_layout_handmade.jsonl"), system_prompt=""))
    completion = collect_turns([dialog[2]])[0].case(Prediction(text="ok", content="ok"))
    text = fill_rubric(RUBRICS["completion"], completion)
    query = json.loads(_section(text, "Query"))
    assert query[3]["tool_calls"][0]["id"] == "random_id" and query[4]["tool_call_id"] == "random_id"
    assert json.loads(_section(text, "Ground Truth")) == {
        "role": "assistant", "content": "Your taxi is booked: a white Kia K5 will arrive in 7 minutes.", "tool_calls": None}
    call = collect_turns([dialog[1]])[0].case(Prediction(text="x", tool_calls=(ToolCall("book_taxi", {}),)))
    gt = json.loads(_section(fill_rubric(RUBRICS["call"], call), "Ground Truth"))
    assert gt["tool_calls"] == [{"type": "function", "function": {
        "name": "book_taxi", "arguments": '{"pickup": "train station", "destination": "city museum"}'}}]
    # Singlecall item: the gold object itself plus tool_calls null
    single = next(iter(functionchat.load(os.path.join(FIX, "FunctionChat-Singlecall.jsonl"))))
    case = collect_turns([single])[0].case(Prediction(text="x", content="x"))
    assert json.loads(_section(fill_rubric(RUBRICS["call"], case), "Ground Truth")) == {
        "name": "getTodayBoxOfficeRanking", "arguments": "{}", "tool_calls": None}
