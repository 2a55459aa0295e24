"""`jaxtool data ...`: the data command group."""

from __future__ import annotations

import argparse

from jaxtool.commands._registry import add_commands, group_help

# (subcommand, module defining `register(subparsers)`); a module not in this installation is skipped
SUBCOMMANDS = [
    ("inspect", "jaxtool.commands.data_inspect"),
    ("build-diatool", "jaxtool.commands.build_diatool"),
    ("build-calm", "jaxtool.commands.build_calm"),
]

DESCRIPTION = """Inspect and prepare tool-use conversation data.

Sources are NAME:PATH specs: glaive, xlam, toolace, hammer, sgd, snips, conversations (jaxtool's own
JSONL) and the benchmark sets bfcl, functionchat, apibank, multiwoz. PATH is a local
JSON/JSONL/Parquet file or an HF dataset name.

Examples:
  jaxtool data inspect glaive:data/glaive.jsonl --format hermes --tokenizer smollm2
  jaxtool data inspect functionchat:FunctionChat-Dialog.jsonl --index 3
  jaxtool data build-diatool --seeds glaive:data/glaive.jsonl --augmenter rules --out runs/diatool"""


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("data", help="inspect and prepare tool-use conversation data",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    add_commands(sub, SUBCOMMANDS, group="jaxtool data")
    parser.set_defaults(func=group_help(parser))
    return parser
