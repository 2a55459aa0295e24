"""`jaxtool eval apibank`: API-Bank level-1/2 (API-call accuracy, response ROUGE-L); the evaluation
itself is `jaxtool.eval.apibank`."""

from __future__ import annotations

import argparse
import os

from jaxtool.commands._model_args import (add_model_args, check_model_args, load_backend_from_args, out_dir,
                                          write_and_print)

DESCRIPTION = """Generate the next API-Request or AI reply for each API-Bank item and score it: the call is matched
statically (API name, argument names, values as API-Bank's parser reads them), a ToolSearcher call
by the tool it retrieves, replies by ROUGE-L as API-Bank computes it.

Examples:
  jaxtool eval apibank --model smollm2 --data level-1-api.json
  jaxtool eval apibank --model runs/sft/hf --data level-2-toolsearcher.json --format chat_template --limit 50"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("apibank", help="API-Bank level-1/2: API-call accuracy and response ROUGE-L",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, benchmark="apibank_l<level>", default_format="chat_template", default_max_new_tokens=128)
    p.add_argument("--data", required=True,
                   help="API-Bank JSON file: level-1/2 test items ({file, id, instruction, input, expected_output}) "
                        "or level-3 training items ({instruction, input, output})")
    p.add_argument("--level", type=int, choices=(1, 2, 3), default=None,
                   help="label for the report (default: 2 if the data has ToolSearcher calls, else 1)")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="a malformed data row stops the run (default) or is counted and skipped")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from jaxtool.data.calls import ParseError
    from jaxtool.data.sources.base import LoadReport
    from jaxtool.errors import DataError
    from jaxtool.eval import textgen
    from jaxtool.eval.apibank import (TOOLSEARCHER, ToolLibrary, chart_values, evaluate_apibank,
                                      parse_gold_request, table_rows)
    from jaxtool.eval.apibank_data import load_items

    check_model_args(args)
    report = LoadReport(f"apibank:{args.data}", args.on_bad_row)
    all_items = list(load_items(args.data, on_bad_row=args.on_bad_row, report=report))
    if report.bad_rows:
        print(report)
    items = all_items[: args.limit] if args.limit else all_items
    if not items:
        raise DataError(f"{args.data}: no API-Bank items")
    for it in items:  # fail on an unreadable gold call before loading the model
        if it.kind == "api" and isinstance(parse_gold_request(it.expected), ParseError):
            raise DataError(f"{args.data}, row {it.row}: expected output is not an API request: {it.expected[:120]!r}")
    level = args.level or (2 if any(it.kind == "api" and parse_gold_request(it.expected)[0].name == TOOLSEARCHER
                                    for it in items) else 1)
    library = ToolLibrary.from_items(all_items)
    backend = load_backend_from_args(args)
    fmt = textgen.resolve_format(args.format, backend.tokenizer)
    result = evaluate_apibank(items, backend, fmt, level=level, batch_size=args.batch_size,
                              max_new_tokens=args.max_new_tokens, library=library, progress=not args.no_progress)
    name = f"apibank_l{level}"
    summary = {"benchmark": "api-bank", "data": args.data, "model": args.model, "format": args.format,
               "tool_library_size": len(library.names), **result.summary}
    return write_and_print(result, out_dir(args, name), name, summary=summary, table_rows=table_rows,
                           chart_values=chart_values,
                           chart_title=f"API-Bank level {level}: {os.path.basename(args.data)}")
