"""Running a model on BFCL: prompt every item through a chat format, generate with a `Backend`,
decode, score, and write the report. Also the two CLI commands `jaxtool eval bfcl` and
`jaxtool eval bfcl-score`.

The chat format and the tokenizer-side prompt builder are passed in (`fmt`, `prompt_ids`), so the
loop runs with any object that has `fmt.parse(text)` / `fmt.stop_strings` and any function
`prompt_ids(conv, fmt, tokenizer) -> list[int]`; the CLI takes them from
`jaxtool.data.formats.get_format` and `jaxtool.data.tokenize.prompt_ids`.

Example (the AST categories, BFCL's prompt-based mode, the embedded SmolLM2-135M-Instruct)::

    jaxtool eval bfcl --model smollm2 --backend jax --format pythonic --out runs/eval/bfcl_smollm2 \
        --categories simple_python,multiple,parallel,parallel_multiple,live_simple,live_multiple,live_parallel,live_parallel_multiple

BFCL prompts are long (live_multiple up to ~7.4k, live_irrelevance up to ~8k SmolLM2 tokens in this
style); `--max-prompt-tokens` turns prompts that leave no room for the answer into counted failures.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any, Callable, Mapping, Sequence

from jaxtool.data.sources.bfcl import CATEGORIES, BFCLItem, check_category, read_category
from jaxtool.errors import ConfigError, JaxtoolError
from jaxtool.eval.bfcl.checker import Verdict
from jaxtool.eval.bfcl.decode import DecodeError, calls_from_tool_calls, decode_pythonic, jsonable
from jaxtool.eval.bfcl.prompt import build_conversation, style_for_format
from jaxtool.eval.bfcl.score import (SYNTAXES, read_predictions, score_item, score_predictions, summarize,
                                     table_rows, write_bfcl_report)

log = logging.getLogger(__name__)

PromptIds = Callable[[Any, Any, Any], Sequence[int]]


def decode_completion(text: str, fmt: Any, style: str):
    """Decoded calls from one completion: BFCL's pythonic rules in prompting style, the format's
    own parser in function-calling style (a parse error counts as undecodable output)."""
    if style == "prompting":
        return decode_pythonic(text)
    reply = fmt.parse(text)
    err = getattr(reply, "error", None)  # a ParseError is falsy by design: test against None
    if err is not None:
        return DecodeError(str(getattr(err, "reason", err)))
    return calls_from_tool_calls(getattr(reply, "tool_calls", None) or ())


def run_items(items: Sequence[BFCLItem], backend: Any, fmt: Any, prompt_ids: PromptIds, *, style: str = "prompting",
              batch_size: int = 8, max_new_tokens: int = 512, max_prompt_tokens: int | None = None,
              underscore_names: bool = False, save_prompts: bool = False, progress: bool = True,
              desc: str = "bfcl") -> list[dict]:
    """Generate, decode and score `items`; one record per item, in the items' order.

    Prompts are batched longest first (less padding). A prompt longer than `max_prompt_tokens`
    is not generated: the item fails with error_type "prompt_too_long".
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    convs = [build_conversation(it, style, underscore_names=underscore_names) for it in items]
    ids = [list(prompt_ids(c, fmt, backend.tokenizer)) for c in convs]
    records: list[dict | None] = [None] * len(items)
    todo = []
    for i, (item, p) in enumerate(zip(items, ids)):
        if max_prompt_tokens is not None and len(p) > max_prompt_tokens:
            v = Verdict(False, "prompt_too_long", f"prompt has {len(p)} tokens, more than --max-prompt-tokens "
                        f"{max_prompt_tokens}")
            records[i] = _record(item, v, None, None, None, len(p), None)
        else:
            todo.append(i)
    todo.sort(key=lambda i: -len(ids[i]))
    stop = list(getattr(fmt, "stop_strings", ()) or ())
    bar = tqdm(total=len(items), desc=desc, unit="item", disable=not progress)
    bar.update(len(items) - len(todo))
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        outs = backend.generate([ids[i] for i in batch], max_new_tokens=max_new_tokens, stop_strings=stop,
                                temperature=0.0)
        if len(outs) != len(batch):
            raise JaxtoolError(f"backend returned {len(outs)} completions for {len(batch)} prompts")
        for i, out in zip(batch, outs):
            calls = decode_completion(out.text, fmt, style)
            verdict = score_item(items[i], calls, underscore_names=underscore_names)
            rec = _record(items[i], verdict, out.text, calls, out.finish_reason, len(ids[i]), len(out.token_ids))
            if save_prompts:
                rec["prompt"] = fmt.prompt(convs[i]) if hasattr(fmt, "prompt") else None
            records[i] = rec
        bar.update(len(batch))
    bar.close()
    return [r for r in records if r is not None]


def _record(item: BFCLItem, v: Verdict, text, calls, finish_reason, prompt_tokens, completion_tokens) -> dict:
    return {"id": item.id, "category": item.category, "valid": v.valid, "error_type": v.error_type, "error": v.error,
            "output": text, "calls": jsonable(calls) if calls is not None else None,
            "decode_error": calls.reason if isinstance(calls, DecodeError) else None,
            "finish_reason": finish_reason, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}


def prediction_row(rec: Mapping[str, Any], style: str) -> dict:
    """A record as a `bfcl-score` predictions row that rescoring reproduces exactly: raw text in
    prompting style (the pythonic decoder keeps tuples, which JSON would lose), parsed calls in
    function-calling style (`null` when the output did not parse)."""
    if style == "prompting":
        return {"id": rec["id"], "category": rec["category"], "text": rec["output"] or ""}
    row = {"id": rec["id"], "category": rec["category"], "calls": rec["calls"]}
    if rec["calls"] is None:
        row["error"] = rec["decode_error"] or rec["error"]
    return row


def parse_categories(spec: str | None) -> list[str]:
    if not spec or spec == "all":
        return list(CATEGORIES)
    cats = [c.strip() for c in spec.split(",") if c.strip()]
    for c in cats:
        check_category(c)
    return cats


def evaluate(backend: Any, fmt: Any, prompt_ids: PromptIds, *, categories: Sequence[str] = CATEGORIES,
             limit: int | None = None, root: str | None = None, style: str = "prompting", out_dir: str | None = None,
             progress: bool = True, settings: Mapping[str, Any] | None = None, **run_kw) -> tuple[dict, list[dict]]:
    """Run every category; returns (summary, records) and, with `out_dir`, writes the report plus
    `bfcl_predictions.jsonl` (rescorable with `jaxtool eval bfcl-score`). `settings` (model, backend,
    format, ...) are recorded in the summary."""
    records: list[dict] = []
    valid: dict[str, list[bool]] = {}
    complete: dict[str, bool] = {}
    t0 = time.time()
    for cat in categories:
        every = read_category(cat, root=root)
        items = every[:limit] if limit is not None else every
        if not items:
            continue
        complete[cat] = len(items) == len(every)
        recs = run_items(items, backend, fmt, prompt_ids, style=style, progress=progress, desc=cat, **run_kw)
        records += recs
        valid[cat] = [r["valid"] for r in recs]
        print(f"{cat}: {sum(valid[cat])}/{len(recs)} valid{'' if complete[cat] else f' (first {len(recs)} of {len(every)})'}"
              f"  [{time.time() - t0:.0f}s]", flush=True)
    summary = summarize(valid, complete=complete)
    summary["settings"] = {**dict(settings or {}), "style": style, "limit": limit,
                           "seconds": round(time.time() - t0, 1),
                           **{k: v for k, v in run_kw.items() if k != "save_prompts"}}
    if out_dir:
        from jaxtool.eval.report import write_jsonl

        write_bfcl_report(out_dir, records, summary)
        write_jsonl(os.path.join(out_dir, "bfcl_predictions.jsonl"), (prediction_row(r, style) for r in records))
    return summary, records


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------

def _get_format(name: str, tokenizer: Any):
    """The chat format `name` (from `jaxtool.data.formats`)."""
    from jaxtool.data.formats import get_format

    return get_format(name, tokenizer=tokenizer)


def _prompt_ids_fn() -> PromptIds:
    """`jaxtool.data.tokenize.prompt_ids`."""
    from jaxtool.data.tokenize import prompt_ids

    return prompt_ids


def register_bfcl(subparsers) -> argparse.ArgumentParser:
    from jaxtool.eval.cli import add_model_args

    p = subparsers.add_parser(
        "bfcl", help="run a model on BFCL's single-turn categories and score them with the AST checker",
        description="Prompt a model on BFCL items (data from the installed bfcl-eval package), decode its calls, "
                    "score them with BFCL's AST checker rules and write per-item JSONL, a summary JSON, a markdown "
                    "table and a bar chart into --out.")
    add_model_args(p, default_format="pythonic", default_out=os.path.join("runs", "eval", "bfcl"))
    p.add_argument("--categories", default="all",
                   help=f"comma-separated categories (default all: {', '.join(CATEGORIES)})")
    p.add_argument("--prompt-style", default="auto", choices=("auto", "prompting", "fc"),
                   help="prompting: BFCL's system prompt asking for [f(a=1)] (default for non-tool formats); "
                        "fc: the format's native tool prompt (default for hermes/llama3_json/functionary_v3_llama3)")
    p.add_argument("--underscore-names", action="store_true",
                   help="rename tools with '.' -> '_' in the prompt and expect those names (BFCL's underscore_to_dot)")
    p.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="items whose prompt is longer fail as prompt_too_long instead of being generated")
    p.add_argument("--data-dir", default=None, help="a directory laid out like bfcl_eval/data (default: installed)")
    p.add_argument("--save-prompts", action="store_true", help="keep each rendered prompt in the items JSONL")
    p.set_defaults(func=run_bfcl)
    return p


def run_bfcl(args) -> int:
    from jaxtool.eval.cli import load_backend_from_args

    categories = parse_categories(args.categories)
    style = style_for_format(args.format, args.prompt_style)
    backend = load_backend_from_args(args)
    fmt = _get_format(args.format, backend.tokenizer)
    summary, _ = evaluate(backend, fmt, _prompt_ids_fn(), categories=categories, limit=args.limit,
                          root=args.data_dir, style=style, out_dir=args.out, progress=not args.no_progress,
                          settings={"model": args.model, "backend": args.backend, "format": args.format},
                          batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                          max_prompt_tokens=args.max_prompt_tokens, underscore_names=args.underscore_names,
                          save_prompts=args.save_prompts)
    from jaxtool.eval.report import markdown_table

    print(markdown_table(*table_rows(summary)))
    print(f"wrote {args.out}/bfcl_items.jsonl, bfcl_summary.json, bfcl.md, bfcl.png, bfcl_predictions.jsonl")
    return 0


def register_bfcl_score(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bfcl-score", help="score a predictions JSONL for one BFCL category (any model)",
        description='Score predictions for one BFCL category. Rows: {"id", "calls": [{"name", "arguments"}]} '
                    '(null = unparseable output) or {"id", "text": raw output} (or BFCL\'s {"id", "result"}). '
                    "Writes one verdict per id, with the reason for each failure; ids without a prediction fail.")
    p.add_argument("--category", required=True, help=f"one of {', '.join(CATEGORIES)}")
    p.add_argument("--predictions", required=True, help="JSONL file of predictions")
    p.add_argument("--out", required=True, help="where to write the verdicts JSON")
    p.add_argument("--format", default="pythonic", choices=SYNTAXES, help="how to decode raw 'text' rows")
    p.add_argument("--underscore-names", action="store_true", help="expect tool names with '.' replaced by '_'")
    p.add_argument("--data-dir", default=None, help="a directory laid out like bfcl_eval/data (default: installed)")
    p.set_defaults(func=run_bfcl_score)
    return p


def run_bfcl_score(args) -> int:
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
