"""Choose the DiaTool-DPO experiment's learning rate / beta / epochs from validation runs.

    python launch/pick_diatool_setting.py RUN1/results.json RUN2/results.json ...

Each file is the ``results.json`` of one ``jaxtool experiment diatool ... eval_on=validation`` run
(validation seeds of the *training* services; a held-out run is refused). The rule
(docs/experiment.md): the highest macro average of the DiaTool-DPO arm; among settings within 0.02 of
it, the largest first-decision separation. Prints a table on stderr and ``LR BETA EPOCHS`` of the
chosen setting on stdout, for a shell to read.
"""
import argparse
import json
import sys

from jaxtool.errors import ConfigError
from jaxtool.experiment.diatool import pick_setting


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="results.json of eval_on=validation runs")
    ap.add_argument("--arm", default="diatool")
    ap.add_argument("--tie", type=float, default=0.02, help="macro averages this close count as a tie")
    a = ap.parse_args(argv)
    res = []
    for p in a.results:
        try:
            with open(p) as fh:
                res.append(json.load(fh))
        except (OSError, json.JSONDecodeError) as e:
            ap.error(f"{p}: {e}")
    try:
        i, rows = pick_setting(res, arm=a.arm, tie=a.tie)
    except ConfigError as e:
        ap.error(str(e))
    except KeyError as e:
        ap.error(f"not the results.json of `jaxtool experiment diatool` with arm {a.arm!r}: no field {e}")
    for j, (p, row) in enumerate(zip(a.results, rows)):
        print(f"{'*' if j == i else ' '} {p}: lr {row['lr']:g} beta {row['beta']:g} epochs "
              f"{row['epochs']}: macro {row['macro']:.3f} separation {row['separation']:+.3f}", file=sys.stderr)
    few = {t: n for t, n in rows[i]["n_turns_by_type"].items() if 0 < n < 5}
    if few:
        print(f"warning: turn types with fewer than 5 validation turns weigh as much as the others in the macro "
              f"average: {few}; raise cpu.heldout_per_service for a steadier choice", file=sys.stderr)
    print(f"{rows[i]['lr']:g} {rows[i]['beta']:g} {rows[i]['epochs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
