"""`jaxtool eval multiwoz`: MultiWOZ dialogue-state tracking (joint goal accuracy) with CALM-style
zero-shot prompts; the evaluation itself is `jaxtool.eval.multiwoz`."""

from __future__ import annotations

import argparse
import os

from jaxtool.commands._model_args import (add_model_args, check_model_args, load_backend_from_args, out_dir,
                                          write_and_print)

DESCRIPTION = """Zero-shot dialogue-state tracking per user turn: ask the turn's domain, then the values stated for
that domain's slots; the accumulated state is compared with the gold state after every turn (joint
goal accuracy, IC-DST value normalisation).

Examples:
  jaxtool eval multiwoz --model smollm2 --data val.json --limit 20
  jaxtool eval multiwoz --model runs/calm/hf --data test.json --ontology ontology.json --domain gold"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "multiwoz", help="MultiWOZ dialogue-state tracking (joint goal accuracy), CALM-style zero-shot prompts",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, benchmark="multiwoz", default_format="chat_template", default_max_new_tokens=64)
    p.add_argument("--data", required=True,
                   help="MultiWOZ 2.1-layout JSON (object keyed by dialogue id, e.g. ConvLab-2 val.json)")
    p.add_argument("--ontology", default=None,
                   help="IC-DST ontology JSON (\"domain-slot\" -> values) for named-entity repair of predictions")
    p.add_argument("--domain", choices=("predicted", "gold"), default="predicted",
                   help="domain of each turn: asked from the model (default) or from the gold dialogue acts")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="a malformed dialogue stops the run (default) or is counted and skipped")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from jaxtool.data.sources.base import LoadReport
    from jaxtool.errors import DataError
    from jaxtool.eval import textgen
    from jaxtool.eval.multiwoz import chart_values, evaluate_multiwoz, load_ontology, table_rows
    from jaxtool.eval.multiwoz_data import load_dialogues

    check_model_args(args)
    ontology = load_ontology(args.ontology) if args.ontology else None
    report = LoadReport(f"multiwoz:{args.data}", args.on_bad_row)
    dialogues = list(load_dialogues(args.data, on_bad_row=args.on_bad_row, report=report, limit=args.limit))
    if report.bad_rows:
        print(report)
    if not dialogues:
        raise DataError(f"{args.data}: no dialogues")
    backend = load_backend_from_args(args)
    fmt = textgen.resolve_format(args.format, backend.tokenizer)
    result = evaluate_multiwoz(dialogues, backend, fmt, domain_source=args.domain, ontology=ontology,
                               batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                               progress=not args.no_progress)
    summary = {"benchmark": "multiwoz-dst", "data": args.data, "model": args.model, "format": args.format,
               "ontology": args.ontology, **result.summary}
    return write_and_print(result, out_dir(args, "multiwoz"), "multiwoz", summary=summary, table_rows=table_rows,
                           chart_values=chart_values, chart_title=f"MultiWOZ DST: {os.path.basename(args.data)}")
