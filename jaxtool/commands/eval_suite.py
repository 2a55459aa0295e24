"""``jaxtool eval suite``: each paper's evaluation on one model, its table in the paper's layout
(`jaxtool.eval.suite`).

    jaxtool eval suite --model runs/calm_smollm2/hf --suite calm --out runs/eval/calm_after \\
        --multiwoz-data val.json --multiwoz-db multiwoz/db --apibank-l1 level-1.json --apibank-l2 level-2.json \\
        --limit-multiwoz 2 --limit-apibank 8 --limit-bfcl 2 --compare runs/eval/calm_before
    jaxtool eval suite --model runs/itool/hf --suite itool --out runs/eval/itool --limit-bfcl 20
    jaxtool eval suite --model runs/diatool/hf --suite diatool --out runs/eval/diatool \\
        --functionchat-data functionchat:FunctionChat-Dialog.jsonl --format chat_template
"""

from __future__ import annotations

import argparse

from jaxtool.sample.backend import BACKENDS


def _pos_int(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {n}")
    return n


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "suite", help="a paper's evaluation table from one command (calm, itool, diatool), ours beside the paper's",
        description="Run every benchmark of a paper's evaluation on one model through the benchmarks' own "
                    "evaluators. calm: MultiWOZ end to end (Inform/Success/BLEU) and DST (JGA), API-Bank L1/L2 "
                    "(call accuracy, ROUGE, BLEU), BFCL non-live, live, multi-turn and V3 overall; itool: BFCL "
                    "overall, non-live, live, multi-turn, relevance, irrelevance; "
                    "diatool: FunctionChat-Bench dialogue turns (call, completion, slot, relevance, micro/macro). "
                    "Each benchmark writes its files into OUT/<benchmark>/; the suite writes OUT/suite.md (one "
                    "table), OUT/suite_paper.md (the paper's layout with the paper's numbers and sources), "
                    "OUT/suite.png and OUT/suite_summary.json. A benchmark whose data is not given is listed as "
                    "not run with the flag that runs it. BFCL multi-turn runs on the installed bfcl-eval data "
                    "(--no-bfcl-multi-turn skips it). --compare adds earlier suite runs as columns (before/after); "
                    "--reuse takes benchmarks already run with the same inputs from an earlier output.")
    p.add_argument("--model", required=True, help="checkpoint dir, HF dir, .gguf file or 'smollm2'")
    p.add_argument("--suite", default="calm", choices=("calm", "itool", "diatool"),
                   help="which paper's table (default calm)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--backend", choices=BACKENDS, default="jax", help="generation backend (default jax)")
    p.add_argument("--format", default="alpaca",
                   help="chat format used for every benchmark (default alpaca, CALM-IT's layout)")
    p.add_argument("--label", default=None, help="column name in the table (default: the model path)")
    p.add_argument("--multiwoz-data", default=None, help="MultiWOZ 2.1-layout JSON (e.g. ConvLab-2 val.json)")
    p.add_argument("--multiwoz-ontology", default=None, help="IC-DST ontology JSON for value repair (optional)")
    p.add_argument("--multiwoz-db", default=None,
                   help="MultiWOZ's db/ folder: runs MultiWOZ end to end (Inform / Success / BLEU) with --multiwoz-data")
    p.add_argument("--max-steps-multiwoz", type=_pos_int, default=5,
                   help="MultiWOZ end to end: model steps per user turn (default 5)")
    p.add_argument("--functionchat-data", default=None,
                   help="dialogue data for the diatool suite, SOURCE:PATH as in `jaxtool eval dialog --data` "
                        "(e.g. functionchat:FunctionChat-Dialog.jsonl)")
    p.add_argument("--limit-functionchat", type=_pos_int, default=None, help="first N FunctionChat conversations")
    p.add_argument("--apibank-l1", default=None, help="API-Bank level-1 items JSON")
    p.add_argument("--apibank-l2", default=None, help="API-Bank level-2 items JSON")
    p.add_argument("--bfcl-data-dir", default=None, help="a directory laid out like bfcl_eval/data (default: installed)")
    p.add_argument("--bfcl-categories", default=None, help="comma-separated AST categories (default: all 8)")
    p.add_argument("--limit-multiwoz", type=_pos_int, default=None, help="first N MultiWOZ dialogues")
    p.add_argument("--limit-apibank", type=_pos_int, default=None, help="first N items of each API-Bank level")
    p.add_argument("--limit-bfcl", type=_pos_int, default=None, help="first N items of each BFCL category")
    p.add_argument("--limit-bfcl-multi-turn", type=_pos_int, default=None,
                   help="first N entries of each BFCL multi-turn category")
    p.add_argument("--no-bfcl-multi-turn", action="store_true",
                   help="skip BFCL's multi-turn categories (then listed as not run, and the overall not computed)")
    p.add_argument("--max-new-tokens-bfcl-multi-turn", type=_pos_int, default=512)
    p.add_argument("--batch-size", type=_pos_int, default=8, help="prompts per generate call (default 8)")
    p.add_argument("--max-new-tokens-bfcl", type=_pos_int, default=256)
    p.add_argument("--max-new-tokens-apibank", type=_pos_int, default=128)
    p.add_argument("--max-new-tokens-multiwoz", type=_pos_int, default=64)
    p.add_argument("--max-prompt-tokens-bfcl", type=_pos_int, default=None,
                   help="BFCL items with longer prompts fail as prompt_too_long instead of being generated")
    p.add_argument("--compare", action="append", default=[], metavar="DIR",
                   help="an earlier suite output directory to show as a column before this run (repeatable)")
    p.add_argument("--reuse", action="append", default=[], metavar="DIR",
                   help="an earlier suite output directory: a benchmark run there on the same model, backend, "
                        "format, data (by content), limit and settings is copied instead of run again, and "
                        "marked as reused (repeatable; e.g. BFCL multi-turn from an itool run into a calm run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from jaxtool.eval import suite
    from jaxtool.sample.backend import load_backend

    data = suite.SuiteData(multiwoz=args.multiwoz_data, multiwoz_ontology=args.multiwoz_ontology,
                           multiwoz_db=args.multiwoz_db, functionchat=args.functionchat_data,
                           bfcl_multi_turn=not args.no_bfcl_multi_turn,
                           apibank_l1=args.apibank_l1, apibank_l2=args.apibank_l2, bfcl_dir=args.bfcl_data_dir,
                           bfcl_categories=tuple(c.strip() for c in (args.bfcl_categories or "").split(",") if c.strip()))
    limits = suite.SuiteLimits(multiwoz=args.limit_multiwoz, apibank=args.limit_apibank, bfcl=args.limit_bfcl,
                               functionchat=args.limit_functionchat, bfcl_multi_turn=args.limit_bfcl_multi_turn)
    settings = suite.SuiteSettings(batch_size=args.batch_size, max_new_tokens_multiwoz=args.max_new_tokens_multiwoz,
                                   max_new_tokens_apibank=args.max_new_tokens_apibank,
                                   max_new_tokens_bfcl=args.max_new_tokens_bfcl,
                                   max_prompt_tokens_bfcl=args.max_prompt_tokens_bfcl,
                                   max_steps_multiwoz_e2e=args.max_steps_multiwoz,
                                   max_new_tokens_bfcl_multi_turn=args.max_new_tokens_bfcl_multi_turn,
                                   progress=not args.no_progress)
    data.check()
    limits.check()
    earlier = [suite.read_summary(d) for d in args.compare]  # fail on a bad --compare before loading the model
    reuse = suite.read_reuse(args.reuse)
    backend = load_backend(args.backend, args.model)
    from jaxtool.data.formats import get_format

    fmt = get_format(args.format, tokenizer=backend.tokenizer)
    summary = suite.run_suite(backend, fmt, args.format, args.out, suite=args.suite, data=data, limits=limits,
                              settings=settings, model_label=args.model, label=args.label,
                              backend_name=args.backend, reuse=reuse)
    paths = suite.write_outputs(args.out, earlier + [summary])
    print(suite.markdown(earlier + [summary]))
    print()
    print(suite.paper_markdown(summary))
    print("wrote " + ", ".join(paths.values()))
    return 0
