"""How a BFCL item is shown to a model: a `Conversation` for a chat format.

Two prompting styles, as BFCL runs open models:

- "prompting" (BFCL's prompt-based mode, the default for the `pythonic` format and any format
  without native tool calling): the function docs go into BFCL's default system prompt as indented
  JSON, with BFCL's original type names, and the model is asked for
  `[func_name1(params_name1=params_value1, ...), func_name2(params)]`. A system message already in
  the question is appended after that prompt (separated by a blank line). The conversation carries
  no `tools`, so the chat format adds no second tool list; its output is decoded with BFCL's rules
  (`decode.decode_pythonic`).
- "fc" (function-calling mode, the default for `hermes`, `llama3_json`, `functionary_v3_llama3`):
  the question's messages unchanged, the docs as JSON-schema `tools` (dict->object, float->number
  marked as float, tuple->array, any->string) rendered by the format's native tool prompt; the
  output is parsed by the format's own parser.

In both styles BFCL's language hint (" Note that the provided function is in Python 3 syntax.")
is appended to each function description, as BFCL does when it generates (never when it checks).
With `underscore_names` the tools are renamed with "." -> "_" and the checker expects those names.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

from jaxtool.data.formats import bfcl_system_prompt
from jaxtool.data.schema import Conversation, Message
from jaxtool.errors import ConfigError
from jaxtool.eval.bfcl.checker import expected_name
from jaxtool.eval.bfcl.data import PYTHON_HINT, BFCLItem, doc_to_tool

STYLES = ("prompting", "fc")
FC_FORMATS = ("hermes", "llama3_json", "functionary_v3_llama3")


def system_prompt(functions: Sequence[Mapping[str, Any]]) -> str:
    """BFCL's default prompt-based system prompt listing `functions` (docs as given); the text is
    defined once, in `jaxtool.data.formats.bfcl_system_prompt`."""
    return bfcl_system_prompt(list(functions))


def with_language_hint(functions: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Copies of the docs with BFCL's Python language hint appended to each description."""
    out = []
    for f in functions:
        f = copy.deepcopy(dict(f))
        f["description"] = (f.get("description") or "") + PYTHON_HINT
        out.append(f)
    return out


def style_for_format(format_name: str, style: str = "auto") -> str:
    if style == "auto":
        return "fc" if format_name in FC_FORMATS else "prompting"
    if style not in STYLES:
        raise ConfigError(f"--prompt-style must be auto or one of {STYLES}, got {style!r}")
    return style


def build_conversation(item: BFCLItem, style: str = "prompting", *, underscore_names: bool = False) -> Conversation:
    """The conversation whose next assistant turn the model must write for `item`."""
    meta = {"source": "bfcl", "id": item.id, "category": item.category}
    if style == "prompting":
        docs = with_language_hint(item.functions)
        if underscore_names:
            for d in docs:
                d["name"] = expected_name(d["name"], True)
        sys_text = system_prompt(docs)
        msgs = [dict(m) for m in item.messages]
        if msgs[0]["role"] == "system":
            msgs[0]["content"] = sys_text + "\n\n" + msgs[0]["content"]
        else:
            msgs.insert(0, {"role": "system", "content": sys_text})
        return Conversation(messages=tuple(Message(m["role"], m["content"]) for m in msgs), meta=meta)
    if style == "fc":
        tools = tuple(doc_to_tool(f, description_suffix=PYTHON_HINT, float_hint=True,
                                  name=expected_name(f["name"], underscore_names)) for f in item.functions)
        return Conversation(messages=tuple(Message(m["role"], m["content"]) for m in item.messages),
                            tools=tools, meta=meta)
    raise ConfigError(f"prompt style must be one of {STYLES}, got {style!r}")
