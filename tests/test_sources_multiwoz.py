"""MultiWOZ 2.1-layout loader on real ConvLab-2 validation dialogues (tests/fixtures/multiwoz)."""

import json
import os

import pytest

from jaxtool.data.sources.base import LoadReport
from jaxtool.errors import DataError
from jaxtool.eval import multiwoz_data as multiwoz

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "multiwoz")
VAL = os.path.join(FIX, "val_slice.json")


def by_id():
    return {d.dialogue_id: d for d in multiwoz.load_dialogues(VAL)}


def test_dialogues_and_turns():
    ds = list(multiwoz.load_dialogues(VAL))
    assert [(d.dialogue_id, len(d.turns)) for d in ds] == [("PMUL0689", 8), ("SNG02260", 2), ("MUL0703", 10),
                                                          ("SNG0752", 4)]


def test_gold_state_after_each_user_turn():
    d = by_id()["SNG02260"]
    t0, t1 = d.turns
    assert t0.user == "I need to book a taxi to come to Express by Holiday Inn Cambridge to take me to The Oak Bistro ."
    assert t0.system == "Okay , what time do you want to leave by ?"
    assert dict(t0.state) == {"taxi-destination": "the oak bistro", "taxi-departure": "express by holiday inn cambridge"}
    assert dict(t1.state) == {"taxi-leaveat": "07:30", "taxi-destination": "the oak bistro",
                              "taxi-departure": "express by holiday inn cambridge"}
    assert t0.domains == ("taxi",) and t1.domains == ("taxi",)


def test_book_slots_dontcare_alternatives_and_none_kept_raw():
    hotel = by_id()["SNG0752"].turns
    assert hotel[1].state["hotel-pricerange"] == "dontcare"
    assert {hotel[2].state[k] for k in ("hotel-book stay", "hotel-book day", "hotel-book people")} == {"3", "monday", "5"}
    assert hotel[3].domains == ()  # "that is all, thank you": general acts only
    assert by_id()["MUL0703"].turns[2].state["hotel-name"] == "alexander bed and breakfast|university arms hotel"
    assert by_id()["PMUL0689"].turns[3].state["restaurant-name"] == "none"  # normalised away by the evaluator


def test_registry_conversations():
    conv = next(c for c in multiwoz.load(VAL) if c.meta["dialogue_id"] == "SNG02260")
    assert [m.role for m in conv.messages] == ["user", "assistant", "user", "assistant"]
    assert conv.messages[2].meta["belief_state"]["taxi-leaveat"] == "07:30"


def test_json_suffix_dropped_and_list_layout(tmp_path):
    raw = json.load(open(VAL))
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"SNG02260.json": raw["SNG02260"]}))
    assert [d.dialogue_id for d in multiwoz.load_dialogues(str(p))] == ["SNG02260"]
    q = tmp_path / "l.json"
    q.write_text(json.dumps([dict(raw["SNG02260"], dialogue_id="X1")]))
    assert [d.dialogue_id for d in multiwoz.load_dialogues(str(q))] == ["X1"]


def test_bad_dialogues(tmp_path):
    raw = json.load(open(VAL))
    no_meta = json.loads(json.dumps(raw["SNG02260"]))
    no_meta["log"][1]["metadata"] = {}
    bad_value = json.loads(json.dumps(raw["SNG02260"]))
    bad_value["log"][3]["metadata"]["taxi"]["semi"]["leaveAt"] = 730
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"A": no_meta, "B": bad_value, "C": {"goal": {}}, "D": raw["SNG02260"]}))
    with pytest.raises(DataError, match=r"row A: field 'log\[1\].metadata': missing belief state"):
        list(multiwoz.load_dialogues(str(p)))
    report = LoadReport(str(p), "skip")
    assert [d.dialogue_id for d in multiwoz.load_dialogues(str(p), on_bad_row="skip", report=report)] == ["D"]
    assert report.skipped == {"missing belief state": 1, "bad belief state": 1, "missing field": 1}
