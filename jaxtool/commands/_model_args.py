"""What every model-running evaluation command shares: the model/backend flags, their checks, the
backend they open, and the report they write and print.

The backend names come from `jaxtool.sample.backend.BACKENDS` (their one definition). The backend
and the chat format are looked up when a command runs (`jaxtool.sample.backend.load_backend`,
`jaxtool.eval.textgen.resolve_format`), so tests substitute scripted stand-ins there.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable

from jaxtool.sample.backend import BACKENDS

MODEL_HELP = "jaxtool checkpoint, HF directory, .gguf file, or 'smollm2' (the embedded SmolLM2-135M-Instruct)"


def add_model_args(parser: argparse.ArgumentParser, *, benchmark: str, default_format: str,
                   default_max_new_tokens: int) -> None:
    """--model --backend --format --out --batch-size --max-new-tokens --limit --no-progress."""
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--backend", default="jax", choices=BACKENDS,
                        help="jax: jaxtool's generator (default); hf: an HF directory through transformers "
                             "(needs torch; a cross-check)")
    parser.add_argument("--format", default=default_format,
                        help=f"chat format used to prompt and parse (default {default_format})")
    parser.add_argument("--out", default=None, help=f"output directory (default runs/eval/{benchmark})")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=default_max_new_tokens,
                        help=f"generation budget per item (default {default_max_new_tokens})")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N items")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def check_model_args(args: argparse.Namespace) -> None:
    """A clear error for counts below 1 (before any data or model is read)."""
    from jaxtool.errors import ConfigError

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")


def out_dir(args: argparse.Namespace, name: str) -> str:
    """--out, or runs/eval/<name>."""
    return args.out or os.path.join("runs", "eval", name)


def load_backend_from_args(args: argparse.Namespace) -> Any:
    """`jaxtool.sample.backend.load_backend(args.backend, args.model)`, with the command's `--batch-size`
    (when it has one) as the backend's own batch: the rows of one generate call are decoded together, not
    split again at the backend's default of 8."""
    from jaxtool.sample import backend

    bs = getattr(args, "batch_size", None)
    return backend.load_backend(args.backend, args.model, **({"batch_size": bs} if bs else {}))


def write_and_print(result: Any, out: str, name: str, *, summary: dict, table_rows: Callable,
                    chart_values: Callable, chart_title: str) -> int:
    """Write items JSONL / summary JSON / markdown table / chart (`jaxtool.eval.report.write_report`),
    print the table and the paths written."""
    from jaxtool.eval.report import write_report

    header, rows = table_rows(result.summary)
    paths = write_report(out, name, items=result.records, summary=summary, header=header, rows=rows,
                         chart=chart_values(result.summary), chart_title=chart_title)
    print(result.table())
    for kind, p in paths.items():
        print(f"{kind}: {p}")
    _print_kernels()
    return 0


def _print_kernels() -> None:
    """The attention kernel(s) the jax backend actually traced, with the reason for each (a requested
    kernel that could not serve the inputs says why); nothing for backends that trace no jaxtool model."""
    import sys

    from jaxtool.ops import attention

    if attention.resolutions():
        print(f"attention kernel(s) used: {attention.describe_resolutions()}", file=sys.stderr)
