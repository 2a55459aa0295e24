"""`jaxtool eval <benchmark>`: the evaluation command group."""

from __future__ import annotations

import argparse

from jaxtool.commands._registry import add_commands, group_help

# (benchmark, module defining `register(subparsers)`); a module not in this installation is skipped
SUBCOMMANDS = [
    ("bfcl", "jaxtool.commands.eval_bfcl"),
    ("bfcl-score", "jaxtool.commands.eval_bfcl_score"),
    ("dialog", "jaxtool.commands.eval_dialog"),
    ("apibank", "jaxtool.commands.eval_apibank"),
    ("multiwoz", "jaxtool.commands.eval_multiwoz"),
    ("suite", "jaxtool.commands.eval_suite"),
]

DESCRIPTION = """Evaluate a model on a benchmark. Each benchmark writes per-item JSONL, a summary JSON, a
markdown table and a PNG bar chart into --out (default runs/eval/<benchmark>).

Examples:
  jaxtool eval bfcl --model smollm2 --categories simple_python,multiple --limit 20
  jaxtool eval bfcl-score --category simple_python --predictions preds.jsonl --out verdicts.json
  jaxtool eval dialog --model runs/dpo/hf --data functionchat:FunctionChat-Dialog.jsonl
  jaxtool eval dialog --model smollm2 --data diatool:runs/diatool/valid.jsonl
  jaxtool eval apibank --model smollm2 --data level-1-api.json
  jaxtool eval multiwoz --model smollm2 --data val.json --limit 10

--model is a jaxtool checkpoint, an HF directory, a .gguf file or 'smollm2'; --backend hf runs an
HF directory through transformers instead of jaxtool's generator (a cross-check)."""


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="evaluate a model on BFCL, FunctionChat-Bench dialogues, API-Bank or MultiWOZ",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="eval_command", metavar="BENCHMARK")
    add_commands(sub, SUBCOMMANDS, group="jaxtool eval")
    parser.set_defaults(func=group_help(parser))
    return parser
