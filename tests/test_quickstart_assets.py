"""The bundled quickstart dialogues (`jaxtool/assets/quickstart/dialogues.jsonl`).

`jaxtool quickstart` SFTs on these dialogues, builds DiaTool-DPO pairs from them with the `rules`
augmenter and evaluates on held-out ones, so every row must be a clean Type 1 seed: the file loads
and validates in jaxtool's schema, every call matches its tool's JSON schema, every required value
is written literally (once) in the first user turn where the augmenter's own value locator finds
it, and a build over the file yields every pair kind of Table 1. The expected counts below are
worked out by hand from the required-argument histogram and the Table 1 rules (see
`jaxtool.diatool.pairs`), not read back from the builder.
"""

import collections
import importlib.resources
import json
import re

import pytest

from jaxtool.data.schema import Conversation
from jaxtool.diatool import (PAIR_KINDS, NoAugmentation, RulesAugmenter, SplitGuard, bfcl_data_dir,
                             bfcl_queries, build, collect_seeds, find_spans, mentions_any,
                             value_variants)

ASSET = importlib.resources.files("jaxtool") / "assets/quickstart/dialogues.jsonl"
NOTE = importlib.resources.files("jaxtool") / "assets/quickstart/NOTE.md"
ID = re.compile(r"^([a-z]+)-(\d{2})$")
JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
# required-argument count -> dialogues (also stated in NOTE.md)
HISTOGRAM = {1: 22, 2: 21, 3: 14, 4: 7}


def _rows() -> list[dict]:
    rows = []
    with ASSET.open("r", encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            assert line.strip(), f"dialogues.jsonl line {i} is blank"
            rows.append(json.loads(line))
    return rows


ROWS = _rows()
CONVS = [Conversation.from_dict(r, where=f"dialogues.jsonl line {i}") for i, r in enumerate(ROWS, 1)]
IDS = [c.meta["id"] for c in CONVS]


def _call(conv):
    return conv.messages[1].tool_calls[0]


def _seeds():
    return collect_seeds(zip(IDS, CONVS))


# ------------------------------------------------------------------------------------------
# the file and its rows
# ------------------------------------------------------------------------------------------

def test_file_is_packaged_next_to_its_note():
    assert ASSET.is_file() and NOTE.is_file()
    note = NOTE.read_text(encoding="utf-8")
    assert "64" in note and "hand-written" in note.lower()


def test_64_dialogues_16_domains_4_each_unique_ids():
    assert len(ROWS) == 64
    assert len(set(IDS)) == len(IDS)
    by_domain = collections.defaultdict(list)
    for sid in IDS:
        m = ID.match(sid)
        assert m, f"id {sid!r} is not <domain>-<nn>"
        by_domain[m.group(1)].append(m.group(2))
    assert len(by_domain) == 16
    assert all(sorted(nums) == ["01", "02", "03", "04"] for nums in by_domain.values()), by_domain


def test_rows_round_trip_in_the_schema_layout():
    # Conversation.from_dict validated every row at import; the stored layout is exactly to_dict()'s
    for row, conv in zip(ROWS, CONVS):
        assert conv.to_dict() == row, conv.meta["id"]
        assert set(row) == {"messages", "tools", "meta"}


def test_every_row_is_user_call_result_completion():
    for conv in CONVS:
        sid = conv.meta["id"]
        assert [m.role for m in conv.messages] == ["user", "assistant", "tool", "assistant"], sid
        user, call_msg, result, completion = conv.messages
        assert call_msg.content is None and len(call_msg.tool_calls) == 1, sid
        call = call_msg.tool_calls[0]
        assert result.name == call.name and result.tool_call_id == call.id == "call_1", sid
        payload = json.loads(result.content)
        assert isinstance(payload, dict) and payload, sid
        assert completion.content and not completion.tool_calls, sid
        # the completion answers from the result: it repeats at least one concrete value of it
        assert mentions_any(completion.content, payload), f"{sid}: completion repeats no value of the result"
        words = sum(len(m.content.split()) for m in (user, completion))
        assert words <= 120, f"{sid}: {words} words of message text"


# ------------------------------------------------------------------------------------------
# tools and calls
# ------------------------------------------------------------------------------------------

def test_tool_schemas_are_complete_and_consistent_across_dialogues():
    seen: dict[str, dict] = {}
    types_used, enums = set(), 0
    for row, conv in zip(ROWS, CONVS):
        sid = conv.meta["id"]
        assert 2 <= len(conv.tools) <= 3, sid
        for raw, tool in zip(row["tools"], conv.tools):
            assert raw["type"] == "function" and set(raw["function"]) == {"name", "description", "parameters"}, sid
            assert tool.description.strip().endswith(".") and tool.description.count(". ") == 0, \
                f"{sid}: {tool.name} description is not one sentence"
            params = tool.parameters
            assert params["type"] == "object" and set(tool.required) <= set(tool.properties), (sid, tool.name)
            for pname, prop in tool.properties.items():
                assert prop.get("description", "").strip(), f"{sid}: {tool.name}.{pname} has no description"
                assert prop.get("type") in JSON_TYPES, f"{sid}: {tool.name}.{pname} type {prop.get('type')!r}"
                types_used.add(prop["type"])
                if "enum" in prop:
                    enums += 1
                    assert all(isinstance(v, JSON_TYPES[prop["type"]]) for v in prop["enum"]), (sid, pname)
            # a tool name means the same schema in every dialogue that lists it
            assert seen.setdefault(tool.name, raw) == raw, f"{sid}: {tool.name} differs from an earlier row"
    assert types_used == set(JSON_TYPES) and enums > 0


def test_distractor_tools_come_from_other_domains():
    called_by_domain = collections.defaultdict(set)
    for conv in CONVS:
        called_by_domain[ID.match(conv.meta["id"]).group(1)].add(_call(conv).name)
    for conv in CONVS:
        domain = ID.match(conv.meta["id"]).group(1)
        distractors = {t.name for t in conv.tools} - {_call(conv).name}
        assert distractors and not distractors & called_by_domain[domain], conv.meta["id"]


def _type_ok(value, schema_type: str) -> bool:
    if schema_type in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, JSON_TYPES[schema_type])


def test_calls_match_their_tool_schema():
    for conv in CONVS:
        sid, call = conv.meta["id"], _call(conv)
        tool = conv.tool(call.name)
        props = tool.properties
        assert set(call.arguments) <= set(props), f"{sid}: unknown argument(s) {set(call.arguments) - set(props)}"
        assert set(tool.required) <= set(call.arguments), sid
        for name, value in call.arguments.items():
            assert _type_ok(value, props[name]["type"]), f"{sid}: {name}={value!r} is not {props[name]['type']}"
            if "enum" in props[name]:
                assert value in props[name]["enum"], f"{sid}: {name}={value!r} not in {props[name]['enum']}"


def test_required_values_appear_literally_once_in_the_first_user_turn():
    """What the rules augmenter will find: `find_spans` locates each required value exactly once,
    and the text there is one of the value's own spellings, same case (numbers as digits)."""
    for conv in CONVS:
        sid, call = conv.meta["id"], _call(conv)
        query = conv.messages[0].content
        for name in conv.tool(call.name).required:
            value = call.arguments[name]
            assert value_variants(value), f"{sid}: required {name}={value!r} cannot be located in text"
            spans = find_spans(query, value)
            assert len(spans) == 1, f"{sid}: required {name}={value!r} found {len(spans)} times in {query!r}"
            assert spans[0][2] in value_variants(value), f"{sid}: {name} written as {spans[0][2]!r}, not {value!r}"
        # optional arguments appear only because the user said them (booleans cannot be located)
        for name in set(call.arguments) - set(conv.tool(call.name).required):
            value = call.arguments[name]
            if value_variants(value):
                assert find_spans(query, value), f"{sid}: optional {name}={value!r} not said by the user"


def test_required_argument_histogram():
    counts = collections.Counter(len(conv.tool(_call(conv).name).required) for conv in CONVS)
    assert dict(counts) == HISTOGRAM


# ------------------------------------------------------------------------------------------
# the DiaTool-DPO builder
# ------------------------------------------------------------------------------------------

def test_every_row_is_a_seed():
    seeds, report = _seeds()
    assert report.read == 64 and report.kept == 64 and report.truncated == 0 and not report.skipped, str(report)
    assert [s.id for s in seeds] == IDS
    assert dict(report.by_required) == HISTOGRAM


def test_no_first_turn_is_a_bfcl_test_query():
    data_dir = bfcl_data_dir()
    if data_dir is None:
        pytest.skip("bfcl_eval is not installed, so there is no BFCL data to check against")
    guard = SplitGuard()
    assert guard.add_queries(bfcl_queries(data_dir), "BFCL") > 1000
    seeds, report = collect_seeds(zip(IDS, CONVS), guard=guard)
    assert report.kept == 64, str(report)


def test_rules_augmenter_succeeds_on_every_seed():
    aug = RulesAugmenter()
    for seed in _seeds()[0]:
        easy = aug.augment(seed, "easy")
        assert 1 <= len(easy.missing) <= len(seed.required)
        if len(seed.required) >= 2:
            hard = aug.augment(seed, "hard")
            assert list(hard.missing) == seed.required and len(hard.steps) == len(seed.required)
            for name in seed.required:
                assert not find_spans(hard.query, seed.arguments[name]), (seed.id, name)
        else:
            with pytest.raises(NoAugmentation, match="hard needs >= 2 required fields"):
                aug.augment(seed, "hard")


def test_rules_build_gives_every_pair_kind(tmp_path):
    """Per seed with N required fields (Table 1; M is drawn from 2..N-1):
    easy: 4 pairs for every N >= 1 (t1 overask, t1 reject, t2 hallucinate, t2 reject; no Type 3 in
    Easy, DiaTool-DPO §4.3 / Table 1, so the t3-easy-call extra is 0);
    hard: N = 1 only t1-hard-reject (no all-missing dialogue); N = 2 six pairs (no M-kinds);
    N >= 3 all eight hard kinds. With 22 / 21 / 21 seeds: 256 easy, 22 + 126 + 168 = 316 hard."""
    seeds, _ = _seeds()
    stats = build(seeds, RulesAugmenter(), str(tmp_path))
    n1, n2, n3 = HISTOGRAM[1], HISTOGRAM[2], HISTOGRAM[3] + HISTOGRAM[4]
    expected = {
        "t1-easy-overask": 64, "t1-easy-reject": 64, "t2-easy-hallucinate": 64, "t2-easy-reject": 64,
        "t3-easy-call": 0, "t1-hard-reject": 64,
        "t1-hard-overask-n": n2 + n3, "t2-hard-hallucinate": n2 + n3, "t2-hard-reject": n2 + n3,
        "t3-hard-call": n2 + n3, "t3-hard-slotfill-call": n2 + n3,
        "t1-hard-overask-m": n3, "t2-hard-partial": n3,
    }
    assert set(expected) == {k.id for k in PAIR_KINDS}  # every Table 1 kind is produced, none is missing
    assert {k.id: stats.kind_count(k.id) for k in PAIR_KINDS} == expected
    assert sum(expected.values()) == 572
    # the only pairs not built are the ones the tool schemas rule out
    not_built = {k: dict(c) for k, c in stats.unavailable.items()}
    hard_n1 = {"no hard Type 2 dialogue: hard needs >= 2 required fields": n1}
    assert not_built == {
        "t1-hard-overask-n": hard_n1, "t2-hard-hallucinate": hard_n1, "t2-hard-reject": hard_n1,
        "t3-hard-call": hard_n1, "t3-hard-slotfill-call": hard_n1,
        "t1-hard-overask-m": {**hard_n1, "needs >= 3 required fields (N > M > 1)": n2},
        "t2-hard-partial": {**hard_n1, "needs >= 3 required fields (N > M > 1)": n2},
    }
    # the 95/5 split is by seed: round(0.05 * 64) = 3 validation seeds
    assert dict(stats.split_seeds) == {"train": 61, "valid": 3}
    valid = [json.loads(line) for line in (tmp_path / "valid.jsonl").read_text(encoding="utf-8").splitlines()]
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(train) + len(valid) == 572
    assert not {r["seed_id"] for r in train} & {r["seed_id"] for r in valid}
    assert len({r["seed_id"] for r in valid}) == 3


# ------------------------------------------------------------------------------------------
# `jaxtool quickstart`: its settings file, the validation split that chose them, the intervals
# ------------------------------------------------------------------------------------------

REPO = __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__)))


def test_quickstart_yaml_is_the_commands_built_in_defaults():
    """`jaxtool quickstart` reads configs/quickstart.yaml from a checkout and its built-in defaults
    when installed elsewhere: they must be the same recipe."""
    import os

    from jaxtool.commands.quickstart import QuickstartConfig, default_config_path
    from jaxtool.config import load_config, to_dict

    path = os.path.join(REPO, "configs", "quickstart.yaml")
    assert default_config_path() == path
    assert to_dict(load_config(path, [], cls=QuickstartConfig)) == to_dict(load_config(None, [], cls=QuickstartConfig))


def _ids_in(path) -> set:
    text = path.read_text(encoding="utf-8")
    return {i for i in IDS if f'"{i}' in text}


def test_select_validation_never_reads_the_heldout_dialogues(tmp_path):
    """`--select` carves its validation dialogues out of the training dialogues; the held-out ones of
    the quickstart's table (3 of 64, fixed by the hashed split, seed 0) appear in no file it trains
    or evaluates on."""
    from jaxtool.commands.quickstart import QuickstartConfig, prepare_data
    from jaxtool.config import load_config

    qc = load_config(None, [], cls=QuickstartConfig)
    plain = prepare_data(qc, str(tmp_path / "plain"))
    heldout = {"flights-01", "flights-03", "movies-04"}   # docs/results/quickstart.md names them
    assert set(plain["heldout_ids"]) == heldout
    val = prepare_data(qc, str(tmp_path / "val"), validation_fraction=0.07)
    assert set(val["set_aside_ids"]) == heldout
    assert len(val["heldout_ids"]) == round(0.07 * 61) == 4      # validation: 4 of the 61 training dialogues
    assert not set(val["heldout_ids"]) & heldout and set(val["heldout_ids"]) <= set(plain["train_ids"])
    files = [p for p in (tmp_path / "val").rglob("*.jsonl")]
    assert len(files) >= 5
    for p in files:
        assert not _ids_in(p) & heldout, p
    flows = [json.loads(ln) for ln in (tmp_path / "val" / "pairs" / "valid_flows.jsonl").read_text().splitlines()]
    assert {f["meta"]["seed_id"] for f in flows} == set(val["heldout_ids"])
    assert {f["meta"]["type"] for f in flows} == {1, 2, 3}      # call, ask and decline flows to select on
    train_side = _ids_in(tmp_path / "val" / "sft.jsonl") | _ids_in(tmp_path / "val" / "dpo_train.jsonl")
    assert not train_side & set(val["heldout_ids"])


def test_select_spec_is_checked_before_any_model_loads(tmp_path):
    from jaxtool.commands.quickstart import read_select_spec
    from jaxtool.errors import ConfigError

    spec = read_select_spec(f"{REPO}/configs/quickstart_select.yaml")
    assert spec.criterion in ("macro", "micro") and len(spec.candidates) >= 2
    bad = {"unknown key": "candidates: {a: [sft.bogus=1]}",
           "sets 'heldout_fraction'": "candidates: {a: [heldout_fraction=0.5]}",
           "criterion must be one of": "criterion: best\ncandidates: {a: []}",
           "validation_fraction must be": "validation_fraction: 0.9\ncandidates: {a: []}",
           "expected the keys": "candidate: {a: []}"}
    for i, (msg, text) in enumerate(bad.items()):
        p = tmp_path / f"s{i}.yaml"
        p.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            read_select_spec(str(p))


def test_eval_batches_are_equal_and_intervals_resample_dialogues():
    from jaxtool.commands.quickstart import balanced_batch, table, with_intervals

    assert [balanced_batch(n, 13) for n in (22, 26, 27, 42, 5)] == [11, 13, 9, 11, 5]
    import tempfile
    import os

    # two dialogues: d1 has 2 call turns (both passed by "a", none by "b"), d2 one slot turn passed by both
    flows = [{"meta": {"seed_id": "d1"}}, {"meta": {"seed_id": "d2"}}]
    rec = lambda conv, t, ok: {"conv": conv, "turn_type": t, "passed": ok}  # noqa: E731
    evals = {"a": {"records": [rec(0, "call", True), rec(0, "call", True), rec(1, "slot", True)],
                   "summary": {"call_exact_match": 1.0}},
             "b": {"records": [rec(0, "call", False), rec(0, "call", False), rec(1, "slot", True)],
                   "summary": {"call_exact_match": 0.0}}}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "flows.jsonl")
        with open(path, "w") as fh:
            fh.write("\n".join(json.dumps(f) for f in flows) + "\n")
        st = with_intervals(evals, path, seed=0, baselines=("a",), n_boot=400)
    assert st["n_units"] == 2 and st["n_by_type"]["call"] == 2 and st["n_by_type"]["slot"] == 1
    b = st["arms"]["b"]
    assert b["micro"]["value"] == pytest.approx(1 / 3)
    # resampling dialogues, b's micro is 0 (d1 twice), 1/3 (both) or 1 (d2 twice): never 0.5 or 2/3
    assert (b["micro"]["lo"], b["micro"]["hi"]) == (0.0, 1.0)
    assert st["differences"]["b - a"]["micro"]["value"] == pytest.approx(-2 / 3)
    header, rows = table(evals, st)
    assert header == ["held-out assistant turns", "a", "b"]
    assert rows[0] == ["call the tool (n=2)", "1.000 [1.00, 1.00]", "0.000 [0.00, 0.00]"]
