"""Table 1 trajectory pairs: every row built from the fixtures, and the pair invariants checked on
every built pair with test-side code (not with the builder's own `check_pair`)."""

import json
import os
import re

import pytest

from jaxtool.data.schema import Conversation, SchemaError
from jaxtool.diatool.pairs import KINDS, PAIR_KINDS, Pair, build_pairs, check_pair
from jaxtool.diatool.rules import RulesAugmenter
from jaxtool.diatool.seeds import extract_seed
from jaxtool.diatool.slots import NoAugmentation
from jaxtool.diatool.states import trajectory
from jaxtool.diatool.templates import load_templates

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "diatool")


def _seeds(name="seeds.jsonl"):
    out = {}
    with open(os.path.join(FIX, name), encoding="utf-8") as fh:
        for line in fh:
            c = Conversation.from_dict(json.loads(line))
            out[c.meta["id"]] = extract_seed(c, c.meta["id"])[0]
    return out


def _build(seed, lang="en", difficulties=("easy", "hard"), type3_easy=False):
    aug = RulesAugmenter(lang)
    fills = {}
    for d in difficulties:
        try:
            fills[d] = aug.augment(seed, d)
        except NoAugmentation as e:
            fills[d] = e
    return build_pairs(seed, fills, difficulties, load_templates(lang), type3_easy=type3_easy)


SEEDS = _seeds()
KO = _seeds("seeds_ko.jsonl")
ALL = [(s, p) for s in list(SEEDS.values()) + list(KO.values())
       for p in _build(s, "ko" if s.id.startswith("ko-") else "en", type3_easy=True)[0]]


# ---- Table 1, row by row (seed restaurant-01: N = 4 required fields, all in the first turn) -----

N4 = {p.kind: p for p in _build(SEEDS["restaurant-01"], type3_easy=True)[0]}
M_PATTERN = r"1-(2-){2,3}3-4-5"  # N > M > 1 with N = 4


@pytest.mark.parametrize("kind, chosen, rejected", [
    ("t1-easy-overask", "1-3-4-5", "1-2-3-4-5"),
    ("t1-easy-reject", "1-3-4-5", "1-1"),
    ("t1-hard-overask-n", "1-3-4-5", "1-2-2-2-2-3-4-5"),
    ("t1-hard-overask-m", "1-3-4-5", M_PATTERN),
    ("t1-hard-reject", "1-3-4-5", "1-1"),
    ("t2-easy-hallucinate", "1-2-3-4-5", "1-3-4-5"),
    ("t2-easy-reject", "1-2-3-4-5", "1-1"),
    ("t2-hard-hallucinate", "1-2-2-2-2-3-4-5", "1-3-4-5"),
    ("t2-hard-partial", "1-2-2-2-2-3-4-5", M_PATTERN),
    ("t2-hard-reject", "1-2-2-2-2-3-4-5", "1-1"),
    ("t3-easy-call", "1-1", "1-3-4"),
    ("t3-hard-call", "1-1", "1-3-4"),
    ("t3-hard-slotfill-call", "1-1", "1-2-2-2-2-3-4"),
])
def test_every_table1_row(kind, chosen, rejected):
    pair = N4[kind]
    assert re.fullmatch(chosen, pair.chosen_trajectory)
    assert re.fullmatch(rejected, pair.rejected_trajectory)
    assert trajectory(pair.chosen) == pair.chosen_trajectory
    assert trajectory(pair.rejected) == pair.rejected_trajectory
    assert pair.to_row()["type"] == int(kind[1])
    assert pair.to_row()["difficulty"] == kind.split("-")[1]


def test_the_seed_with_four_required_fields_gives_all_thirteen_kinds():
    assert set(N4) == set(KINDS) == {k.id for k in PAIR_KINDS}


def test_easy_has_no_type3_pair_unless_the_extra_is_asked_for():
    """DiaTool-DPO §4.3 / Table 1: both Type 3 rows are Hard, so the Easy set has no Type 3 pair;
    `type3_easy=True` is the named extra that adds t3-easy-call."""
    for seed in SEEDS.values():
        pairs, missing = _build(seed)
        assert not [p for p in pairs if p.type == 3 and p.difficulty == "easy"], seed.id
        assert "t3-easy-call" not in {k for k, _ in missing}  # not a Table 1 row: not reported as missing
    easy = {p.kind for p in _build(SEEDS["restaurant-01"], difficulties=("easy",))[0]}
    assert easy == {"t1-easy-overask", "t1-easy-reject", "t2-easy-hallucinate", "t2-easy-reject"}
    extra = {p.kind for p in _build(SEEDS["restaurant-01"], difficulties=("easy",), type3_easy=True)[0]}
    assert extra == easy | {"t3-easy-call"}


def test_m_is_one_for_all_partial_pairs_of_a_seed_with_three_fields():
    pairs = {p.kind: p for p in _build(SEEDS["currency-02"])[0]}
    assert pairs["t1-hard-overask-m"].rejected_trajectory == "1-2-2-3-4-5"   # N = 3 forces M = 2
    assert pairs["t2-hard-partial"].rejected_trajectory == "1-2-2-3-4-5"
    assert pairs["t2-hard-partial"].chosen_trajectory == "1-2-2-2-3-4-5"


def test_seeds_that_cannot_give_a_kind_are_reported_not_silently_dropped():
    pairs, missing = _build(SEEDS["translate-01"])  # N = 2: no M with N > M > 1
    assert ("t1-hard-overask-m", "needs >= 3 required fields (N > M > 1)") in missing
    assert ("t2-hard-partial", "needs >= 3 required fields (N > M > 1)") in missing
    assert {p.kind for p in pairs} == set(KINDS) - {"t1-hard-overask-m", "t2-hard-partial", "t3-easy-call"}
    pairs, missing = _build(SEEDS["joke-01"])  # N = 0: no slot filling at all
    assert {p.kind for p in pairs} == {"t1-easy-reject", "t1-hard-reject"}
    assert len(missing) == len(KINDS) - 3  # every other kind but the (not asked for) t3-easy-call extra
    pairs, missing = _build(SEEDS["distance-01"], type3_easy=True)  # its system prompt names the tool
    assert not [p for p in pairs if p.type == 3]
    assert ("t3-easy-call", "a system message names the called tool, so removing it from the tools list "
                            "would not hide it") in missing


# ---- invariants on every built pair ---------------------------------------------------------

def _prefix(conv):
    out = []
    for m in conv.messages:
        out.append((m.role, m.content))
        if m.role == "user":
            break
    return out


def _states(conv):
    return "-".join(["1"] + [str(m.meta["state"]) if m.role == "assistant" else "4"
                             for m in conv.messages if m.role in ("assistant", "tool")])


def _occurs(value, text):  # case-insensitive, thousands separators ignored ("1,250" gives 1250)
    return str(value).lower().replace(",", "") in text.lower().replace(",", "")


def test_there_are_many_pairs_to_check():
    assert len(ALL) > 150
    assert {p.kind for _, p in ALL} == set(KINDS)


def _check_invariants(seed, pair):
    c, r = pair.chosen, pair.rejected
    # same system prompt + first user turn, same tools list
    assert _prefix(c) == _prefix(r)
    assert [t.to_dict() for t in c.tools] == [t.to_dict() for t in r.tools]
    # declared trajectories = the ones spelled by the labels; chosen != rejected
    assert _states(c) == pair.chosen_trajectory and _states(r) == pair.rejected_trajectory
    assert pair.chosen_trajectory != pair.rejected_trajectory
    # Type 3 drops exactly the called tool; Types 1/2 keep the seed's tools
    names = [t.name for t in c.tools]
    if pair.type == 3:
        assert names == [t.name for t in seed.tools if t.name != seed.call.name]
        assert pair.removed_tool == seed.call.name
    else:
        assert names == [t.name for t in seed.tools]
    # every call is the seed's call, unchanged
    for conv in (c, r):
        for m in conv.messages:
            if m.tool_calls:
                assert [(tc.name, dict(tc.arguments)) for tc in m.tool_calls] == [(seed.call.name, seed.arguments)]
    # slot questions: only required fields; in the chosen trajectory only ones missing from the first turn
    first_user = next(m.content for m in c.messages if m.role == "user")
    for side, conv in (("chosen", c), ("rejected", r)):
        for j, m in enumerate(conv.messages):
            if m.role == "assistant" and m.meta["state"] == 2:
                asked = m.meta["slots"]
                assert asked and set(asked) <= set(seed.required)
                if side == "chosen":
                    assert not any(_occurs(seed.arguments[f], first_user) for f in asked)
                    # and the user's next message gives a value for one of them
                    assert any(_occurs(seed.arguments[f], conv.messages[j + 1].content) for f in asked)
    # both sides load through the schema; a Type 3 rejected side calls the removed tool on purpose
    row = json.loads(json.dumps(pair.to_row(), ensure_ascii=False))
    assert Conversation.from_dict(row["chosen"]).messages == tuple(
        m.__class__(m.role, m.content, m.tool_calls if not m.tool_calls else tuple(
            tc.__class__(tc.name, tc.arguments, tc.id or f"call_{k}") for k, tc in enumerate(m.tool_calls)),
            m.name, m.tool_call_id, m.meta) for m in c.messages)
    if pair.type == 3 and c.tools:
        with pytest.raises(SchemaError, match="not in the tools list"):
            Conversation.from_dict(row["rejected"])
    else:
        Conversation.from_dict(row["rejected"])
    back = Pair.from_row(row)
    assert trajectory(back.chosen) == row["chosen_trajectory"] and trajectory(back.rejected) == row["rejected_trajectory"]
    assert check_pair(pair) == []


def test_invariants_hold_on_every_pair():
    failures = []
    for seed, pair in ALL:
        try:
            _check_invariants(seed, pair)
        except AssertionError as e:
            failures.append(f"{seed.id} {pair.kind}: {e}")
    assert not failures, "\n".join(failures[:10])


def test_type3_with_other_tools_keeps_them_and_from_row_restores_the_check():
    pairs = {p.kind: p for p in _build(SEEDS["news-01"], type3_easy=True)[0]}
    row = pairs["t3-easy-call"].to_row()
    assert [t["function"]["name"] for t in row["chosen"]["tools"]] == ["get_stock_price"]
    assert row["removed_tool"] == "get_news_headlines"
    Pair.from_row(row)
    broken = json.loads(json.dumps(row))
    broken["rejected"]["messages"][1]["tool_calls"][0]["function"]["name"] = "no_such_tool"
    with pytest.raises(SchemaError, match="no_such_tool"):
        Pair.from_row(broken)


def test_check_pair_reports_broken_pairs():
    pair = N4["t2-easy-hallucinate"]
    wrong = Pair(pair.kind, pair.seed_id, pair.chosen, pair.rejected, pair.chosen_trajectory, "1-2-3-4-5")
    assert "rejected: declared trajectory 1-2-3-4-5 but the labels give 1-3-4-5" in check_pair(wrong)
    other_user = pair.rejected.replace(messages=(pair.rejected.messages[0].__class__("user", "different"),)
                                       + pair.rejected.messages[1:])
    bad = Pair(pair.kind, pair.seed_id, pair.chosen, other_user, pair.chosen_trajectory, pair.rejected_trajectory)
    assert "chosen and rejected differ before the first assistant turn" in check_pair(bad)


def test_rejections_are_deterministic_per_seed_and_can_come_from_the_llm():
    a = {p.kind: p for p in _build(SEEDS["flight-01"])[0]}
    b = {p.kind: p for p in _build(SEEDS["flight-01"])[0]}
    assert a["t1-easy-reject"].to_row() == b["t1-easy-reject"].to_row()
    aug = RulesAugmenter()
    fills = {"easy": aug.augment(SEEDS["flight-01"], "easy")}
    pairs, _ = build_pairs(SEEDS["flight-01"], fills, ("easy",), load_templates("en"),
                           llm_rejection="Sorry, booking flights is not something I can do.")
    texts = {p.kind: (p.rejected if p.type != 3 else p.chosen).messages[-1].content
             for p in pairs if p.kind.endswith(("reject", "call"))}
    assert set(texts.values()) == {"Sorry, booking flights is not something I can do."}


def test_no_pair_is_built_twice_and_the_two_type1_refusals_differ():
    seen = {}
    for seed, p in ALL:
        key = json.dumps([p.to_row()["chosen"], p.to_row()["rejected"]], sort_keys=True)
        assert key not in seen, (seed.id, p.kind, seen.get(key))
        seen[key] = p.kind
    for seed in SEEDS.values():
        pairs = {p.kind: p for p in _build(seed)[0]}
        assert pairs["t1-easy-reject"].rejected.messages[-1].content != \
            pairs["t1-hard-reject"].rejected.messages[-1].content
    llm_text = "Sorry, booking flights is not something I can do."
    aug = RulesAugmenter()
    seed = SEEDS["flight-01"]
    fills = {d: aug.augment(seed, d) for d in ("easy", "hard")}
    pairs = {p.kind: p for p in build_pairs(seed, fills, ("easy", "hard"), load_templates("en"),
                                            llm_rejection=llm_text)[0]}
    assert pairs["t1-easy-reject"].rejected.messages[-1].content == llm_text
    assert pairs["t1-hard-reject"].rejected.messages[-1].content in load_templates("en").rejections
