"""iTool stage markers against their artifacts (issue 26, probe findings 4, 6 and 7): a marker that is
not JSON or `{}` is reported and its stage redone; an artifact truncated or deleted since the marker
was written makes the stage run again; a moved or copied run directory resumes in place. Every
expected hash and path here is computed by the test itself."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from jaxtool.config import dump_yaml, load_config
from jaxtool.itool.config import ItoolConfig
from jaxtool.itool.loop import Stage, _check_same_config


def _run(run_dir: str, lines: list[str]) -> None:
    """A run directory whose data stage finished: its two files and its marker."""
    os.makedirs(os.path.join(run_dir, "data"), exist_ok=True)
    with open(os.path.join(run_dir, "data", "examples.jsonl"), "w") as fh:
        fh.write("".join(ln + "\n" for ln in lines))
    with open(os.path.join(run_dir, "data", "buffer_init.json"), "w") as fh:
        json.dump({"ids": ["a", "b"]}, fh)
    Stage(run_dir, "data").finish({"examples": len(lines), "file": os.path.join(run_dir, "data", "examples.jsonl")}, 1.0)


@pytest.mark.parametrize("content", [b"{not json", b"{}", b"[1, 2]", b'{"result": 5}', b"\xff\xfe"])
def test_damaged_marker_is_reported_and_the_stage_redone(tmp_path, content):  # 26.4
    run = str(tmp_path / "run")
    _run(run, ['{"id": "a"}'])
    marker = os.path.join(run, ".done", "data.json")
    open(marker, "wb").write(content)
    said = []
    st = Stage(run, "data", run, printer=said.append)
    assert st.done() is False  # no JSONDecodeError / KeyError: the stage runs again
    assert said and ".done/data.json" in said[0] and "redone" in said[0]


@pytest.mark.parametrize("damage", ["truncate", "delete", "rewrite"])
def test_marker_is_trusted_only_while_its_artifacts_are_intact(tmp_path, damage):  # 26.7
    run = str(tmp_path / "run")
    _run(run, ['{"id": "a", "q": "weather in Paris"}', '{"id": "b", "q": "convert 5 USD"}'])
    assert Stage(run, "data", run).done() is True
    path = os.path.join(run, "data", "examples.jsonl")
    if damage == "truncate":
        os.truncate(path, 20)
    elif damage == "delete":
        os.remove(path)
    else:  # same size, other bytes
        data = open(path, "rb").read()
        open(path, "wb").write(data.replace(b"Paris", b"Parix"))
    said = []
    assert Stage(run, "data", run, printer=said.append).done() is False
    assert "data/examples.jsonl" in said[0]


def test_moved_or_copied_run_dir_resumes_in_place(tmp_path):  # 26.6
    old = str(tmp_path / "old")
    cfg = load_config(None, [f"run_dir={old}"], cls=ItoolConfig)
    os.makedirs(old)
    open(os.path.join(old, "config.yaml"), "w").write(dump_yaml(cfg))
    _run(old, ['{"id": "a"}'])
    new = str(tmp_path / "copy")
    shutil.copytree(old, new)
    moved = load_config(None, [f"run_dir={new}"], cls=ItoolConfig)
    _check_same_config(new, moved)  # run_dir is not part of the comparison
    st = Stage(new, "data", new)
    assert st.done() is True
    assert st.result()["file"] == os.path.join(new, "data", "examples.jsonl")  # never the old directory
    other = load_config(None, [f"run_dir={new}", "seed=7"], cls=ItoolConfig)
    with pytest.raises(Exception, match="seed"):
        _check_same_config(new, other)  # a real change is still refused by name
