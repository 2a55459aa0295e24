"""DiaTool-DPO pair rows as evaluation dialogues, and SOURCE:PATH specs."""

import json

import pytest

from jaxtool.data.sources.base import LoadReport
from jaxtool.errors import DataError
from jaxtool.eval.dialog import collect_turns
from jaxtool.eval.dialog_data import load_dialogs, load_diatool, split_spec

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather of a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string",
                                                                                  "description": "City name"}},
                                                          "required": ["city"]}}}]
CHOSEN = {"tools": TOOLS, "messages": [
    {"role": "user", "content": "What's the weather?"},
    {"role": "assistant", "content": "Which city?", "state": 2},
    {"role": "user", "content": "Seoul"},
    {"role": "assistant", "content": None, "state": 3, "tool_calls": [
        {"id": "c0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Seoul\"}"}}]},
    {"role": "tool", "name": "get_weather", "tool_call_id": "c0", "content": "{\"temp_c\": 21}"},
    {"role": "assistant", "content": "21 degrees.", "state": 5}]}
REJECTED = {"tools": TOOLS, "messages": [
    {"role": "user", "content": "What's the weather?"},
    {"role": "assistant", "content": None, "state": 3, "tool_calls": [
        {"id": "c0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}]}


def _row(chosen, **kw):
    return {"chosen": chosen, "rejected": REJECTED, "type": 2, "chosen_trajectory": "1-2-3-4-5",
            "rejected_trajectory": "1-3-4-5", "difficulty": "easy", **kw}


def test_chosen_trajectories_as_object_or_json_string(tmp_path):
    p = tmp_path / "valid.jsonl"
    p.write_text(json.dumps(_row(CHOSEN)) + "\n" + json.dumps(_row(json.dumps(CHOSEN), difficulty="hard")) + "\n")
    convs = list(load_diatool(str(p)))
    assert len(convs) == 2
    assert convs[0].meta["query_type"] == 2 and convs[1].meta["difficulty"] == "hard"
    assert convs[0].meta["trajectory"] == "1-2-3-4-5"
    turns = collect_turns(convs)
    assert [(t.index, t.turn_type) for t in turns[:3]] == [(1, "slot"), (3, "call"), (5, "completion")]
    assert [t.gold.meta["state"] for t in turns[:3]] == [2, 3, 5]


def test_bad_rows(tmp_path):
    bad_state = json.loads(json.dumps(CHOSEN))
    bad_state["messages"][1]["state"] = 4
    p = tmp_path / "valid.jsonl"
    p.write_text("\n".join([json.dumps(_row(bad_state)), json.dumps({"rejected": REJECTED}),
                            json.dumps(_row("{not json")), json.dumps(_row(CHOSEN))]) + "\n")
    with pytest.raises(DataError, match=r"row 0: field 'chosen.messages\[1\].state': unknown state"):
        list(load_diatool(str(p)))
    report = LoadReport(str(p), "skip")
    assert len(list(load_diatool(str(p), on_bad_row="skip", report=report))) == 1
    assert report.skipped == {"unknown state": 1, "missing field": 1, "invalid json": 1}


def test_specs(tmp_path):
    assert split_spec("diatool:out/valid.jsonl") == ("diatool", "out/valid.jsonl")
    with pytest.raises(DataError, match="SOURCE:PATH"):
        split_spec("valid.jsonl")
    p = tmp_path / "v.jsonl"
    p.write_text(json.dumps(_row(CHOSEN)) + "\n")
    assert len(list(load_dialogs(f"diatool:{p}", limit=1))) == 1
