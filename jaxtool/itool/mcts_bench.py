"""`jaxtool bench mcts` (its flags: `jaxtool bench --help`, group "mcts section"): iTool's step-level MCTS (`jaxtool.sample.mcts`, one compiled program for a
batch of queries, forked KV caches) side by side with a straightforward Python-loop MCTS over
transformers `generate` — the way such searches are usually scripted: one query at a time, one
`generate` call per expansion (the `width` children, sampled with per-row step stopping), one for the
rollouts of those children, one forward for their self-evaluation; every call re-reads the whole
prefix (no cache reuse across calls). Both run the same algorithm (Eq. 5 PUCT, R = O + C with
rollout outcomes, Eq. 8–9 backup), the same Table 5 settings, model, queries (BFCL prompts in BFCL's
prompt-based style), step rules, evaluation prompt and outcome check (BFCL's AST checker).

Reported per side: wall time of the search (ours: the compiled program's second run; its compile
time separately), candidate pairs (one per expanded node) and kept pairs (App. B filters) per hour,
and device utilisation = model FLOPs executed (2 × parameters per token processed by a forward,
attention excluded; every row of every batched call counts, finished rows included) ÷ wall ÷ the
matmul peak of that framework measured here (on GPU/TPU: the chip's bf16 peak for ours).
PyTorch is used only here (the "theirs" column), never by the sampler.
"""

from __future__ import annotations

import math
import os
import tempfile
import time

TABLE5 = dict(depth=3, width=3, simulations=2, iterations=5, c_puct=1.0, temperature=1.5, seed=42)
# Both sides run the same algorithm: the baseline below rolls out to the end (`simulation_mode:
# rollouts`) and cuts steps by the plain token table (no argument guard), so ours does here too; the
# loop's defaults (the paper's "steps" simulation, the guard) are in docs/itool.md.
SAME_ALGORITHM = dict(simulation_mode="rollouts")


# --------------------------------------------------------------------------------------------
# shared setup
# --------------------------------------------------------------------------------------------

def _queries(tokenizer, n: int):
    from jaxtool.data.formats import get_format
    from jaxtool.data.tokenize import prompt_ids
    from jaxtool.eval.bfcl.data import read_category
    from jaxtool.eval.bfcl.prompt import build_conversation

    fmt = get_format("pythonic", tokenizer=tokenizer)
    items = read_category("simple_python", limit=n)
    prompts = [list(prompt_ids(build_conversation(it, "prompting"), fmt, tokenizer)) for it in items]
    return items, prompts


def _outcome_fn(tokenizer, items):
    """BFCL's verdict (pythonic decoding + AST check) of a response: 1.0 valid, else 0.0."""
    from jaxtool.eval.bfcl.decode import decode_pythonic
    from jaxtool.eval.bfcl.score import score_item

    def outcome(q: int, ids) -> float:
        text = tokenizer.decode(list(ids), skip_special_tokens=True)
        return 1.0 if score_item(items[q], decode_pythonic(text)).valid else 0.0
    return outcome


# --------------------------------------------------------------------------------------------
# theirs: a Python-loop MCTS over transformers generate
# --------------------------------------------------------------------------------------------

class _Node:
    __slots__ = ("parent", "children", "step", "resp", "N", "Q", "V", "R", "r", "prior", "depth", "terminal", "expanded")

    def __init__(self, parent, step, resp, prior, depth, terminal):
        self.parent, self.children, self.step, self.resp = parent, [], step, resp
        self.N, self.Q, self.V, self.R, self.r = 1, 0.0, 0.0, 0.0, 0.0
        self.prior, self.depth, self.terminal, self.expanded = prior, depth, terminal, False


class TorchMCTS:
    """The baseline: plain Python tree, transformers calls, no KV reuse across calls."""

    def __init__(self, model, mcts, rules, eval_prompt, outcome, device, budget_s=None):
        import torch

        self.t0, self.budget_s, self.stopped = time.perf_counter(), budget_s, False
        self.torch, self.model, self.mcts, self.rules = torch, model, mcts, rules
        self.suffix, self.options = list(eval_prompt.suffix_ids), list(eval_prompt.option_ids)
        self.outcome, self.device = outcome, device
        self.flops_tokens = 0
        self.end_ids = set(rules.step_end_ids)
        self.eos = set(rules.eos_ids)
        self.seqs = [list(s) for s in rules.step_end_seqs]

    def _cut_step(self, toks: list[int], room: int) -> list[int]:
        out = []
        for t in toks[:min(room, self.mcts.max_step_tokens)]:
            out.append(t)
            if t in self.eos or t in self.end_ids or any(out[-len(s):] == s for s in self.seqs):
                break
        return out

    def _stopper(self, prompt_len: int, room: int):
        import transformers

        outer = self

        class StepStop(transformers.StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                new = input_ids[:, prompt_len:].tolist()
                done = [len(outer._cut_step(r, room)) < len(r) or len(r) >= min(room, outer.mcts.max_step_tokens)
                        or (r and r[-1] in outer.eos) for r in new]
                return outer.torch.tensor(done, device=input_ids.device)
        return transformers.StoppingCriteriaList([StepStop()])

    def _generate(self, rows: list[list[int]], max_new: int, n: int, stop=None):
        """Sampled continuations (left-padded batch, n per row): list of (tokens, raw logits per step)."""
        torch = self.torch
        L = max(len(r) for r in rows)
        pad = self.model.generation_config.pad_token_id or 0
        ids = torch.tensor([[pad] * (L - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in rows], device=self.device)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                                      temperature=self.mcts.temperature, top_k=0, top_p=1.0, max_new_tokens=max_new,
                                      num_return_sequences=n, stopping_criteria=stop, return_dict_in_generate=True,
                                      output_logits=True, pad_token_id=pad, eos_token_id=list(self.eos))
        seqs = out.sequences[:, L:]
        self.flops_tokens += out.sequences.shape[0] * L + seqs.shape[0] * seqs.shape[1]
        logp = torch.stack(out.logits, dim=1).float().log_softmax(-1) if out.logits else None
        return seqs.tolist(), logp

    def _self_eval(self, contexts: list[list[int]]) -> list[float]:
        torch = self.torch
        texts = [c + self.suffix for c in contexts]
        L = max(len(t) for t in texts)
        ids = torch.tensor([t + [0] * (L - len(t)) for t in texts], device=self.device)
        mask = torch.tensor([[1] * len(t) + [0] * (L - len(t)) for t in texts], device=self.device)
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        self.flops_tokens += ids.numel()
        w = self.mcts.eval_weights
        out = []
        for i, t in enumerate(texts):
            opt = logits[i, len(t) - 1, self.options]
            logp = opt.log_softmax(-1) if self.mcts.eval_normalize else logits[i, len(t) - 1].log_softmax(-1)[self.options]
            if self.mcts.eval_samples == 0:
                out.append(float((logp.exp() * torch.tensor(w)).sum()))
            else:
                draws = torch.multinomial(logp.exp(), self.mcts.eval_samples, replacement=True)
                out.append(float(torch.tensor(w)[draws].mean()))
        return out

    def _strip(self, resp):
        return resp[:-1] if resp and resp[-1] in self.eos else resp

    def _evaluate(self, q, prompt, nodes) -> None:
        """R = O + C of new nodes (rollouts for O of non-terminal ones, one generate call)."""
        mcts = self.mcts
        C = self._self_eval([prompt + n.resp for n in nodes])
        O = [self.outcome(q, self._strip(n.resp)) if n.terminal else 0.0 for n in nodes]
        live = [i for i, n in enumerate(nodes) if not n.terminal]
        if live and mcts.simulations > 0:
            room = max(mcts.max_total_tokens - min(len(nodes[i].resp) for i in live), 1)
            seqs, _ = self._generate([prompt + nodes[i].resp for i in live], room, mcts.simulations)
            for j, i in enumerate(live):
                vals = []
                for s in seqs[j * mcts.simulations:(j + 1) * mcts.simulations]:
                    cont = []
                    for t in s[:mcts.max_total_tokens - len(nodes[i].resp)]:
                        cont.append(t)
                        if t in self.eos:
                            break
                    vals.append(self.outcome(q, self._strip(nodes[i].resp + cont)))
                O[i] = sum(vals) / len(vals)
        for n, o, c in zip(nodes, O, C):
            n.R = o + c

    def search(self, q: int, prompt: list[int]) -> list[_Node]:
        mcts = self.mcts
        root = _Node(None, [], [], 1.0, 0, False)
        self._evaluate(q, prompt, [root])
        nodes = [root]
        for _ in range(mcts.iterations):
            if self.budget_s is not None and time.perf_counter() - self.t0 > self.budget_s:
                self.stopped = True
                break
            node, path = root, [root]
            while node.expanded and not node.terminal:
                node = max(node.children, key=lambda ch: ch.Q + mcts.c_puct * ch.prior * math.sqrt(node.N) / (1 + ch.N))
                path.append(node)
            if not node.expanded and not node.terminal and node.depth < mcts.depth:
                room = mcts.max_total_tokens - len(node.resp)
                ctx = prompt + node.resp
                seqs, logp = self._generate([ctx], min(room, mcts.max_step_tokens), mcts.width,
                                            stop=self._stopper(len(ctx), room))
                kids = []
                for i, s in enumerate(seqs):
                    step = self._cut_step(s, room)
                    lp = sum(float(logp[i, j, t]) for j, t in enumerate(step))
                    prior = math.exp(lp / max(len(step), 1)) if mcts.prior == "mean" else math.exp(lp)
                    resp = node.resp + step
                    term = bool(step and step[-1] in self.eos) or len(resp) >= mcts.max_total_tokens
                    kids.append(_Node(node, step, resp, prior, node.depth + 1, term))
                self._evaluate(q, prompt, kids)
                for k in kids:
                    k.r = k.R - node.R
                    k.Q = k.r
                node.children, node.expanded = kids, True
                nodes += kids
            for n in reversed(path):
                if n.expanded:
                    n.V = sum(c.N * c.Q for c in n.children) / sum(c.N for c in n.children)
                n.Q = n.r + mcts.discount * n.V
                n.N += 1
        return nodes

    def pairs(self, q: int, prompt: list[int], nodes: list[_Node]):
        from jaxtool.itool.pairs import Pair

        out = []
        for i, n in enumerate(nodes):
            if not n.expanded or len(n.children) < 2:
                continue
            qs = [c.Q for c in n.children]
            hi = max(range(len(qs)), key=lambda j: (qs[j], -j))
            lo = min(range(len(qs)), key=lambda j: (qs[j], j))
            lo = (hi + 1) % len(qs) if lo == hi else lo
            out.append(Pair(q, i, n.depth, prompt + n.resp, len(prompt), n.children[hi].step, n.children[lo].step,
                            qs[hi], qs[lo], -1, -1))
        return out


# --------------------------------------------------------------------------------------------
# the section
# --------------------------------------------------------------------------------------------

def bench_mcts(args) -> dict:
    import jax

    import jaxtool
    from jaxtool import bench
    from jaxtool.itool.filters import filter_pairs
    from jaxtool.itool.pairs import extract_pairs
    from jaxtool.sample import mcts as M

    accel = jax.devices()[0].platform != "cpu"
    n_q = args.mcts_queries or (16 if accel else 2)
    step_t = args.mcts_max_step_tokens or (48 if accel else 16)
    total_t = args.mcts_max_total_tokens or (128 if accel else 48)
    cfg_m = M.MCTSConfig(**{**TABLE5, "iterations": args.mcts_iterations}, max_step_tokens=step_t,
                         max_total_tokens=total_t, **SAME_ALGORITHM)
    info = bench.backend_info()
    print(f"mcts: {info['platform']} {info['device']}, {n_q} queries, Table 5 settings "
          f"(depth {cfg_m.depth}, width {cfg_m.width}, simulations {cfg_m.simulations}, iterations {cfg_m.iterations}, "
          f"c {cfg_m.c_puct}, temperature {cfg_m.temperature}), step ≤ {step_t}, response ≤ {total_t} tokens", flush=True)
    model = jaxtool.load_model(args.mcts_model)
    tok = model.tokenizer
    items, prompts = _queries(tok, n_q)
    outcome = _outcome_fn(tok, items)
    eos = sorted({*model.config.eos_ids, tok.eos_token_id} - {None})
    rules = M.step_rules_for(tok, eos_ids=eos, guard_arguments=False)
    evalp = M.eval_prompt_for(tok)
    n_params = model.config.num_params()
    peak = bench.chip_peak(info["device"]) if accel else None
    peak = peak or bench.measure_matmul_peak()

    kw = dict(rules=rules, eval_prompt=evalp, outcome=outcome, run=model.run)
    first = M.precompile(model.params, model.config, prompts, cfg_m, **kw)
    t = time.perf_counter()
    res = M.search(model.params, model.config, prompts, cfg_m, on_outcome_error="record", **kw)
    wall = time.perf_counter() - t
    cand = extract_pairs(res)
    kept, counts = filter_pairs(cand)
    ours = {"wall_s": wall, "compile_s": first, "candidate_pairs": len(cand), "kept_pairs": len(kept),
            "filter_counts": counts, "nodes": int(res.num_nodes.sum()),
            "utilisation": 2 * n_params * res.stats["forward_tokens"] / wall / peak, "peak_flops": peak,
            "outcome_errors": len(res.outcome_errors)}
    print(f"  ours:   {wall:.1f}s search (compile {first:.1f}s, not included), {ours['nodes']} nodes, "
          f"{len(cand)} candidate / {len(kept)} kept pairs {counts}", flush=True)

    theirs = None
    if not getattr(args, "no_torch", False):
        try:
            import torch
            import transformers
        except ImportError:
            print("  theirs: skipped (PyTorch/transformers not installed)")
        else:
            device = "cuda" if torch.cuda.is_available() else "cpu"
            if device == "cpu" and args.mcts_torch_threads:
                torch.set_num_threads(args.mcts_torch_threads)
            with tempfile.TemporaryDirectory() as d:
                model.save_hf(os.path.join(d, "hf"))
                hf = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(d, "hf"), dtype=torch.float32)
            hf = hf.to(device).eval()
            torch_peak = None
            if device == "cpu":
                torch_peak = bench.measure_torch_matmul_peak()
            else:
                torch_peak = bench.chip_peak(torch.cuda.get_device_name())
            torch.manual_seed(cfg_m.seed)
            n_tq = args.mcts_torch_queries or (n_q if accel else 1)
            budget = args.mcts_torch_budget_s if args.mcts_torch_budget_s is not None else (None if accel else 150.0)
            base = TorchMCTS(hf, cfg_m, rules, evalp, outcome, device, budget_s=budget)
            t = time.perf_counter()
            tc = []
            n_nodes = 0
            for q, p in enumerate(prompts[:n_tq]):
                nodes = base.search(q, p)
                n_nodes += len(nodes)
                tc += base.pairs(q, p, nodes)
                if base.stopped:
                    break
            twall = time.perf_counter() - t
            tk, tcounts = filter_pairs(tc)
            theirs = {"wall_s": twall, "candidate_pairs": len(tc), "kept_pairs": len(tk), "filter_counts": tcounts,
                      "nodes": n_nodes, "queries": min(n_tq, len(prompts)), "stopped_at_budget": base.stopped,
                      "device": device, "threads": torch.get_num_threads() if device == "cpu" else None,
                      "peak_flops": torch_peak,
                      "utilisation": (2 * n_params * base.flops_tokens / twall / torch_peak) if torch_peak else float("nan")}
            print(f"  theirs: {twall:.1f}s search of {theirs['queries']} quer{'y' if theirs['queries'] == 1 else 'ies'}"
                  f"{' (stopped at the time budget)' if base.stopped else ''}, {n_nodes} nodes, {len(tc)} candidate / "
                  f"{len(tk)} kept pairs {tcounts}", flush=True)

    def per_hour(side, key):
        return side[key] / side["wall_s"] * 3600.0 if side else float("nan")

    rows = []
    for label, key in (("candidate pairs / hour", "candidate_pairs"), ("kept pairs / hour", "kept_pairs")):
        o, t = per_hour(ours, key), per_hour(theirs, key)
        rows.append((label, o, t, o / t if theirs and t > 0 else float("nan")))
    rows.append(("nodes / hour", per_hour(ours, "nodes"), per_hour(theirs, "nodes"),
                 per_hour(ours, "nodes") / per_hour(theirs, "nodes") if theirs else float("nan")))
    rows.append(("device utilisation (MFU)", ours["utilisation"], theirs["utilisation"] if theirs else float("nan"),
                 float("nan")))
    print("\n| MCTS (iTool, Table 5)      | ours (jitted) | theirs (Python loop + generate) | ratio |")
    print("|----------------------------|---------------|---------------------------------|-------|")
    for label, o, t, r in rows:
        fmt = (lambda v: f"{v:.2%}") if "utilisation" in label else (lambda v: f"{v:,.0f}")
        print(f"| {label:<26} | {fmt(o):>13} | {fmt(t) if t == t else 'n/a':>31} | {r:5.1f} |" if r == r else
              f"| {label:<26} | {fmt(o):>13} | {fmt(t) if t == t else 'n/a':>31} |   -   |")
    return {"backend": info, "queries": n_q, "mcts": {k: getattr(cfg_m, k) for k in
                                                      ("depth", "width", "simulations", "iterations", "c_puct",
                                                       "temperature", "max_step_tokens", "max_total_tokens",
                                                       "eval_samples")},
            "ours": ours, "theirs": theirs,
            "ratio_candidate_pairs_per_hour": rows[0][3], "ratio_kept_pairs_per_hour": rows[1][3],
            "ratio_nodes_per_hour": rows[2][3]}


def write_result(out: dict, out_dir: str) -> str:
    """bench_mcts.json in `out_dir`."""
    import json

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "bench_mcts.json")
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1, default=str)
    return path
