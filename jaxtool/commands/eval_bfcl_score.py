"""`jaxtool eval bfcl-score`: score any model's predictions for one BFCL category."""

from __future__ import annotations

import argparse

DESCRIPTION = """Score predictions for one BFCL category with BFCL's AST checker rules; no model is run.

Rows of --predictions (JSONL): {"id", "calls": [{"name", "arguments"}]} (null = unparseable output),
{"id", "text": raw model output} decoded per --format, or BFCL's own {"id", "result"}. Writes one
verdict per item id, with the reason for each failure; ids without a prediction fail.

Examples:
  jaxtool eval bfcl-score --category simple_python --predictions runs/eval/bfcl/bfcl_predictions.jsonl \\
      --out runs/eval/simple_python_verdicts.json
  jaxtool eval bfcl-score --category parallel --predictions other_model.jsonl --format json --out verdicts.json"""


def register(subparsers) -> argparse.ArgumentParser:
    from jaxtool.eval.bfcl.data import CATEGORIES
    from jaxtool.eval.bfcl.score import SYNTAXES

    p = subparsers.add_parser("bfcl-score", help="score a predictions JSONL for one BFCL category (any model)",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--category", required=True, help=f"one of {', '.join(CATEGORIES)}")
    p.add_argument("--predictions", required=True, help="JSONL file of predictions")
    p.add_argument("--out", required=True, help="where to write the verdicts JSON")
    p.add_argument("--format", default="pythonic", choices=SYNTAXES, help="how to decode raw 'text' rows")
    p.add_argument("--underscore-names", action="store_true", help="expect tool names with '.' replaced by '_'")
    p.add_argument("--data-dir", default=None, help="a directory laid out like bfcl_eval/data (default: installed)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from jaxtool.eval.bfcl.data import check_category, read_category
    from jaxtool.eval.bfcl.score import read_predictions, score_predictions
    from jaxtool.eval.report import write_json

    check_category(args.category)
    items = read_category(args.category, root=args.data_dir)
    preds = read_predictions(args.predictions, (it.id for it in items), args.category, args.format)
    result = score_predictions(items, preds, underscore_names=args.underscore_names)
    out = {"category": args.category, "predictions": args.predictions, **result}
    write_json(args.out, out)
    print(f"{args.category}: {result['correct']}/{result['total']} = {result['accuracy']:.4f}"
          + (f" ({result['missing']} ids had no prediction)" if result["missing"] else "") + f"; wrote {args.out}")
    return 0
