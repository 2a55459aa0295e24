"""Pieces shared by the plain-text formats (`react`, `alpaca`): the default end-of-turn marker and
the "Available tools:" JSON lines, the end-of-turn marker taken from the tokenizer."""

from __future__ import annotations

import json
from typing import Sequence

from jaxtool.data.schema import Tool


DEFAULT_PLAIN_EOS = "</s>"


def _tools_lines(tools: Sequence[Tool]) -> str:
    return "\n".join(json.dumps(t.spec(), ensure_ascii=False) for t in tools)


def _strip_one_space(s: str) -> str:
    return s[1:] if s.startswith(" ") else s


def plain_eos(tokenizer, options: dict) -> str:
    """The trained end-of-turn marker of a plain-text format: `options["eos"]` (removed from
    `options`), else the tokenizer's EOS token, else `DEFAULT_PLAIN_EOS`."""
    eos = options.pop("eos", None) or (getattr(tokenizer, "eos_token", None) if tokenizer is not None else None)
    return eos or DEFAULT_PLAIN_EOS
