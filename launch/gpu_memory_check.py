"""XLA's memory analysis of two training steps on this machine's backend (compile only, nothing runs):

  1. the Llama-3.2-1B-shape SFT step, 8 × 2048, bf16 compute, float32 params + AdamW, remat none;
  2. the Llama-3.1-8B-shape LoRA (r 16, all projections) DiaTool-DPO step, 8 pairs × 4096, bf16
     frozen base, precomputed reference, remat as given (default full).

    PYTHONPATH=. python3 launch/gpu_memory_check.py [--remat-8b full] [--only 1b|8b]

On a GPU this is what the device would hold (arguments + temporaries); on CPU the same numbers are
inflated (XLA:CPU upcasts bf16 matmul operands to float32). Imports only jax + jaxtool's model,
train-step and optimizer modules (no grain / datasets / gguf / torch).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from jaxtool.config import LossConfig, OptimConfig, load_config
from jaxtool.data.batch import Batch, PairBatch, RefLogps
from jaxtool.models import family_of, lora, preset
from jaxtool.models.run import RunOptions
from jaxtool.train import steps
from jaxtool.train.optim import make_optimizer

GiB = 2 ** 30


def _i32(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.int32)


def _batch(B, L):
    return Batch(*(_i32(B, L) for _ in range(6)), index=_i32(B))


def _report(name, compiled, t):
    m = compiled.memory_analysis()
    row = {"step": name, "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
           "temp_gib": m.temp_size_in_bytes / GiB, "argument_gib": m.argument_size_in_bytes / GiB,
           "output_gib": m.output_size_in_bytes / GiB, "compile_s": t}
    print(f"{name}: temporaries {row['temp_gib']:.1f} GiB, arguments {row['argument_gib']:.1f} GiB, "
          f"outputs {row['output_gib']:.1f} GiB (compile {t:.0f}s, {row['device']})", flush=True)
    return row


def sft_1b(remat: str = "none", B: int = 8, L: int = 2048):
    cfg = preset("llama3.2-1b")
    run = RunOptions(compute_dtype="bfloat16", remat=remat, packed=False)
    opt, _ = make_optimizer(OptimConfig(lr=1e-5), 1000)
    params = family_of(cfg).abstract_params(cfg, jnp.float32)
    state = jax.eval_shape(lambda p: steps.TrainState(jnp.zeros((), jnp.int32), p, opt.init(p)), params)
    f = steps.make_train_step(cfg, LossConfig(type="sft"), opt, run=run)
    t = time.time()
    c = f.lower(state, _batch(B, L)).compile()
    return _report(f"llama3.2-1b SFT {B}x{L} bf16 remat={remat}", c, time.time() - t)


def dpo_8b_lora(remat: str = "full", P: int = 8, L: int = 4096, T: int = 8):
    cfg = preset("llama3.1-8b")
    run = RunOptions(compute_dtype="bfloat16", remat=remat, packed=False, lora_scale=2.0)
    lc = load_config(None, ["loss.type=diatool_dpo", "loss.beta=0.5", "loss.gamma=0.5", "loss.margin=2.0"]).loss
    frozen = family_of(cfg).abstract_params(cfg, jnp.bfloat16)
    adapters = jax.eval_shape(lambda: lora.init_adapters(cfg, 16, lora.targets_of(cfg), jax.random.key(0)))
    opt, _ = make_optimizer(OptimConfig(lr=1e-7), 1000)
    state = jax.eval_shape(lambda a: steps.TrainState(jnp.zeros((), jnp.int32), a, opt.init(a)), adapters)
    f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
    batch = PairBatch(_batch(P, L), _batch(P, L), index=_i32(P), ref=RefLogps(f32(P), f32(P), f32(P, T), f32(P, T)))
    f = steps.make_train_step(cfg, lc, opt, run=run, use_lora=True, max_turns=T)
    t = time.time()
    c = f.lower(state, batch, frozen).compile()
    return _report(f"llama3.1-8b LoRA DiaTool-DPO {P} pairs x{L} bf16 base remat={remat}", c, time.time() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--remat-1b", default="none")
    ap.add_argument("--remat-8b", default="full")
    ap.add_argument("--only", choices=("1b", "8b"))
    ap.add_argument("--out", help="write the rows as JSON here")
    a = ap.parse_args(argv)
    rows = []
    if a.only in (None, "1b"):
        rows.append(sft_1b(a.remat_1b))
    if a.only in (None, "8b"):
        rows.append(dpo_8b_lora(a.remat_8b))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
