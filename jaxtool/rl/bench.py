"""`jaxtool bench rl`: where an RL iteration's time goes, and our rollout against transformers.

One run measures, on the same model (`--rl-model`, default the embedded SmolLM2-135M-Instruct) and
the same tasks (`--rl-data`, the first `--rl-prompts` usable queries, pythonic prompts):

* **ours**: GRPO iterations of `jaxtool.rl.loop.RLTrainer` — the rollout (jaxtool's jitted KV-cache
  decoder, `--rl-group` samples per prompt in one batch) and the update (one optimizer step on the
  rollout batch, with the reference forward when beta > 0). Every row samples exactly
  `--rl-new-tokens` tokens (no stop ids), so both sides decode the same number of tokens. The first
  iteration compiles and is not timed; the medians of `--repeats` iterations are reported: rollout
  tokens/s (sampled tokens / rollout time), update tokens/s (all tokens of the rollout batch, prompt
  + response, / update time) and each one's share of the iteration's wall time;
* **theirs**: the same rollout through transformers `generate` (sampling at the same temperature,
  `num_return_sequences` = the group size, exactly the same number of new tokens, left-padded
  prompts) on the same weights (converted from ours), in a separate process (PyTorch on CPU is only
  the benchmark's other side, never a runtime of jaxtool); one untimed call, then the median of
  `--repeats`. The ratio printed is our rollout tokens/s over theirs.
"""

from __future__ import annotations

import json
import os
import statistics
import time


def _torch_rollout(hf_config: dict, state_dict: dict, prompts: list[list[int]], group: int, new_tokens: int,
                   temperature: float, repeats: int, pad_id: int, threads: int | None) -> dict:
    """transformers `generate` of `group` samples per prompt, exactly `new_tokens` new tokens each;
    wall times of one untimed and `repeats` timed calls (runs in a spawned process)."""
    import torch

    from jaxtool.bench import _torch_decode_model

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = _torch_decode_model(hf_config, state_dict)
    L = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), L), dtype=torch.long)
    for i, p in enumerate(prompts):   # left padding: every row's next token follows its prompt
        ids[i, L - len(p):] = torch.tensor(p)
        mask[i, L - len(p):] = 1
    times, got = [], 0
    for _ in range(repeats + 1):
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_return_sequences=group,
                                 eos_token_id=None, pad_token_id=pad_id)
        times.append(time.perf_counter() - t)
        got = int(out.shape[0] * (out.shape[1] - L))
    return {"times": times[1:], "sampled_tokens": got, "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def bench_rl(args) -> dict:
    import concurrent.futures
    import multiprocessing as mp

    import numpy as np

    from jaxtool.config import load_config
    from jaxtool.rl.loop import RLConfig, RLTrainer

    t0 = time.time()
    G, N, P = args.rl_group, args.rl_new_tokens, args.rl_prompts
    cfg = load_config(None, [f"model.path={args.rl_model}", f"data.train=[{args.rl_data}]", "data.format=pythonic",
                             f"data.limit={max(P, 1) * 4}", f"rollout.prompts={P}", f"rollout.group_size={G}",
                             f"rollout.temperature={args.rl_temperature}", f"rollout.max_turn_tokens={N}",
                             f"rollout.max_response_tokens={N}", f"iterations={args.repeats + 1}",
                             f"loss.beta={args.rl_beta}", "optim.lr=1e-6", "progress=false",
                             f"run_dir={os.path.join(args.out, 'rl_run')}", *getattr(args, "rl_overrides", [])],
                      cls=RLConfig)
    tr = RLTrainer(cfg, printer=lambda *a, **k: None)
    t_setup = time.time()
    tr.setup()
    tr.stop_ids = []                        # every row samples exactly N tokens (the comparison's fixed work)
    tr.tasks, tr.prompt_ids = tr.tasks[:P], tr.prompt_ids[:P]   # the same P prompts in every iteration
    if len(tr.tasks) < P:
        from jaxtool.errors import DataError

        raise DataError(f"{args.rl_data}: {len(tr.tasks)} usable tasks, --rl-prompts asks for {P}")
    t_setup = time.time() - t_setup
    recs, walls = [], []
    for it in range(args.repeats + 1):     # iteration 0 compiles: not timed
        t = time.time()
        rec = tr.iteration(it)
        walls.append(time.time() - t)
        recs.append(rec)
        print(f"  iteration {it}{' (compile, not timed)' if it == 0 else ''}: rollout {rec['rollout_s']:.2f}s, "
              f"update {rec['update_s']:.2f}s, wall {walls[-1]:.2f}s", flush=True)
    timed, wall = recs[1:], walls[1:]
    med = lambda xs: float(statistics.median(xs))  # noqa: E731
    roll_s, upd_s, it_s = med([r["rollout_s"] for r in timed]), med([r["update_s"] for r in timed]), med(wall)
    sampled = int(round(np.mean([r["response_len"] for r in timed]) * P * G))
    prompts = list(tr.prompt_ids)
    n_all = sum(len(p) for p in prompts) * G + sampled
    ours = {"rollout_s": roll_s, "update_s": upd_s, "iteration_s": it_s,
            "rollout_tok_s": sampled / roll_s, "update_tok_s": n_all * cfg.updates_per_rollout / upd_s,
            "rollout_share": roll_s / it_s, "update_share": upd_s / it_s,
            "other_share": max(0.0, 1 - (roll_s + upd_s) / it_s), "setup_s": t_setup,
            "compile_iteration_s": walls[0]}
    row = {"section": "rl", "model": args.rl_model, "data": args.rl_data, "prompts": P, "group": G,
           "new_tokens": N, "temperature": args.rl_temperature, "beta": args.rl_beta,
           "prompt_tokens": [len(p) for p in prompts], "sampled_tokens": sampled, "batch_tokens": n_all,
           "repeats": args.repeats, "ours": ours, "theirs": None, "rollout_ratio": float("nan")}
    if not getattr(args, "no_torch", False):
        from jaxtool.convert import params_to_state_dict

        mc = tr.model_cfg
        hf_config = {k: v for k, v in mc.to_hf("float32").items() if k not in ("architectures", "torch_dtype")}
        sd = {k: np.asarray(v, np.float32) for k, v in params_to_state_dict(tr.policy_params(), mc, "float32").items()}
        # the same prompts, each repeated G times by num_return_sequences
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
            th = ex.submit(_torch_rollout, hf_config, sd, prompts, G, N, args.rl_temperature, args.repeats,
                           tr.pad_id, getattr(args, "rl_torch_threads", None)).result()
        t_th = med(th["times"])
        row["theirs"] = {"rollout_s": t_th, "rollout_tok_s": th["sampled_tokens"] / t_th, "threads": th["threads"],
                         "torch": th["torch"], "sampled_tokens": th["sampled_tokens"]}
        row["rollout_ratio"] = ours["rollout_tok_s"] / row["theirs"]["rollout_tok_s"]
    row["wall_s"] = time.time() - t0
    return row


def table(row: dict) -> str:
    o, t = row["ours"], row["theirs"]
    th = f"{t['rollout_tok_s']:.1f}" if t else "n/a"
    lines = [f"| RL iteration ({row['prompts']} prompts x {row['group']} samples x {row['new_tokens']} new tokens, "
             f"T={row['temperature']}) | jaxtool | transformers generate | ratio |", "|---|---|---|---|",
             f"| rollout tokens/s (sampled) | {o['rollout_tok_s']:.1f} | {th} | {row['rollout_ratio']:.2f} |",
             f"| update tokens/s (prompt + response) | {o['update_tok_s']:.1f} | | |",
             f"| share of iteration wall time: rollout / update / other | {o['rollout_share']:.0%} / "
             f"{o['update_share']:.0%} / {o['other_share']:.0%} | | |",
             f"| seconds: rollout / update / iteration | {o['rollout_s']:.2f} / {o['update_s']:.2f} / "
             f"{o['iteration_s']:.2f} | {t['rollout_s']:.2f} |  |" if t else
             f"| seconds: rollout / update / iteration | {o['rollout_s']:.2f} / {o['update_s']:.2f} / "
             f"{o['iteration_s']:.2f} | | |"]
    return "\n".join(lines)


def run(args) -> int:
    from jaxtool.bench import backend_info

    info = backend_info()
    print(f"jaxtool bench rl: {args.rl_model} on {info['platform']} ({info['device']}, {info['cores']} cores); "
          f"{args.rl_prompts} prompts x {args.rl_group} samples x {args.rl_new_tokens} new tokens", flush=True)
    row = bench_rl(args)
    md = table(row)
    print("\n" + md)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_rl.json"), "w") as fh:
        json.dump({"backend": info, "rows": [row]}, fh, indent=1, default=str)
    with open(os.path.join(args.out, "bench_rl.md"), "w") as fh:
        fh.write(md + "\n")
    print(f"\nwrote {args.out}/bench_rl.json, bench_rl.md in {row['wall_s']:.0f}s")
    return 0


__all__ = ["bench_rl", "run", "table"]
