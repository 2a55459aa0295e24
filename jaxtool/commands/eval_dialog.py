"""`jaxtool eval dialog`: teacher-forced dialogue-flow evaluation (FunctionChat-Bench, DiaTool-DPO
validation flows); the evaluation itself is `jaxtool.eval.dialog`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from jaxtool.commands._model_args import (add_model_args, check_model_args, load_backend_from_args, out_dir,
                                          write_and_print)

DESCRIPTION = """Evaluate every assistant turn of gold dialogues, teacher-forced: the model sees the gold history
and must produce the turn's action — call the tool (exact name + arguments), ask for a missing
required argument (slot), decline when no tool fits (relevance), or answer from the tool result
(completion). Reports per-type accuracy with micro and macro averages.

Examples:
  jaxtool eval dialog --model smollm2 --data functionchat:FunctionChat-Dialog.jsonl
  jaxtool eval dialog --model runs/dpo/hf --data diatool:runs/diatool/valid.jsonl --format hermes
  jaxtool eval dialog --model smollm2 --data functionchat:FunctionChat-Singlecall.jsonl --tools-type exact \\
      --judge llm --judge-model gpt-4o             # FunctionChat's rubrics, OPENAI_API_KEY from the environment"""


def register(subparsers) -> argparse.ArgumentParser:
    from jaxtool.eval.functionchat_data import TOOLS_TYPES

    p = subparsers.add_parser(
        "dialog", help="teacher-forced dialogue-flow evaluation (FunctionChat-Bench, DiaTool-DPO validation)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, benchmark="dialog_<source>", default_format="hermes", default_max_new_tokens=256)
    p.add_argument("--data", required=True,
                   help="functionchat:FILE (Singlecall / CallDecision / Dialog .jsonl), diatool:FILE "
                        "(DiaTool-DPO pair rows; chosen trajectories) or another source NAME:FILE")
    p.add_argument("--tools-type", default="all", choices=("all",) + TOOLS_TYPES,
                   help="FunctionChat Singlecall: evaluate one tool-set variant only (default all)")
    p.add_argument("--system-prompt", default="auto",
                   help="FunctionChat Singlecall/Dialog system prompt: 'auto' (system_prompt.txt next to "
                        "the data file, as FunctionChat's runner), a file, the text itself, or '' for none")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="a malformed data row stops the run (default) or is counted and skipped")
    p.add_argument("--judge", choices=("rules", "llm"), default="rules",
                   help="offline rule-based judge (default) or an LLM judge with FunctionChat's rubrics")
    p.add_argument("--judge-model", default=None, help="LLM judge model name (e.g. gpt-4o)")
    p.add_argument("--judge-base-url", default=None,
                   help="OpenAI-compatible base URL ending in /v1 "
                        "(default $OPENAI_BASE_URL, else https://api.openai.com/v1)")
    p.add_argument("--judge-api-key", default=None, help="API key (default $OPENAI_API_KEY)")
    p.add_argument("--rubrics", default=None,
                   help="directory with rubric_{call,completion,relevance,slot}.txt (default: next to the data file)")
    p.add_argument("--judge-retries", type=int, default=3, help="retries per judged turn (default 3)")
    p.add_argument("--judge-timeout", type=float, default=120.0, help="seconds per judge request (default 120)")
    p.set_defaults(func=run)
    return p


def build_judge(args: argparse.Namespace, data_path: str, out: str) -> Any:
    """The judge the flags ask for (checked before any model is loaded)."""
    from jaxtool.eval.judge import RuleJudge

    if args.judge == "rules":
        return RuleJudge()
    from jaxtool.errors import ConfigError
    from jaxtool.eval.llm_judge import LLMJudge, load_rubrics

    model = args.judge_model
    if not model:
        raise ConfigError("--judge llm needs --judge-model (the judge's model name)")
    base_url = args.judge_base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    api_key = args.judge_api_key or os.environ.get("OPENAI_API_KEY")
    rubric_dir = args.rubrics or os.path.dirname(os.path.abspath(data_path))
    return LLMJudge(base_url=base_url, model=model, api_key=api_key, rubrics=load_rubrics(rubric_dir),
                    cache_path=os.path.join(out, "judge_cache.jsonl"), max_retries=args.judge_retries,
                    timeout=args.judge_timeout)


def run(args: argparse.Namespace) -> int:
    from jaxtool.data.sources.base import LoadReport
    from jaxtool.errors import DataError
    from jaxtool.eval import textgen
    from jaxtool.eval.dialog import chart_values, evaluate_dialogs, table_rows
    from jaxtool.eval.dialog_data import load_dialogs, split_spec

    check_model_args(args)
    source, path = split_spec(args.data)
    out = out_dir(args, f"dialog_{source}")
    report = LoadReport(args.data, args.on_bad_row)
    opts = {"system_prompt": args.system_prompt, "tools_type": args.tools_type} if source == "functionchat" else {}
    conversations = list(load_dialogs(args.data, on_bad_row=args.on_bad_row, report=report, limit=args.limit, **opts))
    if report.bad_rows:
        print(report)
    if not conversations:
        raise DataError(f"{args.data}: no conversations to evaluate")
    judge = build_judge(args, path, out)
    backend = load_backend_from_args(args)
    fmt = textgen.resolve_format(args.format, backend.tokenizer)
    result = evaluate_dialogs(conversations, backend, fmt, judge=judge, batch_size=args.batch_size,
                              max_new_tokens=args.max_new_tokens, progress=not args.no_progress)
    summary = {"benchmark": "dialog", "data": args.data, "model": args.model, "format": args.format,
               **result.summary}
    return write_and_print(result, out, f"dialog_{source}", summary=summary, table_rows=table_rows,
                           chart_values=chart_values, chart_title=f"dialogue flow: {os.path.basename(path)}")
