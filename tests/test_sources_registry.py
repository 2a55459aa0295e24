"""The source registry: spec parsing, lookup errors, limits, reports, and the contract every training
loader keeps (meta provenance, valid conversations)."""

import logging
import os

import pytest

from jaxtool.data.schema import Conversation
from jaxtool.data.sources import SOURCES, load, parse_spec, resolve
from jaxtool.data.sources.base import LoadReport
from jaxtool.errors import DataError

FIX = os.path.join(os.path.dirname(__file__), "fixtures")

TRAINING = {
    "glaive": os.path.join(FIX, "glaive", "glaive_v2_sample.json"),
    "xlam": os.path.join(FIX, "xlam", "xlam_sample.json"),
    "toolace": os.path.join(FIX, "toolace", "toolace_sample.json"),
    "sgd": os.path.join(FIX, "sgd", "train"),
    "snips": os.path.join(FIX, "snips"),
    "conversations": os.path.join(FIX, "conversations", "conversations.jsonl"),
}


def test_registry_lists_every_source_by_module_path():
    import jaxtool.eval  # noqa: F401 - registers the benchmark readers, which live beside their evaluators

    assert set(SOURCES) == {"glaive", "xlam", "toolace", "sgd", "snips", "conversations", "hammer",
                            "bfcl", "functionchat", "apibank", "multiwoz"}
    for name in ("glaive", "xlam", "toolace", "sgd", "snips", "conversations", "hammer"):
        assert SOURCES[name] == f"jaxtool.data.sources.{name}:load"
    assert {n: SOURCES[n] for n in ("bfcl", "functionchat", "apibank", "multiwoz")} == {
        "bfcl": "jaxtool.eval.bfcl.data:load", "functionchat": "jaxtool.eval.functionchat_data:load",
        "apibank": "jaxtool.eval.apibank_data:load", "multiwoz": "jaxtool.eval.multiwoz_data:load"}


def test_a_registered_benchmark_source_loads_through_a_spec():
    import jaxtool.eval  # noqa: F401

    path = os.path.join(FIX, "functionchat_bench", "FunctionChat-CallDecision.jsonl")
    convs = list(load(f"functionchat:{path}"))
    assert len(convs) == 7 and {c.meta["source"] for c in convs} == {"functionchat"}


def test_register_adds_a_source_and_refuses_to_replace_one(monkeypatch):
    from jaxtool.data import sources

    monkeypatch.setattr(sources, "SOURCES", dict(SOURCES))
    sources.register("xlam_again", "jaxtool.data.sources.xlam:load")
    sources.register("xlam_again", "jaxtool.data.sources.xlam:load")  # the same target again: a no-op
    assert len(list(sources.load("xlam_again", TRAINING["xlam"], on_bad_row="skip"))) == 12
    with pytest.raises(ValueError, match="'glaive' is already registered as jaxtool.data.sources.glaive:load"):
        sources.register("glaive", "jaxtool.data.sources.xlam:load")
    for name, target in (("nocolon", "jaxtool.data.sources.xlam"), ("a:b", "m:f"), ("", "m:f"), ("x", ":f")):
        with pytest.raises(ValueError, match="expected a name without ':'"):
            sources.register(name, target)


@pytest.mark.parametrize("spec, expected", [
    ("glaive:/data/g.jsonl", ("glaive", "/data/g.jsonl")),
    ("glaive", ("glaive", None)),
    ("glaive:", ("glaive", None)),
    ("xlam:Salesforce/xlam-function-calling-60k", ("xlam", "Salesforce/xlam-function-calling-60k")),
    ("hammer:xlam:/data/x.json", ("hammer", "xlam:/data/x.json")),
    ("  sgd : data/sgd/train ", ("sgd", "data/sgd/train")),
])
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


def test_empty_spec_is_a_clear_error():
    with pytest.raises(DataError, match="non-empty string"):
        parse_spec("  ")


def test_unknown_source_lists_known_names_closest_first():
    with pytest.raises(DataError) as e:
        load("glaiv:some/path.json")
    msg = str(e.value)
    assert "unknown data source 'glaiv'" in msg
    listed = msg.split("known sources: ")[1].split(", ")
    assert listed[0] == "glaive"
    assert set(listed) == set(SOURCES)


def test_registered_but_absent_module_names_the_module(monkeypatch):
    monkeypatch.setitem(SOURCES, "nowhere", "jaxtool.data.sources.nowhere_at_all:load")
    with pytest.raises(DataError, match="jaxtool.data.sources.nowhere_at_all is not present"):
        resolve("nowhere")


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_every_training_loader_keeps_the_contract(name):
    convs = list(load(name, TRAINING[name], on_bad_row="skip"))
    assert convs
    for c in convs:
        assert isinstance(c, Conversation)
        assert c.meta["source"] == name
        assert "row" in c.meta and "id" in c.meta
        c.validate()
        # jaxtool's own serialised form reads back to the same thing
        back = Conversation.from_dict(c.to_dict())
        assert back.to_dict() == c.to_dict()
        if name != "conversations":  # these loaders number every call, so nothing is filled in on the way
            assert back.messages == c.messages and back.tools == c.tools


def test_spec_and_name_path_forms_agree():
    a = list(load(f"xlam:{TRAINING['xlam']}", on_bad_row="skip"))
    b = list(load("xlam", TRAINING["xlam"], on_bad_row="skip"))
    assert a == b


def test_limit_counts_conversations_not_rows():
    # rows 12-14 of the xLAM fixture are bad; with skip, limit=12 still yields the 12 good ones
    assert len(list(load("xlam", TRAINING["xlam"], on_bad_row="skip", limit=12))) == 12
    assert [c.meta["row"] for c in load("xlam", TRAINING["xlam"], limit=3)] == [0, 1, 2]
    assert list(load("xlam", TRAINING["xlam"], limit=0)) == []


def test_passed_report_collects_counts_and_own_report_logs_summary(caplog):
    report = LoadReport("xlam", on_bad_row="skip")
    kept = list(load("xlam", TRAINING["xlam"], report=report))
    assert (report.rows, report.kept, report.bad_rows) == (15, 12, 3) and len(kept) == 12
    with caplog.at_level(logging.WARNING, logger="jaxtool.data.sources"):
        list(load("xlam", TRAINING["xlam"], on_bad_row="skip"))
    assert any("xlam: 15 rows read, 12 kept, 3 skipped" in r.getMessage() for r in caplog.records)


def test_bad_policy_name_is_rejected():
    with pytest.raises(DataError, match="on_bad_row must be one of"):
        load("xlam", TRAINING["xlam"], on_bad_row="ignore")


def test_missing_local_file_is_a_clear_error():
    with pytest.raises(DataError, match="no such file or directory"):
        list(load("glaive:/nonexistent/dir/glaive.json"))
