"""DiaTool-DPO dataset builder (Jung et al. 2025, arXiv 2504.02882): turns single-call tool
dialogues in any language into multi-turn chosen/rejected trajectory pairs for `diatool_dpo_loss`.

An application on top of the data layer: it may use `jaxtool.sample` (the LLM augmenter over a
jaxtool model) and `jaxtool.eval` (benchmark readers for the split guard, report writers), which
`jaxtool.data` may not.

Pipeline (`jaxtool data build-diatool`, see `jaxtool.commands.build_diatool`):

1. `seeds`   — Type 1 seeds: first user turn with every required argument → call → result → completion;
   `jaxtool.eval.split_guard` — the split guard drops seeds whose first turn is a benchmark test query (BFCL, ...).
2. `rules` / `llm` — Type 1 → Type 2 augmenters (Easy: some required values removed, asked in one
   question; Hard: all N removed, answered one per turn); `slots` holds their common output.
3. `pairs`   — Table 1: Type 1 / 2 / 3 chosen vs rejected trajectories, each assistant message
   labelled with its MDP state (`states`).
4. `build`   — 95/5 train/validation split by seed, JSONL output, Table 1 / Table 2 summaries.
"""

from jaxtool.diatool.build import (BuildStats, build, difficulties_of, read_pairs, render_tables,
                                   split_seeds, summary_dict, table1, table2, write_summary)
from jaxtool.eval.split_guard import SplitGuard, bfcl_data_dir, bfcl_queries, normalize_query
from jaxtool.sample.openai_client import EndpointError, OpenAIChatClient
from jaxtool.diatool.llm import (AugmentCache, BackendChatClient, EndpointDown,
                                 LLMAugmenter, parse_json_object, validate_easy,
                                 validate_hard)
from jaxtool.diatool.pairs import KINDS, PAIR_KINDS, Pair, PairKind, build_pairs, check_pair
from jaxtool.diatool.rules import RulesAugmenter
from jaxtool.diatool.seeds import NotASeed, Seed, SeedReport, collect_seeds, extract_seed, seed_id_of
from jaxtool.diatool.slots import NoAugmentation, SlotFilling, SlotStep, structure_problems
from jaxtool.diatool.states import (COMPLETE, INITIAL, SLOT_FILLING, STATE_NAMES, TOOL_CALL,
                                    WAIT_RESPONSE, label_problems, parse_trajectory, trajectory,
                                    trajectory_states)
from jaxtool.diatool.templates import Templates, load_templates
from jaxtool.diatool.values import find_spans, mentions_all, mentions_any, value_variants

__all__ = [
    "AugmentCache", "BackendChatClient", "BuildStats", "COMPLETE", "EndpointDown", "EndpointError", "INITIAL",
    "KINDS", "LLMAugmenter", "NoAugmentation", "NotASeed", "OpenAIChatClient", "PAIR_KINDS", "Pair", "PairKind",
    "RulesAugmenter", "SLOT_FILLING", "STATE_NAMES", "Seed", "SeedReport", "SlotFilling", "SlotStep",
    "SplitGuard", "TOOL_CALL", "Templates", "WAIT_RESPONSE", "bfcl_data_dir", "bfcl_queries", "build",
    "build_pairs", "check_pair", "collect_seeds", "difficulties_of", "extract_seed", "find_spans",
    "label_problems", "load_templates", "mentions_all", "mentions_any", "normalize_query",
    "parse_json_object", "parse_trajectory", "read_pairs", "render_tables", "seed_id_of", "split_seeds",
    "structure_problems", "summary_dict", "table1", "table2", "trajectory", "trajectory_states",
    "validate_easy", "validate_hard", "value_variants", "write_summary",
]
