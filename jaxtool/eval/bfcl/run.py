"""Running a model on BFCL: prompt every item through a chat format, generate with a `Backend`,
decode, score, and write the report. The commands `jaxtool eval bfcl` / `jaxtool eval bfcl-score`
are `jaxtool.commands.eval_bfcl` / `eval_bfcl_score`.

The chat format and the tokenizer-side prompt builder are passed in (`fmt`, `prompt_ids`), so the
loop runs with any object that has `fmt.parse(text)` / `fmt.stop_strings` and any function
`prompt_ids(conv, fmt, tokenizer) -> list[int]`; the command takes them from
`jaxtool.eval.textgen` (`resolve_format`, `encode_prompt`).

Example (the AST categories, BFCL's prompt-based mode, the embedded SmolLM2-135M-Instruct)::

    jaxtool eval bfcl --model smollm2 --backend jax --format pythonic --out runs/eval/bfcl_smollm2 \
        --categories simple_python,multiple,parallel,parallel_multiple,live_simple,live_multiple,live_parallel,live_parallel_multiple

BFCL prompts are long (live_multiple up to ~7.4k, live_irrelevance up to ~8k SmolLM2 tokens in this
style); `--max-prompt-tokens` turns prompts that leave no room for the answer into counted failures.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Mapping, Sequence

from jaxtool.errors import ConfigError, JaxtoolError
from jaxtool.eval.bfcl.checker import Verdict, language_of
from jaxtool.eval.bfcl.data import (CATEGORIES, MULTI_TURN_CATEGORIES, BFCLItem, check_category,
                                    check_scorable_category, read_category)
from jaxtool.eval.bfcl.decode import (DecodeError, calls_from_tool_calls, decode_pythonic, decode_source_call,
                                     jsonable)
from jaxtool.eval.bfcl.prompt import build_conversation
from jaxtool.eval.bfcl.score import score_item, summarize, write_bfcl_report

log = logging.getLogger(__name__)

PromptIds = Callable[[Any, Any, Any], Sequence[int]]


def decode_completion(text: str, fmt: Any, style: str, category: str = "simple_python"):
    """Decoded calls from one completion: BFCL's pythonic rules in prompting style (Java / JavaScript
    call syntax for simple_java / simple_javascript), the format's own parser in function-calling
    style (a parse error counts as undecodable output)."""
    if style == "prompting":
        language = language_of(category)
        return decode_pythonic(text) if language == "python" else decode_source_call(text, language)
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
            calls = decode_completion(out.text, fmt, style, items[i].category)
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
    if "result" in rec:  # a multi-turn record: BFCL's decoded form (turns -> steps -> call strings)
        return {"id": rec["id"], "category": rec["category"], "result": rec["result"]}
    if style == "prompting":
        return {"id": rec["id"], "category": rec["category"], "text": rec["output"] or ""}
    row = {"id": rec["id"], "category": rec["category"], "calls": rec["calls"]}
    if rec["calls"] is None:
        row["error"] = rec["decode_error"] or rec["error"]
    return row


def parse_categories(spec: str | None) -> list[str]:
    """`all` = the single-turn categories; `multi_turn` = BFCL's four multi-turn categories; or a
    comma-separated list of either."""
    if not spec or spec == "all":
        return list(CATEGORIES)
    cats: list[str] = []
    for c in (c.strip() for c in spec.split(",") if c.strip()):
        if c in ("multi_turn", "all"):
            cats += [m for m in (MULTI_TURN_CATEGORIES if c == "multi_turn" else CATEGORIES) if m not in cats]
            continue
        check_scorable_category(c)
        cats.append(c)
    return cats


def evaluate(backend: Any, fmt: Any, prompt_ids: PromptIds, *, categories: Sequence[str] = CATEGORIES,
             limit: int | None = None, root: str | None = None, style: str = "prompting", out_dir: str | None = None,
             progress: bool = True, settings: Mapping[str, Any] | None = None,
             multi_turn: Mapping[str, Any] | None = None, **run_kw) -> tuple[dict, list[dict]]:
    """Run every category; returns (summary, records) and, with `out_dir`, writes the report plus
    `bfcl_predictions.jsonl` (rescorable with `jaxtool eval bfcl-score`). `settings` (model, backend,
    format, ...) are recorded in the summary."""
    records: list[dict] = []
    valid: dict[str, list[bool]] = {}
    complete: dict[str, bool] = {}
    t0 = time.time()
    multi_turn_kw = {k: run_kw[k] for k in ("batch_size", "max_new_tokens", "max_prompt_tokens") if k in run_kw}
    multi_turn_kw.update(multi_turn or {})
    timing: dict[str, dict] = {}
    for cat in categories:
        if cat in MULTI_TURN_CATEGORIES:
            from jaxtool.eval.bfcl.multi_turn import read_multi_turn
            from jaxtool.eval.bfcl.multi_turn_run import run_multi_turn

            every_mt = read_multi_turn(cat, root=root)
            entries = every_mt[:limit] if limit is not None else every_mt
            complete[cat] = len(entries) == len(every_mt)
            t1, c1 = time.time(), time.process_time()
            recs = run_multi_turn(entries, backend, fmt, prompt_ids, style=style, progress=progress, desc=cat,
                                  **multi_turn_kw)
            secs = time.time() - t1
            # process CPU seconds beside the wall time: on a shared machine they move less with other
            # processes' load than wall time does (both include XLA compilation)
            timing[cat] = {"seconds": round(secs, 2), "cpu_seconds": round(time.process_time() - c1, 2),
                           "entries": len(recs),
                           "entries_per_hour": round(3600 * len(recs) / secs, 1) if secs > 0 else None,
                           "generations": sum(r["generations"] for r in recs)}
            records += recs
            valid[cat] = [r["valid"] for r in recs]
            print(f"{cat}: {sum(valid[cat])}/{len(recs)} valid"
                  f"{'' if complete[cat] else f' (first {len(recs)} of {len(every_mt)})'}  [{time.time() - t0:.0f}s]",
                  flush=True)
            continue
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
    if timing:
        summary["multi_turn_timing"] = timing
    summary["settings"] = {**dict(settings or {}), "style": style, "limit": limit,
                           "seconds": round(time.time() - t0, 1),
                           **{k: v for k, v in run_kw.items() if k != "save_prompts"}}
    if out_dir:
        from jaxtool.eval.report import write_jsonl

        write_bfcl_report(out_dir, records, summary)
        write_jsonl(os.path.join(out_dir, "bfcl_predictions.jsonl"), (prediction_row(r, style) for r in records))
    return summary, records
