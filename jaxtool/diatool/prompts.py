"""Prompts for the `llm` augmenter, after DiaTool-DPO's Appendix B (Jung et al. 2025).

The paper's Appendix B gives two generation prompts that turn a Type 1 dialogue (complete first
query → tool call) into a Type 2 slot-filling dialogue:

- Easy: remove the values of (some) required fields from the user's query; the assistant asks for
  all missing fields in a single question and the user answers them.
- Hard: remove the values of all N required fields; the assistant asks, the user answers only one
  field per turn, and the assistant keeps asking for whatever is still missing until the call can
  be made.

The appendix text could not be retrieved verbatim while writing this module, so the wording below
is jaxtool's own; the structure (inputs shown to the model, the two regimes, one question vs one
field per turn, the unchanged final call) follows the paper. The model must answer with one JSON
object, which `llm.validate_*` checks field by field. Bump `PROMPT_VERSION` whenever the text
changes: it is part of the cache key, so old cached answers are not reused for a new prompt.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

PROMPT_VERSION = "diatool-appB-v1"

SYSTEM = (
    "You create training dialogues for an assistant that calls tools (functions). "
    "You rewrite a user's request so that some information the tool needs is missing, and you "
    "write the short exchange in which the assistant asks for it and the user supplies it. "
    "Reply with exactly one JSON object and nothing else."
)

_COMMON = """\
Tool the assistant will call (JSON schema):
{tool}

Original user request:
{query}

Tool call the assistant makes for it:
{call}

Rules:
- Write in the same language as the original request, keeping its tone and everything else it says.
- The rewritten request must NOT contain, hint at or imply the values of these required fields: {fields}.
  Keep every other detail of the original request.
- The assistant only ever asks about the listed fields, never about optional parameters.
- The user's answers must state each value exactly as it appears in the tool call, so that the final
  call is still exactly {call_args}.
- "rejection": one polite sentence or two, in the request's language, in which the assistant declines
  the ORIGINAL request because it has no tool able to do it (do not name any tool).
"""

EASY = _COMMON + """\
Difficulty: EASY. The assistant asks for all of the missing fields in ONE question, and the user
answers all of them in ONE reply.

Reply with this JSON object:
{{"user_query": "<rewritten request>",
  "missing_fields": {fields_json},
  "assistant_question": "<one question asking for every missing field>",
  "user_answer": "<one reply giving every missing value>",
  "arguments": <the final call's arguments, unchanged>,
  "rejection": "<polite refusal>"}}
"""

HARD = _COMMON + """\
Difficulty: HARD. All {n} required fields are missing. The assistant asks for the missing
information; the user answers with the value of ONE field only; the assistant then asks for the
fields that are still missing, and so on — exactly {n} question/answer turns, one field answered per
turn. In every turn "asked_fields" lists all fields still missing at that point, and
"answered_field" is the single field the user gives in that turn.

Reply with this JSON object:
{{"user_query": "<rewritten request>",
  "turns": [{{"assistant_question": "...", "asked_fields": [...], "user_answer": "...", "answered_field": "..."}}, ... {n} turns],
  "arguments": <the final call's arguments, unchanged>,
  "rejection": "<polite refusal>"}}
"""

RETRY = ("Your reply was rejected: {reason}. Write the whole JSON object again, following every rule.")


def _dump(x: Any) -> str:
    return json.dumps(x, ensure_ascii=False)


def build_messages(difficulty: str, tool_spec: dict, query: str, call_name: str,
                   arguments: dict, fields: Sequence[str]) -> list[dict]:
    """OpenAI-style chat messages asking for an Easy or Hard Type 2 dialogue."""
    template = EASY if difficulty == "easy" else HARD
    user = template.format(
        tool=_dump(tool_spec), query=query,
        call=_dump({"name": call_name, "arguments": arguments}), call_args=_dump(arguments),
        fields=", ".join(fields), fields_json=_dump(list(fields)), n=len(fields),
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
