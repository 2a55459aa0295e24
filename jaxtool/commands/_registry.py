"""The one loader of command tables: `jaxtool.cli.COMMANDS` and the `SUBCOMMANDS` of the command
groups (`jaxtool data ...`, `jaxtool eval ...`).

A table is a list of `(name, module)`; each module defines `register(subparsers)`, which adds its
parser under `name`. Modules are imported when the parser is built, so a command module imports
its heavy dependencies (JAX, transformers) inside the function that runs it, keeping `--help` fast.
A module missing from this installation is skipped (commands are added as they land); an import
error inside a module that exists is raised as is.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Sequence


def add_commands(subparsers, table: Sequence[tuple[str, str]], *, group: str = "jaxtool") -> None:
    """Call `register(subparsers)` of every module in `table` that is present."""
    for name, module in table:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:  # this command is not in this installation
                continue
            raise
        register = getattr(mod, "register", None)
        if register is None:
            warnings.warn(f"{module} has no register(subparsers); `{group} {name}` is unavailable", stacklevel=2)
            continue
        register(subparsers)


def group_help(parser):
    """A `func` for a command group run without a subcommand: print the group's help, exit 1."""
    def _help(_args) -> int:
        parser.print_help()
        return 1

    return _help
