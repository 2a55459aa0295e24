"""API-Bank loader on real level-3 slices (tests/fixtures/api_bank)."""

import json
import os

import pytest

from jaxtool.data.sources.base import LoadReport
from jaxtool.errors import DataError
from jaxtool.eval import apibank_data as apibank

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "api_bank")
API = os.path.join(FIX, "lv3-api-train-slice.json")
RESP = os.path.join(FIX, "lv3-response-train-slice.json")


def test_level3_api_and_response_items():
    items = list(apibank.load_items(API))
    assert len(items) == 17 and {i.kind for i in items} == {"api"}
    assert items[0].expected == "API-Request: [ToolSearcher(keywords='healthcare provider appointment availability checker')]"
    assert items[0].input.startswith('{"apiCode": "ToolSearcher"')
    resp = list(apibank.load_items(RESP))
    assert len(resp) == 8 and {i.kind for i in resp} == {"response"}
    assert resp[1].expected.startswith("AI: The total cost for booking a wellness retreat")


def test_test_file_layout_with_expected_output(tmp_path):
    rec = {"file": "Calculator-level-1-1.jsonl", "id": 1, "instruction": "Generate a response...",
           "input": "User: Can you calculate (5+6)*3 for me?\nAPI-Request: [Calculator(formula='(5+6)*3')]->33.0\n"
                    "Generate AI Response:\n",
           "expected_output": "The result is 33."}
    p = tmp_path / "level-1-response.json"
    p.write_text(json.dumps([rec, dict(rec, id=0, expected_output="API-Request: [Calculator(formula='(5+6)*3')]")]))
    a, b = apibank.load_items(str(p))
    assert (a.file, a.id, a.kind, b.kind) == ("Calculator-level-1-1.jsonl", 1, "response", "api")


def test_registry_conversation_form():
    conv = next(iter(apibank.load(API)))
    assert [m.role for m in conv.messages] == ["system", "user", "assistant"]
    assert conv.meta["kind"] == "api" and conv.meta["source"] == "apibank"


def test_bad_rows(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps([{"instruction": "i", "input": "x"}, {"instruction": "i", "input": 3, "output": "o"},
                             {"instruction": "i", "input": "x", "output": "AI: fine"}]))
    with pytest.raises(DataError, match=r"row 0: field 'expected_output': missing field"):
        list(apibank.load_items(str(p)))
    report = LoadReport(str(p), "skip")
    assert len(list(apibank.load_items(str(p), on_bad_row="skip", report=report))) == 1
    assert report.skipped == {"missing field": 1, "wrong field type": 1}
