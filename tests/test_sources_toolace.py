"""ToolACE loader on a hand-written fixture in the published layout."""

import json
import os

import pytest

from jaxtool.data.schema import Message, ToolCall
from jaxtool.data.sources import load
from jaxtool.data.sources.base import BadRow, LoadReport
from jaxtool.data.sources.toolace import (looks_like_calls, object_schema, parse_calls, parse_system, split_calls,
                                          tool_messages)
from jaxtool.errors import DataError

PATH = os.path.join(os.path.dirname(__file__), "fixtures", "toolace", "toolace_sample.json")


@pytest.fixture(scope="module")
def convs():
    report = LoadReport("toolace", on_bad_row="skip")
    return {c.meta["row"]: c for c in load("toolace", PATH, report=report)}, report


def test_fixture_counts_and_skip_reasons(convs):
    out, report = convs
    assert (report.rows, report.kept) == (11, 8)
    assert dict(report.skipped) == {"unparseable call": 1, "call to unknown tool": 1, "missing field": 1}


def test_system_split_into_instruction_tools_and_suffix(convs):
    c = convs[0][0]
    assert c.messages[0].role == "system"
    assert c.messages[0].content.startswith("You are an expert in composing functions.")
    assert c.messages[0].content.endswith("You should only return the function call in tools call sections.")
    assert "Here is a list of functions" not in c.messages[0].content
    assert c.meta["system_suffix"].startswith(". \nShould you decide to return the function call(s).")
    assert [t.name for t in c.tools] == ["Market Trends API", "Get Quote/Info"]
    assert c.tools[0].parameters["type"] == "object" and c.tools[0].required == ["trend_type"]


def test_call_with_spaces_in_the_name_and_results(convs):
    c = convs[0][0]
    assert c.messages[2] == Message("assistant", None, tool_calls=(
        ToolCall("Market Trends API", {"trend_type": "MOST_ACTIVE", "country": "us"}, id="call_0"),))
    assert c.messages[3] == Message("tool", '{"trends": [{"symbol": "NVDA", "volume": 412000000}, '
                                            '{"symbol": "TSLA", "volume": 98000000}]}',
                                    name="Market Trends API", tool_call_id="call_0")


def test_parallel_calls_with_a_slash_in_the_name_answer_in_order(convs):
    c = convs[0][1]
    assert [(tc.name, dict(tc.arguments), tc.id) for tc in c.messages[2].tool_calls] == [
        ("Get Quote/Info", {"symbol": "AAPL"}, "call_0"), ("Get Quote/Info", {"symbol": "MSFT"}, "call_1")]
    assert [(m.tool_call_id, m.content) for m in c.messages[3:5]] == [
        ("call_0", '{"symbol": "AAPL", "price": 189.3}'), ("call_1", '{"symbol": "MSFT", "price": 411.2}')]


def test_clarifying_question_text_reply_and_nested_arguments(convs):
    out = convs[0]
    assert out[2].messages[2] == Message("assistant", "Sure. Please provide a password to protect the new address.")
    assert [m.role for m in out[3].messages] == ["system", "user", "assistant"]
    call = out[4].messages[2].tool_calls[0]
    assert dict(call.arguments) == {"materials": [{"name": "timber", "quantity": 120.0},
                                                  {"name": "recycled steel", "quantity": 40.0}],
                                    "criteria": {"carbon": 0.7, "cost": 0.3}}
    assert out[4].tools[0].parameters == {"type": "object", "required": ["materials"], "properties": {
        "materials": {"description": "Materials to evaluate.", "type": "array",
                      "items": {"type": "object", "properties": {"name": {"type": "string"},
                                                                 "quantity": {"type": "number"}},
                                "required": ["name"]}},
        "criteria": {"description": "Weights per criterion.", "type": "object",
                     "properties": {"carbon": {"type": "number"}, "cost": {"type": "number"}}}}}
    assert dict(out[5].messages[2].tool_calls[0].arguments) == {"time": "06:30", "repeat": True, "volume": 0.2}


def test_result_as_object_and_as_plain_text(convs):
    c = convs[0][6]
    assert c.messages[3] == Message("tool", '{"score": 102}', name="Get Team Score", tool_call_id="call_0")
    assert c.messages[7] == Message("tool", "Score: 98", name="Get Team Score", tool_call_id="call_1")


def test_two_different_tools_in_one_turn(convs):
    c = convs[0][7]
    assert [(m.name, m.tool_call_id) for m in c.messages if m.role == "tool"] == [
        ("Search Flights", "call_0"), ("Set Alarm", "call_1")]


def test_error_policy_names_source_row_and_field():
    with pytest.raises(DataError, match=r"^toolace, row 8: field 'conversations\[1\]': unparseable call: "
                                        r"unbalanced parentheses after 'Search Flights'"):
        list(load("toolace", PATH))


def test_other_bad_rows_under_error_policy(tmp_path):
    rows = json.load(open(PATH))
    for k, pattern in ((9, r"row 0: field 'conversations\[1\]': call to unknown tool: 'Get Weather'"),
                       (10, r"row 0: field 'conversations': missing field")):
        path = tmp_path / f"r{k}.json"
        path.write_text(json.dumps([rows[k]]))
        with pytest.raises(DataError, match=pattern):
            list(load("toolace", str(path)))


# -- the call-list reader ----------------------------------------------------------------------------

def test_split_calls_handles_names_quotes_and_brackets():
    assert split_calls('[Get User Info(id="a(b)", tags=["x, y"]), next_one()]') == [
        ("Get User Info", 'id="a(b)", tags=["x, y"]'), ("next_one", "")]
    # a listed name containing "(" is matched whole
    assert split_calls("[Sum (v2)(a=1)]", ["Sum (v2)"]) == [("Sum (v2)", "a=1")]
    assert split_calls("[f(a='it\\'s')]") == [("f", "a='it\\'s'")]


@pytest.mark.parametrize("text, problem", [
    ("f(a=1)", "enclosed in [ ]"),
    ("[f(a=1]", "unbalanced parentheses"),
    ("[]", "empty call list"),
    ('["f"(a=1)]', "bad function name"),
])
def test_split_calls_problems(text, problem):
    assert problem in split_calls(text)


def test_parse_calls_accepts_json_literals_outside_strings():
    assert parse_calls('[Set Alarm(repeat=true, note="true or false", x=null, y=[false])]') == [
        ToolCall("Set Alarm", {"repeat": True, "note": "true or false", "x": None, "y": [False]})]


def test_parse_calls_rejects_non_literals():
    with pytest.raises(BadRow, match="unparseable call"):
        parse_calls("[f(a=__import__('os'))]")
    with pytest.raises(BadRow, match="positional"):
        parse_calls("[f(1)]")


@pytest.mark.parametrize("text, expected", [
    ('[Get Quote/Info(symbol="AAPL")]', True),
    ("[f()]", True),
    ("Sure, I can help.", False),
    ("[Note] call me later (maybe)]", False),
    ("[1, 2, 3]", False),
    ('["a", "b"]', False),
])
def test_looks_like_calls(text, expected):
    assert looks_like_calls(text) is expected


def test_tool_messages_fall_back_to_text_when_names_do_not_match():
    pending = [ToolCall("a", {}, id="call_0"), ToolCall("b", {}, id="call_1")]
    msgs = tool_messages('[{"name": "zzz", "results": 1}]', pending)
    assert msgs == [Message("tool", '[{"name": "zzz", "results": 1}]')]


def test_parse_system_without_marker_or_tools():
    assert parse_system("You are a helpful assistant.") == ("You are a helpful assistant.", [], "")
    with pytest.raises(BadRow, match="unparseable tool list"):
        parse_system("Intro. Here is a list of functions in JSON format that you can invoke:\n[{\"name\": ")


def test_object_schema_rewrites_python_type_names():
    assert object_schema({"type": "dict", "properties": {"a": {"type": "tuple", "items": {"type": "int"}},
                                                         "type": {"type": "str"}}}) == \
        {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}},
                                          "type": {"type": "string"}}}
