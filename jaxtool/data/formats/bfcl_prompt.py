"""BFCL's default system prompt text (used by the `pythonic` format and by `jaxtool.eval.bfcl`)."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from jaxtool.data.schema import Tool


# BFCL's default system prompt for prompting models ("classic" style, plaintext, python return
# format, JSON function docs) — bfcl-eval 2026.3.23, bfcl_eval.model_handler.utils.formulate_system_prompt
# with DEFAULT_SYSTEM_PROMPT_FORMAT (constants/default_prompts.py, configuration
# "ret_fmt=python&tool_call_tag=False&func_doc_fmt=json&prompt_fmt=plaintext&style=classic"), assembled
# piece by piece as BFCL's template does — including its missing space after the first sentence and the
# double space left by an empty type note. Its one definition: the `pythonic` format trains on it and
# `jaxtool.eval.bfcl.prompt` evaluates with it.
_BFCL_PERSONA = "You are an expert in composing functions."
_BFCL_TASK = ("You are given a question and a set of possible functions. Based on the question, you will need to "
              "make one or more function/tool calls to achieve the purpose. If none of the functions can be used, "
              "point it out. If the given question lacks the parameters required by the function, also point it out.")
_BFCL_CALL_FORMAT = ("You should only return the function calls in your response.\n\nIf you decide to invoke any of "
                     "the function(s), you MUST put it in the format of [func_name1(params_name1=params_value1, "
                     "params_name2=params_value2...), func_name2(params)].  You SHOULD NOT include any other text "
                     "in the response.")
_BFCL_MULTITURN = ("At each turn, you should try your best to complete the tasks requested by the user within the "
                   "current turn. Continue to output functions to call until you have fulfilled the user's request "
                   "to the best of your ability. Once you have no more functions to call, the system will consider "
                   "the current turn complete and proceed to the next turn or task.")
_BFCL_TOOLS_INTRO = "Here is a list of functions in json format that you can invoke.\n"


def bfcl_system_prompt(functions: Sequence[Tool | Mapping[str, Any]]) -> str:
    """BFCL's default system prompt for pythonic calls, listing `functions` as indented JSON: `Tool`s
    as their JSON-schema spec, function-doc mappings (e.g. BFCL's own docs) exactly as given."""
    docs = [f.spec() if isinstance(f, Tool) else f for f in functions]
    listed = json.dumps(docs, indent=4)  # ASCII-escaped, as BFCL writes it
    return f"{_BFCL_PERSONA}{_BFCL_TASK}\n\n{_BFCL_CALL_FORMAT}\n\n{_BFCL_MULTITURN}\n\n{_BFCL_TOOLS_INTRO}{listed}\n"
