"""Memory budget of the training step, from XLA's own buffer assignment (compile only, no execution).

The Llama-3.2-1B-shape SFT step at 8 × 2048 (bf16 compute, float32 params + AdamW, `remat: none`)
must not materialise [tokens × vocab] logits (chunked output layer, `jaxtool.ops.xent`) nor keep
attention scores for the backward pass (`jaxtool.ops.attention` recomputes them). Before those two
changes XLA:CPU assigned 175.2 GiB of temporaries to this step; with them 87.3 GiB (measured on the
2-core development machine). XLA:CPU upcasts bf16 matmul operands to float32 and keeps both, so the
CPU figure is well above what a GPU compile of the same step needs; the budget here guards the
CPU figure against regressions.
"""

import jax
import jax.numpy as jnp

from jaxtool.config import LossConfig, OptimConfig
from jaxtool.data.batch import Batch
from jaxtool.models import llama
from jaxtool.models.run import RunOptions
from jaxtool.train import steps
from jaxtool.train.optim import make_optimizer

GiB = 2 ** 30


def _sft_step_memory(cfg, run, B, L):
    opt, _ = make_optimizer(OptimConfig(lr=1e-5), 1000)
    params = llama.abstract_params(cfg, jnp.float32)
    state = jax.eval_shape(lambda p: steps.TrainState(jnp.zeros((), jnp.int32), p, opt.init(p)), params)
    i32 = jax.ShapeDtypeStruct((B, L), jnp.int32)
    batch = Batch(i32, i32, i32, i32, i32, i32, index=jax.ShapeDtypeStruct((B,), jnp.int32))
    f = jax.jit(lambda st, b: steps.train_step(st, b, None, None, cfg=cfg, lc=LossConfig(type="sft"), optimizer=opt,
                                               use_lora=False, max_turns=0, grad_accum=1, run=run),
                donate_argnums=(0,))
    return f.lower(state, batch).compile().memory_analysis()


def test_1b_sft_step_without_remat_stays_in_budget():
    run = RunOptions(compute_dtype="bfloat16", remat="none", packed=False)
    mem = _sft_step_memory(llama.preset("llama3.2-1b"), run, 8, 2048)
    temps = mem.temp_size_in_bytes / GiB
    print(f"[memory] llama3.2-1b SFT 8x2048 remat none: temporaries {temps:.1f} GiB, "
          f"arguments {mem.argument_size_in_bytes / GiB:.1f} GiB")
    assert temps < 95.0
