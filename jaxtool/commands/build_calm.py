"""``jaxtool data build-calm``: build the CALM-IT multi-task SFT mix (`jaxtool.calm.build`).

    jaxtool data build-calm --snips data/snips --sgd data/sgd/train --toolace toolace.json \\
        --xlam xlam.json --out runs/calm_it [--weights all|table1|dst=1,...] [--thoughts template|llm]

Writes OUT/calm_it.jsonl (train it with configs/calm/), OUT/summary.md and OUT/summary.json, and
prints the summary table; ``--dry-run`` prints the table and writes nothing.
"""

from __future__ import annotations

import argparse
import os


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "build-calm",
        help="build the CALM-IT mix: SNIPS as DST, Hammer-masked calls, ToolACE, SGD as Conversational ReAct",
        description="Convert SNIPS (dialogue-state tracking), xlam (Hammer function masking), ToolACE "
                    "(calls) and SGD (Conversational ReAct: action prediction and response generation) into "
                    "Alpaca-layout rows, mix them (default: every row of every task, CALM §4.1; --weights table1 for "
                    "Table 1's proportions), and write OUT/calm_it.jsonl with a summary table (rows and tokens per task, "
                    "length percentiles, bad rows by reason). Train it with data.format=alpaca (configs/calm/).")
    g = p.add_argument_group("inputs (each optional; a task without input drops out of the mix)")
    g.add_argument("--snips", metavar="DIR", help="SNIPS 2017-06 custom-intent-engines train_<Intent>_full.json files")
    g.add_argument("--sgd", metavar="DIR", help="an SGD split directory (schema.json + dialogues_*.json)")
    g.add_argument("--toolace", metavar="FILE", help="ToolACE data (JSON/JSONL/Parquet)")
    g.add_argument("--xlam", metavar="FILE", help="xlam-function-calling-60k layout (JSON/JSONL/Parquet)")
    p.add_argument("--out", metavar="DIR", help="output directory (required unless --dry-run)")
    p.add_argument("--weights", default=None,
                   help="task shares: 'all' (default: every row of every task, CALM §4.1), 'table1' (Table 1's "
                        "13028/13819/202500/82236 as shares), or "
                        "task=weight pairs, e.g. dst=1,hammer=1,toolace=2,cra=2 (tasks: dst, hammer, toolace, cra)")
    p.add_argument("--caps", default=None, help="at most this many rows of a task, e.g. cra=5000,toolace=20000")
    p.add_argument("--total", type=int, default=None,
                   help="rows in the mix (default: the largest mix that keeps the shares without repeating a row)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Hammer masking, the row choice and the order")
    p.add_argument("--mask-prob", type=float, default=2 / 3, help="share of Hammer conversations masked (default 2/3)")
    p.add_argument("--hammer-toolace", action="store_true",
                   help="also Hammer-mask ToolACE into the hammer task (option; the paper masks the xlam-format data "
                        "only, and ToolACE is its own task)")
    p.add_argument("--cra-layout", choices=("figures", "generate"), default="figures",
                   help="CRA rows as CALM's Figs. 6-7 show them (default: thoughts in the Input, Output = Action / "
                        "System reply), or 'generate' (§4.2 prose: the model writes its thoughts)")
    p.add_argument("--tokenizer", default="smollm2",
                   help="tokenizer for the token statistics: 'smollm2' (default), a .gguf file, an HF tokenizer "
                        "directory, or 'none'")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="rows longer than this many tokens are bad rows (counted), not mixed")
    p.add_argument("--limit", type=int, default=None, help="read at most N rows (dialogues) per input")
    p.add_argument("--on-bad-row", choices=("skip", "error"), default="skip",
                   help="skip (default: count by reason in the summary) or stop at the first bad row")
    p.add_argument("--dry-run", action="store_true", help="print the summary table only; write nothing")
    t = p.add_argument_group("CRA thoughts")
    t.add_argument("--thoughts", choices=("template", "llm"), default="template",
                   help="offline templates from the SGD annotations (default) or an LLM (validated, cached)")
    t.add_argument("--llm-base-url", default=None, help="OpenAI-compatible base URL ending in /v1 ($OPENAI_BASE_URL)")
    t.add_argument("--llm-model", default=None, help="model name sent to the endpoint")
    t.add_argument("--llm-api-key", default=None, help="API key ($OPENAI_API_KEY)")
    t.add_argument("--llm-backend", choices=("jax", "hf"), default=None,
                   help="use a jaxtool model through its own generator instead of an endpoint")
    t.add_argument("--llm-model-path", default=None, help="model for --llm-backend (checkpoint, HF dir, .gguf)")
    t.add_argument("--llm-temperature", type=float, default=0.7)
    t.add_argument("--llm-max-tokens", type=int, default=512)
    t.add_argument("--llm-timeout", type=float, default=120.0, help="seconds per request")
    t.add_argument("--llm-attempts", type=int, default=3, help="answers asked per turn before using the template")
    t.add_argument("--llm-endpoint-retries", type=int, default=3, help="retries of a failed request")
    t.add_argument("--cache", default=None, help="LLM thoughts cache JSONL (default OUT/thoughts_cache.jsonl)")
    p.set_defaults(func=run)
    return p


def thought_writer(args):
    """The CRA thought writer the flags ask for (None = the template default)."""
    from jaxtool.errors import ConfigError

    if args.thoughts == "template":
        return None
    from jaxtool.calm.thoughts import LLMThoughts
    from jaxtool.sample.llm_writer import BackendChatClient
    from jaxtool.sample.openai_client import OpenAIChatClient

    if args.llm_backend:
        if not args.llm_model_path:
            raise ConfigError("--llm-backend needs --llm-model-path")
        from jaxtool.sample.backend import load_backend

        client = BackendChatClient(load_backend(args.llm_backend, args.llm_model_path),
                                   max_new_tokens=args.llm_max_tokens, temperature=args.llm_temperature)
    else:
        client = OpenAIChatClient(args.llm_base_url, args.llm_model, args.llm_api_key, timeout=args.llm_timeout,
                                  temperature=args.llm_temperature, max_tokens=args.llm_max_tokens)
    cache = args.cache or (os.path.join(args.out, "thoughts_cache.jsonl") if args.out else None)
    return LLMThoughts(client, cache_path=cache, max_attempts=args.llm_attempts,
                       endpoint_retries=args.llm_endpoint_retries)


def run(args) -> int:
    from jaxtool.calm.build import BuildConfig, build, check, write
    from jaxtool.errors import ConfigError

    if not args.out and not args.dry_run:
        raise ConfigError("give --out DIR (or --dry-run to print the summary only)")
    cfg = BuildConfig(snips=args.snips, sgd=args.sgd, toolace=args.toolace, xlam=args.xlam, weights=args.weights,
                      caps=args.caps, total=args.total, seed=args.seed, mask_prob=args.mask_prob,
                      hammer_toolace=args.hammer_toolace, cra_layout=args.cra_layout, on_bad_row=args.on_bad_row, limit=args.limit,
                      max_tokens=args.max_tokens)
    check(cfg)  # bad flags and missing inputs fail before the tokenizer or an LLM is loaded
    tokenizer = None
    if str(args.tokenizer).lower() != "none":
        from jaxtool.data.inspect import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    result = build(cfg, tokenizer=tokenizer, thought_writer=thought_writer(args))
    print(result.table())
    for line in unmet_target_notes(args.total, args.weights, result.summary):
        print(line)
    if args.dry_run:
        return 0
    paths = write(result, args.out)
    print(f"wrote {result.summary['rows']} rows: " + ", ".join(paths.values()))
    return 0


def unmet_target_notes(total, weights, summary: dict) -> list[str]:
    """Why a `--total N` mix has fewer rows than N: the default weights take every row and ignore
    --total, or tasks ran short of their share (named, with planned vs available); never silent."""
    if total is None:
        return []
    rows = int(summary.get("rows", 0))
    if rows >= total:
        return []
    tasks = summary.get("tasks", {})
    if weights in (None, "all"):
        return [f"note: --total {total} is not met ({rows} rows): --weights all (the default, CALM §4.1: every row "
                "of every task) takes every available row and ignores --total; give --weights table1 (or "
                "task=weight,...) to scale the mix to a total"]
    short = [f"{t}: {v['available']} available < {round(total * (v.get('target_share') or 0))} wanted"
             for t, v in tasks.items() if v.get("target_share") and v["available"] < round(total * v["target_share"])]
    why = "; ".join(short) if short else "rounding to whole rows"
    return [f"note: --total {total} is not met ({rows} rows): rows are never repeated, and a task that runs short "
            f"of its share is not padded by the others ({why}); add inputs or lower --total"]
