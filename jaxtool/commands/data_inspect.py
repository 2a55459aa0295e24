"""`jaxtool data inspect SOURCE`: one rendered example with its trained tokens marked, and a summary
(the work is `jaxtool.data.inspect.show`)."""

from __future__ import annotations

import argparse

DESCRIPTION = """Show how a dataset reaches the model: one example rendered in a chat format, tokenized exactly as
training does, with the trained (loss-masked) tokens wrapped in [[...]] (green on a terminal), then
a summary: rows read, bad rows by reason, examples dropped by tokenization, token-length percentiles
and the share of trained tokens.

SOURCE is a registry spec NAME:PATH (glaive, xlam, toolace, hammer, sgd, snips, conversations,
bfcl, functionchat, apibank, multiwoz) or a path to jaxtool-schema conversations (.jsonl / .json).

Examples:
  jaxtool data inspect glaive:data/glaive-function-calling-v2.json --format hermes
  jaxtool data inspect xlam:Salesforce/xlam-function-calling-60k --format llama3_json --limit 200 --index 5
  jaxtool data inspect runs/diatool/valid_flows.jsonl --max-length 1024 --truncation drop"""


def register(subparsers) -> argparse.ArgumentParser:
    from jaxtool.data.formats import FORMAT_NAMES
    from jaxtool.data.inspect import MARKS
    from jaxtool.data.tokenize import TRUNCATION_POLICIES

    p = subparsers.add_parser(
        "inspect", help="show one rendered example with trained tokens marked, plus length statistics",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="NAME:PATH registry spec, or a jaxtool-schema .jsonl/.json file")
    p.add_argument("--format", "-f", default="hermes", choices=FORMAT_NAMES, help="chat format (default hermes)")
    p.add_argument("--tokenizer", "-t", default="smollm2",
                   help="HF tokenizer directory or hub name, a .gguf file, or 'smollm2' (the embedded model; default)")
    p.add_argument("--index", type=int, default=0, help="which kept example to show (default 0)")
    p.add_argument("--limit", type=int, default=None, help="read at most this many rows")
    p.add_argument("--max-length", type=int, default=None, help="token limit applied as in training")
    p.add_argument("--truncation", choices=TRUNCATION_POLICIES, default="drop", help="policy for over-long examples")
    p.add_argument("--mark", choices=MARKS, default="auto",
                   help="how to mark trained tokens: [[...]] brackets, ANSI colour, or auto (colour on a terminal)")
    p.add_argument("--on-bad-row", choices=("skip", "error"), default="skip",
                   help="skip and count rows that do not convert (default), or stop at the first")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from jaxtool.data.inspect import show

    return show(args.source, format_name=args.format, tokenizer=args.tokenizer, index=args.index, limit=args.limit,
                max_length=args.max_length, truncation=args.truncation, mark=args.mark, on_bad_row=args.on_bad_row)
