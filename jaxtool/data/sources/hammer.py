"""Hammer function masking (Lin et al. 2024, "Hammer: Robust Function-Calling for On-Device Language
Models via Function Masking") as a seeded transform over any function-calling source.

Hammer trains the model to choose functions and fill arguments from the *descriptions* rather than from
suggestive names, by replacing names with random strings. The rules below follow the released
preprocessing script (MadeAgents/Hammer, `train/data_processing.py`):

- Which conversations: each is masked with probability `mask_prob`, default 2/3 (the script masks when
  `random.random() > 1/3`; the rest pass through unchanged). The script first concatenates xLAM-60k with
  the XLAM-7.5k-Irrelevance set (same layout, `answers == []`) and repeats the mix three times; load that
  set with the `xlam` source and repeat/shuffle in the data pipeline — this module only masks.
- Function names: every tool gets a random name of 5-15 characters (length uniform) drawn from
  `A-Z a-z _ . 0-9`; calls and tool results are renamed identically.
- Parameter names: every parameter of every tool gets a random name of 4-10 characters from the same
  alphabet; call arguments and the `required` list follow.
- Descriptions (of tools and parameters) are kept — they are what the model must read — apart from
  the default-value rewrite below.
- Default values: for a parameter with a scalar default (not None/""/list) that some call passes
  unchanged (compared as strings), the default is replaced by a random value — int + U{1..4}, float +
  U[0, 1), str -> 5 random characters — in the schema and in the parameter description; call arguments
  equal to the old default (same type and value) take the new value, and then the old value is replaced
  in the user text (as is, Capitalized, lower and UPPER case, wherever it occurs). Deviation: booleans
  are left alone (the script's type check sends `True` to the float branch, giving defaults like 1.92).
- The order of the tools is shuffled.

Masking is consistent within a conversation and deterministic: the random stream of a conversation is
seeded from `(seed, source, row)`, so it does not depend on iteration order or `limit`.
`charset="identifier"` draws names that are valid Python identifiers instead (for pythonic call
formats, which cannot render names like `.67xDKY`). Text other than user messages (assistant prose, tool
results) is not rewritten. `meta["hammer"]` records what was renamed.

    load("hammer", "xlam:data/xlam.json", seed=0)            # via the registry
    hammer_mask(conv, random.Random(0))                       # one conversation, always masked
"""

from __future__ import annotations

import keyword
import random
import string
from typing import Any, Iterator, Mapping

from jaxtool.data.schema import Conversation, Message, Tool, ToolCall
from jaxtool.data.sources.base import LoadReport
from jaxtool.errors import ConfigError

SOURCE = "hammer"
HAMMER_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + "_." + string.digits
_IDENT_FIRST = string.ascii_letters + "_"
_IDENT_REST = string.ascii_letters + string.digits + "_"
FUNCTION_NAME_LENGTH = (5, 15)
PARAMETER_NAME_LENGTH = (4, 10)
DEFAULT_MASK_PROB = 2 / 3
CHARSETS = ("hammer", "identifier")


def load(inner_spec: str | None = None, *, on_bad_row: str = "error", report: LoadReport | None = None,
         limit: int | None = None, seed: int = 0, mask_prob: float = DEFAULT_MASK_PROB, names: bool = True,
         parameters: bool = True, defaults: bool = True, shuffle_tools: bool = True, charset: str = "hammer",
         **inner_opts) -> Iterator[Conversation]:
    """Mask the conversations of another source, given as `"<source>:<path>"` (e.g. `"xlam:data/x.json"`).

    Options not listed here are passed to the inner source.
    """
    from jaxtool.data.sources import load as load_source, parse_spec  # the registry imports this module lazily

    if not inner_spec:
        raise ConfigError("the hammer source wraps another one: give it as 'hammer:<source>:<path>', "
                          "e.g. 'hammer:xlam:data/xlam_function_calling_60k.json'")
    name, path = parse_spec(inner_spec)
    if name == SOURCE:
        raise ConfigError("hammer cannot wrap itself")
    _check_options(mask_prob, charset)
    inner = load_source(name, path, on_bad_row=on_bad_row, report=report, limit=limit, **inner_opts)
    return (maybe_mask(conv, conversation_rng(seed, conv), mask_prob=mask_prob, names=names,
                       parameters=parameters, defaults=defaults, shuffle_tools=shuffle_tools, charset=charset)
            for conv in inner)


def _check_options(mask_prob: float, charset: str) -> None:
    if not (isinstance(mask_prob, (int, float)) and 0.0 <= mask_prob <= 1.0):
        raise ConfigError(f"hammer mask_prob must be a number in [0, 1], got {mask_prob!r}")
    if charset not in CHARSETS:
        raise ConfigError(f"hammer charset must be one of {CHARSETS}, got {charset!r}")


def conversation_rng(seed: int, conv: Conversation) -> random.Random:
    """A random stream fixed by the seed and the conversation's provenance (source, row)."""
    return random.Random(f"hammer|{seed}|{conv.meta.get('source')}|{conv.meta.get('row')}")


def maybe_mask(conv: Conversation, rng: random.Random, *, mask_prob: float = DEFAULT_MASK_PROB, **kw) -> Conversation:
    """Mask with probability `mask_prob`; either way mark `meta["hammer"]` and `meta["source"] = "hammer"`."""
    if rng.random() < mask_prob:
        return hammer_mask(conv, rng, **kw)
    return conv.replace(meta=_meta(conv, {"masked": False}))


def _meta(conv: Conversation, info: dict) -> dict:
    meta = dict(conv.meta)
    meta["inner_source"] = meta.get("source")
    meta["source"] = SOURCE
    meta["hammer"] = info
    return meta


def random_name(rng: random.Random, length: tuple[int, int], charset: str = "hammer") -> str:
    n = rng.randint(*length)
    if charset == "identifier":
        while True:
            name = rng.choice(_IDENT_FIRST) + "".join(rng.choice(_IDENT_REST) for _ in range(n - 1))
            if not keyword.iskeyword(name):
                return name
    return "".join(rng.choice(HAMMER_ALPHABET) for _ in range(n))


def _fresh(rng: random.Random, length: tuple[int, int], taken: set, charset: str) -> str:
    while True:
        name = random_name(rng, length, charset)
        if name not in taken:
            taken.add(name)
            return name


def random_value(rng: random.Random, value: Any) -> Any:
    """Hammer's replacement default: int + U{1..4}, float + U[0,1), anything else -> 5 random characters."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value + rng.randint(1, 4)
    if isinstance(value, float):
        return value + rng.random()
    return "".join(rng.choice(HAMMER_ALPHABET) for _ in range(5))


def replace_value_in_text(text: str, old: Any, new: Any) -> str:
    """Replace a value in free text as Hammer does: as written, Capitalized, lower and UPPER case."""
    old, new = str(old), str(new)
    for f in (lambda s: s, str.capitalize, str.lower, str.upper):
        text = text.replace(f(old), f(new))
    return text


def hammer_mask(conv: Conversation, rng: random.Random, *, names: bool = True, parameters: bool = True,
                defaults: bool = True, shuffle_tools: bool = True, charset: str = "hammer") -> Conversation:
    """Mask one conversation (always). See the module docstring for the rules."""
    _check_options(0.0, charset)
    tools = list(conv.tools)
    calls_by_tool: dict[str, list[ToolCall]] = {}
    for m in conv.messages:
        for c in m.tool_calls:
            calls_by_tool.setdefault(c.name, []).append(c)

    fmap: dict[str, str] = {}
    if names:
        taken = {t.name for t in tools}
        fmap = {t.name: _fresh(rng, FUNCTION_NAME_LENGTH, taken, charset) for t in tools}
    pmap: dict[str, dict[str, str]] = {}
    if parameters:
        for t in tools:
            taken = set(t.properties)
            pmap[t.name] = {p: _fresh(rng, PARAMETER_NAME_LENGTH, taken, charset) for p in t.properties}
    dmap: dict[tuple[str, str], tuple[Any, Any]] = {}
    if defaults:
        for t in tools:
            for p, spec in t.properties.items():
                d = spec.get("default") if isinstance(spec, Mapping) else None
                if d is None or d == "" or isinstance(d, (bool, list, tuple, dict)):
                    continue
                if any(p in c.arguments and str(c.arguments[p]) == str(d) for c in calls_by_tool.get(t.name, [])):
                    dmap[(t.name, p)] = (d, random_value(rng, d))

    new_tools = [_mask_tool(t, fmap, pmap.get(t.name, {}), dmap) for t in tools]
    if shuffle_tools:
        rng.shuffle(new_tools)

    replaced_in_calls: list[tuple[Any, Any]] = []
    new_messages = []
    for m in conv.messages:
        if m.tool_calls:
            calls = []
            for c in m.tool_calls:
                args = {}
                for k, v in c.arguments.items():
                    if (c.name, k) in dmap:
                        old, new = dmap[(c.name, k)]
                        if type(v) is type(old) and v == old:
                            v = new
                            replaced_in_calls.append((old, new))
                    args[pmap.get(c.name, {}).get(k, k)] = v
                calls.append(ToolCall(fmap.get(c.name, c.name), args, id=c.id))
            m = Message(m.role, m.content, tool_calls=tuple(calls), name=m.name, tool_call_id=m.tool_call_id,
                        meta=m.meta)
        if m.role == "tool" and m.name in fmap:
            m = Message(m.role, m.content, tool_calls=m.tool_calls, name=fmap[m.name], tool_call_id=m.tool_call_id,
                        meta=m.meta)
        new_messages.append(m)
    if replaced_in_calls:
        for i, m in enumerate(new_messages):
            if m.role == "user" and isinstance(m.content, str):
                text = m.content
                for old, new in replaced_in_calls:
                    text = replace_value_in_text(text, old, new)
                new_messages[i] = Message(m.role, text, tool_calls=m.tool_calls, name=m.name,
                                          tool_call_id=m.tool_call_id, meta=m.meta)

    info = {"masked": True, "functions": fmap, "parameters": pmap,
            "defaults": [[t, p, old, new] for (t, p), (old, new) in dmap.items()]}
    return Conversation(messages=tuple(new_messages), tools=tuple(new_tools), meta=_meta(conv, info))


def _mask_tool(t: Tool, fmap: dict, pmap: dict, dmap: dict) -> Tool:
    props = {}
    for p, spec in t.properties.items():
        spec = dict(spec) if isinstance(spec, Mapping) else spec
        if (t.name, p) in dmap and isinstance(spec, dict):
            old, new = dmap[(t.name, p)]
            spec["default"] = new
            if isinstance(spec.get("description"), str):
                spec["description"] = spec["description"].replace(str(old), str(new))
        props[pmap.get(p, p)] = spec
    params = dict(t.parameters)
    if "properties" in params or props:
        params["properties"] = props
    if "required" in params:
        params["required"] = [pmap.get(r, r) for r in t.required]
    return Tool(name=fmap.get(t.name, t.name), description=t.description, parameters=params)
