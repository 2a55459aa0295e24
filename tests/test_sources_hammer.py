"""Hammer function masking: consistency within a conversation, determinism, the published rules."""

import keyword
import os
import random
import string

import pytest

from jaxtool.data.calls import render_pythonic
from jaxtool.data.schema import Conversation, Message, Tool, ToolCall
from jaxtool.data.sources import load
from jaxtool.data.sources.base import LoadReport
from jaxtool.data.sources.hammer import conversation_rng, hammer_mask, maybe_mask
from jaxtool.errors import ConfigError, DataError

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
XLAM = "xlam:" + os.path.join(FIX, "xlam", "xlam_sample.json")
GLAIVE = "glaive:" + os.path.join(FIX, "glaive", "glaive_v2_sample.json")
# The alphabet of MadeAgents/Hammer train/data_processing.py: upper, lower, "_", ".", digits.
ALPHABET = set(string.ascii_uppercase + string.ascii_lowercase + "_." + string.digits)


def _unmask(c: Conversation) -> Conversation:
    """Undo a masking with the renames recorded in meta["hammer"] (defaults are left as masked)."""
    info = c.meta["hammer"]
    inv_f = {new: old for old, new in info["functions"].items()}
    inv_p = {old_tool: {new: old for old, new in m.items()} for old_tool, m in info["parameters"].items()}
    tools = []
    for t in c.tools:
        old = inv_f.get(t.name, t.name)
        pm = inv_p.get(old, {})
        params = dict(t.parameters)
        params["properties"] = {pm.get(k, k): v for k, v in t.properties.items()}
        if "required" in params:
            params["required"] = [pm.get(r, r) for r in t.required]
        tools.append(Tool(old, t.description, params))
    msgs = []
    for m in c.messages:
        calls = tuple(ToolCall(inv_f.get(tc.name, tc.name),
                               {inv_p.get(inv_f.get(tc.name, tc.name), {}).get(k, k): v for k, v in tc.arguments.items()},
                               id=tc.id) for tc in m.tool_calls)
        msgs.append(Message(m.role, m.content, calls, inv_f.get(m.name, m.name) if m.name else None, m.tool_call_id, m.meta))
    return Conversation(tuple(msgs), tuple(tools), c.meta)


@pytest.mark.parametrize("spec", [XLAM, GLAIVE])
def test_masking_is_consistent_and_reversible(spec):
    originals = {c.meta["row"]: c for c in load(spec, on_bad_row="skip")}
    masked = list(load("hammer", spec, on_bad_row="skip", seed=3, mask_prob=1.0, defaults=False))
    assert len(masked) == len(originals)
    for c in masked:
        c.validate()  # every call names a listed tool, tool results follow their calls
        orig = originals[c.meta["row"]]
        assert c.meta["source"] == "hammer" and c.meta["inner_source"] == spec.split(":")[0]
        assert c.meta["hammer"]["masked"] is True
        for t in c.tools:
            assert set(t.required) <= set(t.properties)
        for m in c.messages:
            for tc in m.tool_calls:
                assert set(tc.arguments) <= set(c.tool(tc.name).properties)
        back = _unmask(c)
        assert back.messages == orig.messages
        assert sorted(back.tools, key=lambda t: t.name) == sorted(orig.tools, key=lambda t: t.name)


def test_names_follow_the_hammer_lengths_and_alphabet():
    for c in load("hammer", XLAM, on_bad_row="skip", mask_prob=1.0):
        for old, new in c.meta["hammer"]["functions"].items():
            assert 5 <= len(new) <= 15 and set(new) <= ALPHABET and new != old
        for params in c.meta["hammer"]["parameters"].values():
            for old, new in params.items():
                assert 4 <= len(new) <= 10 and set(new) <= ALPHABET


def test_descriptions_are_kept():
    originals = {c.meta["row"]: c for c in load(XLAM, on_bad_row="skip")}
    for c in load("hammer", XLAM, on_bad_row="skip", mask_prob=1.0, defaults=False):
        orig = originals[c.meta["row"]]
        assert sorted(t.description for t in c.tools) == sorted(t.description for t in orig.tools)
        assert sorted(p.get("description") for t in c.tools for p in t.properties.values()) == \
            sorted(p.get("description") for t in orig.tools for p in t.properties.values())


def test_deterministic_per_seed_and_independent_of_limit():
    a = list(load("hammer", XLAM, on_bad_row="skip", seed=7))
    b = list(load("hammer", XLAM, on_bad_row="skip", seed=7))
    c = list(load("hammer", XLAM, on_bad_row="skip", seed=8))
    assert a == b
    assert a != c
    assert list(load("hammer", XLAM, on_bad_row="skip", seed=7, limit=4)) == a[:4]


def test_mask_probability():
    convs = [Conversation((Message("user", f"q{i}"), Message("assistant", None, (ToolCall("f", {"x": 1}),))),
                          (Tool("f", "F.", {"type": "object", "properties": {"x": {"type": "integer"}}}),),
                          {"source": "synthetic", "row": i}) for i in range(600)]
    masked = [maybe_mask(c, conversation_rng(0, c)) for c in convs]
    frac = sum(m.meta["hammer"]["masked"] for m in masked) / len(masked)
    assert 0.60 < frac < 0.73  # 2/3 by default, as in the Hammer script
    assert not any(maybe_mask(c, conversation_rng(0, c), mask_prob=0.0).meta["hammer"]["masked"] for c in convs[:50])
    unmasked = maybe_mask(convs[0], conversation_rng(0, convs[0]), mask_prob=0.0)
    assert unmasked.messages == convs[0].messages and unmasked.tools == convs[0].tools


def _dice_conversation():
    tool = Tool("roll_dice", "Probability of a sum with dice.", {
        "type": "object", "required": ["target"],
        "properties": {"target": {"type": "integer", "description": "Target sum. Defaults to 6.", "default": 6},
                       "num_dice": {"type": "integer", "description": "Number of dice. Defaults to 2.", "default": 2},
                       "unit": {"type": "string", "description": "Unit, 'pct' by default.", "default": "pct"},
                       "exact": {"type": "boolean", "description": "Exact. Defaults to True.", "default": True}}})
    call = ToolCall("roll_dice", {"target": 10, "num_dice": 2, "unit": "pct", "exact": True}, id="call_0")
    return Conversation((Message("user", "Chance of 10 with 2 dice, in PCT please"),
                         Message("assistant", None, (call,))), (tool,), {"source": "t", "row": 0})


def test_default_values_are_replaced_where_a_call_uses_them():
    c = hammer_mask(_dice_conversation(), random.Random(5), names=False, parameters=False)
    t = c.tools[0]
    props = t.properties
    new_dice = props["num_dice"]["default"]
    assert isinstance(new_dice, int) and 3 <= new_dice <= 6  # 2 + U{1..4}
    assert props["num_dice"]["description"] == f"Number of dice. Defaults to {new_dice}."
    new_unit = props["unit"]["default"]
    assert len(new_unit) == 5 and set(new_unit) <= ALPHABET
    assert props["unit"]["description"] == f"Unit, '{new_unit}' by default."
    # target's default (6) is not what the call passes (10); booleans are left alone
    assert props["target"]["default"] == 6 and props["exact"]["default"] is True
    assert dict(c.messages[1].tool_calls[0].arguments) == {"target": 10, "num_dice": new_dice, "unit": new_unit,
                                                           "exact": True}
    # the old values are replaced in the user text: "2" as is, "pct" in UPPER case
    assert c.messages[0].content == f"Chance of 10 with {new_dice} dice, in {new_unit.upper()} please"
    assert sorted(map(tuple, c.meta["hammer"]["defaults"])) == [("roll_dice", "num_dice", 2, new_dice),
                                                                ("roll_dice", "unit", "pct", new_unit)]


def test_identifier_charset_gives_pythonic_renderable_names():
    for c in load("hammer", XLAM, on_bad_row="skip", mask_prob=1.0, charset="identifier"):
        for t in c.tools:
            assert t.name.isidentifier() and not keyword.iskeyword(t.name)
            assert all(p.isidentifier() for p in t.properties)
        for m in c.messages:
            if m.tool_calls:
                render_pythonic(m.tool_calls)  # raises ValueError for names Python cannot spell


def test_tool_order_is_shuffled_but_can_be_kept():
    base = _dice_conversation()
    two = base.replace(tools=base.tools + tuple(Tool(f"extra_{i}", "E.") for i in range(6)))
    orders = {tuple(t.description for t in hammer_mask(two, random.Random(s)).tools) for s in range(5)}
    assert len(orders) > 1
    kept = hammer_mask(two, random.Random(0), shuffle_tools=False)
    assert [t.description for t in kept.tools] == [t.description for t in two.tools]


def test_bad_rows_of_the_inner_source_follow_the_policy():
    report = LoadReport("hammer/xlam", on_bad_row="skip")
    assert len(list(load("hammer", XLAM, report=report))) == 12
    assert dict(report.skipped) == {"invalid json": 1, "call to unknown tool": 1, "missing field": 1}
    with pytest.raises(DataError, match=r"^hammer/xlam, row 12: field 'answers': invalid json"):
        list(load("hammer", XLAM))


@pytest.mark.parametrize("spec, kw, match", [
    ("hammer", {}, "wraps another one"),
    ("hammer:hammer:x", {}, "cannot wrap itself"),
    ("hammer:" + XLAM, {"mask_prob": 1.5}, "mask_prob"),
    ("hammer:" + XLAM, {"charset": "emoji"}, "charset"),
])
def test_configuration_errors(spec, kw, match):
    with pytest.raises(ConfigError, match=match):
        list(load(spec, **kw))


def test_masking_does_not_depend_on_the_process_hash_seed():
    import subprocess
    import sys
    code = ("from jaxtool.data.sources import load; "
            f"print([t.name for c in load('hammer', {XLAM!r}, on_bad_row='skip', seed=1) for t in c.tools])")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outs = {subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": s}).stdout for s in ("1", "2")}
    assert len(outs) == 1
    assert outs.pop().strip() == str([t.name for c in load("hammer", XLAM, on_bad_row="skip", seed=1) for t in c.tools])
