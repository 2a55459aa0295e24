"""The one loader of command tables: `jaxtool.cli.COMMANDS` and the `SUBCOMMANDS` of the command
groups (`jaxtool data ...`, `jaxtool eval ...`).

A table is a list of `(name, module)`; each module defines `register(subparsers)`, which adds its
parser under `name`. Modules are imported when the parser is built, so a command module imports
its heavy dependencies (JAX, transformers) inside the function that runs it, keeping `--help` fast.
A module missing from this installation is skipped (commands are added as they land); an import
error inside a module that exists is raised as is.
"""

from __future__ import annotations

import warnings
from typing import Sequence

from jaxtool.errors import ConfigError
from jaxtool.registry import Registry, import_target

_ABSENT = object()


def command_table(table: Sequence[tuple[str, str]], *, group: str = "jaxtool") -> Registry:
    """A command table as a `jaxtool.registry.Registry`: name -> `"module:register"` (lazy)."""
    reg = Registry(f"`{group}` command", ConfigError)
    for name, module in table:
        reg.register(name, f"{module}:register")
    return reg


def add_commands(subparsers, table: Sequence[tuple[str, str]], *, group: str = "jaxtool") -> None:
    """Call `register(subparsers)` of every module in `table` that is present."""
    reg = command_table(table, group=group)
    for name in reg.names():
        target = reg.target(name)
        module = target.partition(":")[0]
        try:
            register = import_target(target, what=reg.what, name=name, absent=_ABSENT)
        except ConfigError:  # the module is there but has no register()
            warnings.warn(f"{module} has no register(subparsers); `{group} {name}` is unavailable", stacklevel=2)
            continue
        if register is _ABSENT:  # this command is not in this installation
            continue
        register(subparsers)


def group_help(parser):
    """A `func` for a command group run without a subcommand: print the group's help, exit 1."""
    def _help(_args) -> int:
        parser.print_help()
        return 1

    return _help
