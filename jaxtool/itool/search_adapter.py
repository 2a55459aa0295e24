"""The iTool loop's one call into the step-level MCTS (`jaxtool.sample.mcts`), and App. B's filters.

`run_mcts` hands the search the selected queries' prompt ids, the Table 5 settings, the step
boundaries of the tokenizer, the self-evaluation prompt written in the run's chat format, and the
host outcome function (`OutcomeJudge`: the format's parser + BFCL's AST checker / call equality);
it returns the pairs `extract_pairs` takes from the trees. Queries are searched `queries_per_search`
at a time in one compiled program (the last group padded with copies of its last prompt, whose
outcomes are not judged and whose pairs are discarded, so every group has the same shape).

`filter_records` applies `jaxtool.itool.filters.filter_pairs` (similarity of the two steps' token ids,
ΔQ, chosen Q) to the logged pair records and keeps each record's reason.
"""

from __future__ import annotations

from typing import Sequence

from jaxtool.data.schema import Conversation, Message
from jaxtool.errors import ConfigError
from jaxtool.itool.filters import filter_pairs
from jaxtool.itool.pairs import Pair, extract_pairs

_MARKER = "\u2063ITOOL_PARTIAL_RESPONSE\u2063"


def gold_response_text(fmt, example) -> str:
    """The example's gold assistant message as the chat format writes it (its call syntax, e.g.
    `[f(a=1)]` for pythonic, `<tool_call>{...}</tool_call>` for hermes), without the end-of-turn."""
    conv = example.conversation
    last = len(conv.messages) - 1
    return fmt.cut_at_stop("".join(s.text for s in fmt.render(conv) if s.message == last and s.trainable)).strip()


def eval_prompt_in_format(fmt, tokenizer, question: str | None = None, answer_prefix: str = "(",
                          golds: Sequence[str] | None = None):
    """The self-evaluation prompt (Eq. 7) as `mcts.EvalPrompt`, written in the run's chat format:
    what follows a partial assistant response when its turn is closed, a user turn asks `question`
    and an assistant turn opens with `answer_prefix`. The options must be single tokens after the prefix.

    golds: one ground-truth response text per query (`gold_response_text`): Table 7's Eval Prompt —
    the question (default `mcts.GOLD_EVAL_QUESTION`: judge relative to the ground truth, a fragment of
    it is also excellent) followed by `Ground Truth Response: {gold}`; one suffix per query.
    None: one suffix for every query, judging against the request and the tools only
    (default `mcts.DEFAULT_EVAL_QUESTION`; `mcts.eval_gold: false`)."""
    from jaxtool.sample import mcts

    def suffix_ids(text):
        conv = Conversation(messages=(Message("user", "q"), Message("assistant", _MARKER), Message("user", text)))
        rendered = fmt.prompt(conv)
        if _MARKER not in rendered:
            raise ConfigError(f"format {fmt.name!r} does not render the assistant text verbatim; "
                              "the self-evaluation prompt cannot be built")
        return tuple(tokenizer(rendered.split(_MARKER, 1)[1] + answer_prefix, add_special_tokens=False)["input_ids"])

    if golds is None:
        rows = suffix_ids(question or mcts.DEFAULT_EVAL_QUESTION)
    else:
        rows = tuple(suffix_ids(mcts.gold_eval_text(question or mcts.GOLD_EVAL_QUESTION, g)) for g in golds)
    base = tokenizer(answer_prefix, add_special_tokens=False)["input_ids"]
    options = []
    for o in ("A", "B", "C", "D"):
        t = tokenizer(answer_prefix + o, add_special_tokens=False)["input_ids"]
        if t[:len(base)] != base or len(t) != len(base) + 1:
            raise ConfigError(f"self-evaluation: option {o!r} is not one token after {answer_prefix!r} "
                              "in this tokenizer")
        options.append(t[-1])
    return mcts.EvalPrompt(rows, tuple(options))


def mcts_config(mc, seed: int):
    """`jaxtool.sample.mcts.MCTSConfig` from the recipe's `mcts:` section: every field of the search's
    config by name (its own checks apply), the run's seed."""
    import dataclasses

    from jaxtool.sample import mcts

    kw = {f.name: getattr(mc, f.name) for f in dataclasses.fields(mcts.MCTSConfig) if f.name != "seed"}
    return mcts.MCTSConfig(**kw, seed=seed)


def run_mcts(model, prompts: Sequence[Sequence[int]], fmt, mc, stop_ids, judge, seed: int,
             golds: Sequence[str] | None = None) -> tuple[list, dict]:
    """(pairs as dicts {query, node, depth, prompt (ids), prefix (response ids above the node), chosen,
    rejected, q_chosen, q_rejected, chosen_terminal, rejected_terminal}, search statistics) for every
    prompt. golds: each query's ground-truth response text for the Eval Prompt (Table 7), or None."""
    from jaxtool.sample import mcts

    cfg = mcts_config(mc, seed)
    rules = mcts.step_rules_for(model.tokenizer, eos_ids=stop_ids)
    ev_plain = eval_prompt_in_format(fmt, model.tokenizer) if golds is None else None
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    G = max(1, min(mc.queries_per_search, len(prompts)))
    run_kw = {"run": model.run} if getattr(model, "run", None) is not None else {}
    pairs: list[dict] = []
    stats = {"forward_tokens": 0.0, "decoded_tokens": 0.0, "outcome_checks": 0.0, "filler_checks": 0, "nodes": 0,
             "groups": 0, "outcome_errors": []}
    for start in range(0, len(prompts), G):
        idx = list(range(start, min(start + G, len(prompts))))
        batch = [list(prompts[i]) for i in idx] + [list(prompts[idx[-1]])] * (G - len(idx))

        def outcome(q, ids, idx=idx):
            if q < len(idx):
                return judge(idx[q], ids)
            stats["filler_checks"] += 1      # a padding row: not judged, not counted
            return 0.0

        if golds is None:
            ev = ev_plain
        else:
            g = [golds[i] for i in idx]
            ev = eval_prompt_in_format(fmt, model.tokenizer, golds=g + [g[-1]] * (G - len(idx)))
        res = mcts.search(model.params, model.config, batch, cfg, rules=rules, eval_prompt=ev, outcome=outcome,
                          pad_id=pad, length_multiple=128, on_outcome_error="record", **run_kw)
        for k in ("forward_tokens", "decoded_tokens", "outcome_checks"):
            stats[k] += float(res.stats.get(k, 0.0))
        stats["nodes"] += int(sum(res.num_nodes[:len(idx)]))
        stats.setdefault("C", []).extend(round(float(res.C[q, n]), 4) for q in range(len(idx))
                                         for n in range(int(res.num_nodes[q])))  # Eq. 7 scores, every node
        stats["groups"] += 1
        stats["outcome_errors"] += [(idx[q], m) for q, m in res.outcome_errors if q < len(idx)]
        for p in extract_pairs(res):
            if p.query >= len(idx):
                continue
            pairs.append({"query": idx[p.query], "node": p.node, "depth": p.depth,
                          "prefix": list(p.prefix_ids[p.prompt_len:]), "chosen": list(p.chosen_ids),
                          "rejected": list(p.rejected_ids), "q_chosen": p.q_chosen, "q_rejected": p.q_rejected,
                          "chosen_terminal": bool(res.terminal[p.query, p.chosen_node]),
                          "rejected_terminal": bool(res.terminal[p.query, p.rejected_node])})
    return pairs, stats


def filter_records(records, max_similarity: float, min_q_gap: float, min_chosen_q: float) -> dict:
    """App. B's filters (`filters.filter_pairs`) on pair records: sets each record's `kept` / `reason`
    (the first failing filter: similar, small_q_gap, low_chosen_q); returns the counts by reason."""
    counts: dict[str, int] = {}
    for r in records:
        p = Pair(query=r.query_index, node=0, depth=r.depth, prefix_ids=list(r.prefix_ids), prompt_len=0,
                      chosen_ids=list(r.chosen_ids), rejected_ids=list(r.rejected_ids), q_chosen=r.q_chosen,
                      q_rejected=r.q_rejected, chosen_node=0, rejected_node=0)
        kept, c = filter_pairs([p], max_similarity, min_q_gap, min_chosen_q)
        reason = None if kept else next(k for k, v in c.items() if k != "kept" and v)
        r.kept, r.reason = reason is None, reason
        if reason:
            counts[reason] = counts.get(reason, 0) + 1
    return counts
