"""xlam-function-calling-60k loader on a hand-written fixture in the published layout."""

import json
import os

import pytest

from jaxtool.data.schema import Message, ToolCall
from jaxtool.data.sources import load
from jaxtool.data.sources.base import LoadReport
from jaxtool.data.sources.xlam import NO_CALL_REPLY, convert_parameter, parse_type
from jaxtool.errors import DataError

PATH = os.path.join(os.path.dirname(__file__), "fixtures", "xlam", "xlam_sample.json")


@pytest.fixture(scope="module")
def convs():
    report = LoadReport("xlam", on_bad_row="skip")
    return {c.meta["row"]: c for c in load("xlam", PATH, report=report)}, report


@pytest.mark.parametrize("raw, schema, optional", [
    ("str", {"type": "string"}, False),
    ("int", {"type": "integer"}, False),
    ("float", {"type": "number"}, False),
    ("bool", {"type": "boolean"}, False),
    ("str, optional", {"type": "string"}, True),
    ("bool, optional", {"type": "boolean"}, True),
    ("List[float]", {"type": "array", "items": {"type": "number"}}, False),
    ("List[List[int]]", {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}, False),
    ("list", {"type": "array"}, False),
    ("Dict", {"type": "object"}, False),
    ("Dict[str, Any]", {"type": "object"}, False),
    ("Optional[int]", {"type": "integer"}, True),
    ("Optional[List[str]]", {"type": "array", "items": {"type": "string"}}, True),
    ("Union[int, float]", {"type": ["integer", "number"]}, False),
    ("Union[str, None]", {"type": ["string", "null"]}, True),
    ("Tuple[int, int]", {"type": "array", "items": {"type": "integer"}}, False),
    ("Callable", {}, False),
    ("Any", {}, False),
])
def test_parse_type(raw, schema, optional):
    assert parse_type(raw) == (schema, optional)


@pytest.mark.parametrize("spec, prop, required", [
    ({"type": "str", "description": "City.", "default": "London"},
     {"type": "string", "description": "City.", "default": "London"}, False),
    ({"type": "str", "description": "Id."}, {"type": "string", "description": "Id."}, True),
    ({"type": "str", "description": "Id.", "default": ""}, {"type": "string", "description": "Id."}, True),
    ({"type": "int", "description": "N.", "default": None}, {"type": "integer", "description": "N."}, True),
    ({"type": "bool, optional", "description": "Flag."}, {"type": "boolean", "description": "Flag."}, False),
    ({"type": "int", "description": "Low.", "required": True}, {"type": "integer", "description": "Low."}, True),
    ({"type": "int", "description": "Low.", "default": 3, "required": True},
     {"type": "integer", "description": "Low.", "default": 3}, True),
    ({"type": "Callable", "description": "Cb."}, {"x-xlam-type": "Callable", "description": "Cb."}, True),
])
def test_convert_parameter_required_rule(spec, prop, required):
    assert convert_parameter(spec) == (prop, required)


def test_fixture_counts_and_skip_reasons(convs):
    out, report = convs
    assert (report.rows, report.kept) == (15, 12)
    assert dict(report.skipped) == {"invalid json": 1, "call to unknown tool": 1, "missing field": 1}
    assert sorted(out) == list(range(12))


def test_single_call_row(convs):
    c = convs[0][0]
    assert c.meta == {"source": "xlam", "row": 0, "id": 0}
    assert c.messages == (Message("user", "What are the current weather conditions in Sydney?"),
                          Message("assistant", None, tool_calls=(ToolCall("current_weather", {"city": "Sydney"}, id="call_0"),)))
    assert c.tools[0].parameters == {"type": "object", "required": [], "properties": {
        "city": {"type": "string", "description": "The name of the city.", "default": "London"}}}
    assert c.tools[1].parameters == {"type": "object", "required": [], "properties": {
        "location": {"type": "string", "description": "The location name.", "default": "Berlin"},
        "hours": {"type": "integer", "description": "Number of hours to forecast, defaults to 24.", "default": 24}}}


def test_parallel_calls(convs):
    calls = convs[0][1].messages[1].tool_calls
    assert calls == (ToolCall("user_metadata", {"username": "nike", "fresh": "1"}, id="call_0"),
                     ToolCall("user_metadata", {"username": "adidas", "fresh": "1"}, id="call_1"))
    calls = convs[0][2].messages[1].tool_calls
    assert [c.name for c in calls] == ["hourly_forecast", "current_weather"]


def test_duplicate_tool_names_keep_the_first(convs):
    c = convs[0][3]
    assert [t.name for t in c.tools] == ["find_by_postcode", "measure_distance"]
    assert c.tools[1].description == "Calculates the distance between two coordinates."
    assert c.meta["duplicate_tools_dropped"] == 1


def test_empty_default_means_required_and_explicit_required_flags(convs):
    assert convs[0][8].tools[1].required == ["is_id"]
    assert convs[0][10].tools[0].required == ["lower_limit", "upper_limit", "multiples"]
    assert convs[0][10].tools[0].properties["multiples"] == {"type": "array",
                                                             "description": "The numbers to find multiples of."}


def test_no_call_row(convs):
    c = convs[0][11]
    assert c.messages[1] == Message("assistant", NO_CALL_REPLY, meta={"no_call": True})
    assert c.meta["no_call"] is True


def test_no_call_reply_option():
    c = [c for c in load("xlam", PATH, on_bad_row="skip", no_call_reply="[]") if c.meta["row"] == 11][0]
    assert c.messages[1].content == "[]"


def test_decoded_lists_are_accepted_too(tmp_path):
    row = {"id": 7, "query": "Weather in Pune?", "answers": [{"name": "w", "arguments": {"city": "Pune"}}],
           "tools": [{"name": "w", "description": "Weather.", "parameters": {"city": {"type": "str", "description": "City."}}}]}
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (c,) = load("xlam", str(path))
    assert c.tools[0].required == ["city"] and c.messages[1].tool_calls[0].arguments == {"city": "Pune"}


def test_error_policy_names_source_row_and_field():
    with pytest.raises(DataError, match=r"^xlam, row 12: field 'answers': invalid json: "):
        list(load("xlam", PATH))


def test_other_bad_rows_under_error_policy(tmp_path):
    rows = json.load(open(PATH))
    for k, pattern in ((13, r"row 0: field 'answers': call to unknown tool: 'route_planner'"),
                       (14, r"row 0: field 'tools': missing field")):
        path = tmp_path / f"r{k}.json"
        path.write_text(json.dumps([rows[k]]))
        with pytest.raises(DataError, match=pattern):
            list(load("xlam", str(path)))
