"""docs/config-reference.md, generated from the config dataclasses: every key of every recipe kind
(train, itool, experiment diatool, quickstart) with its type, default and the comment written beside
the field in the source. Regenerate with

    python -m jaxtool.commands._config_reference > docs/config-reference.md

`tests/test_docs.py` fails when the file in docs/ is not what this prints."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import re
import sys
import tokenize
import typing


def _field_comments(cls) -> dict[str, str]:
    """{field name: the comment on its line (or the comment lines right above it)} from `cls`'s source."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    out, above, last = {}, [], None
    for i, line in enumerate(src.splitlines(), 1):
        m = re.match(r"\s{4}(\w+)\s*:", line)
        stripped = line.strip()
        if stripped.startswith("#"):
            indent = len(line) - len(line.lstrip())
            if last is not None and indent > 4 and out.get(last):  # a trailing comment continued below
                out[last] += " " + comments.get(i, "")
            else:
                above.append(comments.get(i, ""))
                last = None
            continue
        if m and not stripped.startswith(("def ", "@")):
            text = comments.get(i) or " ".join(above)
            if m.group(1) not in out:
                out[m.group(1)] = text
                last = m.group(1) if comments.get(i) else None
        else:
            last = None
        above = []
    return out


def _type_name(t) -> str:
    if isinstance(t, str):
        return t
    if t is type(None):
        return "None"
    origin = typing.get_origin(t)
    if origin is None:
        return getattr(t, "__name__", str(t))
    args = ", ".join(_type_name(a) for a in typing.get_args(t))
    name = "Optional" if origin is typing.Union else getattr(origin, "__name__", str(origin))
    return f"{name}[{args}]" if args else name


def _default_text(v) -> str:
    if dataclasses.is_dataclass(v):
        return "(section)"
    try:
        return json.dumps(v, default=str)
    except (TypeError, ValueError):
        return repr(v)


def rows(cls, instance=None, prefix: str = ""):
    """(key, type, default, comment) of every field of `cls`, sections flattened as dotted keys."""
    instance = instance if instance is not None else cls()
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        value = getattr(instance, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(value):
            if comments.get(f.name):
                yield key, "section", "", comments[f.name]
            yield from rows(type(value), value, key + ".")
        else:
            yield key, _type_name(hints.get(f.name, f.type)), _default_text(value), comments.get(f.name, "")


def recipe_kinds():
    from jaxtool.commands.quickstart import QuickstartConfig
    from jaxtool.config import TrainConfig
    from jaxtool.experiment.diatool import ExperimentConfig
    from jaxtool.itool.config import ItoolConfig

    return [("jaxtool train", "configs/diatool_dpo/, configs/calm/, configs/sft/, configs/itool/warmup/", TrainConfig),
            ("jaxtool itool", "configs/itool/", ItoolConfig),
            ("jaxtool experiment diatool", "configs/experiments/", ExperimentConfig),
            ("jaxtool quickstart", "configs/quickstart.yaml", QuickstartConfig)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    out = ["# Configuration reference", "",
           "Generated from the config dataclasses by `python -m jaxtool.commands._config_reference` — do not",
           "edit by hand (`tests/test_docs.py` checks it is current). Every key can be set in a YAML recipe",
           "(nested sections or dotted keys) or on the command line as `key=value`; `COMMAND --print-config`",
           "prints the resolved values. Loss hyper-parameters (`loss.*`) depend on `loss.type`: see",
           "`jaxtool/objectives.py`.", ""]
    for command, where, cls in recipe_kinds():
        out += [f"## `{command}` ({cls.__name__})", "", f"Recipes: `{where}`.", "",
                "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, typ, default, comment in rows(cls):
            out.append(f"| `{key}` | {_cell(typ)} | `{_cell(default)}` | {_cell(comment)} |"
                       if default else f"| **`{key}`** | {typ} | | {_cell(comment)} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
