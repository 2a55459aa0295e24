"""`jaxtool experiment ...`: reproducible experiments that test a method's claim end to end."""

from __future__ import annotations

import argparse

from jaxtool.commands._registry import add_commands, group_help

SUBCOMMANDS = [
    ("diatool", "jaxtool.commands.experiment_diatool"),
]

DESCRIPTION = """Experiments: fixed seeds, held-out data, every arm evaluated on the same items, bootstrap
confidence intervals, a markdown table + JSON + PNG chart.

Examples:
  jaxtool experiment diatool --config configs/experiments/diatool_sgd_smollm2.yaml
  jaxtool experiment diatool --config configs/experiments/diatool_sgd_smollm2.yaml size=accelerator"""


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("experiment", help="reproducible experiments (DiaTool-DPO arms on held-out SGD services)",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="experiment_command", metavar="EXPERIMENT")
    add_commands(sub, SUBCOMMANDS, group="jaxtool experiment")
    parser.set_defaults(func=group_help(parser))
    return parser
