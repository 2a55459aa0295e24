"""Schema-Guided Dialogue loader on a real slice (3 dialogues from each of three train files)."""

import copy
import json
import os
import shutil

import pytest

from jaxtool.data.schema import Message, ToolCall
from jaxtool.data.sources import load
from jaxtool.data.sources.base import LoadReport
from jaxtool.errors import ConfigError, DataError

DIR = os.path.join(os.path.dirname(__file__), "fixtures", "sgd", "train")


@pytest.fixture(scope="module")
def convs():
    return {c.meta["id"]: c for c in load("sgd", DIR)}


def test_fixture_counts(convs):
    assert list(convs) == ["1_00000", "1_00001", "1_00015", "2_00000", "2_00001", "2_00075",
                           "45_00000", "45_00006", "45_00072"]
    assert convs["1_00000"].meta["row"] == "dialogues_001.json:0"
    assert convs["45_00072"].meta["services"] == ["Weather_1", "Restaurants_1"]


def test_tools_from_the_schema(convs):
    c = convs["1_00000"]
    assert [t.name for t in c.tools] == ["ReserveRestaurant", "FindRestaurants"]
    find = c.tool("FindRestaurants")
    assert find.description == "Find a restaurant of a particular cuisine in a city"
    assert find.required == ["cuisine", "city"]
    assert list(find.properties) == ["cuisine", "city", "price_range", "has_live_music", "serves_alcohol"]
    assert find.properties["cuisine"] == {"type": "string", "description": "Cuisine of food served in the restaurant"}
    assert find.properties["price_range"] == {"type": "string", "description": "Price range for the restaurant",
                                              "enum": ["inexpensive", "moderate", "expensive", "very expensive"],
                                              "default": "dontcare"}
    reserve = c.tool("ReserveRestaurant")
    assert reserve.required == ["restaurant_name", "city", "time"]
    assert reserve.properties["date"] == {"type": "string", "description": "Date for the reservation or to find "
                                                                           "availability", "default": "2019-03-01"}
    assert reserve.properties["party_size"]["default"] == "2"
    assert c.meta["tool_services"] == {"ReserveRestaurant": "Restaurants_1", "FindRestaurants": "Restaurants_1"}


def test_turns_calls_and_results(convs):
    m = convs["1_00000"].messages
    assert [x.role for x in m[:9]] == ["user", "assistant", "user", "assistant", "user", "assistant", "tool",
                                       "assistant", "user"]
    assert m[0].content == "I am feeling hungry so I would like to find a place to eat."
    assert m[5] == Message("assistant", None, tool_calls=(
        ToolCall("FindRestaurants", {"city": "San Jose", "cuisine": "American"}, id="call_0"),), meta={"turn": 5})
    results = json.loads(m[6].content)
    assert (m[6].name, m[6].tool_call_id, len(results)) == ("FindRestaurants", "call_0", 10)
    assert results[0] == {"city": "San Jose", "cuisine": "American", "has_live_music": "False",
                          "phone_number": "408-971-8523", "price_range": "moderate", "restaurant_name": "71 Saint Peter",
                          "serves_alcohol": "True", "street_address": "71 North San Pedro Street"}
    assert m[7].content == "I see that at 71 Saint Peter there is a good restaurant which is in San Jose."
    assert all("service_call" not in f and "service_results" not in f for f in m[7].meta["frames"])
    assert m[7].meta["frames"][0]["actions"][0]["act"] == "OFFER"


def test_user_meta_carries_frames_and_dialogue_state(convs):
    m = convs["1_00000"].messages
    assert m[4].meta["turn"] == 4
    assert m[4].meta["dialogue_state"] == {"Restaurants_1": {"active_intent": "FindRestaurants", "requested_slots": [],
                                                             "slot_values": {"city": ["San Jose"],
                                                                             "cuisine": ["American"]}}}
    assert m[4].meta["frames"][0]["actions"] == [{"act": "INFORM", "canonical_values": ["American"],
                                                  "slot": "cuisine", "values": ["American"]}]


def test_multi_frame_turn_updates_every_service(convs):
    users = [x for x in convs["45_00000"].messages if x.role == "user"]
    turn = users[3]
    assert turn.content == "Not at the moment. I need a cab to get there, though."
    assert [f["service"] for f in turn.meta["frames"]] == ["RideSharing_1", "Movies_1"]
    assert turn.meta["dialogue_state"] == {
        "Movies_1": {"active_intent": "NONE", "requested_slots": [],
                     "slot_values": {"location": ["Morgan Hill"], "movie_name": ["Captain Marvel"],
                                     "show_date": ["2nd of March"], "show_time": ["9:30 pm"]}},
        "RideSharing_1": {"active_intent": "GetRide", "requested_slots": [], "slot_values": {}}}
    # a later single-frame turn keeps the last Movies_1 state
    assert users[4].meta["dialogue_state"]["Movies_1"]["active_intent"] == "NONE"
    calls = [tc for x in convs["45_00000"].messages for tc in x.tool_calls]
    assert [(tc.name, tc.id) for tc in calls] == [("GetTimesForMovie", "call_0"), ("GetRide", "call_1")]
    assert calls[1].arguments == {"destination": "750 Tennant Station", "number_of_riders": "2", "shared_ride": "True"}


def test_call_with_no_results(convs):
    tools = [x for x in convs["1_00015"].messages if x.role == "tool"]
    assert [(x.name, x.content) for x in tools][1] == ("ReserveRestaurant", "[]")
    assert len(json.loads(tools[2].content)) == 1


def test_single_file_and_limit():
    convs = list(load("sgd", os.path.join(DIR, "dialogues_045.json"), limit=2))
    assert [c.meta["id"] for c in convs] == ["45_00000", "45_00006"]


def test_qualified_names(tmp_path):
    convs = list(load("sgd", DIR, qualify="always", limit=1))
    assert [t.name for t in convs[0].tools] == ["Restaurants_1.ReserveRestaurant", "Restaurants_1.FindRestaurants"]
    # two services sharing an intent name (Media_1 and Movies_1 both have FindMovies) are qualified by default
    d = {"dialogue_id": "x_1", "services": ["Media_1", "Movies_1"], "turns": [
        {"speaker": "USER", "utterance": "Find me a movie.", "frames": []},
        {"speaker": "SYSTEM", "utterance": "Here is one.", "frames": [
            {"service": "Movies_1", "actions": [], "slots": [],
             "service_call": {"method": "FindMovies", "parameters": {"location": "Dublin"}},
             "service_results": [{"movie_name": "Dumbo"}]}]}]}
    shutil.copy(os.path.join(DIR, "schema.json"), tmp_path / "schema.json")
    (tmp_path / "dialogues_900.json").write_text(json.dumps([d]))
    (c,) = load("sgd", str(tmp_path))
    assert [t.name for t in c.tools] == ["Media_1.FindMovies", "PlayMovie", "BuyMovieTickets", "Movies_1.FindMovies",
                                        "GetTimesForMovie"]
    assert c.messages[1].tool_calls[0].name == "Movies_1.FindMovies"


def _corrupt(tmp_path):
    """A copy of dialogues_001.json whose three dialogues are each broken in a different way."""
    shutil.copy(os.path.join(DIR, "schema.json"), tmp_path / "schema.json")
    dialogues = json.load(open(os.path.join(DIR, "dialogues_001.json")))
    bad = copy.deepcopy(dialogues)
    bad[0]["turns"][5]["frames"][0]["service_call"]["method"] = "FindPizza"
    bad[1]["turns"][2]["frames"][0]["service"] = "Hotels_9"
    del bad[2]["turns"]
    (tmp_path / "dialogues_001.json").write_text(json.dumps(bad + dialogues[:1]))
    return str(tmp_path)


def test_bad_rows_skip(tmp_path):
    report = LoadReport("sgd", on_bad_row="skip")
    convs = list(load("sgd", _corrupt(tmp_path), report=report))
    assert [c.meta["id"] for c in convs] == ["1_00000"]
    assert dict(report.skipped) == {"call to unknown tool": 1, "unknown service": 1, "missing field": 1}


def test_bad_rows_error(tmp_path):
    with pytest.raises(DataError) as e:
        list(load("sgd", _corrupt(tmp_path)))
    assert str(e.value) == ("sgd, row dialogues_001.json:0: field 'turns[5].frames[0].service_call': "
                            "call to unknown tool: Restaurants_1 has no intent 'FindPizza' [--on-bad-row skip "
                            "(train: data.on_bad_row=skip) skips and counts bad rows]")


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="split directory"):
        load("sgd")
    with pytest.raises(DataError, match="not a hub dataset"):
        load("sgd", "google-research-datasets/schema_guided_dstc8")
    (tmp_path / "dialogues_001.json").write_text("[]")
    with pytest.raises(DataError, match="schema file not found"):
        load("sgd", str(tmp_path))
    with pytest.raises(ConfigError, match="qualify"):
        load("sgd", DIR, qualify="never")
