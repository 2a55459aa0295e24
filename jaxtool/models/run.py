"""How a run computes with a model — kept apart from the architecture (`LlamaConfig`, from HF).

    run = RunOptions(compute_dtype="bfloat16", remat="dots")
    logits = llama.forward(params, tokens, cfg, run=run)

Frozen and hashable: a static argument of `jax.jit` like the architecture config. Every model
function takes it as the keyword `run`; the default is the backend's compute dtype
(`compute_dtype="auto"`: bfloat16 on GPU/TPU, float32 on CPU, where float32 is the fast path), no
remat, scanned layers, no LoRA scaling and the automatically chosen attention implementation.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxtool.errors import ConfigError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
COMPUTE_DTYPES = (*DTYPES, "auto")


def default_compute_dtype(backend: str | None = None) -> str:
    """What `compute_dtype="auto"` means on `backend` (default: JAX's default backend, read when a
    model function is traced, never at import): bfloat16 on GPU/TPU, float32 on CPU."""
    if backend is None:
        import jax

        backend = jax.default_backend()
    return "float32" if backend == "cpu" else "bfloat16"
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "splash")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    compute_dtype: str = "auto"     # matmul/activation dtype (params are cast to it); softmax, norms, log-probs stay
                                    # f32; "auto" = bfloat16 on GPU/TPU, float32 on CPU (default_compute_dtype)
    remat: str = "none"             # activation checkpointing of each block: see REMAT_POLICIES
    scan_layers: bool = True        # lax.scan over the stacked layer axis (flat compile time in depth)
    lora_scale: float = 1.0         # alpha / rank, applied where LoRA adapters sit next to a weight
    attention: str = "auto"         # auto (fused kernel where the backend has one) | xla | cudnn | splash
    packed: bool = True             # rows may hold several packed examples (False: one example per row,
                                    # then padding — lets fused kernels use a plain causal mask)
    logits_chunk: int = 1024        # training log-probs: tokens per chunk of the output layer + softmax
                                    # (jaxtool.ops.xent, never [tokens x vocab] logits); 0 = full logits
    swiglu_checkpoint: bool = True  # recompute silu(gate)*up for W_down's gradient (llama._mlp); False: plain
                                    # (more saved activations; what qwix's model-level API needs, models.nnx.LayeredLM)

    def __post_init__(self):
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"compute_dtype must be one of {list(COMPUTE_DTYPES)}, got {self.compute_dtype!r}")
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
        if self.attention not in ATTENTION_IMPLS:
            raise ConfigError(f"attention must be one of {ATTENTION_IMPLS}, got {self.attention!r}")
        if self.logits_chunk < 0:
            raise ConfigError(f"logits_chunk must be >= 0 (0 = full logits), got {self.logits_chunk}")

    @property
    def resolved_compute_dtype(self) -> str:
        """The compute dtype's name on this backend ("auto" resolved)."""
        return default_compute_dtype() if self.compute_dtype == "auto" else self.compute_dtype

    @property
    def dtype(self):
        return DTYPES[self.resolved_compute_dtype]

    def replace(self, **kw) -> "RunOptions":
        return dataclasses.replace(self, **kw)


DEFAULT_RUN = RunOptions()
