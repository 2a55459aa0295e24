"""FunctionChat-Bench loader on real slices of the v2.0.0 files (tests/fixtures/functionchat_bench)."""

import collections
import json
import os

import pytest

from jaxtool.data.sources.base import LoadReport
from jaxtool.errors import DataError
from jaxtool.eval import functionchat_data as fc

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "functionchat_bench")
SINGLE = os.path.join(FIX, "FunctionChat-Singlecall.jsonl")
DECISION = os.path.join(FIX, "FunctionChat-CallDecision.jsonl")
DIALOG = os.path.join(FIX, "dialog_layout_handmade.jsonl")
SYSTEM = open(os.path.join(FIX, "system_prompt.txt"), encoding="utf-8").read().strip()


def test_singlecall_expands_queries_times_tool_sets_in_functionchat_order():
    items = list(fc.load(SINGLE))
    assert len(items) == 2 * 4 * 5
    # queries outer, tool sets inner (FunctionChat's payload creator)
    assert [(c.meta["serial_num"], c.meta["tools_type"]) for c in items[:6]] == [
        (1, "exact"), (1, "4_random"), (1, "4_close"), (1, "8_random"), (1, "8_close"), (2, "exact")]
    assert collections.Counter(c.meta["tools_type"] for c in items) == {t: 8 for t in fc.TOOLS_TYPES}
    assert {len(c.tools) for c in items if c.meta["tools_type"] == "8_close"} == {8}
    assert all(c.messages[-1].meta["type_of_output"] == "call" for c in items)
    assert all(c.meta["eval_turns"] == [len(c.messages) - 1] for c in items)


def test_singlecall_gold_call_and_acceptable_arguments():
    items = [c for c in fc.load(SINGLE) if c.meta["serial_num"] == 14 and c.meta["tools_type"] == "exact"]
    (conv,) = items
    gold = conv.messages[-1].tool_calls[0]
    assert gold.name == "getCurrentTimeForLocation" and dict(gold.arguments) == {"location": "스위스 취리히"}
    assert conv.meta["acceptable_arguments"] == {"location": ["취리히", "Zurich", "취리히, 스위스", "Zurich, Switzerland"]}
    assert conv.messages[1].content == "지금 스위스 취리히의 시각이 궁금합니다."
    # a single acceptable value becomes a one-element list
    (c13,) = [c for c in fc.load(SINGLE) if c.meta["serial_num"] == 13 and c.meta["tools_type"] == "exact"]
    assert c13.meta["acceptable_arguments"] == {"location": ["Jakarta"]}


def test_system_prompt_auto_explicit_and_off():
    auto = next(iter(fc.load(SINGLE)))
    assert auto.messages[0].role == "system" and auto.messages[0].content == SYSTEM
    off = next(iter(fc.load(SINGLE, system_prompt="")))
    assert [m.role for m in off.messages] == ["user", "assistant"]
    text = next(iter(fc.load(SINGLE, system_prompt="Be helpful.")))
    assert text.messages[0].content == "Be helpful."


def test_tools_type_filter():
    items = list(fc.load(SINGLE, tools_type="4_close"))
    assert len(items) == 8 and {c.meta["tools_type"] for c in items} == {"4_close"}
    with pytest.raises(DataError, match="tools_type"):
        list(fc.load(SINGLE, tools_type="5_close"))


def test_calldecision_categories_types_and_acceptable():
    items = list(fc.load(DECISION))
    assert [(c.meta["serial_num"], c.meta["category"], c.messages[-1].meta["type_of_output"]) for c in items] == [
        (1, "CALL", "call"), (4, "CALL", "call"), (5, "CALL", "call"), (101, "REJECT", "relevance"),
        (201, "SLOT-all", "slot"), (301, "SLOT-some", "slot"), (361, "SLOT-some", "slot")]
    first = items[0]
    assert first.meta["acceptable_arguments"] == {"stock_name": ["Microsoft", "MSFT(Microsoft Corporation)"]}
    assert first.messages[-1].tool_calls[0].arguments == {"stock_name": "마이크로소프트"}
    only_gt = items[2]
    assert only_gt.meta["acceptable_arguments_raw"] == "Only ground truth is allowed."
    assert only_gt.meta["acceptable_arguments"] == {}
    # CallDecision brings its own system prompt; the loader does not add another
    assert all(sum(m.role == "system" for m in c.messages) == 1 for c in items)
    assert items[5].messages[-1].content == "도착 위치를 알려주세요."
    assert [m.role for m in items[6].messages] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]


def test_dialog_layout_one_item_per_turn_with_history():
    items = list(fc.load(DIALOG, system_prompt=""))
    assert [c.messages[-1].meta["type_of_output"] for c in items] == ["slot", "call", "completion", "relevance"]
    completion = items[2]
    assert [m.role for m in completion.messages] == ["user", "assistant", "user", "assistant", "tool", "assistant"]
    assert completion.messages[4].name == "book_taxi"
    assert items[1].meta["acceptable_arguments"] == {"destination": ["museum", "the city museum"]}
    assert items[1].meta["dialog_num"] == 1 and items[1].meta["turn_num"] == 2


def test_limit_counts_items_not_lines():
    assert len(list(fc.load(SINGLE, limit=7))) == 7


def test_bad_rows_name_row_and_field_or_are_counted(tmp_path):
    rows = [json.loads(line) for line in open(DECISION, encoding="utf-8")][:3]
    rows[1]["type_of_output"] = "answer"
    del rows[2]["input_tools"]
    p = tmp_path / "cd.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\nnot json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 1: field 'type_of_output': bad type_of_output"):
        list(fc.load(str(p)))
    report = LoadReport(str(p), "skip")
    kept = list(fc.load(str(p), on_bad_row="skip", report=report))
    assert len(kept) == 1 and report.bad_rows == 3
    assert report.skipped == {"bad type_of_output": 1, "missing field": 1, "invalid json": 1}


def test_unknown_layout_is_a_clear_error(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"question": "hi"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="unknown layout"):
        list(fc.load(str(p)))


def test_parse_acceptable_forms():
    assert fc.parse_acceptable(None) == {}
    assert fc.parse_acceptable("Only ground truth is allowed.") == {}
    assert fc.parse_acceptable('{"a": "x", "b": [1, 2]}') == {"a": ["x"], "b": [1, 2]}
    assert fc.parse_acceptable(json.dumps('{"a": "x"}')) == {"a": ["x"]}
    assert fc.parse_acceptable({"a": 170.0}) == {"a": [170.0]}
