"""Memory budget of the training step, from XLA's own buffer assignment (compile only, no execution).

The Llama-3.2-1B-shape SFT step at 8 × 2048 (bf16 compute, float32 params + AdamW, `remat: none`)
must not materialise [tokens × vocab] logits (chunked output layer, `jaxtool.ops.xent`), keep
attention scores for the backward pass (`jaxtool.ops.attention` recomputes them), nor keep the
SwiGLU and RMSNorm internals (`llama.model._mlp`, `rms_norm`: only their inputs are saved).
XLA:CPU's temporaries for this step (measured on the 2-core development machine):

| change                                  | default XLA:CPU | without loop-invariant code motion |
|-----------------------------------------|-----------------|------------------------------------|
| none of the above                       | 175.2 GiB       |                                    |
| chunked logits + attention recompute    | 87.3 GiB        | 52.0 GiB                           |
| + SwiGLU / RMSNorm internals recomputed | 50.6 GiB        | 31.8 GiB                           |

XLA:CPU has no bf16 matmul: it converts bf16 operands to float32, and its while-loop invariant code
motion hoists those converts out of the backward layer loop, converting the whole stacked bf16
residuals ([layers, tokens, F]) to float32 at once (the buffer assignment shows them: two f32
[16, 8, 2048, 8192] copies of 8 GiB each, eight of 2 GiB). A backend with bf16 matmuls (GPU, TPU) has
no such converts. The right-hand column compiles the same program with that pass disabled, which
is the figure the issue's 40 GiB budget is about; the left-hand one guards the CPU default.
"""

import jax
import jax.numpy as jnp
import pytest

from jaxtool.config import LossConfig, OptimConfig
from jaxtool.data.batch import Batch
from jaxtool.models import llama
from jaxtool.models.run import RunOptions
from jaxtool.train import steps
from jaxtool.train.optim import make_optimizer

GiB = 2 ** 30


NO_HOIST = {"xla_disable_hlo_passes": "while-loop-invariant-code-motion"}


def _sft_step(cfg, run, B, L):
    opt, _ = make_optimizer(OptimConfig(lr=1e-5), 1000)
    params = llama.abstract_params(cfg, jnp.float32)
    state = jax.eval_shape(lambda p: steps.TrainState(jnp.zeros((), jnp.int32), p, opt.init(p)), params)
    i32 = jax.ShapeDtypeStruct((B, L), jnp.int32)
    batch = Batch(i32, i32, i32, i32, i32, i32, index=jax.ShapeDtypeStruct((B,), jnp.int32))
    f = steps.make_train_step(cfg, LossConfig(type="sft"), opt, run=run)
    return f.lower(state, batch)


def _lora_preference_step(cfg, run, lc, optim, rank, P, L, T, grad_accum, base_dtype, base_quant="none"):
    """The LoRA preference step (frozen base of `base_dtype`, quantised by `base_quant`) lowered for
    abstract P pairs × L tokens."""
    from jaxtool.data.batch import PairBatch, RefLogps
    from jaxtool.models import lora, quant

    frozen = llama.abstract_params(cfg, base_dtype)
    if base_quant != "none":
        frozen = jax.eval_shape(lambda p: quant.quantize_params(p, base_quant, llama.FAMILY.projections), frozen)
    adapters = jax.eval_shape(lambda: lora.init_adapters(cfg, rank, lora.targets_of(cfg), jax.random.key(0)))
    opt, _ = make_optimizer(optim, 1000)
    state = jax.eval_shape(lambda a: steps.TrainState(jnp.zeros((), jnp.int32), a, opt.init(a)), adapters)
    i32 = jax.ShapeDtypeStruct((P, L), jnp.int32)
    f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
    side = lambda: Batch(i32, i32, i32, i32, i32, i32, index=jax.ShapeDtypeStruct((P,), jnp.int32))  # noqa: E731
    batch = PairBatch(side(), side(), index=jax.ShapeDtypeStruct((P,), jnp.int32),
                      ref=RefLogps(f32(P), f32(P), f32(P, T), f32(P, T)))
    f = steps.make_train_step(cfg, lc, opt, run=run, use_lora=True, max_turns=T, grad_accum=grad_accum)
    return f.lower(state, batch, frozen)


def test_1b_sft_step_without_remat_stays_in_budget():
    run = RunOptions(compute_dtype="bfloat16", remat="none", packed=False)
    lowered = _sft_step(llama.preset("llama3.2-1b"), run, 8, 2048)
    cpu = lowered.compile().memory_analysis()
    step = lowered.compile(compiler_options=NO_HOIST).memory_analysis()
    temps, temps_cpu = step.temp_size_in_bytes / GiB, cpu.temp_size_in_bytes / GiB
    print(f"[memory] llama3.2-1b SFT 8x2048 remat none: temporaries {temps:.1f} GiB without XLA:CPU's hoisted "
          f"f32 copies ({temps_cpu:.1f} GiB with them), arguments {step.argument_size_in_bytes / GiB:.1f} GiB")
    assert temps < 40.0        # the budget (31.8 measured)
    assert temps_cpu < 55.0    # XLA:CPU's default pipeline (50.6 measured; 87.3 before the SwiGLU/RMSNorm change)


def test_8b_lora_diatool_dpo_step_fits_one_80gib_gpu():
    """The paper's recipe shape: Llama-3.1-8B, LoRA r16 on a bf16 frozen base, DiaTool-DPO, 8 pairs ×
    4096 tokens per side, `remat: full`, the 8 pairs accumulated one pair per micro-batch
    (`optim.grad_accum: 8`, a `lax.scan` inside the step). Measured here: temporaries 43.7 GiB +
    arguments 15.4 GiB with XLA:CPU's default passes (grad_accum 4: 58.1 GiB; 1: 143.5 GiB); 30 GiB of
    those temporaries is XLA:CPU's hoisted float32 copy of the frozen bf16 base (8.0B × 4 bytes, see
    the module docstring): without that pass 13.5 GiB of temporaries."""
    from jaxtool.config import load_config

    P, L, T = 8, 4096, 8
    cfg = llama.preset("llama3.1-8b")
    run = RunOptions(compute_dtype="bfloat16", remat="full", logits_chunk=1024, packed=False, lora_scale=2.0)
    lc = load_config(None, ["loss.type=diatool_dpo", "loss.beta=0.5", "loss.gamma=0.5", "loss.margin=2.0"]).loss
    lowered = _lora_preference_step(cfg, run, lc, OptimConfig(lr=1e-7), 16, P, L, T, 8, jnp.bfloat16)
    mem = lowered.compile().memory_analysis()
    step = lowered.compile(compiler_options=NO_HOIST).memory_analysis()
    temps, args = mem.temp_size_in_bytes / GiB, mem.argument_size_in_bytes / GiB
    print(f"[memory] llama3.1-8b LoRA DiaTool-DPO 8 pairs x 4096, remat full, grad_accum 8: temporaries "
          f"{temps:.1f} GiB ({step.temp_size_in_bytes / GiB:.1f} without the hoisted f32 base), arguments {args:.1f} GiB")
    assert 14.0 < args < 17.0            # 16 GB of bf16 base + LoRA adapters and their AdamW moments
    assert temps + args < 80.0           # fits one 80 GiB GPU even by XLA:CPU's accounting
    assert step.temp_size_in_bytes / GiB < 20.0


def test_cpu_experiment_preference_step_fits_a_laptop():
    """`configs/experiments/diatool_sgd_smollm2.yaml`'s DiaTool-DPO step (SmolLM2-135M, LoRA, fp32,
    4 pairs × 1,536 tokens, no remat) needed 22.1 GiB of temporaries and was OOM-killed on the 24 GiB
    development machine; with the recipe's `optim.grad_accum: 4` it needs 5.7 GiB, 3.5 GiB since SwiGLU and
    RMSNorm internals are recomputed (measured)."""
    import os

    from jaxtool.config import load_config
    from jaxtool.experiment.diatool import ExperimentConfig

    ec = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "experiments",
                                  "diatool_sgd_smollm2.yaml"), [], cls=ExperimentConfig)
    c = ec.diatool
    P, L, T = c.batch_size, ec.cpu.max_length, 8
    cfg = llama.preset("smollm2-135m")
    run = RunOptions(compute_dtype=ec.cpu.compute_dtype, remat=c.model.remat, logits_chunk=c.model.logits_chunk,
                     packed=False, lora_scale=c.lora.alpha / c.lora.rank)
    lowered = _lora_preference_step(cfg, run, c.loss, c.optim, c.lora.rank, P, L, T, c.optim.grad_accum, jnp.float32)
    temps = lowered.compile().memory_analysis().temp_size_in_bytes / GiB
    print(f"[memory] experiment DiaTool-DPO step {P} pairs x {L}, grad_accum {c.optim.grad_accum}: {temps:.1f} GiB")
    assert c.optim.grad_accum == 4 and temps < 8.0


@pytest.mark.slow   # ~70 s on the 2-core machine (an 8B program compiled)
def test_itool_8b_rl_step_on_an_nf4_base_fits_one_80gib_gpu(tmp_path):
    """iTool's 8B recipe (`configs/itool/llama3_8b.yaml`), its RL stage as the paper trains it: SimPO
    (β 2.5, γ 0.5) on LoRA r16 over an NF4-quantised frozen Llama-3.1-8B, 64 pairs of up to
    data.max_length + mcts.max_total_tokens tokens per side, the recipe's grad_accum; the stage's
    TrainConfig is the one the loop builds (`stage_train_config`)."""
    import os

    from jaxtool.config import load_config
    from jaxtool.itool.config import ItoolConfig, stage_train_config, update_loss_overrides

    c = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "itool", "llama3_8b.yaml"), [],
                    cls=ItoolConfig)
    u = c.simpo
    L = c.data.max_length + c.mcts.max_total_tokens
    tc = stage_train_config(c, model_path=str(tmp_path), train="preference:x.jsonl", run_dir=str(tmp_path / "r"),
                            kind="preference", lr=u.lr, epochs=u.epochs, batch_size=u.batch_size, schedule=u.schedule,
                            warmup_ratio=u.warmup_ratio, extra=u.extra, loss=update_loss_overrides(u), max_length=L)
    assert tc.lora.base_quant == "nf4" and tc.loss.type == "simpo" and tc.batch_size == 64
    cfg = llama.preset("llama3.1-8b")
    run = RunOptions(compute_dtype="bfloat16", remat=tc.model.remat, logits_chunk=1024, packed=False,
                     lora_scale=tc.lora.alpha / tc.lora.rank)
    lowered = _lora_preference_step(cfg, run, tc.loss, tc.optim, tc.lora.rank, tc.batch_size, L, 1,
                                    tc.optim.grad_accum, jnp.bfloat16, base_quant="nf4")
    mem = lowered.compile().memory_analysis()
    temps, args = mem.temp_size_in_bytes / GiB, mem.argument_size_in_bytes / GiB
    print(f"[memory] itool llama3.1-8b SimPO on NF4 base, {tc.batch_size} pairs x {L}, grad_accum "
          f"{tc.optim.grad_accum}: temporaries {temps:.1f} GiB, arguments {args:.1f} GiB")
    assert args < 8.0                    # NF4 base (~0.56 bytes/param) + adapters + moments, vs ~15.4 in bf16
    assert temps + args < 80.0           # one 80 GiB GPU, by XLA:CPU's accounting
