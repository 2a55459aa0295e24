"""`jaxtool` command line: the table of top-level commands. Each command's parser lives in its own
module under `jaxtool.commands`; heavy imports happen only when a command runs, so `jaxtool --help`
stays fast."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from jaxtool.commands._registry import add_commands
from jaxtool.errors import JaxtoolError

# (command, module defining `register(subparsers)`); a module not in this installation is skipped
COMMANDS = [
    ("quickstart", "jaxtool.commands.quickstart"),
    ("train", "jaxtool.commands.train"),
    ("convert", "jaxtool.commands.convert"),
    ("data", "jaxtool.commands.data"),
    ("eval", "jaxtool.commands.eval"),
    ("itool", "jaxtool.commands.itool"),
    ("rl", "jaxtool.commands.rl"),
    ("experiment", "jaxtool.commands.experiment"),
    ("diatool", "jaxtool.commands.diatool"),
    ("bench", "jaxtool.commands.bench"),
]

DESCRIPTION = """JAX-native training and evaluation of tool-using LLMs (DiaTool-DPO, iTool, CALM).

Start here:
  jaxtool quickstart                        # the whole method end to end on the embedded SmolLM2-135M (~9 min CPU)
  jaxtool experiment diatool --config configs/experiments/diatool_sgd_smollm2.yaml   # does DiaTool-DPO help?
  jaxtool data inspect glaive:FILE          # how a dataset renders and which tokens are trained
  jaxtool train configs/sft/smollm2_lora.yaml data.train=conversations:my_dialogues.jsonl
  jaxtool eval bfcl --model smollm2 --categories simple_python --limit 20
  jaxtool COMMAND --help                    # every command explains itself, with examples

Models are given as an HF directory, a .gguf file, a jaxtool checkpoint, or 'smollm2' (the
embedded default model)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxtool", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_commands(sub, COMMANDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. The one place where user-facing errors become a message: a `JaxtoolError`
    raised anywhere under a command (a bad file, key or row; `NonFiniteLoss` from a training loop; a
    damaged checkpoint) or an `OSError` on a path (missing, unreadable, disk full) is printed as
    `jaxtool CMD: error: ...` and the exit code is 2; `-v` adds the traceback. Anything else is a
    bug in jaxtool and keeps its traceback."""
    import os

    # transformers' "PyTorch was not found" advisory means nothing to a jaxtool user (jaxtool needs no
    # PyTorch); TRANSFORMERS_NO_ADVISORY_WARNINGS silences exactly its advisories
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # a command that takes key=value overrides (`set_defaults(_overrides="overrides")`) also takes
        # them after its flags: `jaxtool train RUN/config.yaml --resume max_steps=16`
        dest = getattr(args, "_overrides", None)
        if dest and all("=" in x and not x.startswith("-") for x in extra):
            setattr(args, dest, list(getattr(args, dest) or []) + extra)
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        rc = args.func(args)
    except JaxtoolError as e:
        return _fail(args, str(e))
    except OSError as e:
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        return _fail(args, f"{e.strerror or type(e).__name__}{where}" if e.strerror else f"{type(e).__name__}: {e}")
    except KeyboardInterrupt:
        print(f"jaxtool {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def _fail(args, message: str) -> int:
    """One line on stderr (a message that spans lines, e.g. a YAML parser's, is joined with "; ")."""
    if getattr(args, "verbose", False):
        traceback.print_exc()
    message = "; ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"jaxtool {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
