"""`jaxtool eval multiwoz`: MultiWOZ, two named protocols —
`--protocol dst` (default): zero-shot dialogue-state tracking (joint goal accuracy) with CALM-style
prompts (`jaxtool.eval.multiwoz`);
`--protocol e2e`: end to end (CALM §5.1, App. B; AutoTOD-style agent): the model queries and books
through tools over the MultiWOZ database and answers the replayed user turns; Inform / Success /
BLEU by Tomiinek/MultiWOZ_Evaluation's rules and JGA of the API state (`jaxtool.eval.multiwoz_e2e`)."""

from __future__ import annotations

import argparse
import os

from jaxtool.commands._model_args import (add_model_args, check_model_args, load_backend_from_args, out_dir,
                                          write_and_print)

DESCRIPTION = """Two protocols.

dst (default): zero-shot dialogue-state tracking per user turn: ask the turn's domain, then the values
stated for that domain's slots; the accumulated state is compared with the gold state after every turn
(joint goal accuracy, IC-DST value normalisation).

e2e: the model is the system of each dialogue. Per user turn (replayed from the dataset, as CALM and
AutoTOD evaluate offline) it may call find_* / book_* tools over the MultiWOZ database (--multiwoz-db,
the release's db/ folder), sees their results, and replies. Scored by Tomiinek/MultiWOZ_Evaluation's
rules: Inform, Success, BLEU (SacreBLEU corpus BLEU of delexicalised replies), and JGA of the state the
API calls built. All dialogues' current steps are decoded in one batch.

Examples:
  jaxtool eval multiwoz --model smollm2 --data val.json --limit 20
  jaxtool eval multiwoz --model runs/calm/hf --data test.json --ontology ontology.json --domain gold
  jaxtool eval multiwoz --protocol e2e --model smollm2 --data val.json --multiwoz-db multiwoz/db --limit 10"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "multiwoz", help="MultiWOZ: DST joint goal accuracy (--protocol dst) or end-to-end Inform/Success/BLEU "
                         "through database tools (--protocol e2e)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, benchmark="multiwoz", default_format="chat_template", default_max_new_tokens=64)
    p.add_argument("--protocol", choices=("dst", "e2e"), default="dst",
                   help="dst: zero-shot state-tracking prompts (default); e2e: agent with database tools")
    p.add_argument("--data", required=True,
                   help="MultiWOZ 2.1-layout JSON (object keyed by dialogue id, e.g. ConvLab-2 val.json; "
                        "MultiWOZ 2.4's data.json loads too)")
    p.add_argument("--ontology", default=None,
                   help="IC-DST ontology JSON (\"domain-slot\" -> values) for named-entity repair of predicted states")
    p.add_argument("--domain", choices=("predicted", "gold"), default="predicted",
                   help="dst only: domain of each turn, asked from the model (default) or from the gold dialogue acts")
    p.add_argument("--multiwoz-db", default=None,
                   help="e2e only (required): MultiWOZ's db/ folder (restaurant_db.json, hotel_db.json, ...)")
    p.add_argument("--max-steps", type=int, default=5,
                   help="e2e only: model steps (tool calls + the reply) per user turn (default 5)")
    p.add_argument("--reference-rule", choices=("gold", "env"), default="gold",
                   help="e2e only: a reference number counts for Success at turns where the gold dialogue booked "
                        "(gold, mwzeval's rule; default) or where the environment booked (env)")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="a malformed dialogue stops the run (default) or is counted and skipped")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from jaxtool.data.sources.base import LoadReport
    from jaxtool.errors import ConfigError, DataError
    from jaxtool.eval import textgen
    from jaxtool.eval.multiwoz import load_ontology

    check_model_args(args)
    ontology = load_ontology(args.ontology) if args.ontology else None
    report = LoadReport(f"multiwoz:{args.data}", args.on_bad_row)
    if args.protocol == "e2e":
        from jaxtool.envs.multiwoz import MultiwozDB
        from jaxtool.eval import multiwoz_e2e as e2e

        if not args.multiwoz_db:
            raise ConfigError("--protocol e2e needs --multiwoz-db DIR (MultiWOZ's db/ folder)")
        if args.max_steps < 1:
            raise ConfigError(f"--max-steps must be >= 1, got {args.max_steps}")
        db = MultiwozDB.load(args.multiwoz_db)
        dialogues = list(e2e.load_e2e_dialogues(args.data, on_bad_row=args.on_bad_row, report=report,
                                                limit=args.limit))
        if report.bad_rows:
            print(report)
        if not dialogues:
            raise DataError(f"{args.data}: no dialogues")
        backend = load_backend_from_args(args)
        fmt = textgen.resolve_format(args.format, backend.tokenizer)
        result = e2e.evaluate_multiwoz_e2e(dialogues, backend, fmt, db, max_steps=args.max_steps,
                                           batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                           reference_rule=args.reference_rule, ontology=ontology,
                                           progress=not args.no_progress)
        summary = {"benchmark": "multiwoz-e2e", "data": args.data, "db": args.multiwoz_db, "model": args.model,
                   "format": args.format, "ontology": args.ontology, "bad_rows": report.bad_rows,
                   "dialogues": result.dialogues, **result.summary}
        return write_and_print(result, out_dir(args, "multiwoz_e2e"), "multiwoz_e2e", summary=summary,
                               table_rows=e2e.table_rows, chart_values=e2e.chart_values,
                               chart_title=f"MultiWOZ end to end: {os.path.basename(args.data)}")

    from jaxtool.eval.multiwoz import chart_values, evaluate_multiwoz, table_rows
    from jaxtool.eval.multiwoz_data import load_dialogues

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
    summary = {"benchmark": "multiwoz-dst", "protocol": "dst", "data": args.data, "model": args.model,
               "format": args.format, "ontology": args.ontology, **result.summary}
    return write_and_print(result, out_dir(args, "multiwoz"), "multiwoz", summary=summary, table_rows=table_rows,
                           chart_values=chart_values, chart_title=f"MultiWOZ DST: {os.path.basename(args.data)}")
