"""Preference pairs of an iTool iteration: from the searched trees (`extract_pairs`) to logged
records and to SimPO training rows.

A pair (from the MCTS tree or from the "without MCTS" sampler) is a query, a shared prefix of the
response (the path from the root to the node; empty at the root), and two continuations of it —
the highest-Q child (chosen) and the lowest-Q child (rejected) — with their Q values and the node's
depth. Its record in `pairs.jsonl` holds the texts (decoded with the tokenizer, end-of-turn ids
removed, cut at the format's stop strings), the Q values, the depth, and whether the filters kept it.

Two training layouts (`pair_layout`):

* "step" (default; §3.2): the pair's prompt is the query plus the path to the node — an unfinished
  assistant turn, context only — and chosen / rejected are the single steps. A step that does not
  end the response carries no end-of-turn. The row holds the search's own token ids
  (`training_row_ids`: `{"prompt_ids", "chosen_ids", "rejected_ids"}`, read by
  `jaxtool.data.token_pairs`), so what is trained is exactly what was sampled.
* "response" (the layout of the authors' released scripts): each side is the query's conversation
  followed by one assistant message whose text is prefix + continuation (`training_row`); the
  trainer renders whole assistant turns, so both sides end with the end-of-turn marker even at an
  inner node, and the shared prefix is in both sides' loss.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

import numpy as np

from jaxtool.data.schema import Message


@dataclasses.dataclass
class Pair:
    """A step-level preference pair at one expanded node of one query's tree.

    prefix_ids = prompt + the steps from the root down to the branching node (prompt_len tokens
    of it are the prompt); chosen / rejected are the highest- and lowest-Q children's steps;
    depth is the branching node's depth (0 = root)."""

    query: int
    node: int
    depth: int
    prefix_ids: list
    prompt_len: int
    chosen_ids: list
    rejected_ids: list
    q_chosen: float
    q_rejected: float
    chosen_node: int
    rejected_node: int

    @property
    def q_gap(self) -> float:
        return self.q_chosen - self.q_rejected


def extract_pairs(result) -> list[Pair]:
    """From a `jaxtool.sample.mcts.SearchResult`: one pair per expanded node with ≥ 2 children: argmax-Q child (first on ties) as chosen,
    argmin-Q child as rejected (when all children tie, the next child is rejected: ΔQ = 0)."""
    pairs = []
    for q in range(result.batch):
        for node in range(int(result.num_nodes[q])):
            if not result.expanded[q, node]:
                continue
            ch = [int(c) for c in result.children[q, node] if c >= 0]
            if len(ch) < 2:
                continue
            qs = [float(result.Q[q, c]) for c in ch]
            hi = int(np.argmax(qs))
            lo = int(np.argmin(qs))
            if lo == hi:
                lo = (hi + 1) % len(ch)
            prefix = result.prompts[q] + result.response_ids(q, node)
            pairs.append(Pair(q, node, int(result.depth[q, node]), prefix, len(result.prompts[q]),
                              result.step_ids(q, ch[hi]), result.step_ids(q, ch[lo]), qs[hi], qs[lo], ch[hi], ch[lo]))
    return pairs


@dataclasses.dataclass
class PairRecord:
    query_id: str
    query_index: int
    prefix: str
    chosen: str
    rejected: str
    q_chosen: float
    q_rejected: float
    depth: int
    prefix_ids: list
    chosen_ids: list
    rejected_ids: list
    kept: bool = True
    reason: str | None = None          # why the filters dropped it
    extra: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _get(p: Any, *names, default=None):
    for n in names:
        if isinstance(p, dict) and n in p:
            return p[n]
        if hasattr(p, n):
            return getattr(p, n)
    return default


def decode_text(tokenizer, ids: Sequence[int], stop_ids, fmt) -> str:
    ids = [int(i) for i in ids if int(i) not in stop_ids]
    return fmt.cut_at_stop(tokenizer.decode(ids, skip_special_tokens=False))


def to_record(pair: Any, examples: Sequence, tokenizer, stop_ids, fmt) -> PairRecord:
    """A search pair (any object/dict with query, prefix, chosen, rejected, q_chosen, q_rejected,
    depth) as a `PairRecord` with decoded texts."""
    q = int(_get(pair, "query", "query_index", "q"))
    prefix = [int(i) for i in _get(pair, "prefix", "prefix_ids", default=[])]
    chosen = [int(i) for i in _get(pair, "chosen", "chosen_ids")]
    rejected = [int(i) for i in _get(pair, "rejected", "rejected_ids")]
    stop = set(int(i) for i in stop_ids)
    extra = {}
    outs = _get(pair, "outcomes", default=None)
    if outs:
        extra["sample_outcomes"] = list(outs)
    node = _get(pair, "node", default=None)
    if node is not None:
        extra["node"] = int(node)
    pre = decode_text(tokenizer, prefix, stop, fmt)

    def continuation(ids):
        whole = decode_text(tokenizer, prefix + ids, stop, fmt)
        return whole[len(pre):] if whole.startswith(pre) else decode_text(tokenizer, ids, stop, fmt)

    return PairRecord(
        query_id=examples[q].id, query_index=q, prefix=pre, chosen=continuation(chosen),
        rejected=continuation(rejected), q_chosen=float(_get(pair, "q_chosen")),
        q_rejected=float(_get(pair, "q_rejected")), depth=int(_get(pair, "depth", default=0)),
        prefix_ids=prefix, chosen_ids=chosen, rejected_ids=rejected, extra=extra)


PAIR_LAYOUTS = ("step", "response")


def training_row_ids(rec: PairRecord, prompt_ids: Sequence[int]) -> tuple[dict | None, str | None]:
    """The "step" layout (§3.2): `{"prompt_ids": query prompt + the path's steps (context),
    "chosen_ids" / "rejected_ids": the single steps, ...}`, or (None, reason)."""
    for side in ("chosen", "rejected"):
        if not getattr(rec, f"{side}_ids"):
            return None, f"empty {side} response"
    row = {"prompt_ids": [int(t) for t in prompt_ids] + [int(t) for t in rec.prefix_ids],
           "chosen_ids": [int(t) for t in rec.chosen_ids], "rejected_ids": [int(t) for t in rec.rejected_ids],
           "kind": "itool", "layout": "step", "query_id": rec.query_id, "depth": rec.depth,
           "q_chosen": rec.q_chosen, "q_rejected": rec.q_rejected}
    return row, None


def training_row(rec: PairRecord, example, control_markers: Sequence[str]) -> tuple[dict | None, str | None]:
    """The "response" layout (the authors' scripts): whole conversations, prefix + step as one
    assistant message on each side."""
    sides = {}
    for side in ("chosen", "rejected"):
        text = rec.prefix + getattr(rec, side)
        if not text.strip():
            return None, f"empty {side} response"
        hit = next((m for m in control_markers if m in text), None)
        if hit:
            return None, "control token in response"
        conv = example.prompt.replace(messages=example.prompt.messages + (Message("assistant", text),))
        sides[side] = conv.to_dict()
    row = {**sides, "kind": "itool", "query_id": rec.query_id, "depth": rec.depth,
           "q_chosen": rec.q_chosen, "q_rejected": rec.q_rejected}
    return row, None


def write_jsonl(path: str, rows) -> int:
    import os

    tmp = f"{path}.tmp{os.getpid()}"
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(ln) for ln in fh if ln.strip()]
