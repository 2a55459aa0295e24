"""The search's host entry points: one compiled program per configuration and padded shape
(`precompile`, `search`), the outcome functions (jittable exact match, host callback) and the
searched trees as numpy arrays (`SearchResult`)."""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtool.errors import ConfigError, JaxtoolError
from jaxtool.models.run import DEFAULT_RUN, RunOptions
from jaxtool.sample.mcts.config import EvalPrompt, ExactMatch, MCTSConfig, StepRules
from jaxtool.sample.mcts.env import DecodeEnv
from jaxtool.sample.mcts.search import search_core
from jaxtool.sample.mcts.tree import Tree

def _exact_outcome(gold: jax.Array, gold_len: jax.Array):
    def fn(query, resp, lens, need):
        g, gl = gold[query], gold_len[query]
        col = jnp.arange(resp.shape[1])[None, :]
        same = jnp.all((resp == g) | (col >= lens[:, None]), axis=1) & (lens == gl)
        return jnp.where(need, same.astype(jnp.float32), 0.0)
    return fn


class _HostOutcome:
    """Holder of the host outcome function for one compiled program (set per `search` call)."""

    def __init__(self):
        self.fn = None
        self.errors: list[tuple[int, str]] = []
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, query, resp, lens, need):
        query, resp, lens, need = (np.asarray(x) for x in (query, resp, lens, need))
        out = np.zeros(query.shape[0], np.float32)
        for i in np.nonzero(need)[0]:
            q = int(query[i])
            ids = resp[i, :int(lens[i])].tolist()
            self.calls += 1
            try:
                v = float(self.fn(q, ids))
                if not (0.0 <= v <= 1.0):
                    raise ValueError(f"outcome must be a number in [0, 1], got {v!r}")
            except Exception as e:  # noqa: BLE001 — reported after the search, with the query index
                self.errors.append((q, f"{type(e).__name__}: {e}"))
                v = 0.0
            out[i] = v
        return out

    def jax_fn(self, query, resp, lens, need):
        return jax.pure_callback(self, jax.ShapeDtypeStruct(query.shape, jnp.float32), query, resp, lens, need)


# ============================================================================================
# search(): host entry point
# ============================================================================================

@dataclasses.dataclass
class SearchResult:
    """The searched trees as numpy arrays [B, M, ...] (see `Tree`), plus the prompts.

    Per node: parent, children, N (visits), Q (Q of the edge from its parent), V, R = O + C, O, C,
    r (reward difference from the parent), prior, logprob (sum of the step's token log-probs),
    depth, terminal, expanded, tokens (step token ids, -1 padded) and length; num_nodes per query.
    `stats`: forward tokens executed (all rows of every model call), tokens decoded for live rows,
    outcome checks; `outcome_errors`: (query, message) of host outcome calls that failed (scored 0).
    """

    prompts: list
    parent: np.ndarray
    children: np.ndarray
    N: np.ndarray
    Q: np.ndarray
    V: np.ndarray
    R: np.ndarray
    O: np.ndarray
    C: np.ndarray
    r: np.ndarray
    prior: np.ndarray
    logprob: np.ndarray
    depth: np.ndarray
    terminal: np.ndarray
    expanded: np.ndarray
    tokens: np.ndarray
    length: np.ndarray
    resp_len: np.ndarray
    num_nodes: np.ndarray
    mcts: MCTSConfig
    stats: dict = dataclasses.field(default_factory=dict)
    outcome_errors: list = dataclasses.field(default_factory=list)

    @classmethod
    def from_tree(cls, tree: Tree, prompts, mcts: MCTSConfig, **kw) -> "SearchResult":
        arrays = {f: np.asarray(getattr(tree, f)) for f in Tree._fields}
        arrays["N"] = arrays["N"].astype(np.int64)
        return cls(prompts=[list(map(int, p)) for p in prompts], mcts=mcts, **arrays, **kw)

    @property
    def batch(self) -> int:
        return self.N.shape[0]

    def step_ids(self, q: int, node: int) -> list[int]:
        return self.tokens[q, node, :self.length[q, node]].tolist()

    def path(self, q: int, node: int) -> list[int]:
        """Node ids from the root to `node`."""
        out = [int(node)]
        while out[-1] != 0:
            out.append(int(self.parent[q, out[-1]]))
        return out[::-1]

    def response_ids(self, q: int, node: int) -> list[int]:
        """The partial response at `node`: the steps along its path."""
        ids: list[int] = []
        for n in self.path(q, node)[1:]:
            ids += self.step_ids(q, n)
        return ids


def _bucket(n: int, multiple: int) -> int:
    return max(multiple, int(math.ceil(n / multiple)) * multiple)


_PROGRAMS: dict = {}


def _program(cfg, run, mcts, rules, option_ids, kind: str, cache_len: int):
    key = (cfg, run, mcts, rules, option_ids, kind, cache_len)
    if key in _PROGRAMS:
        return _PROGRAMS[key]
    holder = _HostOutcome() if kind == "host" else None

    def prog(params, prompts, lens, suffix, suffix_lens, gold, gold_len, rng):
        fn = holder.jax_fn if holder is not None else _exact_outcome(gold, gold_len)
        env = DecodeEnv(params, cfg, run, mcts, rules, prompts, lens, suffix, suffix_lens, option_ids, fn, cache_len)
        tree, state = search_core(env, mcts, prompts.shape[0], rng)
        return tree, state.stats

    entry = {"jit": jax.jit(prog), "holder": holder, "compiled": {}}
    _PROGRAMS[key] = entry
    return entry


def _prepare(params, cfg, prompts, mcts: MCTSConfig, rules: StepRules, eval_prompt: EvalPrompt, outcome,
             run: RunOptions, pad_id: int, length_multiple: int):
    """Validate the inputs and build (program entry, device arguments)."""
    if isinstance(params.get("layers"), (list, tuple)):
        raise ConfigError("mcts.search needs stacked layer params (not per-layer lists)")
    B = len(prompts)
    if B == 0:
        raise ConfigError("mcts.search: no prompts")
    V = cfg.vocab_size
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ConfigError(f"mcts.search: prompt {i} is empty")
        if min(p) < 0 or max(p) >= V:
            raise ConfigError(f"mcts.search: prompt {i} has a token id outside [0, {V})")
    for name, ids in (("eos_ids", rules.eos_ids), ("step_end_ids", rules.step_end_ids),
                      ("option_ids", eval_prompt.option_ids)):
        if any(not 0 <= t < V for t in ids):
            raise ConfigError(f"mcts.search: {name} has a token id outside [0, {V})")
    Tmax = mcts.max_total_tokens
    lens = np.array([len(p) for p in prompts], np.int32)
    P = _bucket(int(lens.max()), length_multiple)
    arr = np.full((B, P), pad_id, np.int32)
    for i, p in enumerate(prompts):
        arr[i, :len(p)] = p
    suf_rows = eval_prompt.rows(B)
    E = _bucket(max(len(s) for s in suf_rows), 32)  # per-query suffixes (the gold in it): one shape per bucket
    suffix = np.full((B, E), pad_id, np.int32)
    for i, s in enumerate(suf_rows):
        suffix[i, :len(s)] = s
    suffix_lens = np.array([len(s) for s in suf_rows], np.int32)
    if isinstance(outcome, ExactMatch):
        if len(outcome.gold_ids) != B:
            raise ConfigError(f"ExactMatch has {len(outcome.gold_ids)} gold answers for {B} prompts")
        kind = "exact"
        gold = np.full((B, Tmax), -1, np.int32)
        gold_len = np.array([len(g) for g in outcome.gold_ids], np.int32)
        for i, g in enumerate(outcome.gold_ids):
            gold[i, :min(len(g), Tmax)] = g[:Tmax]
    elif callable(outcome):
        kind = "host"
        gold, gold_len = np.zeros((B, 1), np.int32), np.zeros((B,), np.int32)
    else:
        raise ConfigError(f"mcts.search: outcome must be ExactMatch(...) or a function (query, ids) -> float, "
                          f"got {type(outcome).__name__}")
    entry = _program(cfg, run, mcts, rules, eval_prompt.option_ids, kind, P + Tmax + E + 1)
    args = (params, jnp.asarray(arr), jnp.asarray(lens), jnp.asarray(suffix), jnp.asarray(suffix_lens),
            jnp.asarray(gold), jnp.asarray(gold_len), jax.random.key(mcts.seed))
    return entry, args


def _shape_key(args) -> tuple:
    return tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(args))


def precompile(params, cfg, prompts: Sequence[Sequence[int]], mcts: MCTSConfig = MCTSConfig(), *, rules: StepRules,
               eval_prompt: EvalPrompt, outcome, run: RunOptions = DEFAULT_RUN, pad_id: int = 0,
               length_multiple: int = 64) -> float:
    """Compile the search program for these inputs' configuration and padded shapes without running
    it (the next `search` with the same shapes uses it); returns the seconds spent."""
    import time

    entry, args = _prepare(params, cfg, prompts, mcts, rules, eval_prompt, outcome, run, pad_id, length_multiple)
    t = time.perf_counter()
    sk = _shape_key(args)
    if sk not in entry["compiled"]:
        entry["compiled"][sk] = entry["jit"].lower(*args).compile()
    return time.perf_counter() - t


def search(params, cfg, prompts: Sequence[Sequence[int]], mcts: MCTSConfig = MCTSConfig(), *, rules: StepRules,
           eval_prompt: EvalPrompt, outcome, run: RunOptions = DEFAULT_RUN, pad_id: int = 0,
           length_multiple: int = 64, on_outcome_error: str = "raise") -> SearchResult:
    """iTool's MCTS (see the module docstring) for a batch of tokenized prompts, one compiled
    program (cached per configuration and padded shape; prompts are padded to `length_multiple`).

    prompts      : token ids per query, chat-formatted, ending where the assistant response starts.
    rules        : `StepRules` (step ends and end-of-turn ids; `step_rules_for(tokenizer, ...)`).
    eval_prompt  : `EvalPrompt` (`eval_prompt_for(tokenizer)` builds the default one).
    outcome      : `ExactMatch(gold_ids per query)` (jittable) or a host function
                   `outcome(query_index, response_ids) -> float in [0, 1]`.
    run          : `RunOptions` of the model calls (compute dtype etc.).
    on_outcome_error : "raise" (a JaxtoolError after the search, naming the query) or "record"
                   (score 0 and list it in `SearchResult.outcome_errors`).
    Not thread-safe: concurrent searches with the same configuration share the host-outcome slot.
    """
    if on_outcome_error not in ("raise", "record"):
        raise ConfigError(f"on_outcome_error must be 'raise' or 'record', got {on_outcome_error!r}")
    entry, args = _prepare(params, cfg, prompts, mcts, rules, eval_prompt, outcome, run, pad_id, length_multiple)
    holder = entry["holder"]
    if holder is not None:
        holder.fn, holder.errors, holder.calls = outcome, [], 0
    fn = entry["compiled"].get(_shape_key(args), entry["jit"])
    tree, stats = fn(*args)
    tree = jax.device_get(tree)
    stats = np.asarray(stats)
    errors = list(holder.errors) if holder is not None else []
    if holder is not None:
        holder.fn = None
    if errors and on_outcome_error == "raise":
        q, msg = errors[0]
        raise JaxtoolError(f"mcts outcome function failed {len(errors)} time(s); first on query {q}: {msg}")
    return SearchResult.from_tree(tree, prompts, mcts, outcome_errors=errors,
                                  stats={"forward_tokens": float(stats[0]), "decoded_tokens": float(stats[1]),
                                         "outcome_checks": float(stats[2])})

