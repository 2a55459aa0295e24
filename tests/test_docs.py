"""The docs cannot rot (issue 26): every `jaxtool ...` command shown in README.md and docs/ names a
command that exists and only flags that command has (each command's parser is asked, and `--help`
must answer); the README stays short and links only to pages that exist; docs/config-reference.md
is what the generator prints from the config dataclasses today."""

from __future__ import annotations

import glob
import os
import re
import shlex

import pytest

from jaxtool import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))


def _commands(text: str) -> list[str]:
    """`jaxtool ...` command lines: in fenced blocks (continuations joined, comments cut) and in
    inline code spans."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            for part in re.split(r"&&|\|\||;|\|", line):
                part = part.strip()
                m = re.match(r"(?:\$\s+)?(?:[A-Z_]+=\S+\s+)*jaxtool\s+(.*)", part)
                if m:
                    found.append(re.sub(r"\s+#.*$", "", m.group(1)).strip())
    for span in re.findall(r"`jaxtool ([^`]+)`", text):
        found.append(span.strip())
    return found


def _walk(words: list[str]):
    """(parser of the deepest command named by `words`, the words that follow it)."""
    parser = cli.build_parser()
    i = 0
    while i < len(words):
        subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs or words[i] not in subs[0].choices:
            break
        parser = subs[0].choices[words[i]]
        i += 1
    return parser, words[i:], words[:i]


def _cases():
    out = []
    for page in PAGES:
        with open(page, encoding="utf-8") as fh:
            text = fh.read()
        for cmd in _commands(text):
            out.append(pytest.param(os.path.relpath(page, ROOT), cmd, id=f"{os.path.relpath(page, ROOT)}: {cmd[:60]}"))
    return out


CASES = _cases()
_HELPED: set = set()


def test_the_docs_show_commands():
    assert len(CASES) > 40 and any(p == "README.md" for p, _ in (c.values for c in CASES))


@pytest.mark.parametrize("page, command", CASES)
def test_every_documented_command_parses(page, command, capsys):
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    if not words or not re.match(r"[a-z]", words[0]):  # `jaxtool COMMAND --help`, `jaxtool ...`
        return
    parser, rest, path = _walk(words)
    assert path, f"{page}: `jaxtool {command}` names no jaxtool command"
    if tuple(path) not in _HELPED:
        with pytest.raises(SystemExit) as e:  # the command's own --help answers
            cli.main([*path, "--help"])
        assert e.value.code == 0, f"{page}: `jaxtool {' '.join(path)} --help` failed"
        capsys.readouterr()
        _HELPED.add(tuple(path))
    known = set(parser._option_string_actions)
    for w in rest:
        if w.startswith("--") and len(w) > 2:
            flag = w.split("=", 1)[0]
            assert flag in known, f"{page}: `jaxtool {command}`: {' '.join(path)} has no option {flag}"
        elif w.startswith("-") and len(w) == 2 and w[1].isalpha():
            assert w in known, f"{page}: `jaxtool {command}`: {' '.join(path)} has no option {w}"


def test_readme_is_short_and_links_to_pages_that_exist():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    assert len(text.splitlines()) <= 150
    links = re.findall(r"\]\((docs/[^)#]*)", text)
    assert len(links) >= 10
    missing = [p for p in links if not os.path.exists(os.path.join(ROOT, p))]
    assert not missing, missing
    assert "huggingface-cli" not in text  # current huggingface_hub installs `hf`
    # no lab notebook: dated measurements and first-person run logs live in docs/results/, pinned to commits
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "a dated measurement in the README: move it to docs/results/"
    assert not re.search(r"\b(I|we|We)\s+(ran|measured|saw|got|tried|timed)\b", text), "a first-person run log in the README"


def test_config_reference_is_current():
    from jaxtool.commands._config_reference import render

    with open(os.path.join(ROOT, "docs", "config-reference.md"), encoding="utf-8") as fh:
        assert fh.read() == render(), ("docs/config-reference.md is out of date: regenerate it with "
                                       "`python -m jaxtool.commands._config_reference > docs/config-reference.md`")


def test_no_huggingface_cli_in_docs_messages_or_recipes():
    hits = []
    for pattern in ("docs/**/*.md", "jaxtool/**/*.py", "configs/**/*.yaml", "launch/*"):
        for p in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            if os.path.isfile(p) and "huggingface-cli" in open(p, encoding="utf-8", errors="replace").read():
                hits.append(os.path.relpath(p, ROOT))
    assert not hits, f"`huggingface-cli` is gone from current huggingface_hub (use `hf download`): {hits}"


def _launch_dry_runs() -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        with open(page, encoding="utf-8") as fh:
            text = fh.read()
        blocks = [re.sub(r"\\\n\s*", " ", b) for b in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)]
        for line in "\n".join(blocks).splitlines() + re.findall(r"`(launch/[^`]+)`", text):
            line = re.sub(r"\s+#.*$", "", line).strip()
            if re.match(r"launch/(gpu_nodes|tpu_pod)\.sh\s", line) and " --dry-run" in line:
                out.append((os.path.relpath(page, ROOT), line))
    return out


@pytest.mark.slow  # each launcher run imports jaxtool to check the recipe's mesh (~5 s)
def test_documented_launch_dry_runs_pass_their_mesh_check():
    """The 8B GPU / TPU launches the docs show as `--dry-run` run, and their mesh check passes."""
    import subprocess
    import sys

    runs = _launch_dry_runs()
    assert any("tpu_pod.sh" in c for _, c in runs) and any("gpu_nodes.sh" in c for _, c in runs), runs
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "COORDINATOR", "NUM_NODES", "NODE_RANK", "XLA_FLAGS"))}
    env.update(PYTHON=sys.executable, PYTHONPATH=ROOT)
    for page, cmd in runs:
        r = subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (page, cmd, r.stderr[-2000:])
        assert "# mesh data=" in r.stdout and " spans " in r.stdout, (page, cmd, r.stdout[-2000:], r.stderr[-1000:])
