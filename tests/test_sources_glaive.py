"""glaive-function-calling-v2 loader on a hand-written fixture in the published layout."""

import json
import os

import pytest

from jaxtool.data.schema import Message, ToolCall
from jaxtool.data.sources import load
from jaxtool.data.sources.base import BadRow, LoadReport
from jaxtool.data.sources.glaive import parse_call, parse_chat, parse_system
from jaxtool.errors import DataError

PATH = os.path.join(os.path.dirname(__file__), "fixtures", "glaive", "glaive_v2_sample.json")
INSTRUCTION = "You are a helpful assistant with access to the following functions. Use them if required -"


@pytest.fixture(scope="module")
def convs():
    report = LoadReport("glaive", on_bad_row="skip")
    out = {c.meta["row"]: c for c in load("glaive", PATH, report=report)}
    return out, report


def test_fixture_counts_and_skip_reasons(convs):
    out, report = convs
    assert (report.rows, report.kept) == (21, 18)
    assert dict(report.skipped) == {"unparseable arguments": 1, "call to unknown tool": 1, "missing field": 1}
    assert sorted(out) == list(range(18))


def test_single_call_row(convs):
    c = convs[0][0]
    assert [t.name for t in c.tools] == ["convert_currency"]
    assert c.tools[0].required == ["amount", "from_currency", "to_currency"]
    assert c.messages == (
        Message("system", INSTRUCTION),
        Message("user", "Hi, I need to convert 500 US dollars to Euros. Can you help me with that?"),
        Message("assistant", None, tool_calls=(ToolCall("convert_currency", {"amount": 500, "from_currency": "USD",
                                                                             "to_currency": "EUR"}, id="call_0"),)),
        Message("tool", '{"converted_amount": 425.5, "from_currency": "USD", "to_currency": "EUR"}',
                name="convert_currency", tool_call_id="call_0"),
        Message("assistant", "Sure, 500 US dollars is approximately 425.50 Euros."),
    )
    assert c.meta == {"source": "glaive", "row": 0, "id": None}


def test_no_functions_row_has_no_tools_and_keeps_the_system_text(convs):
    c = convs[0][1]
    assert c.tools == ()
    assert c.messages[0] == Message("system", "You are a helpful assistant, with no access to external functions.")
    assert [m.role for m in c.messages] == ["system", "user", "assistant", "user", "assistant"]


def test_multi_turn_with_two_calls_numbers_them(convs):
    c = convs[0][2]
    assert [t.name for t in c.tools] == ["calculate_bmi", "get_news_headlines"]
    calls = [tc for m in c.messages for tc in m.tool_calls]
    assert [(tc.id, dict(tc.arguments)) for tc in calls] == [("call_0", {"country": "United States"}),
                                                             ("call_1", {"country": "Germany"})]
    tools = [m for m in c.messages if m.role == "tool"]
    assert [(m.name, m.tool_call_id) for m in tools] == [("get_news_headlines", "call_0"), ("get_news_headlines", "call_1")]
    assert "<|endoftext|>" not in json.dumps(c.to_dict())


def test_nested_arguments(convs):
    call = convs[0][3].messages[2].tool_calls[0]
    assert dict(call.arguments) == {"title": "Planning", "start_time": "2024-05-06 10:00",
                                    "attendees": ["anna@example.com", "li@example.com"],
                                    "recurrence": {"frequency": "weekly", "count": 4}}


def test_response_that_is_not_json_is_kept_as_text(convs):
    assert convs[0][4].messages[3] == Message("tool", "Email sent successfully to john@example.com",
                                              name="send_email", tool_call_id="call_0")


def test_apostrophe_inside_single_quoted_arguments(convs):
    assert convs[0][7].messages[2].tool_calls[0].arguments["message"] == "Hi Maria, I'm running late."


def test_empty_arguments_unicode_booleans_and_escaped_newline(convs):
    out = convs[0]
    assert dict(out[8].messages[2].tool_calls[0].arguments) == {}
    assert out[9].messages[3].content == '{"translated_text": "Où est la gare ?"}'
    assert dict(out[10].messages[2].tool_calls[0].arguments) == {"length": 16, "include_symbols": True}
    assert out[15].messages[2].tool_calls[0].arguments["content"] == "milk\neggs"


def test_comma_separated_function_specs(convs):
    assert [t.name for t in convs[0][16].tools] == ["get_stock_price", "create_note"]


def test_keep_system_false_drops_the_instruction():
    c = next(iter(load("glaive", PATH, keep_system=False)))
    assert c.messages[0].role == "user"


def test_error_policy_names_source_row_and_field():
    with pytest.raises(DataError) as e:
        list(load("glaive", PATH))
    assert str(e.value).startswith("glaive, row 18: field 'chat': unparseable arguments: convert_currency:")


def test_unknown_tool_and_missing_field_messages(tmp_path):
    rows = json.load(open(PATH))
    with pytest.raises(DataError, match=r"row 0: field 'chat': call to unknown tool: 'get_weather'"):
        list(load("glaive", _write(tmp_path / "a.jsonl", rows[19:20])))
    with pytest.raises(DataError, match=r"row 0: field 'chat': missing field"):
        list(load("glaive", _write(tmp_path / "b.jsonl", rows[20:21])))


def _write(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


def test_parquet_copy_loads_identically(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    rows = [r for r in json.load(open(PATH)) if "chat" in r]
    path = tmp_path / "glaive.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    from_parquet = list(load("glaive", str(path), on_bad_row="skip"))
    from_json = list(load("glaive", PATH, on_bad_row="skip"))
    assert [c.messages for c in from_parquet] == [c.messages for c in from_json]
    assert [c.tools for c in from_parquet] == [c.tools for c in from_json]


# -- the call decoder on the variants it accepts ------------------------------------------------------

def test_parse_call_quoted_object_and_text_before():
    assert parse_call("<functioncall> {\"name\": \"f\", \"arguments\": '{\"a\": [1, 2]}'}") == \
        ("", ToolCall("f", {"a": [1, 2]}))
    assert parse_call('<functioncall> {"name": "f", "arguments": {"a": 1}}') == ("", ToolCall("f", {"a": 1}))
    assert parse_call('Let me check. <functioncall> {"name": "f", "arguments": "{\\"a\\": 1}"}') == \
        ("Let me check.", ToolCall("f", {"a": 1}))


@pytest.mark.parametrize("body, reason", [
    ("<functioncall> {\"name\": \"f\", \"arguments\": '{\"a\": }'}", "unparseable arguments"),
    ('<functioncall> {"arguments": {}}', "unparseable call"),
    ('<functioncall> {"name": "f", "arguments": {}} trailing', "unparseable call"),
    ('<functioncall> {"name": "f", "arguments": [1]}', "unparseable arguments"),
    ("<functioncall>", "unparseable call"),
])
def test_parse_call_rejects(body, reason):
    with pytest.raises(BadRow) as e:
        parse_call(body)
    assert e.value.reason == reason and e.value.field == "chat"


def test_parse_chat_layout_errors():
    with pytest.raises(BadRow, match="unrecognised chat layout"):
        parse_chat("Hello there\n\n\nUSER: hi")
    with pytest.raises(BadRow, match="response without call"):
        parse_chat("USER: hi\n\n\nFUNCTION RESPONSE: {}")


def test_parse_system_rejects_broken_spec():
    with pytest.raises(BadRow, match="unparseable function spec"):
        parse_system('SYSTEM: Use them if required -\n{"name": "f", ')
    assert parse_system("SYSTEM: You are a helpful assistant, with no access to external functions.") == \
        ("You are a helpful assistant, with no access to external functions.", [])
