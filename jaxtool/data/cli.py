"""`jaxtool data ...`: the data command group.

Each sub-command lives in its own module with `register(subparsers)`; modules not present in this
build are skipped, so the group grows as they land (e.g. the DiaTool-DPO pair builder).
"""

from __future__ import annotations

import importlib

# (sub-command, module defining `register(subparsers)`)
SUBCOMMANDS = [
    ("inspect", "jaxtool.data.inspect"),
    ("build-diatool", "jaxtool.data.diatool_cli"),
]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="inspect and prepare tool-use conversation data",
        description="Inspect and prepare tool-use conversation data: see how a source renders in a chat "
                    "format, which tokens are trained, and how long the examples are.",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    for _name, module in SUBCOMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:  # not built yet
                continue
            raise
        mod.register(sub)

    def _help(_args) -> int:
        parser.print_help()
        return 1

    parser.set_defaults(func=_help)
