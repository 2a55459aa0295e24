"""iTool's step-level MCTS (jaxtool.sample.mcts).

* The jitted search core against a plain-Python reference MCTS written here (dict/list nodes, the
  paper's Eq. 5 PUCT, Eq. 6 reward difference, Eq. 8–9 backup) on a scripted environment: equal
  visit counts, Q/V values and extracted pairs.
* The Llama environment on a tiny random model: every node's step (forked, gathered KV caches)
  equals greedy decoding of its full text from scratch with `llama.forward`, with the same
  log-probs; the self-evaluation score equals the hand computation from the four option
  probabilities at the answer position; the exact-match outcome; sampled runs keep the step rules.
* App. B's filters and their counts.
"""

import itertools
import math
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtool.errors import ConfigError, JaxtoolError
from jaxtool.itool.filters import filter_pairs, token_similarity
from jaxtool.itool.pairs import Pair, extract_pairs
from jaxtool.models import llama
from jaxtool.sample import mcts as M
from jaxtool.sample.mcts.program import _exact_outcome

# ------------------------------------------------------------------------------------------------
# a scripted environment: node identity = heap code (child k of code c is c*W + k + 1)
# ------------------------------------------------------------------------------------------------


def make_script(seed, W, depth, terminal_rate=0.15):
    """{code: dict(prior, O, C, terminal, tokens)} for every node of the full tree."""
    rnd = random.Random(seed)
    n_codes = sum(W ** d for d in range(depth + 1))
    script = {}
    for code in range(n_codes):
        ln = 1 + rnd.randrange(3)
        script[code] = {"prior": rnd.uniform(0.05, 0.95), "O": rnd.choice([0.0, 0.5, 1.0]) * rnd.random(),
                        "C": rnd.uniform(-2.0, 1.0), "terminal": code > 0 and rnd.random() < terminal_rate,
                        "tokens": [100 + code] + [rnd.randrange(1, 50) for _ in range(ln - 1)]}
    return script


class ScriptedEnv:
    """The scripts as a jittable environment (tables indexed by code)."""

    def __init__(self, scripts, W, T=4):
        self.W, self.step_tokens = W, T
        n = len(scripts[0])
        col = lambda k: jnp.asarray([[s[c][k] for c in range(n)] for s in scripts], jnp.float32)  # noqa: E731
        self.prior, self.O, self.C = col("prior"), col("O"), col("C")
        self.term = jnp.asarray([[s[c]["terminal"] for c in range(n)] for s in scripts])
        toks = np.full((len(scripts), n, T), -1, np.int32)
        lens = np.zeros((len(scripts), n), np.int32)
        for b, s in enumerate(scripts):
            for c in range(n):
                toks[b, c, :len(s[c]["tokens"])] = s[c]["tokens"]
                lens[b, c] = len(s[c]["tokens"])
        self.toks, self.lens = jnp.asarray(toks), jnp.asarray(lens)

    def init(self, key):
        B = self.prior.shape[0]
        return jnp.zeros((B, 64), jnp.int32), M.NodeEval(self.O[:, 0], self.C[:, 0], self.term[:, 0])

    def expand(self, codes, tree, leaf, new_ids, active, key):
        B, W = new_ids.shape
        b = jnp.arange(B)[:, None]
        cc = codes[jnp.arange(B), leaf][:, None] * W + jnp.arange(W)[None, :] + 1
        ids = jnp.where(active[:, None], new_ids, codes.shape[1])
        codes = codes.at[jnp.broadcast_to(b, (B, W)), ids].set(cc, mode="drop")
        ch = M.ChildBatch(self.prior[b, cc], jnp.log(self.prior[b, cc]), self.O[b, cc], self.C[b, cc],
                          self.term[b, cc], self.toks[b, cc], self.lens[b, cc])
        return codes, ch


class RefNode:
    def __init__(self, code, parent, depth, s, R_parent):
        self.code, self.parent, self.depth = code, parent, depth
        self.prior, self.terminal, self.tokens = s["prior"], s["terminal"], s["tokens"]
        self.R = s["O"] + s["C"]
        self.r = self.R - R_parent
        self.N, self.V, self.Q = 1, 0.0, self.r
        self.children, self.expanded = [], False


def reference_mcts(script, W, depth, iterations, c, gamma):
    """Plain-Python MCTS of the paper: returns (nodes in creation order, smallest selection margin)."""
    root = RefNode(0, None, 0, script[0], script[0]["O"] + script[0]["C"])
    root.r, root.Q = 0.0, 0.0
    nodes, margin = [root], float("inf")
    for _ in range(iterations):
        node, path = root, [root]
        while node.expanded and not node.terminal:
            scores = [ch.Q + c * ch.prior * math.sqrt(node.N) / (1 + ch.N) for ch in node.children]
            best = max(range(len(scores)), key=lambda i: (scores[i], -i))
            others = [s for i, s in enumerate(scores) if i != best]
            if others:
                margin = min(margin, scores[best] - max(others))
            node = node.children[best]
            path.append(node)
        if not node.expanded and not node.terminal and node.depth < depth:
            for k in range(W):
                code = node.code * W + k + 1
                ch = RefNode(code, node, node.depth + 1, script[code], node.R)
                node.children.append(ch)
                nodes.append(ch)
            node.expanded = True
        for n in reversed(path):
            if n.expanded:
                n.V = sum(ch.N * ch.Q for ch in n.children) / sum(ch.N for ch in n.children)
            n.Q = n.r + gamma * n.V
            n.N += 1
    return nodes, margin


def reference_pairs(nodes, prompt):
    out = []
    for i, n in enumerate(nodes):
        if not n.expanded:
            continue
        qs = [ch.Q for ch in n.children]
        hi = max(range(len(qs)), key=lambda j: (qs[j], -j))
        lo = min(range(len(qs)), key=lambda j: (qs[j], j))
        if lo == hi:
            lo = (hi + 1) % len(qs)
        prefix, a = [], n
        while a.parent is not None:
            prefix = a.tokens + prefix
            a = a.parent
        out.append((i, prompt + prefix, n.children[hi].tokens, n.children[lo].tokens, qs[hi], qs[lo]))
    return out


def test_search_core_equals_python_reference():
    # Table 5's depth and width; more iterations than Table 5's 5 so that leaves at the depth limit
    # and terminal leaves are selected again (revisits), and c, γ off their defaults
    mcts = M.MCTSConfig(iterations=14, c_puct=1.5, discount=0.9)
    W, depth = mcts.width, mcts.depth
    scripts = [make_script(seed, W, depth) for seed in (1, 2, 3)]
    env = ScriptedEnv(scripts, W)
    tree, _ = jax.jit(lambda k: M.search_core(env, mcts, len(scripts), k))(jax.random.key(mcts.seed))
    res = M.SearchResult.from_tree(jax.device_get(tree), [[7, q] for q in range(len(scripts))], mcts)
    pairs = extract_pairs(res)
    for q, script in enumerate(scripts):
        nodes, margin = reference_mcts(script, W, depth, mcts.iterations, mcts.c_puct, mcts.discount)
        assert margin > 1e-4, "near-tie in the reference: pick another script seed"
        assert int(res.num_nodes[q]) == len(nodes)
        for i, n in enumerate(nodes):
            assert res.N[q, i] == n.N, (q, i)
            np.testing.assert_allclose([res.Q[q, i], res.V[q, i], res.r[q, i], res.R[q, i]],
                                       [n.Q, n.V, n.r, n.R], atol=1e-5, err_msg=f"query {q} node {i}")
            if i:
                assert res.prior[q, i] == pytest.approx(n.prior, abs=1e-6)
            assert res.depth[q, i] == n.depth and bool(res.terminal[q, i]) == n.terminal
            assert bool(res.expanded[q, i]) == n.expanded
            assert res.step_ids(q, i) == (n.tokens if i else [])
            if n.parent is not None:
                assert res.parent[q, i] == nodes.index(n.parent)
        ours = [(p.node, p.prefix_ids, p.chosen_ids, p.rejected_ids, p.q_chosen, p.q_rejected) for p in pairs if p.query == q]
        ref = reference_pairs(nodes, [7, q])
        assert [o[:4] for o in ours] == [r[:4] for r in ref]
        np.testing.assert_allclose([o[4:] for o in ours], [r[4:] for r in ref], atol=1e-5)
    assert any(n.N > 2 for n in reference_mcts(scripts[0], W, depth, mcts.iterations, mcts.c_puct, mcts.discount)[0][1:])


# ------------------------------------------------------------------------------------------------
# the Llama environment on a tiny random model
# ------------------------------------------------------------------------------------------------

SUFFIX = [2, 9, 31, 77, 5]
OPTIONS = (40, 41, 42, 43)
RULES = M.StepRules(eos_ids=(2,), step_end_ids=tuple(range(100, 200)), step_end_seqs=((20, 21),))


@pytest.fixture(scope="module")
def tiny():
    cfg = llama.preset("tiny")
    rng = np.random.default_rng(3)  # numpy draws: no per-shape PRNG compilation
    params = jax.tree.map(lambda a: jnp.asarray(rng.normal(0.0, 0.2, a.shape), jnp.float32), llama.abstract_params(cfg))
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.ones_like(a) if str(path[-1].key).endswith("norm") else a, params)
    return cfg, params


_FWD = {}


def _logp(cfg, params, ids):
    """log_softmax of llama.forward over the full text, [len, V] (one jitted forward, right-padded
    to 64 tokens: causal attention makes the padding invisible to earlier positions)."""
    if "f" not in _FWD:
        _FWD["f"] = jax.jit(lambda p, t: jax.nn.log_softmax(llama.forward(p, t, cfg).astype(jnp.float32), axis=-1))
    assert len(ids) <= 64
    padded = np.zeros((1, 64), np.int32)
    padded[0, :len(ids)] = ids
    return np.asarray(_FWD["f"](params, jnp.asarray(padded))[0, :len(ids)], np.float64)


def _greedy(cfg, params, ids, n, step_rules=False):
    """Greedy decoding from scratch (a full forward per token), stopping at end-of-turn and, with
    step_rules, where a step ends (RULES)."""
    out = []
    for _ in range(n):
        t = int(np.argmax(_logp(cfg, params, ids + out)[-1]))
        out.append(t)
        if t in RULES.eos_ids or (step_rules and (t in RULES.step_end_ids or out[-2:] == [20, 21])):
            break
    return out


def _hand_eval(cfg, params, context, weights, normalize=True):
    lp = _logp(cfg, params, context + SUFFIX)[-1]
    opt = lp[list(OPTIONS)]
    p = np.exp(opt - np.logaddexp.reduce(opt)) if normalize else np.exp(opt)
    return float(np.dot(p, weights))


PROMPTS = [[1, 50, 60, 70, 80, 90], [1, 33, 44, 55]]
# simulation_mode="rollouts": O of every node from a full greedy rollout (the test below reads O
# against greedy decoding to the end); the paper's "steps" reading has its own test
GREEDY = M.MCTSConfig(depth=2, width=2, simulations=1, iterations=4, temperature=0.0, max_step_tokens=4,
                      max_total_tokens=10, eval_samples=0, simulation_mode="rollouts")


def test_llama_env_equals_decoding_from_scratch_and_hand_self_eval(tiny):
    """Greedy search (temperature 0): every node's step, decoded from gathered + forked caches,
    is what greedy decoding of the node's full text from scratch gives, with the same log-probs;
    C is Eq. 7 computed by hand; O comes through the host callback."""
    cfg, params = tiny
    mcts = GREEDY
    gold0 = _greedy(cfg, params, PROMPTS[0], mcts.max_total_tokens)
    gold0 = gold0[:-1] if gold0 and gold0[-1] in RULES.eos_ids else gold0
    golds = [gold0, [3, 3, 3]]
    calls = []

    def outcome(q, ids):
        calls.append((q, list(ids)))
        return 1.0 if list(ids) == golds[q] else 0.0

    kw = dict(rules=RULES, eval_prompt=M.EvalPrompt(SUFFIX, OPTIONS), outcome=outcome)
    assert M.precompile(params, cfg, PROMPTS, mcts, **kw) > 0   # the search below runs this compiled program
    assert M.precompile(params, cfg, PROMPTS, mcts, **kw) < 0.5  # already there
    res = M.search(params, cfg, PROMPTS, mcts, **kw)
    w = np.array(mcts.eval_weights)
    checked = 0
    for q, prompt in enumerate(PROMPTS):
        assert res.num_nodes[q] >= 1 + 2 * mcts.width
        for node in range(int(res.num_nodes[q])):
            resp = res.response_ids(q, node)
            parent_resp = resp[:len(resp) - int(res.length[q, node])]
            if node:
                step = res.step_ids(q, node)
                budget = min(mcts.max_step_tokens, mcts.max_total_tokens - len(parent_resp))
                assert step == _greedy(cfg, params, prompt + parent_resp, budget, step_rules=True), (q, node)
                lp = _logp(cfg, params, prompt + resp)
                start = len(prompt) + len(parent_resp)
                ref = sum(lp[start + i - 1, t] for i, t in enumerate(step))
                np.testing.assert_allclose(res.logprob[q, node], ref, atol=2e-4)
                np.testing.assert_allclose(res.prior[q, node], math.exp(ref / len(step)), rtol=2e-4)
                np.testing.assert_allclose(res.r[q, node], res.R[q, node] - res.R[q, res.parent[q, node]], atol=1e-5)
                term = step[-1] in RULES.eos_ids or len(resp) >= mcts.max_total_tokens
                assert bool(res.terminal[q, node]) == term
            # Eq. 7: the four options' probabilities at the answer position of the evaluation text
            np.testing.assert_allclose(res.C[q, node], _hand_eval(cfg, params, prompt + resp, w), atol=1e-4)
            # O: greedy rollouts of query 0 reproduce its gold answer; query 1's gold is never produced
            assert res.O[q, node] == (1.0 if q == 0 else 0.0), (q, node, resp)
            np.testing.assert_allclose(res.R[q, node], res.O[q, node] + res.C[q, node], atol=1e-6)
            checked += 1
    assert checked == sum(int(n) for n in res.num_nodes) and checked >= 10
    assert {q for q, _ in calls} == {0, 1} and all(len(ids) <= mcts.max_total_tokens for _, ids in calls)
    assert res.stats["outcome_checks"] == len(calls)

    def broken(q, ids):
        raise KeyError("no gold")

    with pytest.raises(JaxtoolError, match="query"):  # same compiled program, failing outcome function
        M.search(params, cfg, PROMPTS, mcts, rules=RULES, eval_prompt=M.EvalPrompt(SUFFIX, OPTIONS), outcome=broken)
    res2 = M.search(params, cfg, PROMPTS, mcts, rules=RULES, eval_prompt=M.EvalPrompt(SUFFIX, OPTIONS),
                    outcome=broken, on_outcome_error="record")
    assert res2.outcome_errors and all("KeyError" in m for _, m in res2.outcome_errors)
    assert (res2.O == 0).all()


@pytest.mark.slow   # its own compiled search program: ~45 s on the loaded 2-core machine
def test_simulation_is_the_number_of_simulated_steps(tiny):
    """Table 5's "simulation" is, by the text above Table 5, the maximum number of simulation steps in
    the Expand phase (the default, simulation_mode="steps"): O of a non-terminal node is the outcome
    of one rollout of at most `simulations` further steps when it reaches a complete response, else 0.
    Checked against greedy decoding from scratch, one step (step rules) past every node."""
    import dataclasses

    assert M.MCTSConfig().simulation_mode == "steps"
    cfg, params = tiny
    mcts = dataclasses.replace(GREEDY, simulation_mode="steps")
    gold0 = _greedy(cfg, params, PROMPTS[0], mcts.max_total_tokens)
    gold0 = gold0[:-1] if gold0 and gold0[-1] in RULES.eos_ids else gold0
    golds = [gold0, [3, 3, 3]]
    calls = []

    def outcome(q, ids):
        calls.append((q, list(ids)))
        return 1.0 if list(ids) == golds[q] else 0.0

    res = M.search(params, cfg, PROMPTS, mcts, rules=RULES, eval_prompt=M.EvalPrompt(SUFFIX, OPTIONS), outcome=outcome)
    reached_any = unreached_any = False
    for q, prompt in enumerate(PROMPTS):
        for node in range(int(res.num_nodes[q])):
            if res.terminal[q, node]:
                continue
            resp = res.response_ids(q, node)
            cont = _greedy(cfg, params, prompt + resp, min(mcts.max_step_tokens, mcts.max_total_tokens - len(resp)),
                           step_rules=True)
            full = resp + cont
            reached = bool(cont and cont[-1] in RULES.eos_ids) or len(full) >= mcts.max_total_tokens
            body = full[:-1] if full and full[-1] in RULES.eos_ids else full
            want = 1.0 if reached and body == golds[q] else 0.0
            assert res.O[q, node] == want, (q, node, resp, cont)
            reached_any |= reached
            unreached_any |= (not reached) and q == 0
    assert unreached_any  # a node of query 0 whose one-step simulation does not finish: O = 0 (a rollout: 1)
    longest = max(int(res.resp_len[q, :int(res.num_nodes[q])].max()) for q in range(2))
    assert all(len(ids) <= longest + mcts.max_step_tokens for _, ids in calls)


def test_exact_match_proxy():
    gold = jnp.asarray([[5, 6, 7, -1], [9, -1, -1, -1]])
    fn = jax.jit(_exact_outcome(gold, jnp.asarray([3, 1])))
    resp = jnp.asarray([[5, 6, 7, 2], [5, 6, 7, 8], [5, 6, 0, 0], [9, 4, 4, 4], [9, 4, 4, 4], [5, 6, 7, 2]])
    lens = jnp.asarray([3, 4, 3, 1, 2, 3])
    query = jnp.asarray([0, 0, 0, 1, 1, 0])
    need = jnp.asarray([True, True, True, True, True, False])
    assert np.asarray(fn(query, resp, lens, need)).tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]


def test_sampled_self_eval_averages_to_the_exact_score():
    """eval_samples = k draws k option letters from the four options' probabilities; every score is
    a mean of k weights, and with many draws it approaches Σ_o w_o·p_o computed by hand."""
    w = (1.0, 0.1, -1.0, -2.0)
    logits = np.array([[0.3, -1.2, 2.0, 0.1, 0.5, -0.7], [1.5, 0.2, -0.4, 0.9, -2.0, 0.0]], np.float32)
    opts = (5, 0, 3, 1)

    @jax.jit
    def scores(logits):  # one program: eager ops would each compile
        logp = M.option_logprobs(logits, opts, normalize=True)
        raw = M.option_logprobs(logits, opts, normalize=False)
        return (logp, raw, M.self_eval_score(logp, jax.random.key(0), w, 0),
                M.self_eval_score(logp, jax.random.key(0), w, 20000),
                M.self_eval_score(jnp.tile(logp, (50, 1)), jax.random.key(1), w, 4))

    logp, raw, exact_ours, many, four = (np.asarray(x) for x in scores(jnp.asarray(logits)))
    z = logits[:, list(opts)].astype(np.float64)
    p = np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True))
    np.testing.assert_allclose(np.exp(logp), p, atol=1e-6)
    full = np.exp(logits.astype(np.float64) - np.logaddexp.reduce(logits.astype(np.float64), axis=1, keepdims=True))
    np.testing.assert_allclose(np.exp(raw), full[:, list(opts)], atol=1e-6)
    exact = p @ np.array(w)
    np.testing.assert_allclose(exact_ours, exact, atol=1e-6)
    np.testing.assert_allclose(many, exact, atol=0.04)  # std of the mean < 0.011
    sums = {round(sum(c) / 4, 5) for c in itertools.combinations_with_replacement(w, 4)}
    assert all(round(float(v), 5) in sums for v in four) and len(set(np.round(four, 5))) > 3


# ------------------------------------------------------------------------------------------------
# filters and config validation
# ------------------------------------------------------------------------------------------------

def _pair(chosen, rejected, qc, qr):
    return Pair(0, 0, 0, [1, 2], 2, chosen, rejected, qc, qr, 1, 2)


def test_filter_pairs_reasons_and_counts():
    pairs = [
        _pair([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9, 0.0),   # identical -> similar
        _pair(list(range(40)), list(range(39)) + [99], 0.9, 0.0),                           # 39/40 shared: 0.975 -> similar
        _pair([1, 2, 3], [4, 5, 6], 0.5, 0.45),                                            # ΔQ 0.05 -> small gap
        _pair([1, 2, 3], [4, 5, 6], 0.25, -1.0),                                           # chosen Q < 0.3
        _pair([1, 2, 3], [4, 5, 6], 0.8, 0.1),                                             # kept
        _pair(list(range(20)), list(range(19)) + [99], 0.8, 0.1),                          # 0.95 is not > 0.95: kept
    ]
    kept, counts = filter_pairs(pairs)
    assert counts == {"kept": 2, "similar": 2, "small_q_gap": 1, "low_chosen_q": 1}
    assert kept == [pairs[4], pairs[5]]
    kept, counts = filter_pairs(pairs, max_similarity=1.0, min_q_gap=0.0, min_chosen_q=-5.0)
    assert counts["kept"] == 6
    kept, counts = filter_pairs(pairs, similarity_fn=lambda p: 0.0)
    assert counts == {"kept": 4, "similar": 0, "small_q_gap": 1, "low_chosen_q": 1}
    assert token_similarity([1, 2], [1, 2]) == 1.0 and token_similarity([1], [2]) == 0.0


def test_config_and_input_errors(tiny):
    cfg, params = tiny
    with pytest.raises(ConfigError, match="eval_weights"):
        M.MCTSConfig(eval_weights=(1.0, 0.0))
    with pytest.raises(ConfigError, match="width"):
        M.MCTSConfig(width=0)
    with pytest.raises(ConfigError, match="option_ids"):
        M.EvalPrompt([1, 2], (3, 3, 4, 5))
    with pytest.raises(ConfigError, match="prompt 1"):
        M.search(params, cfg, [[1, 2], []], M.MCTSConfig(), rules=RULES, eval_prompt=M.EvalPrompt(SUFFIX, OPTIONS),
                 outcome=M.ExactMatch([[1], [1]]))
    with pytest.raises(ConfigError, match="gold"):
        M.search(params, cfg, [[1, 2]], M.MCTSConfig(), rules=RULES, eval_prompt=M.EvalPrompt(SUFFIX, OPTIONS),
                 outcome=M.ExactMatch([[1], [1]]))
