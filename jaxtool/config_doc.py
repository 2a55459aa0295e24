"""The resolved training config as YAML with each key's comment — what `jaxtool train --print-config`
prints (CONTRIBUTING.md: "each field commented — that is what `--print-config` readers see").

The comments are the ones written beside the fields in the source: the config sections
(`jaxtool.config.ModelConfig`, ...) and the objective's hyper-parameter dataclass
(`jaxtool.objectives`, e.g. `DPOParams.beta`). They are read from the class's source with
`tokenize`, so the YAML and the code cannot drift apart: a field without a comment prints bare.

    print(commented_yaml(load_config("configs/sft/smollm2_lora.yaml", [])))
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import tokenize

import yaml

from jaxtool.config import LossConfig, to_dict

__all__ = ["field_comments", "commented_yaml"]


@functools.lru_cache(maxsize=None)
def field_comments(cls: type) -> dict[str, str]:
    """{field: comment} of a dataclass, from the `# ...` written after each field in its source; a
    comment-only line right below a field continues that field's comment. A field a subclass
    redeclares without a comment keeps its base class's comment (e.g. `DAPOParams.beta`)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass) and klass is not object:
            out.update(_own_comments(klass))
    return out


def _own_comments(cls: type) -> dict[str, str]:
    """The comments written in `cls`'s own source (empty when the source is not available)."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    fields = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, list[str]] = {}
    current = None          # the field the last line defined
    line_tokens: list[tokenize.TokenInfo] = []
    depth = 0
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    except (tokenize.TokenError, SyntaxError):
        return {}
    for tok in toks:
        if tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        if tok.type in (tokenize.NEWLINE, tokenize.NL):
            code = [t for t in line_tokens if t.type not in (tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)]
            comments = [t.string[1:].strip() for t in line_tokens if t.type == tokenize.COMMENT]
            if code and depth == 1 and code[0].type == tokenize.NAME and len(code) > 1 and code[1].string == ":" \
                    and code[0].string in fields:
                current = code[0].string
                if comments:
                    out.setdefault(current, []).extend(comments)
            elif not code and comments and current is not None and current in out:
                out[current].extend(comments)          # a continuation line of the field's comment
            elif code or not comments:
                current = None if code else current
                if not code and not comments:
                    current = None                     # a blank line ends a comment
            line_tokens = []
            continue
        line_tokens.append(tok)
    return {k: " ".join(v) for k, v in out.items()}


def _scalar(v) -> str:
    if isinstance(v, tuple):
        v = list(v)
    text = yaml.safe_dump(v, default_flow_style=True, width=10 ** 9, sort_keys=False)
    return text.removesuffix("...\n").strip()


def _line(indent: str, key: str, value, comment: str | None) -> str:
    body = f"{indent}{key}: {_scalar(value)}"
    return f"{body}  # {comment}" if comment else body


def commented_yaml(cfg) -> str:
    """`dump_yaml(cfg)` with each key's source comment after it (same keys, same values: it loads
    back to the same dict)."""
    flat = to_dict(cfg)
    top = field_comments(type(cfg))
    lines: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"{f.name}:" + (f"  # {top[f.name]}" if top.get(f.name) else ""))
            notes = dict(field_comments(type(value)))
            if isinstance(value, LossConfig):
                notes.update(field_comments(type(value.params)))
            for key, v in flat[f.name].items():
                lines.append(_line("  ", key, v, notes.get(key)))
        else:
            lines.append(_line("", f.name, value, top.get(f.name)))
    return "\n".join(lines) + "\n"
