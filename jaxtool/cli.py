"""`jaxtool` command line. Each area registers its own subcommand; heavy imports happen only when a
subcommand runs, so `jaxtool --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from jaxtool.errors import JaxtoolError

# (subcommand, module defining `register(subparsers)`)
COMMANDS = [
    ("quickstart", "jaxtool.commands.quickstart"),
    ("train", "jaxtool.train.cli"),
    ("convert", "jaxtool.commands.convert"),
    ("data", "jaxtool.data.cli"),
    ("eval", "jaxtool.eval.cli"),
    ("bench", "jaxtool.bench"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxtool",
        description="JAX-native training and evaluation of tool-using LLMs "
        "(DiaTool-DPO, iTool, CALM). Run `jaxtool quickstart` for the end-to-end demo "
        "on the embedded SmolLM2-135M-Instruct.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:  # subcommand not built yet
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        rc = args.func(args)
    except JaxtoolError as e:
        print(f"jaxtool {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jaxtool {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
