"""`jaxtool.load_model`: one entry point for HF directories, GGUF files and jaxtool checkpoints."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxtool import checkpoint, convert
from jaxtool.convert import EMBEDDED_ALIASES, resolve_model_path  # noqa: F401  (re-exported)
from jaxtool.models.family import family_of
from jaxtool.models.run import DEFAULT_RUN, RunOptions


class Model:
    """A model in memory: `.config` (the architecture, e.g. LlamaConfig), `.run` (RunOptions: compute
    dtype, remat, LoRA scale, attention), `.params` (pytree of arrays), `.tokenizer`, `.family`;
    `.module()` the same model as a Flax NNX module."""

    def __init__(self, config, params: dict, tokenizer=None, source: str = "", run: RunOptions = DEFAULT_RUN):
        self.config = config
        self.params = params
        self.tokenizer = tokenizer
        self.source = source
        self.run = run
        self.family = family_of(config)

    def __iter__(self):
        """`config, params, tokenizer = jaxtool.load_model(path)`: the same triple for every kind of path."""
        return iter((self.config, self.params, self.tokenizer))

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({self.source or 'in-memory'}: {c.num_layers} layers, d={c.hidden_size}, "
                f"{c.num_heads} heads / {c.num_kv_heads} KV, vocab {c.vocab_size}, "
                f"{c.num_params() / 1e6:.1f}M params, {self.param_dtype} params / {self.run.resolved_compute_dtype} compute)")

    @property
    def param_dtype(self) -> str:
        leaves = jax.tree.leaves(self.params)
        return str(leaves[0].dtype) if leaves else "float32"

    @functools.cached_property
    def _forward(self):
        return jax.jit(lambda p, t: self.family.forward(p, t, self.config, run=self.run).astype(jnp.float32))

    def logits(self, input_ids) -> np.ndarray:
        """float32 logits [batch, seq, vocab] for int token ids [batch, seq] (causal, no padding)."""
        ids = np.asarray(input_ids)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"input_ids must be an integer array [batch, seq], got {ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise ValueError(f"input_ids must lie in [0, {self.config.vocab_size}), got [{ids.min()}, {ids.max()}]")
        return np.asarray(self._forward(self.params, jnp.asarray(ids, jnp.int32)))

    def module(self):
        """The model as a Flax NNX module (`jaxtool.models.nnx.CausalLM`) over the same arrays (no copy):
        `nnx.split`, `nnx.Optimizer`, `nnx.jit`, qwix; `module.save_hf(dir)` writes it back."""
        from jaxtool.models.nnx import CausalLM

        return CausalLM(self.config, params=self.params, run=self.run, tokenizer=self.tokenizer)

    def save(self, out_dir: str, overwrite: bool = False) -> str:
        """Save as a jaxtool (Orbax) checkpoint directory."""
        convert.prepare_out_dir(out_dir, overwrite)
        return checkpoint.save_params(out_dir, self.config, self.params, self.tokenizer,
                                      extra_meta={"converted_from": self.source})

    def save_hf(self, out_dir: str, dtype: str | None = None, overwrite: bool = False,
                max_shard_bytes: int = 2 * 1024 ** 3) -> str:
        """Save as a Hugging Face directory (config.json + safetensors + tokenizer)."""
        return convert.save_hf(out_dir, self.config, self.params, self.tokenizer, dtype=dtype,
                               overwrite=overwrite, max_shard_bytes=max_shard_bytes)


def load_model(path: str, dtype: str = "float32", compute_dtype: str | None = None, shardings=None,
               step: int | None = None, run: RunOptions | None = None, **run_options) -> Model:
    """Load a model (its family from config.json's `model_type`: llama, qwen2, qwen3) in one call;
    `config, params, tokenizer = load_model(path)` unpacks it (see `jaxtool.convert.load`).

    path  : an HF directory (config.json + safetensors), a `.gguf` file, a jaxtool checkpoint
            directory (latest step unless `step`; a LoRA run's adapters are merged into the base
            model it names), or "smollm2" for the embedded default model.
    dtype : parameter dtype ("float32", "bfloat16"); compute_dtype defaults to "auto" for float32
            parameters (bfloat16 compute on GPU/TPU, float32 on CPU) and to `dtype` otherwise.
    run / run_options : how to compute (`RunOptions`, or its fields: remat=, lora_scale=, attention=).
    shardings : optional pytree of NamedShardings to place (jaxtool checkpoints: restore onto) the params.
    """
    path = resolve_model_path(path)
    run = run or RunOptions(compute_dtype=compute_dtype or ("auto" if dtype == "float32" else dtype), **run_options)
    cfg, params, tok = convert.load(path, dtype, shardings, step)
    if shardings is None:
        params = jax.tree.map(jnp.asarray, params)
    return Model(cfg, params, tok, source=path, run=run)
