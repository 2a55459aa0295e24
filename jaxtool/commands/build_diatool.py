"""`jaxtool data build-diatool`: build DiaTool-DPO preference pairs from your own tool dialogues
(the builder is the `jaxtool.diatool` application). Heavy imports happen inside `run`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from jaxtool.sample.backend import BACKENDS

DESCRIPTION = """Build DiaTool-DPO (Jung et al. 2025) multi-turn preference pairs from single-call tool dialogues:
Type 1 seeds, Type 2 slot-filling dialogues (rules or LLM augmenter), Type 3 out-of-tools dialogues,
paired per the paper's Table 1, split 95/5 by seed. Seeds whose first user turn is a benchmark test
query (BFCL by default, --guard-bench for others) are dropped. Writes train.jsonl, valid.jsonl,
valid_flows.jsonl, summary.json and tables.md into --out; train with
`jaxtool train configs/diatool_dpo/llama3_8b.yaml data.train=diatool:OUT/train.jsonl`.

Examples:
  jaxtool data build-diatool --seeds glaive:data/glaive.jsonl --augmenter rules --difficulty all --out runs/diatool
  jaxtool data build-diatool --seeds conversations:my_dialogues.jsonl --templates ko --out runs/diatool_ko
  jaxtool data build-diatool --seeds toolace:data/toolace.json --augmenter llm --llm-model gpt-4o-mini \\
      --guard-bench functionchat:FunctionChat-Singlecall.jsonl --out runs/diatool_llm
  jaxtool data build-diatool --print-templates en > my_templates.json   # start another language"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "build-diatool",
        help="build DiaTool-DPO chosen/rejected trajectory pairs (Type 1/2/3, Easy/Hard)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seeds", action="append", metavar="SOURCE",
                   help="seed dialogues as a source spec name:path (glaive, toolace, sgd, conversations, ...); "
                        "repeatable")
    p.add_argument("--out", metavar="DIR", help="output directory")
    p.add_argument("--augmenter", choices=("rules", "llm"), default="rules",
                   help="Type 1 -> Type 2 augmenter: offline templates (rules) or an LLM (default: rules)")
    p.add_argument("--difficulty", choices=("easy", "hard", "all"), default="all",
                   help="subset to build (default: all = easy + hard)")
    p.add_argument("--templates", default="en", metavar="LANG|FILE",
                   help="slot question/answer/rejection templates: built-in 'en' or 'ko', or a JSON file")
    p.add_argument("--print-templates", metavar="LANG",
                   help="print a built-in template set as JSON (a starting point for another language) and exit")
    p.add_argument("--rejections", choices=("template", "llm"), default="template",
                   help="rejection messages from templates, or LLM-written when --augmenter llm (default: template)")
    p.add_argument("--type3-easy", action="store_true",
                   help="also build the Type 3 1→1 vs 1→3→4 pair from the complete first turn into Easy (an extra: "
                        "the paper's Easy set has no Type 3 pair, §4.3 / Table 1)")
    p.add_argument("--valid-fraction", type=float, default=0.05, help="share of seeds held out (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="random seed for field choice, M, templates, split")
    p.add_argument("--limit", type=int, default=None, help="read at most this many dialogues per --seeds source")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="skip",
                   help="a malformed source row stops the build (error) or is counted and skipped")
    p.add_argument("--guard-bench", action="append", default=[], metavar="SOURCE",
                   help="extra benchmark whose test queries must not be trained on (name:path, e.g. "
                        "functionchat:FunctionChat-Singlecall.jsonl, apibank:level-1); repeatable")
    p.add_argument("--no-bfcl-guard", action="store_true",
                   help="do not drop seeds that match BFCL test queries (on by default)")
    p.add_argument("--sides-as-strings", action="store_true",
                   help="write chosen/rejected as JSON-encoded strings (the layout of kakao/diatool-dpo's "
                        "training script) instead of objects")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("llm augmenter")
    g.add_argument("--llm-base-url", default=None, help="OpenAI-compatible base URL ending in /v1 "
                   "(default: $OPENAI_BASE_URL)")
    g.add_argument("--llm-model", default=None, help="model name sent to the endpoint")
    g.add_argument("--llm-api-key", default=None, help="API key (default: $OPENAI_API_KEY)")
    g.add_argument("--llm-backend", choices=BACKENDS, default=None,
                   help="use a jaxtool model through its own generator instead of an endpoint")
    g.add_argument("--llm-model-path", default=None, help="model for --llm-backend (checkpoint, HF dir, .gguf)")
    g.add_argument("--llm-temperature", type=float, default=0.7)
    g.add_argument("--llm-max-tokens", type=int, default=1024)
    g.add_argument("--llm-timeout", type=float, default=120.0, help="seconds per request")
    g.add_argument("--llm-attempts", type=int, default=3, help="answers asked per item before giving up")
    g.add_argument("--llm-endpoint-retries", type=int, default=3, help="retries of a failed request")
    g.add_argument("--llm-json-mode", action="store_true", help="send response_format=json_object")
    g.add_argument("--cache", default=None, help="LLM cache JSONL (default: OUT/llm_cache.jsonl); "
                   "a rerun resumes from it")
    p.set_defaults(func=run)
    return p


def _augmenter(args):
    from jaxtool.errors import ConfigError

    if args.augmenter == "rules":
        from jaxtool.diatool.rules import RulesAugmenter

        if args.rejections == "llm":
            raise ConfigError("--rejections llm needs --augmenter llm")
        return RulesAugmenter(args.templates, seed=args.seed)
    if args.llm_backend:
        if not args.llm_model_path:
            raise ConfigError("--llm-backend needs --llm-model-path")
        from jaxtool.sample.llm_writer import BackendChatClient
        from jaxtool.sample.backend import load_backend

        client = BackendChatClient(load_backend(args.llm_backend, args.llm_model_path),
                                   max_new_tokens=args.llm_max_tokens, temperature=args.llm_temperature,
                                   seed=args.seed)
    else:
        from jaxtool.sample.openai_client import OpenAIChatClient

        client = OpenAIChatClient(args.llm_base_url, args.llm_model, args.llm_api_key, timeout=args.llm_timeout,
                                  temperature=args.llm_temperature, max_tokens=args.llm_max_tokens,
                                  json_mode=args.llm_json_mode)
    from jaxtool.diatool.llm import LLMAugmenter

    cache = args.cache or os.path.join(args.out, "llm_cache.jsonl")
    return LLMAugmenter(client, cache_path=cache, max_attempts=args.llm_attempts,
                        endpoint_retries=args.llm_endpoint_retries, seed=args.seed)


def _tag(spec: str) -> str:
    """Short name of a source: the registry name, or the file stem for jaxtool's own JSONL."""
    from jaxtool.diatool.sources import split_spec

    name, path = split_spec(spec)
    if name == "conversations" and path:
        return os.path.splitext(os.path.basename(path.rstrip("/")))[0]
    return name


def run(args) -> int:
    from jaxtool.diatool import (SplitGuard, bfcl_data_dir, bfcl_queries, build, collect_seeds,
                                 load_templates, seed_id_of, write_summary)
    from jaxtool.diatool.sources import load_conversations
    from jaxtool.data.sources.base import LoadReport
    from jaxtool.errors import ConfigError, DataError

    if args.print_templates:
        print(json.dumps(load_templates(args.print_templates).to_dict(), ensure_ascii=False, indent=2))
        return 0
    if not args.seeds:
        raise ConfigError("--seeds is required (a source spec such as glaive:data/glaive.jsonl)")
    if not args.out:
        raise ConfigError("--out is required")
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be >= 1")
    templates = load_templates(args.templates)
    augmenter = _augmenter(args)

    guard = SplitGuard()
    if not args.no_bfcl_guard:
        data_dir = bfcl_data_dir()
        if data_dir is None:
            raise ConfigError("the BFCL split guard needs the bfcl-eval package "
                              "(pip install --no-deps bfcl-eval); pass --no-bfcl-guard to build without it")
        guard.add_queries(bfcl_queries(data_dir), "BFCL")
    for spec in args.guard_bench:
        guard.add_conversations(load_conversations(spec, on_bad_row=args.on_bad_row), _tag(spec))

    reports = []

    def items():
        for spec in args.seeds:
            tag = _tag(spec)
            rep = LoadReport(source=spec, on_bad_row=args.on_bad_row)
            reports.append(rep)
            for i, conv in enumerate(load_conversations(spec, on_bad_row=args.on_bad_row, limit=args.limit,
                                                        report=rep)):
                yield f"{tag}:{seed_id_of(conv, i, 'row')}", conv

    seeds, seed_report = collect_seeds(items(), guard=guard)
    for rep in reports:
        print(str(rep), file=sys.stderr)
    print(str(seed_report), file=sys.stderr)
    if not seeds:
        raise DataError(f"no usable seed dialogue in {', '.join(args.seeds)} "
                        f"({dict(seed_report.skipped.most_common(5))}); a seed is: first user turn -> one tool "
                        "call -> tool result -> assistant completion")

    stats = build(seeds, augmenter, args.out, subset=args.difficulty, templates=templates,
                  valid_fraction=args.valid_fraction, rng_seed=args.seed, rejections=args.rejections,
                  progress=not args.no_progress, sides_as_strings=args.sides_as_strings,
                  type3_easy=args.type3_easy)
    extra = {
        "config": {"seeds": args.seeds, "augmenter": args.augmenter, "difficulty": args.difficulty,
                   "templates": templates.language, "rejections": args.rejections,
                   "valid_fraction": args.valid_fraction, "seed": args.seed, "type3_easy": args.type3_easy},
        "sources": [{"source": r.source, "rows": r.rows, "kept": r.kept, "skipped": dict(r.skipped)}
                    for r in reports],
        "seeds": seed_report.to_dict(),
        "split_guard": guard.to_dict(),
    }
    if hasattr(augmenter, "stats"):
        extra["llm"] = dict(augmenter.stats)
    _, tables = write_summary(args.out, stats, **extra)
    print(tables)
    print(f"wrote {args.out}/train.jsonl, valid.jsonl, valid_flows.jsonl, summary.json, tables.md")
    return 0
