"""Offline dialogue judge (one hand-made case per rule, each failing when the rule is broken) and the
teacher-forced evaluator with its micro / macro averages."""

import math

import pytest

from dialog_fakes import FakeFormat, ScriptedBackend, call_text, fake_prompt_ids, last_user
from jaxtool.data.schema import Conversation, Message, Tool, ToolCall, assistant, system, tool_result, user
from jaxtool.errors import DataError
from jaxtool.eval import mentions
from jaxtool.eval.dialog import collect_turns, evaluate_dialogs, summarise, turn_type
from jaxtool.eval.judge import (Prediction, RuleJudge, TurnCase, calls_match, exact_call_match, slot_targets,
                                values_equal)

TAXI = Tool("CallTaxi", "특정 위치에서 택시를 호출한다.", {
    "type": "object",
    "properties": {"pickup_location": {"type": "string", "description": "출발 위치 (주소, 역 이름, 건물 이름 등)"},
                   "destination": {"type": "string", "description": "도착 위치 (주소, 역 이름, 건물 이름 등)"}},
    "required": ["pickup_location", "destination"]})
WEATHER = Tool("get_weather", "Current weather of a city", {
    "type": "object", "properties": {"city": {"type": "string", "description": "City to look up"},
                                     "unit": {"type": "string", "description": "celsius or fahrenheit"}},
    "required": ["city"]})
FLIGHT = Tool("book_flight", "Book a flight", {
    "type": "object",
    "properties": {"origin": {"type": "string", "description": "Departure airport"},
                   "destination": {"type": "string", "description": "Arrival airport"},
                   "date": {"type": "string", "description": "Travel day, YYYY-MM-DD"}},
    "required": ["origin", "destination", "date"]})
HOTEL = Tool("book_hotel", "Book a hotel room", {
    "type": "object", "properties": {"hotel": {"type": "string", "description": "Hotel to stay at"},
                                     "date": {"type": "string", "description": "Check-in day, YYYY-MM-DD"}},
    "required": ["hotel", "date"]})


def judge(turn_type, prediction, gold, tools=(TAXI, WEATHER), context=(), acceptable=None, later_calls=()):
    case = TurnCase(turn_type, tuple(tools), tuple(context), gold, prediction, acceptable or {}, tuple(later_calls))
    return RuleJudge().judge(case)


def said(text):
    return Prediction(text=text, content=text)


def called(*calls):
    return Prediction(text="<calls>", tool_calls=tuple(calls))


# --------------------------------------------------------------------------------------------
# call
# --------------------------------------------------------------------------------------------

GOLD_CALL = assistant(None, [ToolCall("get_weather", {"city": "Seoul", "unit": "celsius"})])


def test_call_exact_name_and_arguments_pass():
    assert judge("call", called(ToolCall("get_weather", {"city": "Seoul", "unit": "celsius"})), GOLD_CALL).passed


def test_call_wrong_function_name_fails():
    v = judge("call", called(ToolCall("get_Weather", {"city": "Seoul", "unit": "celsius"})), GOLD_CALL)
    assert not v.passed and "function name" in v.reason


def test_call_invented_argument_fails():
    v = judge("call", called(ToolCall("get_weather", {"city": "Seoul", "unit": "celsius", "days": 3})), GOLD_CALL)
    assert not v.passed and "not in gold" in v.reason


def test_call_missing_argument_fails():
    v = judge("call", called(ToolCall("get_weather", {"city": "Seoul"})), GOLD_CALL)
    assert not v.passed and "missing argument 'unit'" in v.reason


def test_call_wrong_value_fails():
    v = judge("call", called(ToolCall("get_weather", {"city": "Busan", "unit": "celsius"})), GOLD_CALL)
    assert not v.passed and "'city'" in v.reason


def test_call_string_values_fold_spaces_and_case_like_functionchat():
    assert judge("call", called(ToolCall("get_weather", {"city": " se oul", "unit": "CELSIUS"})), GOLD_CALL).passed


def test_call_acceptable_alternative_passes_and_others_still_fail():
    acceptable = {"city": ["서울", "Seoul-si"]}
    assert judge("call", called(ToolCall("get_weather", {"city": "서울", "unit": "celsius"})), GOLD_CALL,
                 acceptable=acceptable).passed
    assert not judge("call", called(ToolCall("get_weather", {"city": "부산", "unit": "celsius"})), GOLD_CALL,
                     acceptable=acceptable).passed


def test_call_numbers_compare_as_json_values_but_bool_is_not_a_number():
    gold = assistant(None, [ToolCall("bmi", {"height": 170, "smoker": True})])
    tools = (Tool("bmi", "", {"type": "object", "properties": {"height": {}, "smoker": {}}}),)
    assert judge("call", called(ToolCall("bmi", {"height": 170.0, "smoker": True})), gold, tools).passed
    assert not judge("call", called(ToolCall("bmi", {"height": 170, "smoker": 1})), gold, tools).passed
    assert not judge("call", called(ToolCall("bmi", {"height": "170", "smoker": True})), gold, tools).passed


def test_call_single_number_acceptable_value_is_checked():
    # FunctionChat's code skips the check for a scalar acceptable value; jaxtool treats it as [value].
    gold = assistant(None, [ToolCall("bmi", {"height": 170})])
    tools = (Tool("bmi", "", {"type": "object", "properties": {"height": {}}}),)
    assert not judge("call", called(ToolCall("bmi", {"height": 999})), gold, tools, acceptable={"height": [170.0]}).passed


def test_call_no_call_or_unparseable_call_fails():
    assert not judge("call", said("It is sunny in Seoul."), GOLD_CALL).passed
    v = judge("call", Prediction(text="<tool_call>{oops", error="not JSON"), GOLD_CALL)
    assert not v.passed and "unparseable" in v.reason


def test_call_extra_predicted_calls_are_ignored_but_too_few_fail():
    good = ToolCall("get_weather", {"city": "Seoul", "unit": "celsius"})
    assert judge("call", called(good, ToolCall("get_weather", {"city": "Busan", "unit": "celsius"})), GOLD_CALL).passed
    gold2 = assistant(None, [good, ToolCall("get_weather", {"city": "Busan", "unit": "celsius"})])
    assert not judge("call", called(good), gold2).passed


def test_values_equal_recurses_into_lists_and_objects():
    assert values_equal(["A b", {"k": "X"}], ["ab", {"k": "x"}])
    assert not values_equal(["a", "b"], ["b", "a"])
    assert not values_equal({"k": 1}, {"k": 1, "j": 2})


def test_exact_call_match_is_stricter_than_the_judge():
    pred = [ToolCall("get_weather", {"city": "seoul", "unit": "celsius"})]
    assert calls_match(pred, GOLD_CALL.tool_calls)[0]
    assert not exact_call_match(pred, GOLD_CALL.tool_calls)
    assert exact_call_match([ToolCall("f", {"x": 1})], [ToolCall("f", {"x": 1.0})])
    assert not exact_call_match([ToolCall("f", {"x": 1}), ToolCall("f", {})], [ToolCall("f", {"x": 1})])


# --------------------------------------------------------------------------------------------
# slot
# --------------------------------------------------------------------------------------------

KO_SLOT_GOLD = assistant("도착 위치를 알려주세요.")
KO_CONTEXT = (user("택시 불러줘. 출발지는 롯데시네마 위례야."),)


def test_slot_gold_targets_only_the_parameter_it_names():
    targets, mode = slot_targets(KO_SLOT_GOLD.content, (TAXI, WEATHER))
    assert targets == {"CallTaxi": {"destination"}} and mode == "global"


def test_slot_question_about_the_missing_parameter_passes_in_korean():
    v = judge("slot", said("어디로 가시나요? 도착지를 말씀해 주세요."), KO_SLOT_GOLD, context=KO_CONTEXT)
    assert v.passed, v.reason


def test_slot_question_about_another_parameter_fails():
    v = judge("slot", said("출발지를 알려주세요."), KO_SLOT_GOLD, context=KO_CONTEXT)
    assert not v.passed and "CallTaxi.destination" in v.reason


def test_slot_statement_without_a_question_fails():
    v = judge("slot", said("도착 위치 확인 완료."), KO_SLOT_GOLD, context=KO_CONTEXT)
    assert not v.passed and "does not ask" in v.reason


def test_slot_making_a_call_fails():
    v = judge("slot", called(ToolCall("CallTaxi", {"pickup_location": "롯데시네마 위례", "destination": "집"})),
              KO_SLOT_GOLD, context=KO_CONTEXT)
    assert not v.passed and "made a call" in v.reason


def test_slot_in_english_by_parameter_name_and_description_word():
    gold = assistant("Sure - what date do you want to fly, and which arrival airport?")
    assert slot_targets(gold.content, (FLIGHT,))[0] == {"book_flight": {"date", "destination"}}
    assert judge("slot", said("Which arrival airport should I book?"), gold, (FLIGHT,)).passed
    assert judge("slot", said("What day? Please give the date."), gold, (FLIGHT,)).passed
    assert not judge("slot", said("Which departure airport are you leaving from?"), gold, (FLIGHT,)).passed


def test_slot_later_call_in_the_dialogue_selects_the_target_tool():
    gold = assistant("Which date do you need?")
    later = (ToolCall("book_hotel", {"hotel": "Plaza", "date": "2025-01-02"}),)
    targets, _ = slot_targets(gold.content, (FLIGHT, HOTEL), later)
    assert targets == {"book_hotel": {"date"}}
    # Without the later call both tools' date parameters are candidates.
    assert slot_targets(gold.content, (FLIGHT, HOTEL))[0] == {"book_flight": {"date"}, "book_hotel": {"date"}}


def test_slot_gold_naming_nothing_falls_back_to_all_required_parameters():
    gold = assistant("어떤 걸 도와드릴까요?")
    targets, mode = slot_targets(gold.content, (TAXI,))
    assert mode == "all" and targets == {"CallTaxi": {"pickup_location", "destination"}}


# --------------------------------------------------------------------------------------------
# relevance and completion
# --------------------------------------------------------------------------------------------

REJECT_GOLD = assistant("피자는 주문할 수 없습니다.")


def test_relevance_non_empty_text_without_call_passes():
    assert judge("relevance", said("죄송하지만 피자 주문 기능은 없습니다."), REJECT_GOLD).passed


def test_relevance_empty_reply_or_a_call_fails():
    assert not judge("relevance", said("   "), REJECT_GOLD).passed
    assert not judge("relevance", called(ToolCall("get_weather", {"city": "Seoul"})), REJECT_GOLD).passed
    assert not judge("relevance", Prediction(text="<tool_call>{", error="bad json"), REJECT_GOLD).passed


DDAY = (user("제리 출국날이 언제였지?"),
        assistant(None, [ToolCall("informDday", {"searchTerm": "제리 출국날"})]),
        tool_result("informDday", '{"ddayName": "제리 출국날", "ddayDate": "2024-04-23", "daysRemaining": 48, '
                                   '"daysSince": None}'))
DDAY_TOOL = Tool("informDday", "", {"type": "object", "properties": {"searchTerm": {}}, "required": ["searchTerm"]})


def test_completion_mentioning_a_tool_value_passes():
    gold = assistant("제리 출국날은 2024년 4월 23일입니다. 앞으로 48일 남았습니다.")
    assert judge("completion", said("48일 남았어요."), gold, (DDAY_TOOL,), DDAY).passed
    assert judge("completion", said("출국일은 4월 23일입니다."), gold, (DDAY_TOOL,), DDAY).passed


def test_completion_not_mentioning_any_tool_value_fails():
    gold = assistant("제리 출국날은 2024년 4월 23일입니다.")
    v = judge("completion", said("곧 출국합니다. 148일 남았어요."), gold, (DDAY_TOOL,), DDAY)
    assert not v.passed and "mentions none" in v.reason


def test_reply_that_writes_the_tool_result_itself_fails():
    gold = assistant("제리 출국날은 2024년 4월 23일입니다.")
    echo = '<tool_response>\n{"ddayDate": "2024-04-23", "daysRemaining": 48}\n</tool_response>'
    assert judge("completion", said("48일 남았어요."), gold, (DDAY_TOOL,), DDAY).passed  # the value alone passes
    for text in (echo, "Thought: done\nObservation: 48", "API-Response: {'daysRemaining': 48}"):
        v = judge("completion", said(text), gold, (DDAY_TOOL,), DDAY)
        assert not v.passed and "writes a tool result" in v.reason, text
    assert not judge("relevance", said(echo), REJECT_GOLD).passed


def test_completion_with_status_only_result_needs_a_non_empty_reply():
    ctx = (user("할 일 추가해줘"), assistant(None, [ToolCall("add_task", {})]),
           tool_result("add_task", '{"status": "success"}'))
    tools = (Tool("add_task"),)
    assert judge("completion", said("등록했습니다."), assistant("할 일을 등록했습니다"), tools, ctx).passed
    assert not judge("completion", said(""), assistant("할 일을 등록했습니다"), tools, ctx).passed


def test_mentions_value_forms():
    assert mentions.mentions_value("현재 시각은 오후 7시 5분입니다.", "2024-05-19 19:05:56")
    assert not mentions.mentions_value("17시 5분", "07:05")
    assert mentions.mentions_value("The result is 33.", 33.0)
    assert mentions.mentions_value("It costs 1,337 won", 1337)
    assert not mentions.mentions_value("4 8", 48)


# --------------------------------------------------------------------------------------------
# turn types
# --------------------------------------------------------------------------------------------

def test_turn_type_from_labels_and_inference():
    conv = Conversation(
        messages=(user("order pizza"), assistant("I cannot order food.", state=1),
                  user("weather?"), Message("assistant", "Which city?", meta={"type_of_output": "slot"}),
                  user("Seoul"), assistant(None, [ToolCall("get_weather", {"city": "Seoul"})]),
                  tool_result("get_weather", '{"temp": 3}'), assistant("It is 3 degrees."),
                  user("and tomorrow?"), assistant("Which city do you mean?"), user("thanks"), assistant("Bye!")),
        tools=(WEATHER,))
    assert [turn_type(conv, i) for i in conv.assistant_turns] == [
        "relevance", "slot", "call", "completion", "slot", "relevance"]


def test_turn_type_state_mapping_and_unknown_state():
    for state, expected in [(1, "relevance"), (2, "slot"), (3, "call"), (5, "completion")]:
        conv = Conversation((user("x"), assistant("y", state=state)))
        assert turn_type(conv, 1) == expected
    with pytest.raises(DataError, match="state must be one of"):
        turn_type(Conversation((user("x"), assistant("y", state=4))), 1)


# --------------------------------------------------------------------------------------------
# teacher-forced evaluation
# --------------------------------------------------------------------------------------------

def _trajectory():
    """A DiaTool-style chosen trajectory with labelled states: slot, call, completion, rejection, call."""
    return Conversation(
        messages=(
            user("What's the weather?"),
            assistant("Which city?", state=2),
            user("Seoul please"),
            assistant(None, [ToolCall("get_weather", {"city": "Seoul"})], state=3),
            tool_result("get_weather", '{"temp_c": 21, "sky": "clear"}'),
            assistant("It is 21 degrees and clear in Seoul.", state=5),
            user("Book me a table at a restaurant"),
            assistant("Sorry, I can't book restaurants.", state=1),
            user("Weather in Busan?"),
            assistant(None, [ToolCall("get_weather", {"city": "Busan"})], state=3),
        ),
        tools=(WEATHER,), meta={"source": "diatool", "row": 0, "query_type": 2})


def _respond(prompt):
    u = last_user(prompt)
    if u == "What's the weather?":
        return "Which city would you like?"                      # slot: pass
    if u == "Seoul please":
        if prompt.rstrip().endswith("assistant:") and "tool: " in prompt.splitlines()[-2]:
            return "Today it is 21 degrees in Seoul."             # completion: pass
        return call_text("get_weather", city="seoul")             # call: pass (case-folded), not exact
    if u.startswith("Book me"):
        return call_text("get_weather", city="Seoul")             # relevance: fail (made a call)
    return call_text("get_weather", city="Daegu")                 # call: fail


def test_teacher_forcing_gives_each_turn_exactly_the_gold_history():
    conv = _trajectory()
    backend = ScriptedBackend(_respond)
    evaluate_dialogs([conv], backend, FakeFormat(), prompt_fn=fake_prompt_ids)
    fmt = FakeFormat()
    expected = [fmt.prompt(conv.replace(messages=conv.messages[:i])) for i in conv.assistant_turns]
    assert backend.prompts == expected
    # the gold call (not the model's) is in the history of the completion turn
    assert '"city": "Seoul"' in backend.prompts[2] and "Daegu" not in backend.prompts[2]


def test_micro_and_macro_averages_and_exact_match():
    backend = ScriptedBackend(_respond)
    result = evaluate_dialogs([_trajectory()], backend, FakeFormat(), prompt_fn=fake_prompt_ids, batch_size=2)
    s = result.summary
    assert [r["passed"] for r in result.records] == [True, True, True, False, False]
    assert s["per_type"]["call"] == {"n": 2, "passed": 1, "accuracy": 0.5}
    assert s["per_type"]["slot"]["accuracy"] == 1.0 and s["per_type"]["relevance"]["accuracy"] == 0.0
    assert s["micro_avg"] == pytest.approx(3 / 5)                       # passed turns / turns
    assert s["macro_avg"] == pytest.approx((0.5 + 1.0 + 0.0 + 1.0) / 4)  # mean of per-type accuracies
    assert s["call_exact_match"] == 0.0        # "seoul" passes the judge but is not an exact match
    assert s["per_state"]["3"] == {"n": 2, "passed": 1, "accuracy": 0.5}
    assert s["by_group"]["query_type"]["2"]["n"] == 5
    assert [c["n"] for c in backend.calls] == [2, 2, 1]
    assert backend.calls[0]["stop_strings"] == ("<end>",) and backend.calls[0]["temperature"] == 0.0
    assert "| micro avg" in result.table() and "slot (state 2)" in result.table()


def test_eval_turns_restrict_evaluation_to_the_gold_turn():
    conv = Conversation((user("hi"), assistant("hello"), user("weather?"),
                         Message("assistant", "Which city?", meta={"type_of_output": "slot"})),
                        tools=(WEATHER,), meta={"eval_turns": [3]})
    turns = collect_turns([conv])
    assert [(t.index, t.turn_type) for t in turns] == [(3, "slot")]


def test_summary_of_no_records_is_nan_not_an_error():
    s = summarise([])
    assert s["n_turns"] == 0 and math.isnan(s["micro_avg"]) and math.isnan(s["macro_avg"])


def test_system_messages_and_tools_reach_the_prompt():
    conv = Conversation((system("be brief"), user("weather?"), Message("assistant", "Which city?",
                                                                        meta={"type_of_output": "slot"})),
                        tools=(WEATHER,))
    backend = ScriptedBackend(lambda p: "Which city?")
    evaluate_dialogs([conv], backend, FakeFormat(), prompt_fn=fake_prompt_ids)
    assert backend.prompts[0].startswith('tools: ["get_weather"]\nsystem: be brief\nuser: weather?')


def test_progress_bar_goes_to_stderr(capsys):
    evaluate_dialogs([_trajectory()], ScriptedBackend(_respond), FakeFormat(), prompt_fn=fake_prompt_ids, progress=True)
    err = capsys.readouterr().err
    assert "dialog turns" in err and "5/5" in err


def test_malformed_tool_call_from_the_real_hermes_parser_is_an_attempted_call():
    """The hermes parser returns a (falsy) ParseError for a <tool_call> whose body is not JSON: the
    judge must see it as a malformed call — a decline turn with such a reply fails."""
    from jaxtool.data.formats import get_format
    from jaxtool.eval.judge import Prediction

    text = '<tool_call>\n{"name": "convert_units", "arguments": {"amount": 2025-11-03}}\n</tool_call>'
    pred = Prediction.from_reply(text, get_format("hermes").parse(text))
    assert pred.error and "not JSON" in pred.error and not pred.tool_calls
