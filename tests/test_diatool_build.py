"""The whole build: split by seed, output files, Table 1 / Table 2 (expected counts and averages
worked out by hand for two seeds), and the `jaxtool data build-diatool` command line."""

import argparse
import json
import os

import pytest

from jaxtool.commands import build_diatool as diatool_cli
from jaxtool.data.schema import Conversation
from jaxtool.diatool.build import build, read_pairs, split_seeds, summary_dict, table1, table2
from jaxtool.diatool.rules import RulesAugmenter
from jaxtool.diatool.seeds import extract_seed
from jaxtool.diatool.states import trajectory
from jaxtool.errors import ConfigError, DataError

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "diatool")
SEEDS_PATH = os.path.join(FIX, "seeds.jsonl")


def _seeds(ids=None):
    out = []
    with open(SEEDS_PATH, encoding="utf-8") as fh:
        for line in fh:
            c = Conversation.from_dict(json.loads(line))
            if ids is None or c.meta["id"] in ids:
                out.append(extract_seed(c, c.meta["id"])[0])
    return out


def _rows(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_split_is_by_seed_deterministic_and_order_free():
    ids = [f"s{i}" for i in range(100)]
    a = split_seeds(ids, 0.05, salt="0")
    assert sum(v == "valid" for v in a.values()) == 5
    assert split_seeds(list(reversed(ids)), 0.05, salt="0") == a
    assert split_seeds(ids, 0.05, salt="1") != a
    assert sum(v == "valid" for v in split_seeds(ids[:10], 0.05).values()) == 1  # at least one
    assert set(split_seeds(ids[:1], 0.05).values()) == {"train"}
    with pytest.raises(ConfigError):
        split_seeds(ids, 1.0)


def test_two_seed_build_matches_hand_counted_tables(tmp_path):
    # weather-01: N = 1 ("Paris"); currency-02: N = 3, all in the text, so M = 2.
    stats = build(_seeds({"weather-01", "currency-02"}), RulesAugmenter(), str(tmp_path), valid_fraction=0.0)
    header, rows = table1(stats)
    got = {(r[0], r[1], r[2]): r[3:] for r in rows}
    assert got == {
        ("Type 1", "1→3→4→5", "1→2→3→4→5"): [2, 0, 2],
        ("Type 1", "1→3→4→5", "1→1"): [2, 2, 4],
        ("Type 1", "1→3→4→5", "1→(2×N)→3→4→5"): [0, 1, 1],
        ("Type 1", "1→3→4→5", "1→(2×M)→3→4→5"): [0, 1, 1],
        ("Type 2", "1→2→3→4→5", "1→3→4→5"): [2, 0, 2],
        ("Type 2", "1→2→3→4→5", "1→1"): [2, 0, 2],
        ("Type 2", "1→(2×N)→3→4→5", "1→3→4→5"): [0, 1, 1],
        ("Type 2", "1→(2×N)→3→4→5", "1→(2×M)→3→4→5"): [0, 1, 1],
        ("Type 2", "1→(2×N)→3→4→5", "1→1"): [0, 1, 1],
        ("Type 3", "1→1", "1→3→4"): [0, 1, 1],   # §4.3 / Table 1: Type 3 is Hard only
        ("Type 3", "1→1", "1→(2×N)→3→4"): [0, 1, 1],
        ("Total", "", ""): [8, 9, 17],
    }
    # assistant turns per pair, summed by hand over the 8 easy / 9 hard pairs:
    # easy  chosen 2+2+3+3 per seed = 20, rejected 3+1+2+1 per seed = 14
    # hard  chosen 2+2+2+5+5+5+1+1 (currency-02) + 2 (weather-01) = 25
    #       rejected 5+4+1+2+4+1+1+4 (currency-02) + 1 (weather-01) = 23
    header, rows = table2(stats)
    assert header[:3] == ["Subset", "Pairs", "Seeds"]
    assert rows[0][:3] == ["Easy", 8, 2] and rows[0][3] == pytest.approx(2.5) and rows[0][4] == pytest.approx(1.75)
    assert rows[1][:3] == ["Hard", 9, 2] and rows[1][3] == pytest.approx(25 / 9) and rows[1][4] == pytest.approx(23 / 9)
    assert rows[2][:3] == ["All", 17, 2] and rows[2][3] == pytest.approx(45 / 17) and rows[2][4] == pytest.approx(37 / 17)
    assert len(_rows(tmp_path / "train.jsonl")) == 17 and _rows(tmp_path / "valid.jsonl") == []
    s = summary_dict(stats)
    assert s["pairs"]["train"] == 17 and s["pairs_not_built"]["t2-hard-reject"] == {
        "no hard Type 2 dialogue: hard needs >= 2 required fields": 1}


def test_difficulty_subsets(tmp_path):
    seeds = _seeds({"weather-01", "currency-02"})
    easy = build(seeds, RulesAugmenter(), str(tmp_path / "e"), subset="easy", valid_fraction=0.0)
    hard = build(seeds, RulesAugmenter(), str(tmp_path / "h"), subset="hard", valid_fraction=0.0)
    assert {r["difficulty"] for r in _rows(tmp_path / "e" / "train.jsonl")} == {"easy"}
    assert {r["difficulty"] for r in _rows(tmp_path / "h" / "train.jsonl")} == {"hard"}
    assert table1(easy)[1][-1][3:] == [8, 0, 8] and table1(hard)[1][-1][3:] == [0, 9, 9]
    with pytest.raises(ConfigError, match="--difficulty must be one of"):
        build(seeds, RulesAugmenter(), str(tmp_path / "x"), subset="medium")


@pytest.fixture(autouse=True)
def _own_jsonl_reader(monkeypatch):
    """Read `conversations:` specs with the builder's own reader even once the project's source
    registry is merged, so these tests exercise this module's behaviour (ids, error texts) only."""
    import jaxtool.diatool.sources as sources

    monkeypatch.setattr(sources, "_registry", lambda: None)


def _cli(*argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    diatool_cli.register(sub)
    args = parser.parse_args(["build-diatool", *argv])
    return args.func(args)


def test_cli_builds_from_the_fixtures_with_the_bfcl_guard(tmp_path, capsys):
    out = tmp_path / "out"
    assert _cli("--seeds", f"conversations:{SEEDS_PATH}", "--augmenter", "rules", "--difficulty", "all",
                "--out", str(out), "--no-progress") == 0
    printed = capsys.readouterr()
    assert "## Table 1" in printed.out and "## Table 2" in printed.out
    assert "1 × first user turn matches a BFCL test query  (first: seeds:joke-01)" in printed.err
    for f in ("train.jsonl", "valid.jsonl", "valid_flows.jsonl", "summary.json", "tables.md"):
        assert (out / f).exists()
    train, valid = _rows(out / "train.jsonl"), _rows(out / "valid.jsonl")
    train_seeds, valid_seeds = {r["seed_id"] for r in train}, {r["seed_id"] for r in valid}
    assert train_seeds and valid_seeds and not train_seeds & valid_seeds  # no seed crosses the split
    assert len(train_seeds | valid_seeds) == 21 and len(valid_seeds) == 1  # 22 seeds - joke-01; round(0.05 * 21)
    for row in train + valid:
        assert set(row) >= {"chosen", "rejected", "type", "chosen_trajectory", "rejected_trajectory", "difficulty"}
        assert set(row["chosen"]) == {"messages", "tools"}
    pairs = read_pairs(str(out / "train.jsonl")) + read_pairs(str(out / "valid.jsonl"))
    assert all(trajectory(p.chosen) == p.chosen_trajectory for p in pairs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"]["kept"] == 21 and summary["split_guard"]["by_benchmark"]["BFCL"] > 4000
    assert summary["pairs"]["train"] + summary["pairs"]["valid"] == len(pairs)
    assert summary["table1"][-1]["All"] == len(pairs)
    # the held-out flows are the validation seeds' distinct chosen trajectories
    flows = _rows(out / "valid_flows.jsonl")
    assert {f["meta"]["seed_id"] for f in flows} == valid_seeds
    assert len({json.dumps(f["messages"]) for f in flows}) == len(flows)
    for f in flows:
        assert trajectory(Conversation.from_dict(f)) == f["meta"]["trajectory"]
    # a second run gives byte-identical output
    assert _cli("--seeds", f"conversations:{SEEDS_PATH}", "--out", str(tmp_path / "again"), "--no-progress") == 0
    assert (tmp_path / "again" / "train.jsonl").read_bytes() == (out / "train.jsonl").read_bytes()


def test_cli_guard_bench_and_korean_templates(tmp_path, capsys):
    out = tmp_path / "ko"
    assert _cli("--seeds", os.path.join(FIX, "seeds_ko.jsonl"), "--templates", "ko", "--no-bfcl-guard",
                "--out", str(out), "--no-progress", "--valid-fraction", "0") == 0
    rows = _rows(out / "train.jsonl")
    assert any(r["chosen"]["messages"][0]["content"] == "특정 출발 위치에서 특정 도착 위치까지 택시 불러줘" for r in rows)
    out = tmp_path / "guarded"
    assert _cli("--seeds", f"conversations:{SEEDS_PATH}", "--no-bfcl-guard", "--guard-bench",
                f"conversations:{os.path.join(FIX, 'bench.jsonl')}", "--out", str(out), "--no-progress") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"]["skipped"] == {"first user turn matches a bench test query": 2}
    capsys.readouterr()


def test_sides_as_json_strings_load_back(tmp_path, capsys):
    out = tmp_path / "s"
    assert _cli("--seeds", SEEDS_PATH, "--no-bfcl-guard", "--sides-as-strings", "--valid-fraction", "0",
                "--out", str(out), "--no-progress") == 0
    rows = _rows(out / "train.jsonl")
    assert all(isinstance(r["chosen"], str) and isinstance(r["rejected"], str) for r in rows)
    assert json.loads(rows[0]["chosen"])["messages"][0]["role"] == "user"
    assert len(read_pairs(str(out / "train.jsonl"))) == len(rows)
    capsys.readouterr()


def test_cli_print_templates(capsys):
    assert _cli("--print-templates", "ko") == 0
    assert json.loads(capsys.readouterr().out)["language"] == "ko"


@pytest.mark.parametrize("argv, error, message", [
    (["--out", "x"], ConfigError, "--seeds is required"),
    (["--seeds", "conversations:/no/such/file.jsonl", "--out", "x", "--no-bfcl-guard"], DataError,
     "no such file or directory"),
    (["--seeds", "toolbench:/tmp/x.jsonl", "--out", "x", "--no-bfcl-guard"], ConfigError,
     "needs the source registry"),
    (["--seeds", SEEDS_PATH, "--out", "x", "--rejections", "llm"], ConfigError, "--rejections llm needs --augmenter llm"),
    (["--seeds", SEEDS_PATH, "--out", "x", "--templates", "klingon"], ConfigError, "neither a built-in set"),
])
def test_cli_user_mistakes_get_one_clear_error(tmp_path, monkeypatch, argv, error, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(error, match=message):
        _cli(*argv)


def test_cli_refuses_a_source_without_seeds_and_names_bad_rows(tmp_path):
    path = tmp_path / "bad.jsonl"
    with open(os.path.join(FIX, "bad_seeds.jsonl"), encoding="utf-8") as fh:
        path.write_text(fh.read())
    with pytest.raises(DataError, match="no usable seed dialogue"):
        _cli("--seeds", f"conversations:{path}", "--out", str(tmp_path / "o"), "--no-bfcl-guard", "--no-progress")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [{"role": "robot"}]}\n')
    with pytest.raises(DataError, match=r"broken.jsonl, row 1: .*messages\[0\].*role"):
        _cli("--seeds", f"conversations:{broken}", "--out", str(tmp_path / "o2"), "--no-bfcl-guard", "--no-progress",
             "--on-bad-row", "error")  # the default skips and counts
