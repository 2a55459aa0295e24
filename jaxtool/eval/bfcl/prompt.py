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
import json
from typing import Any, Mapping, Sequence

from jaxtool.data.formats import bfcl_system_prompt
from jaxtool.data.schema import Conversation, Message
from jaxtool.errors import ConfigError
from jaxtool.eval.bfcl.checker import expected_name, language_of
from jaxtool.eval.bfcl.data import PYTHON_HINT, BFCLItem, doc_to_tool

STYLES = ("prompting", "fc")
FC_FORMATS = ("hermes", "llama3_json", "functionary_v3_llama3")


def system_prompt(functions: Sequence[Mapping[str, Any]]) -> str:
    """BFCL's default prompt-based system prompt listing `functions` (docs as given); the text is
    defined once, in `jaxtool.data.formats.bfcl_system_prompt`."""
    return bfcl_system_prompt(list(functions))


JAVA_HINT = " Note that the provided function is in Java 8 SDK syntax."
JS_HINT = " Note that the provided function is in JavaScript syntax."


def with_language_hint(functions: Sequence[Mapping[str, Any]], category: str = "simple_python") -> list[dict]:
    """Copies of the docs as BFCL shows them to a model (its `_func_doc_language_specific_pre_processing`):
    the language hint appended to each description; for Java / JavaScript every parameter becomes a
    "string" whose description says which Java/JavaScript type to write in string representation
    (array items' type and a dict's schema moved into the description, as BFCL does)."""
    language = language_of(category)
    hint = {"java": JAVA_HINT, "javascript": JS_HINT}.get(language, PYTHON_HINT)
    lang_name = {"java": "Java", "javascript": "JavaScript"}.get(language)
    out = []
    for f in functions:
        f = copy.deepcopy(dict(f))
        f["description"] = (f.get("description") or "") + hint
        if lang_name:
            for spec in ((f.get("parameters") or {}).get("properties") or {}).values():
                t = spec.get("type")
                spec["description"] = spec.get("description", "") + (
                    f" This parameter can be of any type of {lang_name} object in string representation."
                    if t == "any" else f" This is {lang_name} {t} type parameter in string representation.")
                if t in (("ArrayList", "Array") if language == "java" else ("array",)) and "items" in spec:
                    spec["description"] += (f" The list elements are of type {spec['items'].get('type')}; "
                                            "they are not in string representation.")
                    del spec["items"]
                if language == "javascript" and t == "dict" and "properties" in spec:
                    spec["description"] += (" The dictionary entries have the following schema; they are not in "
                                            f"string representation. {json.dumps(spec['properties'])}")
                    del spec["properties"]
                spec["type"] = "string"
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
        docs = with_language_hint(item.functions, item.category)
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
        docs = item.functions if language_of(item.category) == "python" else \
            with_language_hint(item.functions, item.category)
        suffix = PYTHON_HINT if language_of(item.category) == "python" else None
        tools = tuple(doc_to_tool(f, description_suffix=suffix, float_hint=True,
                                  name=expected_name(f["name"], underscore_names)) for f in docs)
        return Conversation(messages=tuple(Message(m["role"], m["content"]) for m in item.messages),
                            tools=tools, meta=meta)
    raise ConfigError(f"prompt style must be one of {STYLES}, got {style!r}")
