"""`jaxtool eval <benchmark>`: the evaluation command group.

Each benchmark module registers its own sub-subcommand through a function
`register_<name>(subparsers)` (dashes in the name become underscores: `bfcl-score` ->
`register_bfcl_score`). A module that is not there yet is skipped, so the group works while
benchmarks are being added. Model-running benchmarks share the flags of `add_model_args` and get
their generator from `load_backend_from_args`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import warnings

# (sub-subcommand, module that defines register_<sub-subcommand>)
SUBCOMMANDS = [
    ("bfcl", "jaxtool.eval.bfcl"),
    ("bfcl-score", "jaxtool.eval.bfcl"),
    ("dialog", "jaxtool.eval.dialog"),
    ("apibank", "jaxtool.eval.apibank"),
    ("multiwoz", "jaxtool.eval.multiwoz"),
]

BACKENDS = ("jax", "hf")


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="evaluate a model on BFCL, FunctionChat-Bench, API-Bank or MultiWOZ",
        description="Evaluate a checkpoint on a benchmark. Each benchmark writes per-item JSONL, a summary "
                    "JSON, a markdown table and a PNG bar chart into --out.")
    sub = parser.add_subparsers(dest="eval_command", metavar="BENCHMARK")
    for name, module in SUBCOMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:  # benchmark not built yet
                continue
            raise
        fn = getattr(mod, "register_" + name.replace("-", "_"), None)
        if fn is None:
            warnings.warn(f"{module} has no register_{name.replace('-', '_')}(subparsers); "
                          f"`jaxtool eval {name}` is unavailable", stacklevel=2)
            continue
        fn(sub)

    def _help(args) -> int:
        parser.print_help()
        return 1

    parser.set_defaults(func=_help)
    return parser


def add_model_args(parser: argparse.ArgumentParser, *, default_format: str = "pythonic",
                   default_out: str = os.path.join("runs", "eval")) -> None:
    """The flags every model-running benchmark shares."""
    parser.add_argument("--model", required=True,
                        help="jaxtool checkpoint, HF directory, .gguf file, or 'smollm2' (the embedded model)")
    parser.add_argument("--backend", default="jax", choices=BACKENDS,
                        help="jax: jaxtool's generator (default); hf: the HF directory through transformers")
    parser.add_argument("--format", default=default_format,
                        help=f"chat format used to prompt and parse (default {default_format})")
    parser.add_argument("--out", default=default_out, help=f"output directory (default {default_out})")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="generation budget per item (default 512)")
    parser.add_argument("--limit", type=_positive_int, default=None, help="only the first N items of each category")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _positive_int(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {n}")
    return n


def load_backend_from_args(args):
    """`jaxtool.sample.backend.load_backend(args.backend, args.model)`."""
    from jaxtool.sample.backend import load_backend

    return load_backend(args.backend, args.model)
