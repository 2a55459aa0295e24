"""`jaxtool bench {sft,dpo,decode,scaling,all}`: speed and memory side by side with
PyTorch/transformers (the measurements are `jaxtool.bench`)."""

from __future__ import annotations

import argparse

EXAMPLES = """
Examples:
  jaxtool bench all                                        # every section; <= 15 minutes on a 2-core CPU
  jaxtool bench sft --dtypes float32 --grid 4x512
  jaxtool bench sft --nnx --no-torch --dtypes float32 --grid 4x512   # the NNX module's step vs the pure step
  jaxtool bench decode --decode-batches 1,8 --new-tokens 64
  jaxtool bench sft --shape llama3.2-1b --dtypes bfloat16   # on a GPU/TPU: MFU vs the chip's bf16 peak
  jaxtool bench mcts --mcts-queries 4                      # iTool's jitted MCTS vs a Python loop over generate
  jaxtool bench rl --repeats 2                             # RL iteration: rollout vs update, rollout vs transformers"""


def register(sub) -> argparse.ArgumentParser:
    from jaxtool import bench

    p = sub.add_parser("bench", help="speed and memory, side by side with PyTorch/transformers",
                       description=bench.__doc__.rstrip() + "\n" + EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("section", choices=bench.SECTIONS + ("mcts", "rl", "all"),
                   help="what to measure (all = sft, dpo, decode, scaling; mcts and rl run alone)")
    p.add_argument("--out", default="runs/bench", help="directory for bench.json / bench.md / bench.png")
    p.add_argument("--shape", default="smollm2-135m", help="model preset whose shape is benchmarked "
                   "(random weights; e.g. llama3.2-1b on a GPU)")
    p.add_argument("--grid", default=None, help="batch×length list for sft/dpo, e.g. 4x512,2x1024 "
                   "(default: 4x512,2x1024 on CPU, 8x1024,8x2048 on accelerators)")
    p.add_argument("--dtypes", default="float32,bfloat16",
                   help="compute dtypes for the sft section (on CPU, dtypes after the first run only the first "
                        "grid point, to keep `all` within 15 minutes; --full-grid runs every point)")
    p.add_argument("--full-grid", action="store_true", help="every dtype on every grid point, also on CPU")
    p.add_argument("--repeats", type=int, default=2,
                   help="measured steps per configuration (median); in the sft section each measured step "
                        "follows an untimed step of the same side")
    p.add_argument("--decode-batches", default="1,8,32", help="batch sizes of the decode section (default 1,8,32)")
    p.add_argument("--new-tokens", type=int, default=128, help="new tokens per decode (default 128)")
    p.add_argument("--scaling-grid", default="1x256,1x512,1x1024,2x512,4x512",
                   help="batch×length points of the scaling section")
    p.add_argument("--scaling-layers", default="2,4,8,16", help="depths for the compile-time comparison")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch/transformers columns")
    p.add_argument("--torch-only", action="store_true",
                   help="sft: time only the PyTorch side (launch/gpu_session.sh runs it after the JAX side, "
                        "so the two never share the GPU's memory)")
    p.add_argument("--torch-compile", action="store_true",
                   help="sft: the PyTorch side under torch.compile (on CUDA: fp32 weights + bf16 autocast + SDPA + fused AdamW)")
    p.add_argument("--nnx", action="store_true",
                   help="sft: also time the same step written the Flax NNX way on the module (jaxtool.models.nnx: "
                        "nnx.Optimizer, nnx.value_and_grad, nnx.jit), in the same A/B rounds; prints module/pure")
    p.add_argument("--remat", default="none", choices=("none", "full", "dots", "dots_no_batch"),
                   help="sft, dpo: our activation checkpointing policy (default none)")
    p.add_argument("--attention", default="auto", choices=("auto", "xla", "cudnn", "splash"),
                   help="sft, dpo: our attention kernel (auto: cuDNN flash on GPU, splash on TPU, XLA on CPU); "
                        "the kernel that actually ran is in each row")
    _mcts_args(p)
    _rl_args(p)
    p.set_defaults(func=run)
    return p


def _mcts_args(parser) -> None:
    g = parser.add_argument_group("mcts section")
    g.add_argument("--mcts-model", default="smollm2", help="model for the mcts section (jaxtool.load_model path)")
    g.add_argument("--mcts-queries", type=int, default=None,
                   help="BFCL simple_python queries searched (default: 2 on CPU, 16 on accelerators)")
    g.add_argument("--mcts-max-step-tokens", type=int, default=None, help="per-step token budget (default 16 CPU, 48 accel)")
    g.add_argument("--mcts-max-total-tokens", type=int, default=None,
                   help="terminal response length (default 48 CPU, 128 accel)")
    g.add_argument("--mcts-iterations", type=int, default=5, help="search iterations (Table 5: 5)")
    g.add_argument("--mcts-torch-queries", type=int, default=None,
                   help="queries the Python-loop baseline searches, one after another (default: 1 on CPU, all on "
                        "accelerators); its per-hour rates do not depend on the count")
    g.add_argument("--mcts-torch-threads", type=int, default=None,
                   help="torch.set_num_threads for the baseline on CPU (default: torch's own; on a heavily shared "
                        "machine 1 thread avoids OpenMP spin-waiting under oversubscription)")
    g.add_argument("--mcts-torch-budget-s", type=float, default=None,
                   help="stop the baseline after the expansion that crosses this many seconds and rate what it "
                        "completed (default: 150 on CPU, none on accelerators)")



def _rl_args(parser) -> None:
    g = parser.add_argument_group("rl section (jaxtool.rl.bench)")
    g.add_argument("--rl-model", default="smollm2", help="model for the rl section (jaxtool.load_model path)")
    g.add_argument("--rl-data", default="bundled", help="task source of the rl section's prompts")
    g.add_argument("--rl-prompts", type=int, default=2, help="prompts per iteration (default 2)")
    g.add_argument("--rl-group", type=int, default=4, help="samples per prompt (default 4)")
    g.add_argument("--rl-new-tokens", type=int, default=48, help="new tokens per sample, exactly (default 48)")
    g.add_argument("--rl-temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    g.add_argument("--rl-beta", type=float, default=0.04, help="KL weight (> 0: the update includes the reference "
                   "forward; default 0.04, GRPO's)")
    g.add_argument("--rl-torch-threads", type=int, default=None, help="torch.set_num_threads for transformers' side")


def run(args) -> int:
    if args.section == "rl":
        from jaxtool.rl import bench as rl_bench

        return rl_bench.run(args)
    if args.section == "mcts":
        from jaxtool.itool import mcts_bench

        path = mcts_bench.write_result(mcts_bench.bench_mcts(args), args.out)
        print(f"wrote {path}")
        return 0
    from jaxtool.bench import run as run_bench

    return run_bench(args)
