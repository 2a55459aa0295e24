"""iTool's step-level Monte Carlo tree search (Zeng et al. 2025, §3.2), for a batch of queries in
one compiled program.

The method (equation numbers are the paper's)
---------------------------------------------
A *step* is one sentence or one tool call of the assistant's response (a sentence end or newline
inside a call's brackets or strings never ends one: `StepRules.arg_table`); the root is the prompt
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
   * C, self-evaluation (Eq. 7): the policy reads Table 7's Eval Prompt appended to (prompt, partial
     response) — per query, with the ground-truth response in it (`GOLD_EVAL_QUESTION`,
     `gold_eval_text`; `EvalPrompt` takes one suffix per query) — and we take its probabilities of the four option tokens A/B/C/D,
     weighted 1.0 / 0.1 / −1.0 / −2.0. `eval_samples` k > 0: the mean weight of k option letters
     drawn from those probabilities (the paper's "averaged over 4 samples"); k = 0: the exact
     expectation Σ_o w_o p_o (the limit of that average).
   * O, outcome correctness against the gold answer, of a complete response: for a terminal child
     its own response. For a non-terminal child, Table 5's "simulation" is, by the text above the
     table, the maximum number of simulation steps in the Expand phase (`simulation_mode="steps"`,
     the default): one simulation continues the child at `temperature` for at most `simulations`
     steps, and O is the outcome of the response it reaches when that response is complete
     (end-of-turn, or `max_total_tokens`), else 0. `simulation_mode="rollouts"` (this code's earlier
     reading) averages the outcomes of `simulations` rollouts to a terminal state. With
     simulations = 0, O of a non-terminal node is 0.
   * The edge reward is the difference r(s, a) = R(s′) − R(s) (Eq. 6); the root's R is evaluated
     the same way when the search starts.
4. **Backup** (Eq. 8–9), leaf to root along the selected path: a new child starts with N = 1 (its
   evaluation is its first visit), V = 0, Q = r. Every node on the path then gets
   V(s) = Σ_a N(s′)·Q(s, a) / Σ_a N(s′) over its children (unchanged when it has none),
   Q(s_parent, s) = r + γ·V(s) (γ = `discount`: Eq. 8 has the γ but the paper prints no value; we
   choose 1.0, no discounting),
   N(s) += 1. A selected leaf that cannot be expanded (terminal or at the depth limit) is visited
   again: N grows along its path, values are recomputed.

Preference pairs (`jaxtool.itool.pairs.extract_pairs`): at every expanded node, the highest-Q child is chosen and the
lowest-Q child rejected, with the prompt plus the steps down to that node as the shared prefix.
`jaxtool.itool.filters.filter_pairs` applies App. B's filters. All Table 5 settings are `MCTSConfig` keys (defaults are
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
self-evaluation is one forward over the evaluation suffix on each child's cache; a "steps"
simulation continues the children's rows (rollouts fork them `simulations` times). Per-node memory is therefore max_step_tokens × (KV bytes per
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
`search` runs it with the decode environment (`DecodeEnv`, any model family through
`jaxtool.models.family.family_of`); the tests run it on a scripted one.

Outcome
-------
`outcome=ExactMatch(gold_ids)`: the jittable proxy, O = 1 when the response (without its final
end-of-turn token) equals the gold token ids exactly, else 0. Or any host function
`outcome(query_index, response_token_ids) -> float in [0, 1]` (e.g. parse the calls and compare them
with BFCL's AST checker), called through `jax.pure_callback` once per batch of responses; the
response passed excludes a final end-of-turn token.

Modules
-------
config.py   MCTSConfig (Table 5), StepRules, EvalPrompt, ExactMatch, eval_prompt_for, step_rules_for
tree.py     the fixed-shape trees and the pure array functions select / add_children / backup (Eq. 5, 8–9)
search.py   search_core(env, mcts, batch, key): the loop over any environment (mctx-style)
env.py      DecodeEnv: the policy as the environment (Eq. 6–7), reaching the model through its family
program.py  the compiled-program cache, precompile, search, SearchResult
"""

from jaxtool.sample.mcts.config import (DEFAULT_EVAL_QUESTION, GOLD_EVAL_QUESTION, PRIORS, SIMULATION_MODES, EvalPrompt,
                                        ExactMatch, MCTSConfig, StepRules, arg_transitions, eval_prompt_for,
                                        gold_eval_text, step_rules_for)
from jaxtool.sample.mcts.env import DecodeEnv, option_logprobs, self_eval_score
from jaxtool.sample.mcts.program import SearchResult, precompile, search
from jaxtool.sample.mcts.search import search_core
from jaxtool.sample.mcts.tree import ChildBatch, NodeEval, Tree, add_children, backup, select

__all__ = ["MCTSConfig", "StepRules", "EvalPrompt", "ExactMatch", "NodeEval", "ChildBatch", "Tree", "DecodeEnv",
           "SearchResult", "search", "precompile", "search_core", "select", "add_children", "backup",
           "option_logprobs", "self_eval_score", "eval_prompt_for", "step_rules_for", "DEFAULT_EVAL_QUESTION",
           "PRIORS", "GOLD_EVAL_QUESTION", "SIMULATION_MODES", "gold_eval_text", "arg_transitions"]
