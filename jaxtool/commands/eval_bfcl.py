"""`jaxtool eval bfcl`: run a model on BFCL's categories (single-turn: BFCL's AST checker; multi-turn:
BFCL's simulators and multi-turn checker)."""

from __future__ import annotations

import argparse

from jaxtool.commands._model_args import add_model_args, check_model_args, load_backend_from_args, out_dir

DESCRIPTION = """Prompt a model on BFCL items (data from the installed bfcl-eval package, or --data-dir), decode
its calls, score them with BFCL's AST checker rules and write per-item JSONL, a summary JSON, a
markdown table, a bar chart and bfcl_predictions.jsonl (rescorable with `jaxtool eval bfcl-score`).

Examples:
  jaxtool eval bfcl --model smollm2 --categories simple_python,multiple --limit 20
  jaxtool eval bfcl --model runs/dpo/hf --format hermes --categories all --out runs/eval/bfcl_dpo
  jaxtool eval bfcl --model runs/dpo/hf --backend hf --categories simple_python   # transformers cross-check
  jaxtool eval bfcl --model smollm2 --categories multi_turn --limit 5     # the four multi-turn categories

Multi-turn categories (multi_turn_base, multi_turn_miss_func, multi_turn_miss_param,
multi_turn_long_context; `multi_turn` = all four) run BFCL's inference loop: per user turn up to 20
steps, calls executed on BFCL's simulators (parsed, never evaluated), results fed back as tool
messages; every entry's current step is decoded in one batch (--sequential: one entry at a time).
`--categories all` means the single-turn categories.

Prompt styles: `prompting` puts BFCL's system prompt and the function docs in the system message
and expects [func(a=1)] (default for pythonic and other non-tool formats); `fc` uses the format's
native tool prompt (default for hermes, llama3_json, functionary_v3_llama3)."""


def register(subparsers) -> argparse.ArgumentParser:
    from jaxtool.eval.bfcl.data import CATEGORIES

    p = subparsers.add_parser(
        "bfcl", help="run a model on BFCL's single-turn and multi-turn categories and score them as BFCL does",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, benchmark="bfcl", default_format="pythonic", default_max_new_tokens=512)
    p.add_argument("--categories", default="all",
                   help=f"comma-separated categories (default all: {', '.join(CATEGORIES)}); multi_turn = "
                        "multi_turn_base,multi_turn_miss_func,multi_turn_miss_param,multi_turn_long_context")
    p.add_argument("--prompt-style", default="auto", choices=("auto", "prompting", "fc"),
                   help="prompting: BFCL's system prompt asking for [f(a=1)] (default for non-tool formats); "
                        "fc: the format's native tool prompt (default for hermes/llama3_json/functionary_v3_llama3)")
    p.add_argument("--underscore-names", action="store_true",
                   help="rename tools with '.' -> '_' in the prompt and expect those names (BFCL's underscore_to_dot)")
    p.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="items whose prompt is longer fail as prompt_too_long instead of being generated")
    p.add_argument("--data-dir", default=None, help="a directory laid out like bfcl_eval/data (default: installed)")
    p.add_argument("--save-prompts", action="store_true", help="keep each rendered prompt in the items JSONL")
    p.add_argument("--sequential", action="store_true",
                   help="multi-turn: run one entry at a time to the end (default: all entries' steps batched)")
    p.add_argument("--step-limit", type=int, default=20,
                   help="multi-turn: steps per user turn before the entry is force-quit (BFCL: 20)")
    p.add_argument("--irrelevance", default="runner", choices=("runner", "strict"),
                   help="multi-turn: 'runner' = BFCL's runner (calls in turns whose ground truth is empty are not "
                        "penalised); 'strict' = also apply BFCL's multi_turn_irrelevance_checker")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from jaxtool.eval import textgen
    from jaxtool.eval.bfcl.prompt import style_for_format
    from jaxtool.eval.bfcl.run import evaluate, parse_categories
    from jaxtool.eval.bfcl.score import table_rows
    from jaxtool.eval.report import markdown_table

    check_model_args(args)
    categories = parse_categories(args.categories)
    if args.data_dir is None:   # no bfcl-eval installed: the named error (with the pip line) before any model loads
        from jaxtool.eval.bfcl.data import data_dir
        data_dir()
    style = style_for_format(args.format, args.prompt_style)
    out = out_dir(args, "bfcl")
    backend = load_backend_from_args(args)
    fmt = textgen.resolve_format(args.format, backend.tokenizer)
    summary, _ = evaluate(backend, fmt, textgen.encode_prompt, categories=categories, limit=args.limit,
                          root=args.data_dir, style=style, out_dir=out, progress=not args.no_progress,
                          settings={"model": args.model, "backend": args.backend, "format": args.format},
                          batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                          max_prompt_tokens=args.max_prompt_tokens, underscore_names=args.underscore_names,
                          save_prompts=args.save_prompts,
                          multi_turn={"sequential": args.sequential, "step_limit": args.step_limit,
                                      "irrelevance": args.irrelevance})
    print(markdown_table(*table_rows(summary)))
    print(f"wrote {out}/bfcl_items.jsonl, bfcl_summary.json, bfcl.md, bfcl.png, bfcl_predictions.jsonl")
    return 0
