"""SNIPS loader on a real slice of the seven train_<Intent>_full.json files."""

import collections
import json
import os

import pytest

from jaxtool.data.schema import Message, ToolCall
from jaxtool.data.sources import load
from jaxtool.data.sources.base import LoadReport
from jaxtool.data.sources.snips import INTENT_SLOTS, fix_surrogates
from jaxtool.errors import DataError

DIR = os.path.join(os.path.dirname(__file__), "fixtures", "snips")


@pytest.fixture(scope="module")
def convs():
    return {c.meta["row"]: c for c in load("snips", DIR)}


def test_fixture_counts(convs):
    counts = collections.Counter(c.meta["intent"] for c in convs.values())
    assert counts == {"AddToPlaylist": 21, "BookRestaurant": 22, "GetWeather": 21, "PlayMusic": 21,
                      "RateBook": 20, "SearchCreativeWork": 20, "SearchScreeningEvent": 20}


def test_first_utterance(convs):
    c = convs["train_AddToPlaylist_full.json:0"]
    assert c.messages == (Message("user", "Add another song to the Cita Romántica playlist."),
                          Message("assistant", None, tool_calls=(
                              ToolCall("AddToPlaylist", {"music_item": "song", "playlist": "Cita Romántica"}, id="call_0"),)))
    assert c.meta == {"source": "snips", "row": "train_AddToPlaylist_full.json:0", "id": None,
                      "intent": "AddToPlaylist",
                      "spans": [{"slot": "music_item", "value": "song", "start": 12, "end": 16},
                                {"slot": "playlist", "value": "Cita Romántica", "start": 24, "end": 38}]}


def test_tools_are_the_seven_intents(convs):
    c = convs["train_RateBook_full.json:0"]
    assert [t.name for t in c.tools] == ["AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook",
                                         "SearchCreativeWork", "SearchScreeningEvent"]
    assert sorted(c.tool("SearchCreativeWork").properties) == ["object_name", "object_type"]
    assert all(t.required == [] for t in c.tools)


def test_surrogate_pair_emoji_is_repaired(convs):
    raw = open(os.path.join(DIR, "train_PlayMusic_full.json"), "rb").read()
    assert b"\xed\xa0\xbc\xed\xbd\x95" in raw  # the fixture keeps upstream's invalid UTF-8 bytes
    c = convs["train_PlayMusic_full.json:20"]
    assert c.messages[0].content == "I want toi hear some Pop Punk Perfection \U0001F355 off of Deezer"
    assert c.messages[1].tool_calls[0].arguments == {"playlist": "Pop Punk Perfection \U0001F355", "service": "Deezer"}
    assert fix_surrogates("a\ud83c\udf55b") == "a\U0001F355b"
    assert fix_surrogates("lone \ud83c") == "lone \ufffd"


def test_repeated_slot_becomes_a_list_and_spans_index_the_message(convs):
    c = convs["train_BookRestaurant_full.json:20"]
    assert c.messages[1].tool_calls[0].arguments["restaurant_type"] == ["joint", "restaurant"]
    for conv in convs.values():
        text = conv.messages[0].content
        for s in conv.meta["spans"]:
            assert text[s["start"]:s["end"]] == s["value"]


def test_spans_with_trailing_spaces_are_trimmed(convs):
    c = convs["train_GetWeather_full.json:20"]
    assert c.messages[0].content == "What will the weather be in Cummings Mississippi in eleven years"
    assert c.meta["spans"][-1] == {"slot": "timeRange", "value": "in eleven years", "start": 49, "end": 64}


def test_slot_inventory_covers_the_fixture(convs):
    for conv in convs.values():
        intent = conv.meta["intent"]
        assert {s["slot"] for s in conv.meta["spans"]} <= set(INTENT_SLOTS[intent])


def _bad_file(tmp_path):
    data = json.load(open(os.path.join(DIR, "train_RateBook_full.json")))
    rows = data["RateBook"][:3]
    rows[0] = {"data": [{"text": "rate this "}, {"text": "five", "entity": "rating_colour"}]}
    rows[1] = {"text": "no data list"}
    path = tmp_path / "train_RateBook_full.json"
    path.write_text(json.dumps({"RateBook": rows, "OrderPizza": [{"data": [{"text": "a pizza please"}]}]}))
    return str(path)


def test_bad_rows_skip(tmp_path):
    report = LoadReport("snips", on_bad_row="skip")
    convs = list(load("snips", _bad_file(tmp_path), report=report))
    assert len(convs) == 1
    assert dict(report.skipped) == {"unknown slot": 1, "missing field": 1, "unknown intent": 1}


def test_bad_rows_error(tmp_path):
    with pytest.raises(DataError) as e:
        list(load("snips", _bad_file(tmp_path)))
    assert str(e.value).startswith("snips, row train_RateBook_full.json:0: field 'data[1].entity': unknown slot: "
                                   "'rating_colour' is not a slot of RateBook")


def test_file_level_errors():
    with pytest.raises(DataError, match="give a train_<Intent>_full.json"):
        load("snips")
    with pytest.raises(DataError, match="no such file"):
        load("snips", "/nonexistent/snips")
