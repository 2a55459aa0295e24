"""`jaxtool eval bfcl-score`: score any model's predictions for one BFCL category."""

from __future__ import annotations

import argparse

DESCRIPTION = """Score predictions for one BFCL category with BFCL's checker rules; no model is run.

Single-turn categories: rows of --predictions (JSONL) are {"id", "calls": [{"name", "arguments"}]}
(null = unparseable output), {"id", "text": raw model output} decoded per --format, or BFCL's own
{"id", "result"}. Multi-turn categories (multi_turn_base, multi_turn_miss_func, multi_turn_miss_param,
multi_turn_long_context): rows are BFCL's decoded form {"id", "result": [[["cd(folder='x')", ...], ...], ...]}
(turns -> steps -> call strings), replayed on BFCL's simulators (calls parsed, never evaluated).

Which ids are scored: by default the ids the predictions file holds (the output says how many of the
category that is); --ids scores the listed ids (an id without a prediction fails); --all-ids scores
every id of the category (ids without a prediction fail). Writes one verdict per scored id under
"verdicts", with the reason for each failure.

Examples:
  jaxtool eval bfcl-score --category simple_python --predictions runs/eval/bfcl/bfcl_predictions.jsonl \\
      --out runs/eval/simple_python_verdicts.json
  jaxtool eval bfcl-score --category parallel --predictions other_model.jsonl --format json --out verdicts.json
  jaxtool eval bfcl-score --category multi_turn_base --predictions mt.jsonl --ids multi_turn_base_0,multi_turn_base_3 \\
      --out mt_verdicts.json"""


def register(subparsers) -> argparse.ArgumentParser:
    from jaxtool.eval.bfcl.data import SCORABLE_CATEGORIES
    from jaxtool.eval.bfcl.multi_turn import IRRELEVANCE_RULES
    from jaxtool.eval.bfcl.score import SYNTAXES

    p = subparsers.add_parser("bfcl-score", help="score a predictions JSONL for one BFCL category (any model)",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--category", required=True, help=f"one of {', '.join(SCORABLE_CATEGORIES)}")
    p.add_argument("--predictions", required=True, help="JSONL file of predictions")
    p.add_argument("--out", required=True, help="where to write the verdicts JSON")
    p.add_argument("--format", default="pythonic", choices=SYNTAXES, help="how to decode raw 'text' rows")
    p.add_argument("--underscore-names", action="store_true", help="expect tool names with '.' replaced by '_'")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--ids", default=None, help="comma-separated ids to score (default: the file's ids)")
    which.add_argument("--all-ids", action="store_true",
                       help="score every id of the category; ids without a prediction fail")
    p.add_argument("--irrelevance", default="runner", choices=IRRELEVANCE_RULES,
                   help="multi-turn only: 'runner' = what BFCL's runner does (calls in a turn whose ground truth "
                        "is empty are not penalised); 'strict' = also apply BFCL's multi_turn_irrelevance_checker")
    p.add_argument("--data-dir", default=None, help="a directory laid out like bfcl_eval/data (default: installed)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from jaxtool.errors import DataError
    from jaxtool.eval.bfcl.data import check_scorable_category, read_category
    from jaxtool.eval.bfcl.multi_turn import (is_multi_turn, read_multi_turn, read_multi_turn_predictions,
                                              score_multi_turn)
    from jaxtool.eval.bfcl.score import read_predictions, score_predictions, select_ids
    from jaxtool.eval.report import write_json

    check_scorable_category(args.category)
    multi = is_multi_turn(args.category)
    if multi:
        entries = read_multi_turn(args.category, root=args.data_dir)
        all_ids = [e["id"] for e in entries]
        preds = read_multi_turn_predictions(args.predictions, all_ids, args.category)
    else:
        items = read_category(args.category, root=args.data_dir)
        all_ids = [it.id for it in items]
        preds = read_predictions(args.predictions, all_ids, args.category, args.format)
    requested = None
    if args.ids is not None:
        requested = [i.strip() for i in args.ids.split(",") if i.strip()]
        unknown = [i for i in requested if i not in set(all_ids)]
        if unknown:
            raise DataError(f"--ids: {', '.join(unknown[:5])} not in BFCL category {args.category}")
    keep = set(select_ids(all_ids, preds, requested, args.all_ids))
    if multi:
        result = score_multi_turn([e for e in entries if e["id"] in keep], preds, irrelevance=args.irrelevance,
                                  path=args.predictions)
    else:
        result = score_predictions([it for it in items if it.id in keep], preds, underscore_names=args.underscore_names)
    subset = "all" if args.all_ids else ("ids" if requested is not None else "predictions")
    out = {"category": args.category, "predictions": args.predictions, "scored_ids": subset,
           "category_items": len(all_ids), **({"irrelevance": args.irrelevance} if multi else {}), **result}
    write_json(args.out, out)
    print(f"{args.category}: {result['correct']}/{result['total']} = {result['accuracy']:.4f} "
          f"({result['total']} of the category's {len(all_ids)} items)"
          + (f"; {result['missing']} scored ids had no prediction" if result["missing"] else "") + f"; wrote {args.out}")
    return 0
