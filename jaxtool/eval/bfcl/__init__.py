"""BFCL (Berkeley Function Calling Leaderboard) evaluation: prompting, decoding, BFCL's AST checker,
scoring and reporting (the commands are `jaxtool.commands.eval_bfcl` / `eval_bfcl_score`).

Modules, one job each:
  prompt   — BFCL items as conversations (BFCL's system prompt, or native tool prompts)
  decode   — model output -> calls, following BFCL's decoder (never `eval`); Java/JS call syntax
  checker  — BFCL's AST checker rules (Python, Java, JavaScript) and relevance rule -> `Verdict`
  multi_turn     — multi-turn data and BFCL's multi-turn checker rules (on `jaxtool.envs.bfcl`)
  multi_turn_run — BFCL's multi-turn inference loop, every entry's step batched
  score    — per-item verdicts, per-category accuracy, BFCL's aggregates and overall scores (V4, V3),
             report, predictions files
  run      — the generation loop over a `Backend`
  data     — BFCL's data files -> `BFCLItem`s (also the `bfcl:` source of the registry)
BFCL's system prompt text is defined once, in `jaxtool.data.formats` (the `pythonic` chat format
trains on it too); `prompt` builds on it.
"""

from jaxtool.eval.bfcl.checker import (Verdict, check_ast, check_call, check_relevance, made_a_call,
                                       standardize_string)
from jaxtool.eval.bfcl.data import (AST_CATEGORIES, CATEGORIES, RELEVANCE_CATEGORIES, BFCLItem, doc_to_tool,
                                    read_category)
from jaxtool.eval.bfcl.decode import DecodeError, calls_from_json, calls_from_tool_calls, decode_json, decode_pythonic
from jaxtool.eval.bfcl.multi_turn import MULTI_TURN_CATEGORIES, check_multi_turn, read_multi_turn, score_multi_turn
from jaxtool.eval.bfcl.multi_turn_run import run_multi_turn
from jaxtool.eval.bfcl.prompt import FC_FORMATS, build_conversation, style_for_format, system_prompt
from jaxtool.eval.bfcl.run import decode_completion, evaluate, parse_categories, run_items
from jaxtool.eval.bfcl.score import (bfcl_scores, read_predictions, score_item, score_predictions, summarize,
                                     table_rows, write_bfcl_report)

__all__ = [
    "AST_CATEGORIES", "CATEGORIES", "RELEVANCE_CATEGORIES", "BFCLItem", "doc_to_tool", "read_category",
    "Verdict", "check_ast", "check_call", "check_relevance", "made_a_call", "standardize_string",
    "DecodeError", "calls_from_json", "calls_from_tool_calls", "decode_json", "decode_pythonic",
    "FC_FORMATS", "build_conversation", "style_for_format", "system_prompt",
    "decode_completion", "evaluate", "parse_categories", "run_items", "read_predictions", "score_item",
    "score_predictions", "summarize", "table_rows", "write_bfcl_report", "bfcl_scores",
    "MULTI_TURN_CATEGORIES", "check_multi_turn", "read_multi_turn", "score_multi_turn", "run_multi_turn",
]
