"""iTool's step-level Monte Carlo tree search (Zeng et al. 2025, §3.2), for a batch of queries in
one compiled program.

The method (equation numbers are the paper's)
---------------------------------------------
A *step* is one sentence or one tool call of the assistant's response; the root is the prompt
(the response so far, empty). Every search iteration does, for every query of the batch at once:

1. **Select** (Eq. 5, PUCT). From the root, while the node is expanded, go to the child a with the
   largest  Q(s, a) + c · p(a|s) · √N(s) / (1 + N(s′)),  ties to the first child. The walk stops at
   a node that is not expanded (or is terminal).
2. **Expand.** If that leaf is not terminal and lies above the depth limit, sample `width` child
   steps from the policy at `temperature` (one batched decode of width rows that *fork the leaf's
   KV cache*: the shared prefix is never re-run). The prior p(a|s) of a child is the policy's
   probability of its step: exp of the mean of its token log-probs (`prior="mean"`, what the
   authors' code uses) or of their sum (`prior="sum"`, the probability of the whole step).
3. **Evaluate** each new child s′ (Eq. 6–7): R(s′) = O(s′) + C(s′).
   * C, self-evaluation (Eq. 7): the policy reads the Table-7-style evaluation prompt appended to
     (prompt, partial response) and we take its probabilities of the four option tokens A/B/C/D,
     weighted 1.0 / 0.1 / −1.0 / −2.0. `eval_samples` k > 0: the mean weight of k option letters
     drawn from those probabilities (the paper's "averaged over 4 samples"); k = 0: the exact
     expectation Σ_o w_o p_o (the limit of that average).
   * O, outcome correctness against the gold answer, of a complete response: for a terminal child
     its own response; otherwise the mean outcome of `simulations` rollouts that continue the child
     at `temperature` to a terminal state (end-of-turn, or `max_total_tokens`). This is how we
     read Table 5's "simulation": the number of rollouts per new node ("roll out to a terminal
     state (complete response or max length)"). With simulations = 0, O of a non-terminal node is 0.
   * The edge reward is the difference r(s, a) = R(s′) − R(s) (Eq. 6); the root's R is evaluated
     the same way when the search starts.
4. **Backup** (Eq. 8–9), leaf to root along the selected path: a new child starts with N = 1 (its
   evaluation is its first visit), V = 0, Q = r. Every node on the path then gets
   V(s) = Σ_a N(s′)·Q(s, a) / Σ_a N(s′) over its children (unchanged when it has none),
   Q(s_parent, s) = r + γ·V(s) (γ = `discount`, 1.0: the paper writes Eq. 8 without discounting),
   N(s) += 1. A selected leaf that cannot be expanded (terminal or at the depth limit) is visited
   again: N grows along its path, values are recomputed.

Preference pairs (`extract_pairs`): at every expanded node, the highest-Q child is chosen and the
lowest-Q child rejected, with the prompt plus the steps down to that node as the shared prefix.
`filter_pairs` applies App. B's filters. All Table 5 settings are `MCTSConfig` keys (defaults are
Table 5's: depth 3, width 3, simulation 2, iterations 5, c 1.0, temperature 1.5, seed 42).

Layout (one compiled program)
-----------------------------
The tree of each query is a set of fixed-capacity arrays [B, M] (M = 1 + iterations · width: each
iteration adds at most `width` nodes): parent, children [B, M, width], N, Q, V, R, O, C, r, prior,
depth, step tokens [B, M, max_step_tokens] and their count, terminal, expanded; the iterations run
in `lax.while_loop`. A node keeps the KV cache of *its own step's tokens only* ([L, B, M, K, T, Dh]);
the prompt's cache is kept once per query. Expanding a leaf gathers the prompt cache and the step
caches along the leaf's path into one working cache row (a gather, no model call), re-feeds the
last context token to get the next-token logits, forks the row `width` times and decodes one step;
self-evaluation is one forward over the evaluation suffix on each child's cache; rollouts fork the
children's rows `simulations` times. Per-node memory is therefore max_step_tokens × (KV bytes per
token) instead of a whole context (e.g. 64 tokens × 128 KiB = 8 MiB per node for Llama-3.1-8B in
bf16 rather than ~270 MB at 2,048 tokens).

Why not `mctx`
--------------
DeepMind's mctx was the model for this layout (fixed-shape [B, nodes] trees, batched selection and
backup under `lax` control flow), but it does not fit iTool's search, so the search core here is
our own:
* an mctx action is an index into a fixed action set whose prior logits are known when the parent
  is evaluated; an iTool action is a *sampled step of text* whose prior is only known after it has
  been decoded, and all `width` children of a leaf are decoded together in one batched call —
  mctx's `recurrent_fn` expands one (node, action) per simulation;
* mctx keeps one "embedding" (recurrent state) per node; here that would be a whole KV cache per
  node, or a hand-written gather on top of mctx's tree anyway;
* mctx's backup keeps a running mean of returned values, while Eq. 9 recomputes V(s) from the
  children's *current* Q weighted by their visit counts (different as soon as a child's Q changes),
  and Eq. 6's reward is a difference of node scores rather than a transition reward.

Pluggable environment
---------------------
`search_core(env, mcts, batch, key)` is the search over any environment object with
`step_tokens` (int) and two jittable methods:
    env.init(key) -> (env_state, NodeEval[B])                        the root's O, C, terminal
    env.expand(env_state, tree, leaf[B], new_ids[B, W], active[B], key) -> (env_state, ChildBatch)
`search` runs it with the Llama environment (`LlamaEnv`); the tests run it on a scripted one.

Outcome
-------
`outcome=ExactMatch(gold_ids)`: the jittable proxy, O = 1 when the response (without its final
end-of-turn token) equals the gold token ids exactly, else 0. Or any host function
`outcome(query_index, response_token_ids) -> float in [0, 1]` (e.g. parse the calls and compare them
with BFCL's AST checker), called through `jax.pure_callback` once per batch of responses; the
response passed excludes a final end-of-turn token.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import threading
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtool.errors import ConfigError, JaxtoolError
from jaxtool.models import llama
from jaxtool.models.run import DEFAULT_RUN, RunOptions
from jaxtool.sample.generate import Sampling, fork_cache, sample_token

PRIORS = ("mean", "sum")


# ============================================================================================
# configuration and inputs
# ============================================================================================

@dataclasses.dataclass(frozen=True)
class MCTSConfig:
    """Search settings; the defaults are the paper's Table 5 (plus token budgets of our own).

    depth            : max tree depth (steps below the root); a node at this depth is not expanded.
    width            : children sampled per expansion.
    simulations      : rollouts (to a terminal state) per new non-terminal node, averaged for O.
    iterations       : select → expand → evaluate → backup rounds per query.
    c_puct           : c of Eq. 5.
    temperature      : sampling temperature of steps and rollouts (0 = greedy, for tests).
    discount         : γ of Eq. 8 (the paper: 1.0, no discount).
    max_step_tokens  : a step also ends after this many tokens.
    max_total_tokens : a response of this many tokens is terminal (the "max length").
    eval_samples     : option letters drawn per self-evaluation (Eq. 7); 0 = exact expectation.
    eval_weights     : weights of options A/B/C/D (Eq. 7).
    eval_normalize   : option probabilities renormalised over the four options (True) or the
                       model's full-vocabulary probabilities of the four tokens (False).
    prior            : "mean" (exp of the mean token log-prob of the step) or "sum" (exp of the sum).
    seed             : PRNG seed of the search.
    """

    depth: int = 3
    width: int = 3
    simulations: int = 2
    iterations: int = 5
    c_puct: float = 1.0
    temperature: float = 1.5
    discount: float = 1.0
    max_step_tokens: int = 64
    max_total_tokens: int = 256
    eval_samples: int = 4
    eval_weights: tuple = (1.0, 0.1, -1.0, -2.0)
    eval_normalize: bool = True
    prior: str = "mean"
    seed: int = 42

    def __post_init__(self):
        for name in ("depth", "width", "iterations", "max_step_tokens", "max_total_tokens"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"mcts.{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("simulations", "eval_samples"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"mcts.{name} must be >= 0, got {getattr(self, name)!r}")
        if len(tuple(self.eval_weights)) != 4:
            raise ConfigError(f"mcts.eval_weights needs 4 weights (options A/B/C/D), got {self.eval_weights!r}")
        if self.prior not in PRIORS:
            raise ConfigError(f"mcts.prior must be one of {PRIORS}, got {self.prior!r}")
        if self.temperature < 0 or self.c_puct < 0 or not 0 <= self.discount <= 1:
            raise ConfigError(f"mcts: temperature and c_puct must be >= 0 and discount in [0, 1] ({self})")
        object.__setattr__(self, "eval_weights", tuple(float(w) for w in self.eval_weights))

    @property
    def capacity(self) -> int:
        """Node slots per query: the root plus `width` per iteration."""
        return 1 + self.iterations * self.width


@dataclasses.dataclass(frozen=True)
class StepRules:
    """Where a step ends (besides `max_step_tokens`): after a token of `step_end_ids` (sentence
    ends, newlines, the end of a tool call), after a multi-token sequence of `step_end_seqs`
    (e.g. the ids of "</tool_call>" when the tokenizer splits it), or at an `eos_ids` token, which
    also ends the response (terminal)."""

    eos_ids: tuple = ()
    step_end_ids: tuple = ()
    step_end_seqs: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "eos_ids", tuple(sorted({int(t) for t in self.eos_ids})))
        object.__setattr__(self, "step_end_ids", tuple(sorted({int(t) for t in self.step_end_ids})))
        object.__setattr__(self, "step_end_seqs", tuple(tuple(int(t) for t in s) for s in self.step_end_seqs if len(s)))
        if not self.eos_ids:
            raise ConfigError("StepRules.eos_ids: give at least one end-of-turn token id")


@dataclasses.dataclass(frozen=True)
class EvalPrompt:
    """The self-evaluation prompt (Eq. 7): token ids appended after (prompt, partial response) —
    one list for every query, or one per query (e.g. with the gold answer in it) — ending where the
    answer letter comes, and the token ids of the four options A, B, C, D."""

    suffix_ids: tuple
    option_ids: tuple

    def __post_init__(self):
        s = self.suffix_ids
        per_query = len(s) > 0 and not isinstance(s[0], (int, np.integer))
        rows = tuple(tuple(int(t) for t in r) for r in s) if per_query else (tuple(int(t) for t in s),)
        if not rows or any(len(r) == 0 for r in rows):
            raise ConfigError("EvalPrompt.suffix_ids: the evaluation suffix is empty")
        object.__setattr__(self, "suffix_ids", rows if per_query else rows[0])
        if len(self.option_ids) != 4 or len(set(self.option_ids)) != 4:
            raise ConfigError(f"EvalPrompt.option_ids: need 4 distinct token ids (A/B/C/D), got {self.option_ids!r}")
        object.__setattr__(self, "option_ids", tuple(int(t) for t in self.option_ids))

    @property
    def per_query(self) -> bool:
        return isinstance(self.suffix_ids[0], tuple)

    def rows(self, batch: int) -> list[tuple[int, ...]]:
        if not self.per_query:
            return [self.suffix_ids] * batch
        if len(self.suffix_ids) != batch:
            raise ConfigError(f"EvalPrompt.suffix_ids has {len(self.suffix_ids)} per-query suffixes for "
                              f"{batch} prompts")
        return list(self.suffix_ids)


@dataclasses.dataclass(frozen=True)
class ExactMatch:
    """Jittable outcome proxy: O = 1.0 when the response (without a final end-of-turn token) equals
    `gold_ids[q]` token for token, else 0.0. A gold answer longer than max_total_tokens − 1 can
    never match."""

    gold_ids: tuple

    def __post_init__(self):
        object.__setattr__(self, "gold_ids", tuple(tuple(int(t) for t in g) for g in self.gold_ids))


# default evaluation question (our wording of the Table 7 idea: grade the partial tool-use response
# against the request and the offered tools, four graded options)
DEFAULT_EVAL_QUESTION = (
    "Judge the assistant's last response above (it may be unfinished) to the user's request, given the "
    "tools offered. Check the function names, the number, names and values of the arguments, and whether "
    "a call was needed at all. Choose one option:\n"
    "(A) Excellent: correct so far.\n"
    "(B) Acceptable: minor discrepancies.\n"
    "(C) Fair: significant issues.\n"
    "(D) Poor: wrong or irrelevant.\n"
    "Answer with the letter only.")


def eval_prompt_for(tokenizer, question: str = DEFAULT_EVAL_QUESTION, answer_prefix: str = "(",
                    options: Sequence[str] = ("A", "B", "C", "D")) -> EvalPrompt:
    """An `EvalPrompt` for a chat tokenizer: close the assistant turn, ask `question` as a user turn,
    open the assistant turn and write `answer_prefix`; the options must be single tokens there."""
    marker = "\u2063MCTS_PARTIAL\u2063"
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker},
            {"role": "user", "content": question}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if marker not in text:
        raise ConfigError("eval_prompt_for: the tokenizer's chat template dropped the assistant turn")
    suffix = text.split(marker, 1)[1] + answer_prefix
    ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    opt = []
    for o in options:
        t = tokenizer(answer_prefix + o, add_special_tokens=False)["input_ids"]
        base = tokenizer(answer_prefix, add_special_tokens=False)["input_ids"]
        if t[:len(base)] != base or len(t) != len(base) + 1:
            raise ConfigError(f"eval_prompt_for: option {o!r} is not one token after {answer_prefix!r}")
        opt.append(t[-1])
    return EvalPrompt(tuple(ids), tuple(opt))


def step_rules_for(tokenizer, *, eos_ids: Sequence[int], sentence_ends: Sequence[str] = (".", "!", "?"),
                   newline: bool = True, call_ends: Sequence[str] = (")]", "</tool_call>", "}]")) -> StepRules:
    """Step boundaries from a tokenizer's vocabulary: every token whose text ends with a sentence
    end, contains a newline (`newline`), or ends with a call end; call ends the tokenizer splits
    into several tokens become `step_end_seqs` (as the string encodes on its own)."""
    vocab = tokenizer.get_vocab()
    ends, seqs = set(), []
    for tok_str, tid in vocab.items():
        text = tokenizer.convert_tokens_to_string([tok_str])
        t = text.rstrip(" ")
        if (t and t[-1] in "".join(sentence_ends)) or (newline and "\n" in text) or any(
                c and t.endswith(c) for c in call_ends):
            ends.add(int(tid))
    for c in call_ends:
        ids = tokenizer(c, add_special_tokens=False)["input_ids"]
        if len(ids) > 1:
            seqs.append(tuple(ids))
    return StepRules(eos_ids=tuple(eos_ids), step_end_ids=tuple(sorted(ends - set(eos_ids))), step_end_seqs=tuple(seqs))


# ============================================================================================
# the tree and the search core (environment-agnostic)
# ============================================================================================

class NodeEval(NamedTuple):
    """Evaluation of one node per query: outcome O, self-evaluation C, terminal flag ([B] each)."""
    O: jax.Array
    C: jax.Array
    terminal: jax.Array


class ChildBatch(NamedTuple):
    """What an expansion returns for `width` children of each query's leaf ([B, W] unless noted)."""
    prior: jax.Array      # p(a|s)
    logprob: jax.Array    # sum of the step's token log-probs
    O: jax.Array
    C: jax.Array
    terminal: jax.Array
    tokens: jax.Array     # [B, W, T] step token ids (-1 past `length`)
    length: jax.Array     # [B, W]


class Tree(NamedTuple):
    """Fixed-capacity trees [B, M] (M = MCTSConfig.capacity); node 0 is the root; slots at or past
    num_nodes are unused. Q is Q(parent, a) of the edge into the node; r is r(parent, a)."""
    parent: jax.Array     # [B, M] int32, -1 for the root / unused
    children: jax.Array   # [B, M, W] int32, -1 = none
    N: jax.Array          # [B, M] float32
    Q: jax.Array
    V: jax.Array
    R: jax.Array
    O: jax.Array
    C: jax.Array
    r: jax.Array
    prior: jax.Array
    logprob: jax.Array
    depth: jax.Array      # int32
    terminal: jax.Array   # bool
    expanded: jax.Array   # bool
    tokens: jax.Array     # [B, M, T] int32
    length: jax.Array     # [B, M] int32 step tokens
    resp_len: jax.Array   # [B, M] int32 response tokens up to and including the node's step
    num_nodes: jax.Array  # [B] int32


def _get(a, node):
    """a[b, node[b]] for every row b (node clipped into range)."""
    return a[jnp.arange(a.shape[0]), jnp.clip(node, 0, a.shape[1] - 1)]


def _set(a, node, value, mask):
    """a[b, node[b]] = value[b] where mask[b] (other rows untouched)."""
    idx = jnp.where(mask, node, a.shape[1])
    return a.at[jnp.arange(a.shape[0]), idx].set(value, mode="drop")


def _init_tree(B: int, mcts: MCTSConfig, T: int, root: NodeEval) -> Tree:
    M, W = mcts.capacity, mcts.width
    f = lambda v=0.0: jnp.full((B, M), v, jnp.float32)  # noqa: E731
    R0 = (root.O + root.C).astype(jnp.float32)
    return Tree(
        parent=jnp.full((B, M), -1, jnp.int32), children=jnp.full((B, M, W), -1, jnp.int32),
        N=f().at[:, 0].set(1.0), Q=f(), V=f(), R=f().at[:, 0].set(R0), O=f().at[:, 0].set(root.O),
        C=f().at[:, 0].set(root.C), r=f(), prior=f().at[:, 0].set(1.0), logprob=f(),
        depth=jnp.zeros((B, M), jnp.int32), terminal=jnp.zeros((B, M), bool).at[:, 0].set(root.terminal),
        expanded=jnp.zeros((B, M), bool), tokens=jnp.full((B, M, T), -1, jnp.int32),
        length=jnp.zeros((B, M), jnp.int32), resp_len=jnp.zeros((B, M), jnp.int32),
        num_nodes=jnp.ones((B,), jnp.int32))


def select(tree: Tree, mcts: MCTSConfig) -> tuple[jax.Array, jax.Array]:
    """Eq. 5 from the root down: (leaf [B], path [B, depth + 1] of node ids, -1 past the leaf)."""
    B = tree.N.shape[0]
    b = jnp.arange(B)[:, None]
    node = jnp.zeros((B,), jnp.int32)
    path = [node]
    for _ in range(mcts.depth):
        go = _get(tree.expanded, node) & ~_get(tree.terminal, node)
        ch = _get(tree.children, node)                                   # [B, W]
        chs = jnp.clip(ch, 0)
        score = tree.Q[b, chs] + mcts.c_puct * tree.prior[b, chs] * jnp.sqrt(_get(tree.N, node))[:, None] / (
            1.0 + tree.N[b, chs])
        score = jnp.where(ch >= 0, score, -jnp.inf)
        best = jnp.take_along_axis(ch, jnp.argmax(score, axis=1)[:, None], axis=1)[:, 0]
        node = jnp.where(go, best, node)
        path.append(jnp.where(go, best, -1))
    return node, jnp.stack(path, axis=1)


def add_children(tree: Tree, leaf: jax.Array, new_ids: jax.Array, ch: ChildBatch, active: jax.Array,
                 mcts: MCTSConfig) -> Tree:
    """Write the expansion's children (Eq. 6 rewards; N = 1, V = 0, Q = r) under `leaf`."""
    B, W = new_ids.shape
    M = tree.N.shape[1]
    ids = jnp.where(active[:, None], new_ids, M)
    b = jnp.broadcast_to(jnp.arange(B)[:, None], (B, W))
    R = (ch.O + ch.C).astype(jnp.float32)
    r = R - _get(tree.R, leaf)[:, None]

    def put(a, v):
        return a.at[b, ids].set(v.astype(a.dtype), mode="drop")

    return tree._replace(
        parent=put(tree.parent, jnp.broadcast_to(leaf[:, None], (B, W))),
        children=_set(tree.children, leaf, new_ids, active),
        N=put(tree.N, jnp.ones((B, W))), V=put(tree.V, jnp.zeros((B, W))), Q=put(tree.Q, r), r=put(tree.r, r),
        R=put(tree.R, R), O=put(tree.O, ch.O), C=put(tree.C, ch.C), prior=put(tree.prior, ch.prior),
        logprob=put(tree.logprob, ch.logprob),
        depth=put(tree.depth, jnp.broadcast_to(_get(tree.depth, leaf)[:, None] + 1, (B, W))),
        terminal=put(tree.terminal, ch.terminal), expanded=_set(tree.expanded, leaf, jnp.ones((B,), bool), active),
        tokens=tree.tokens.at[b, ids].set(ch.tokens.astype(jnp.int32), mode="drop"),
        length=put(tree.length, ch.length),
        resp_len=put(tree.resp_len, _get(tree.resp_len, leaf)[:, None] + ch.length),
        num_nodes=tree.num_nodes + W * active.astype(jnp.int32))


def backup(tree: Tree, path: jax.Array, mcts: MCTSConfig) -> Tree:
    """Eq. 8–9 from the leaf up to the root along `path` [B, depth + 1]."""
    B = path.shape[0]
    b = jnp.arange(B)[:, None]
    N, Q, V = tree.N, tree.Q, tree.V
    for d in reversed(range(path.shape[1])):
        node = path[:, d]
        valid = node >= 0
        ch = _get(tree.children, node)
        okc = (ch >= 0) & _get(tree.expanded, node)[:, None]
        chs = jnp.clip(ch, 0)
        n, q = jnp.where(okc, N[b, chs], 0.0), jnp.where(okc, Q[b, chs], 0.0)
        den = jnp.sum(n, axis=1)
        v = jnp.where(den > 0, jnp.sum(n * q, axis=1) / jnp.where(den > 0, den, 1.0), _get(V, node))
        V = _set(V, node, v, valid)
        Q = _set(Q, node, _get(tree.r, node) + mcts.discount * v, valid)
        N = _set(N, node, _get(N, node) + 1.0, valid)
    return tree._replace(N=N, Q=Q, V=V)


def search_core(env, mcts: MCTSConfig, batch: int, key: jax.Array):
    """The search loop over any environment (see the module docstring); returns (tree, env_state).

    Jittable; `iterations` rounds of select → expand → evaluate → backup in `lax.while_loop`."""
    W, T = mcts.width, int(env.step_tokens)
    k_init, k_loop = jax.random.split(key)
    env_state, root = env.init(k_init)
    tree = _init_tree(batch, mcts, T, root)

    def skip(env_state, tree, leaf, new_ids, active, k):
        z = jnp.zeros((batch, W), jnp.float32)
        return env_state, ChildBatch(z, z, z, z, jnp.zeros((batch, W), bool),
                                     jnp.full((batch, W, T), -1, jnp.int32), jnp.zeros((batch, W), jnp.int32))

    def body(carry):
        i, tree, env_state, key = carry
        key, k = jax.random.split(key)
        leaf, path = select(tree, mcts)
        active = ~_get(tree.expanded, leaf) & ~_get(tree.terminal, leaf) & (_get(tree.depth, leaf) < mcts.depth)
        new_ids = tree.num_nodes[:, None] + jnp.arange(W, dtype=jnp.int32)[None, :]
        env_state, ch = jax.lax.cond(jnp.any(active), env.expand, skip, env_state, tree, leaf, new_ids, active, k)
        ch = ch._replace(prior=ch.prior.astype(jnp.float32), logprob=ch.logprob.astype(jnp.float32),
                         O=ch.O.astype(jnp.float32), C=ch.C.astype(jnp.float32), terminal=ch.terminal.astype(bool),
                         tokens=ch.tokens.astype(jnp.int32), length=ch.length.astype(jnp.int32))
        tree = add_children(tree, leaf, new_ids, ch, active, mcts)
        tree = backup(tree, path, mcts)
        return i + 1, tree, env_state, key

    _, tree, env_state, _ = jax.lax.while_loop(lambda c: c[0] < mcts.iterations, body,
                                               (jnp.int32(0), tree, env_state, k_loop))
    return tree, env_state


# ============================================================================================
# the Llama environment
# ============================================================================================

def option_logprobs(logits: jax.Array, option_ids, normalize: bool = True) -> jax.Array:
    """Log-probabilities [R, 4] of the options A/B/C/D at the answer position: renormalised over the
    four option tokens (normalize) or the model's full-vocabulary log-probs of those tokens."""
    logits = logits.astype(jnp.float32)
    ids = jnp.asarray(option_ids, jnp.int32)
    if normalize:
        return jax.nn.log_softmax(logits[:, ids], axis=-1)
    return jax.nn.log_softmax(logits, axis=-1)[:, ids]


def self_eval_score(logp: jax.Array, key: jax.Array, weights, samples: int) -> jax.Array:
    """Eq. 7 from option log-probs [R, 4]: samples = 0, Σ_o w_o·p_o; samples = k, the mean weight of
    k option letters drawn from p (the paper's average over samples; its expectation is the former)."""
    w = jnp.asarray(weights, jnp.float32)
    if samples == 0:
        return jnp.sum(jnp.exp(logp) * w, axis=-1)
    draws = jax.random.categorical(key, logp[:, None, :], axis=-1, shape=(logp.shape[0], samples))
    return jnp.mean(w[draws], axis=-1)


class _Rows(NamedTuple):
    """Working rows of decoding: one context (prompt + partial response) each."""
    cache: dict           # {"k", "v"} [L, R, K, S, Dh]
    logits: jax.Array     # [R, V] next-token logits (float32)
    ctx: jax.Array        # [R] context length = next cache slot
    resp: jax.Array       # [R, Tmax] response tokens (-1 past resp_len)
    resp_len: jax.Array   # [R]
    query: jax.Array      # [R] query index


class _EnvState(NamedTuple):
    prompt_kv: dict       # {"k", "v"} [L, B, K, P, Dh]
    step_kv: dict         # {"k", "v"} [L, B, M, K, T, Dh]
    stats: jax.Array      # [3] float32: forward tokens executed, useful tokens decoded, outcome checks


class LlamaEnv:
    """The policy as an environment: steps are decoded from forked KV caches, R = O + C."""

    def __init__(self, params, cfg, run: RunOptions, mcts: MCTSConfig, rules: StepRules, prompts: jax.Array,
                 prompt_lens: jax.Array, suffix: jax.Array, suffix_lens: jax.Array, option_ids: tuple,
                 outcome_fn: Callable, cache_len: int):
        self.params, self.cfg, self.run, self.mcts, self.rules = params, cfg, run, mcts, rules
        self.prompts, self.lens = prompts, prompt_lens.astype(jnp.int32)
        self.suffix, self.suffix_lens = suffix, suffix_lens.astype(jnp.int32)
        self.option_ids = jnp.asarray(option_ids, jnp.int32)
        self.outcome_fn = outcome_fn
        self.S = cache_len
        self.step_tokens = mcts.max_step_tokens
        V = cfg.vocab_size
        self.eos_table = jnp.zeros((V,), bool).at[jnp.asarray(rules.eos_ids, jnp.int32)].set(True)
        ends = rules.step_end_ids or (rules.eos_ids[0],)
        self.end_table = jnp.zeros((V,), bool).at[jnp.asarray(ends, jnp.int32)].set(True)
        if rules.step_end_seqs:
            K = max(len(s) for s in rules.step_end_seqs)
            self.seqs = jnp.asarray([(-1,) * (K - len(s)) + s for s in rules.step_end_seqs], jnp.int32)
        else:
            self.seqs = None
        self.sampling = Sampling(temperature=float(mcts.temperature))

    # -- model calls -------------------------------------------------------------------------
    def _fwd(self, tokens, cache, start, logits_at=None):
        return llama.forward_cached(self.params, tokens, cache, start, self.cfg, logits_at=logits_at, run=self.run)

    def _decode(self, rows: _Rows, done: jax.Array, key: jax.Array, step: bool, stats: jax.Array):
        """Sample until each row ends (a step, or the response when step=False); returns
        (rows, n new tokens, sum of their log-probs, stats)."""
        mcts, Tmax = self.mcts, self.mcts.max_total_tokens
        R = rows.ctx.shape[0]
        limit = mcts.max_step_tokens if step else Tmax
        Kw = self.seqs.shape[1] if (step and self.seqs is not None) else 1
        init = (jnp.int32(0), rows, done | (rows.resp_len >= Tmax), jnp.zeros((R,), jnp.int32),
                jnp.zeros((R,), jnp.float32), jnp.full((R, Kw), -2, jnp.int32), key, stats)

        def cond(c):
            return (c[0] < limit) & ~jnp.all(c[2])

        def body(c):
            i, rw, done, n, lp_sum, window, key, stats = c
            key, sub = jax.random.split(key)
            tok, lp = sample_token(rw.logits, sub, self.sampling)
            active = ~done
            tok = jnp.where(active, tok, 0)
            col = jnp.where(active, rw.resp_len, Tmax)
            resp = rw.resp.at[jnp.arange(R), col].set(tok, mode="drop")
            ends = (self.eos_table[tok] | (rw.resp_len + 1 >= Tmax))
            if step:
                ends = ends | self.end_table[tok] | (n + 1 >= mcts.max_step_tokens)
                if self.seqs is not None:
                    window = jnp.concatenate([window[:, 1:], tok[:, None]], axis=1)
                    hit = (self.seqs[None] == window[:, None]) | (self.seqs[None] == -1)
                    ends = ends | jnp.any(jnp.all(hit, axis=-1), axis=-1)
            logits, cache = self._fwd(tok[:, None], rw.cache, rw.ctx)
            a = active.astype(jnp.int32)
            new_logits = jnp.where(active[:, None], logits[:, 0].astype(jnp.float32), rw.logits)
            rw = rw._replace(cache=cache, logits=new_logits,
                             ctx=rw.ctx + a, resp=resp, resp_len=rw.resp_len + a)
            stats = stats + jnp.array([R, jnp.sum(a), 0], jnp.float32)
            return (i + 1, rw, done | (ends & active), n + a, lp_sum + jnp.where(active, lp, 0.0), window, key, stats)

        _, rows, _, n, lp_sum, _, _, stats = jax.lax.while_loop(cond, body, init)
        return rows, n, lp_sum, stats

    def _self_eval(self, rows: _Rows, key: jax.Array) -> jax.Array:
        """Eq. 7: one forward over the evaluation suffix on each row's cache; C per row."""
        suffix = self.suffix[rows.query]
        logits, _ = self._fwd(suffix, rows.cache, rows.ctx, logits_at=self.suffix_lens[rows.query] - 1)
        return self_eval_score(option_logprobs(logits[:, 0], self.option_ids, self.mcts.eval_normalize), key,
                               self.mcts.eval_weights, self.mcts.eval_samples)

    def _response_len(self, resp, resp_len):
        """Response length without a final end-of-turn token."""
        last = jnp.take_along_axis(resp, jnp.clip(resp_len - 1, 0)[:, None], axis=1)[:, 0]
        return resp_len - ((resp_len > 0) & self.eos_table[jnp.clip(last, 0)]).astype(jnp.int32)

    def _evaluate(self, rows: _Rows, terminal: jax.Array, key: jax.Array, stats: jax.Array):
        """(O, C, stats) of each row's context: Eq. 6–7 (rollouts for O of non-terminal rows)."""
        R, S = rows.ctx.shape[0], self.mcts.simulations
        k_eval, k_roll = jax.random.split(key)
        resp, lens, query, need = rows.resp, self._response_len(rows.resp, rows.resp_len), rows.query, terminal
        if S > 0:
            idx = jnp.repeat(jnp.arange(R), S)
            ro = _Rows(fork_cache(rows.cache, idx), rows.logits[idx], rows.ctx[idx], rows.resp[idx],
                       rows.resp_len[idx], rows.query[idx])
            ro, _, _, stats = self._decode(ro, terminal[idx], k_roll, False, stats)
            resp = jnp.concatenate([resp, ro.resp], axis=0)
            lens = jnp.concatenate([lens, self._response_len(ro.resp, ro.resp_len)])
            query = jnp.concatenate([query, ro.query])
            need = jnp.concatenate([need, ~terminal[idx]])
        C = self._self_eval(rows, k_eval)
        stats = stats + jnp.array([R * self.suffix.shape[1], 0, jnp.sum(need)], jnp.float32)
        o = self.outcome_fn(query, resp, lens, need).astype(jnp.float32)
        if S > 0:
            O = jnp.where(terminal, o[:R], jnp.mean(o[R:].reshape(R, S), axis=1))
        else:
            O = jnp.where(terminal, o[:R], 0.0)
        return O, C, stats

    # -- environment protocol --------------------------------------------------------------
    def init(self, key):
        cfg, mcts = self.cfg, self.mcts
        B, P = self.prompts.shape
        cache = llama.init_cache(cfg, B, self.S, run=self.run)
        logits, cache = llama.forward_cached(self.params, self.prompts, cache, jnp.zeros((B,), jnp.int32), cfg,
                                             prefill=True, logits_at=self.lens - 1, run=self.run)
        prompt_kv = {n: c[:, :, :, :P] for n, c in cache.items()}
        k = cache["k"]
        step_kv = {n: jnp.zeros((k.shape[0], B, mcts.capacity, k.shape[2], mcts.max_step_tokens, k.shape[4]), k.dtype)
                   for n in ("k", "v")}
        empty = jnp.full((B, mcts.max_total_tokens), -1, jnp.int32)
        rows = _Rows(cache, logits[:, 0].astype(jnp.float32), self.lens, empty,
                     jnp.zeros((B,), jnp.int32), jnp.arange(B, dtype=jnp.int32))
        stats = jnp.array([B * P, 0, 0], jnp.float32)
        terminal = jnp.zeros((B,), bool)
        O, C, stats = self._evaluate(rows, terminal, key, stats)
        return _EnvState(prompt_kv, step_kv, stats), NodeEval(O, C, terminal)

    def _ancestors(self, tree: Tree, leaf):
        """Nodes from the leaf up to (not including) the root, [B, depth] (-1 past the root)."""
        out, a = [], leaf
        for _ in range(self.mcts.depth):
            ok = a > 0
            out.append(jnp.where(ok, a, -1))
            a = jnp.where(ok, _get(tree.parent, a), 0)
        return jnp.stack(out, axis=1)

    def _assemble(self, state: _EnvState, tree: Tree, leaf):
        """The leaf's context: working cache [L, B, K, S, Dh] = prompt KV + the path's step KVs,
        and its response tokens [B, Tmax]."""
        B, P = self.prompts.shape
        T, Tmax = self.mcts.max_step_tokens, self.mcts.max_total_tokens
        nodes = self._ancestors(tree, leaf)                                   # [B, D]
        D = nodes.shape[1]
        b = jnp.arange(B)[:, None, None]
        ns = jnp.clip(nodes, 0)[:, :, None]                                   # [B, D, 1]
        t = jnp.arange(T)[None, None, :]                                      # [1, 1, T]
        length = tree.length[b, ns]
        off = tree.resp_len[b, ns] - length                                   # response offset of each step
        valid = (nodes[:, :, None] >= 0) & (t < length)                       # [B, D, T]
        dest = jnp.where(valid, off + t, Tmax)                                # response column
        bb = jnp.broadcast_to(b, (B, D, T)).reshape(B, D * T)
        nn = jnp.broadcast_to(ns, (B, D, T)).reshape(B, D * T)
        tt = jnp.broadcast_to(t, (B, D, T)).reshape(B, D * T)
        dest = dest.reshape(B, D * T)
        resp = jnp.full((B, Tmax), -1, jnp.int32).at[bb, dest].set(tree.tokens[bb, nn, tt], mode="drop")
        slot = jnp.where(dest < Tmax, self.lens[:, None] + dest, self.S)
        cache = {}
        for name in ("k", "v"):
            pk = state.prompt_kv[name]
            c = jnp.pad(pk, ((0, 0), (0, 0), (0, 0), (0, self.S - P), (0, 0)))
            src = state.step_kv[name][:, bb, nn, :, tt, :]                  # [B, D*T, L, K, Dh]
            cache[name] = c.at[:, bb, :, slot, :].set(src, mode="drop")
        return cache, resp, _get(tree.resp_len, leaf)

    def expand(self, state: _EnvState, tree: Tree, leaf, new_ids, active, key):
        mcts = self.mcts
        B, P = self.prompts.shape
        W, T, Tmax = mcts.width, mcts.max_step_tokens, mcts.max_total_tokens
        cache, resp, resp_len = self._assemble(state, tree, leaf)
        ctx = self.lens + resp_len
        last_resp = jnp.take_along_axis(resp, jnp.clip(resp_len - 1, 0)[:, None], axis=1)[:, 0]
        last_prompt = jnp.take_along_axis(self.prompts, (self.lens - 1)[:, None], axis=1)[:, 0]
        last = jnp.where(resp_len > 0, last_resp, last_prompt)
        logits, cache = self._fwd(last[:, None], cache, ctx - 1)             # re-feed: next-token logits
        stats = state.stats + jnp.array([B, 0, 0], jnp.float32)
        idx = jnp.repeat(jnp.arange(B), W)
        rows = _Rows(fork_cache(cache, idx), logits[idx, 0].astype(jnp.float32), ctx[idx], resp[idx], resp_len[idx],
                     idx.astype(jnp.int32))
        k_step, k_eval = jax.random.split(key)
        R = B * W
        done0 = ~active[idx]
        rows, n, lp_sum, stats = self._decode(rows, done0, k_step, True, stats)
        last_tok = jnp.take_along_axis(rows.resp, jnp.clip(rows.resp_len - 1, 0)[:, None], axis=1)[:, 0]
        terminal = (self.eos_table[jnp.clip(last_tok, 0)] & (n > 0)) | (rows.resp_len >= Tmax)
        # the children's step tokens and step KV (cache slots ctx0 .. ctx0 + n - 1)
        t = jnp.arange(T)[None, :]
        ctx0 = ctx[idx]
        col = jnp.clip(resp_len[idx][:, None] + t, 0, Tmax - 1)
        step_tok = jnp.where(t < n[:, None], jnp.take_along_axis(rows.resp, col, axis=1), -1)
        slots = jnp.clip(ctx0[:, None] + t, 0, self.S - 1)                  # [R, T]
        r_idx = jnp.broadcast_to(jnp.arange(R)[:, None], (R, T))
        ids = jnp.where(active[:, None], new_ids, mcts.capacity)             # [B, W]
        bw = jnp.broadcast_to(jnp.arange(B)[:, None], (B, W))
        step_kv = {}
        for name in ("k", "v"):
            g = rows.cache[name][:, r_idx, :, slots, :]                     # [R, T, L, K, Dh]
            g = g.reshape(B, W, *g.shape[1:]).transpose(3, 0, 1, 4, 2, 5)  # [L, B, W, K, T, Dh]
            step_kv[name] = state.step_kv[name].at[:, bw, ids].set(g, mode="drop")
        O, C, stats = self._evaluate(rows, terminal, k_eval, stats)
        nf = jnp.maximum(n, 1).astype(jnp.float32)
        prior = jnp.exp(lp_sum / nf) if mcts.prior == "mean" else jnp.exp(lp_sum)
        ch = ChildBatch(prior.reshape(B, W), lp_sum.reshape(B, W), O.reshape(B, W), C.reshape(B, W),
                        terminal.reshape(B, W), step_tok.reshape(B, W, T), n.reshape(B, W))
        return _EnvState(state.prompt_kv, step_kv, stats), ch


# ============================================================================================
# outcome functions (jittable proxy and host callback)
# ============================================================================================

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
        env = LlamaEnv(params, cfg, run, mcts, rules, prompts, lens, suffix, suffix_lens, option_ids, fn, cache_len)
        tree, state = search_core(env, mcts, prompts.shape[0], rng)
        return tree, state.stats

    entry = {"jit": jax.jit(prog), "holder": holder, "compiled": {}}
    _PROGRAMS[key] = entry
    return entry


def _prepare(params, cfg, prompts, mcts: MCTSConfig, rules: StepRules, eval_prompt: EvalPrompt, outcome,
             run: RunOptions, pad_id: int, length_multiple: int):
    """Validate the inputs and build (program entry, device arguments)."""
    if isinstance(params.get("layers"), (list, tuple)):
        raise ConfigError("mcts.search needs stacked layer params (not `llama.unstack_layers` ones)")
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
    E = max(len(s) for s in suf_rows)
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


# ============================================================================================
# preference pairs and App. B filters
# ============================================================================================

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


def extract_pairs(result: SearchResult) -> list[Pair]:
    """One pair per expanded node with ≥ 2 children: argmax-Q child (first on ties) as chosen,
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


def token_similarity(a: Sequence[int], b: Sequence[int]) -> float:
    """difflib's ratio of two token-id sequences: 2·matches / (len a + len b), 1.0 when equal."""
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, list(a), list(b), autojunk=False).ratio()


FILTER_REASONS = ("similar", "small_q_gap", "low_chosen_q")


def filter_pairs(pairs: Sequence[Pair], max_similarity: float = 0.95, min_q_gap: float = 0.1,
                 min_chosen_q: float = 0.3, similarity_fn: Callable[[Pair], float] | None = None
                 ) -> tuple[list[Pair], dict]:
    """App. B: drop a pair whose two steps are more than `max_similarity` similar, whose
    ΔQ = Q(chosen) − Q(rejected) is below `min_q_gap`, or whose chosen Q is below `min_chosen_q`.
    Each dropped pair is counted under its first failing reason, in that order; `similarity_fn(pair)`
    (e.g. on decoded text) replaces the default token-level `token_similarity`.
    Returns (kept pairs, {"kept": n, "similar": n, "small_q_gap": n, "low_chosen_q": n})."""
    counts = {"kept": 0, **{r: 0 for r in FILTER_REASONS}}
    kept = []
    for p in pairs:
        sim = similarity_fn(p) if similarity_fn is not None else token_similarity(p.chosen_ids, p.rejected_ids)
        if sim > max_similarity:
            counts["similar"] += 1
        elif p.q_gap < min_q_gap:
            counts["small_q_gap"] += 1
        elif p.q_chosen < min_chosen_q:
            counts["low_chosen_q"] += 1
        else:
            counts["kept"] += 1
            kept.append(p)
    return kept, counts


__all__ = ["MCTSConfig", "StepRules", "EvalPrompt", "ExactMatch", "NodeEval", "ChildBatch", "Tree", "LlamaEnv",
           "SearchResult", "Pair", "search", "precompile", "search_core", "select", "add_children", "backup",
           "extract_pairs", "filter_pairs", "token_similarity", "option_logprobs", "self_eval_score",
           "eval_prompt_for", "step_rules_for", "DEFAULT_EVAL_QUESTION"]
