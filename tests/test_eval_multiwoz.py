"""MultiWOZ DST: normalisation and metrics against hand-computed values, prompt / answer handling,
state accumulation over turns, and the command, on real 2.1-format validation dialogues."""

import argparse
import dataclasses
import json
import os
import re

import pytest

from dialog_fakes import FakeFormat, ScriptedBackend, fake_prompt_ids, install_fake_stack
from jaxtool.commands.eval_multiwoz import register as register_multiwoz
from jaxtool.errors import DataError
from jaxtool.eval import dst
from jaxtool.eval.multiwoz import (domain_prompt, evaluate_multiwoz, load_ontology, parse_domain, parse_state,
                                   state_prompt)
from jaxtool.eval.multiwoz_data import load_dialogues

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "multiwoz")
VAL = os.path.join(FIX, "val_slice.json")
ONTOLOGY = os.path.join(FIX, "ontology_mwz24_icdst.json")


def dialogue(did):
    return next(d for d in load_dialogues(VAL) if d.dialogue_id == did)


# --------------------------------------------------------------------------------------------
# normalisation and metrics
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,norm", [
    ("Don't Care", "dontcare"), ("do n't care", "dontcare"), ("dontcare", "dontcare"),
    ("not mentioned", None), ("", None), ("none", None), ("  ", None),
    ("9:30", "09:30"), ("17.15", "17:15"), ("07:30", "07:30"),
    ("Guesthouse", "guest house"), ("B&B", "bed and breakfast"), ("center", "centre"),
    ("saint john s college", "saint johns college"), ("Cote  Brasserie", "cote brasserie"),
    ("k-pop", "k pop"),
])
def test_normalize_value(raw, norm):
    assert dst.normalize_value(raw) == norm


def test_canonical_slot_names():
    assert dst.canonical_slot("hotel", "bookday") == "hotel-book day"
    assert dst.canonical_slot("hotel", "price range") == "hotel-pricerange"
    assert dst.canonical_slot("train", "leaveAt") == "train-leaveat"
    assert dst.canonical_slot("train", "day") == "train-day" and dst.canonical_slot("restaurant", "day") == "restaurant-book day"
    assert dst.canonical_slot("restaurant", "book_people") == "restaurant-book people"
    assert dst.canonical_slot("taxi", "stars") is None and dst.canonical_slot("police", "name") is None
    assert len(dst.SLOTS) == 30


def test_metrics_hand_computed():
    gold = {"hotel-area": "east", "hotel-stars": "4", "hotel-parking": "yes"}
    pred = {"hotel-area": "east", "hotel-stars": "3", "hotel-internet": "yes"}
    assert not dst.joint_goal(pred, gold)
    # missed gold: stars (wrong value), parking; wrong predictions: internet (stars already counted)
    assert dst.slot_accuracy(pred, gold) == pytest.approx((30 - 2 - 1) / 30)
    # TP area; FP stars, internet; FN stars, parking -> P = R = 1/3
    assert dst.slot_f1(pred, gold) == pytest.approx(1 / 3)
    assert dst.joint_goal({}, {}) and dst.slot_f1({}, {}) == 1.0 and dst.slot_accuracy({}, {}) == 1.0
    assert dst.slot_f1({"hotel-area": "east"}, {}) == 0.0


def test_gold_alternatives_accept_either_value():
    gold = dst.normalize_state({"hotel-name": "alexander bed and breakfast|university arms hotel"})
    assert dst.joint_goal({"hotel-name": "university arms hotel"}, gold)
    assert dst.joint_goal({"hotel-name": "alexander bed and breakfast"}, gold)
    assert not dst.joint_goal({"hotel-name": "gonville hotel"}, gold)


def test_normalize_state_keeps_evaluated_slots_only():
    raw = {"taxi-leaveat": "7:30", "hospital-department": "acute medicine", "restaurant-name": "none",
           "hotel-pricerange": "dont care"}
    assert dst.normalize_state(raw) == {"taxi-leaveat": "07:30", "hotel-pricerange": "dontcare"}


def test_named_entity_repair_with_ontology():
    onto = {"hotel-name": ["acorn guest house", "the cambridge belfry"], "hotel-area": ["east"]}
    assert dst.snap_to_ontology("acorn", {"acorn guest house"}) == "acorn guest house"
    assert dst.snap_to_ontology("cambridge belfry", {"the cambridge belfry"}) == "the cambridge belfry"
    assert dst.snap_to_ontology("acorn hotel", {"acorn guest house"}) == "acorn guest house"
    fixed = dst.fix_prediction({"hotel-name": "Acorn", "hotel-area": "East"}, onto)
    assert fixed == {"hotel-name": "acorn guest house", "hotel-area": "east"}
    assert dst.fix_prediction({"hotel-name": "nowhere inn"}, onto) == {}          # unknown entity dropped
    assert dst.fix_prediction({"hotel-name": "nowhere inn"}) == {"hotel-name": "nowhere inn"}  # no ontology
    assert dst.fix_prediction({"hotel-name": "dontcare"}, onto) == {"hotel-name": "dontcare"}


# --------------------------------------------------------------------------------------------
# prompts and answers
# --------------------------------------------------------------------------------------------

def test_prompts_carry_history_utterance_and_slot_descriptions():
    d = dialogue("SNG02260")
    p = state_prompt(d, 1, "taxi")
    assert "- leaveat: earliest departure time, 24-hour hh:mm" in p and "- stars" not in p
    assert "Customer: I need to book a taxi" in p and "Assistant: Okay , what time do you want to leave by ?" in p
    assert p.endswith("Customer's last utterance: I want to leave by 07:30 .\nValues:")
    q = domain_prompt(d, 0)
    assert "(start of the conversation)" in q and q.endswith("Domain:")


def test_parse_answers():
    assert parse_state("'name':'christ's college'-'area':'centre'", "attraction") == {
        "attraction-name": "christ's college", "attraction-area": "centre"}
    assert parse_state("'bookday':'friday'-'bookpeople':'2'-'food':''", "restaurant") == {
        "restaurant-book day": "friday", "restaurant-book people": "2"}
    assert parse_state('Sure: {"price range": "cheap", "area": "dontcare", "pool": "yes"}', "hotel") == {
        "hotel-pricerange": "cheap", "hotel-area": "dontcare"}
    assert parse_state("area: north\nstars = 4", "hotel") == {"hotel-area": "north", "hotel-stars": "4"}
    assert parse_state("nothing to add", "hotel") == {}
    assert parse_domain("Domain: Hotels.") == "hotel" and parse_domain("I am not sure") is None


# --------------------------------------------------------------------------------------------
# accumulation over turns
# --------------------------------------------------------------------------------------------

def scripted(domain_answers, state_answers):
    """Answer by the customer's last utterance: domain prompts from `domain_answers`, state prompts
    from `state_answers` (keyed by (utterance, domain))."""
    def respond(prompt):
        utt = re.search(r"Customer's last utterance: (.*)\n", prompt).group(1)
        if "Domain:" in prompt:
            return domain_answers.get(utt, "taxi")
        dom = re.search(r"from a (\w+) booking service", prompt).group(1)
        return state_answers.get((utt, dom), "")
    return ScriptedBackend(respond)


U0 = "I need to book a taxi to come to Express by Holiday Inn Cambridge to take me to The Oak Bistro ."
U1 = "I want to leave by 07:30 ."


def test_states_accumulate_and_both_turns_match():
    b = scripted({}, {(U0, "taxi"): "'destination':'The Oak Bistro'-'departure':'express by holiday inn cambridge'",
                      (U1, "taxi"): "'leaveat':'7:30'"})
    r = evaluate_multiwoz([dialogue("SNG02260")], b, FakeFormat(), prompt_fn=fake_prompt_ids)
    assert [rec["jga"] for rec in r.records] == [True, True]
    assert r.records[1]["pred_state"] == {"taxi-destination": "the oak bistro",
                                          "taxi-departure": "express by holiday inn cambridge", "taxi-leaveat": "07:30"}
    assert r.summary["jga"] == 1.0 and r.summary["per_domain_jga"] == {"taxi": {"turns": 2, "jga": 1.0}}
    assert len(b.calls) == 2  # one batch of domain prompts, one of state prompts


def test_an_early_miss_carries_over_to_later_turns():
    b = scripted({}, {(U0, "taxi"): "'destination':'the oak bistro'", (U1, "taxi"): "'leaveat':'07:30'"})
    r = evaluate_multiwoz([dialogue("SNG02260")], b, FakeFormat(), prompt_fn=fake_prompt_ids)
    assert [rec["jga"] for rec in r.records] == [False, False]
    assert r.summary["slot_accuracy"] == pytest.approx(((30 - 1) / 30 + (30 - 1) / 30) / 2)


def test_unreadable_domain_keeps_previous_and_gold_domains_skip_the_model():
    b = scripted({U1: "no idea"}, {(U0, "taxi"): "'destination':'the oak bistro'",
                                   (U1, "taxi"): "'leaveat':'07:30'"})
    r = evaluate_multiwoz([dialogue("SNG02260")], b, FakeFormat(), prompt_fn=fake_prompt_ids)
    assert [rec["domains"] for rec in r.records] == [["taxi"], ["taxi"]]
    assert r.summary["domain_accuracy"] == 1.0
    g = scripted({U0: "hotel", U1: "hotel"}, {(U0, "taxi"): "'destination':'the oak bistro'"})
    rg = evaluate_multiwoz([dialogue("SNG02260")], g, FakeFormat(), domain_source="gold", prompt_fn=fake_prompt_ids)
    assert [rec["domains"] for rec in rg.records] == [["taxi"], ["taxi"]]
    assert len(g.calls) == 1 and "domain_accuracy" not in rg.summary


def test_turn_without_domain_acts_keeps_the_previous_domain():
    d = dialogue("SNG0752")  # last turn: "that is all , thank you" (general acts only)
    r = evaluate_multiwoz([d], scripted({}, {}), FakeFormat(), domain_source="gold", prompt_fn=fake_prompt_ids)
    assert [rec["domains"] for rec in r.records] == [["hotel"], ["hotel"], ["hotel"], ["hotel"]]


def test_turn_with_no_domain_at_all_gets_no_state_prompt():
    d = dialogue("SNG02260")
    first = dataclasses.replace(d.turns[0], domains=())
    d = dataclasses.replace(d, turns=(first, d.turns[1]))
    b = scripted({}, {(U1, "taxi"): "'leaveat':'07:30'"})
    r = evaluate_multiwoz([d], b, FakeFormat(), domain_source="gold", prompt_fn=fake_prompt_ids)
    assert [rec["domains"] for rec in r.records] == [[], ["taxi"]]
    assert b.calls == [{"n": 1, "max_new_tokens": 64, "stop_strings": ("<end>",), "temperature": 0.0}]
    assert r.records[1]["pred_state"] == {"taxi-leaveat": "07:30"}


# --------------------------------------------------------------------------------------------
# command
# --------------------------------------------------------------------------------------------

@pytest.fixture
def fake_stack(monkeypatch):
    created = []

    def load_backend(kind, model, **kw):
        created.append(scripted({}, {(U0, "taxi"): "'destination':'the oak bistro'-'departure':'express by holiday inn "
                                                    "cambridge'", (U1, "taxi"): "'leaveat':'07:30'"}))
        return created[-1]

    install_fake_stack(monkeypatch, load_backend)
    return created


def parse(argv):
    parser = argparse.ArgumentParser()
    register_multiwoz(parser.add_subparsers())
    return parser.parse_args(argv)


def test_multiwoz_command(fake_stack, tmp_path, capsys):
    raw = json.load(open(VAL))
    data = tmp_path / "taxi.json"
    data.write_text(json.dumps({"SNG02260": raw["SNG02260"]}))
    args = parse(["multiwoz", "--model", "m", "--data", str(data), "--ontology", ONTOLOGY, "--out", str(tmp_path),
                  "--no-progress"])
    assert args.func(args) == 0
    summary = json.load(open(tmp_path / "multiwoz_summary.json"))
    assert summary["jga"] == 1.0 and summary["n_turns"] == 2 and summary["ontology"] == ONTOLOGY
    records = [json.loads(line) for line in open(tmp_path / "multiwoz_items.jsonl")]
    assert [r["jga"] for r in records] == [True, True]
    assert os.path.getsize(tmp_path / "multiwoz.png") > 0
    assert "joint goal accuracy" in capsys.readouterr().out


def test_bad_ontology_file(fake_stack, tmp_path):
    bad = tmp_path / "onto.json"
    bad.write_text('["hotel-name"]')
    with pytest.raises(DataError, match="expected an IC-DST ontology"):
        load_ontology(str(bad))
    args = parse(["multiwoz", "--model", "m", "--data", VAL, "--ontology", str(tmp_path / "missing.json")])
    with pytest.raises(DataError, match="cannot read the ontology"):
        args.func(args)
    assert fake_stack == []
