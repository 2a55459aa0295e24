"""`conversations` loader: jaxtool's own rows and DiaTool-DPO's JSON-string pair layout."""

import json
import os

import pytest

from jaxtool.data.schema import Message, ToolCall
from jaxtool.data.sources import load
from jaxtool.data.sources.base import LoadReport
from jaxtool.errors import ConfigError, DataError

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
ROWS = os.path.join(FIX, "conversations", "conversations.jsonl")
PAIRS = os.path.join(FIX, "conversations", "diatool_pairs.jsonl")


def test_own_rows_and_skip_reasons():
    report = LoadReport("conversations", on_bad_row="skip")
    convs = list(load("conversations", ROWS, report=report))
    assert (report.rows, report.kept) == (7, 4)
    assert dict(report.skipped) == {"invalid conversation": 2, "invalid json": 1}
    first = convs[0]
    assert first.meta == {"source": "conversations", "row": 0, "id": "conv-1",
                          "origin": {"id": "conv-1", "source": "glaive", "row": 17}}
    assert first.messages[2].tool_calls == (ToolCall("get_weather", {"city": "Oslo"}, id="call_0"),)
    second = convs[1]
    assert second.meta["id"] == "conv-2"
    assert [m.meta.get("state") for m in second.messages] == [0, 1, None, 2]  # DiaTool's MDP state kept
    assert second.messages[2] == Message("tool", '{"status": "booked"}', name="book_table")
    legacy = convs[3]
    assert legacy.messages[1].tool_calls == (ToolCall("get_weather", {"city": "Lima", "unit": "fahrenheit"}),)
    assert legacy.messages[2].role == "tool"


def test_error_policy_names_row_and_what_is_wrong():
    with pytest.raises(DataError) as e:
        list(load("conversations", ROWS))
    assert str(e.value).startswith("conversations, row 4: invalid conversation: row.messages[1].tool_calls[0]: "
                                   "field 'arguments' is not valid JSON")


def test_diatool_pairs_need_a_field_choice():
    with pytest.raises(ConfigError, match=r"fields \['chosen', 'rejected'\]; choose one with field="):
        list(load("conversations", PAIRS))


def test_diatool_pairs_by_field():
    report = LoadReport("conversations", on_bad_row="skip")
    chosen = list(load("conversations", PAIRS, field="chosen", report=report))
    assert len(chosen) == 2 and dict(report.skipped) == {"invalid json": 1}
    assert chosen[0].meta == {"source": "conversations", "row": 0, "id": None, "field": "chosen"}
    assert chosen[0].messages[1] == Message("assistant", "For how many people should I book the table?")
    rejected = list(load("conversations", PAIRS, field="rejected"))
    assert len(rejected) == 3
    assert rejected[0].messages[1].tool_calls[0].arguments == {"restaurant": "Nora", "people": 4}
    with pytest.raises(DataError, match=r"row 2: field 'chosen': invalid json"):
        list(load("conversations", PAIRS, field="chosen"))


def test_single_json_string_field_is_found(tmp_path):
    conv = {"tools": [], "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"sample": json.dumps(conv), "note": "plain text"}) + "\n"
                    + json.dumps(json.dumps(conv)) + "\n")
    convs = list(load("conversations", str(path)))
    assert [c.meta.get("field") for c in convs] == ["sample", None]
    assert convs[0].messages == convs[1].messages


@pytest.mark.parametrize("spec", ["glaive:glaive/glaive_v2_sample.json", "toolace:toolace/toolace_sample.json",
                                  "sgd:sgd/train", "xlam:xlam/xlam_sample.json"])
def test_round_trip_of_other_sources(tmp_path, spec):
    name, rel = spec.split(":")
    originals = list(load(name, os.path.join(FIX, rel), on_bad_row="skip"))
    path = tmp_path / "out.jsonl"
    with open(path, "w") as f:
        for c in originals:
            f.write(c.to_json() + "\n")
    back = list(load("conversations", str(path)))
    assert [c.messages for c in back] == [c.messages for c in originals]
    assert [c.tools for c in back] == [c.tools for c in originals]
    assert [c.meta["origin"] for c in back] == [json.loads(json.dumps(c.meta)) for c in originals]


def test_needs_a_path():
    with pytest.raises(ConfigError, match="needs a path"):
        load("conversations")
