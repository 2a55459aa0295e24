"""Each model family as a Flax NNX module over the same pure functions (issue 29; docs/nnx.md).

The module is the model API for users; the family's pure functions (`family_of(cfg).forward`, ...)
are the internal core it calls.

    from flax import nnx
    from jaxtool.models.nnx import CausalLM

    model = CausalLM(preset("qwen3-0.6b"), rngs=nnx.Rngs(0))      # random init, any family
    model = CausalLM.from_pretrained("/models/Qwen2.5-0.5B")       # HF dir, GGUF, jaxtool checkpoint
    logits = model(input_ids)                                       # = family_of(cfg).forward(params, ...)
    graph, state = nnx.split(model)
    nnx.to_pure_dict(state)["params"]                               # the pytree training/checkpoints use

The module holds the parameter pytree as `nnx.Param`s (same tree, same arrays) whose `out_sharding`
metadata is the parameter's logical axis names (`ModelFamily.param_axes`) and whose `sharding_rules`
metadata maps those names to mesh axes: jaxtool's rules table (`sharding.DEFAULT_RULES`, or `rules=`)
as is, or — given `mesh=` — resolved for that array on that mesh the way `sharding.logical_to_spec`
resolves it (a mesh axis that does not divide the dimension is dropped, each mesh axis used once), so
`nnx.get_partition_spec(nnx.state(model))` is exactly jaxtool's PartitionSpec of every parameter.
`__call__`, `forward_cached` and `init_cache` call the family's pure functions: there is no second
copy of the math. The architecture config and the run options are static attributes. `add_lora`
adds jaxtool's LoRA adapters as `nnx.LoRAParam`s; `TunixLM` adapts the module to Tunix's trainers.
"""

from __future__ import annotations

import flax
import jax
from flax import nnx

from jaxtool import sharding
from jaxtool.errors import ConfigError, JaxtoolError
from jaxtool.models.family import family_of
from jaxtool.models.run import DEFAULT_RUN, RunOptions


if tuple(int(p) for p in flax.__version__.split(".")[:2]) < (0, 12):
    # nnx.data / nnx.static and the Variable metadata `out_sharding` / `sharding_rules` are Flax 0.12's
    # API (jaxtool's install floor stays at 0.11 for Python 3.10, which Flax 0.12 does not support)
    raise JaxtoolError(f"jaxtool.models.nnx needs flax>=0.12 (tested with 0.12.8), found {flax.__version__}: "
                       "pip install 'flax>=0.12,<0.13' (Python >= 3.11); the rest of jaxtool works without it")


def _is_axes(x) -> bool:
    return isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)


def _values(tree):
    return jax.tree.map(lambda v: v[...], tree, is_leaf=lambda v: isinstance(v, nnx.Variable))


class CausalLM(nnx.Module):
    """A decoder LM of any registered family (Llama, Qwen2, Qwen3) as an NNX module."""

    def __init__(self, config, *, rngs: nnx.Rngs | None = None, params: dict | None = None,
                 run: RunOptions = DEFAULT_RUN, tokenizer=None, mesh: jax.sharding.Mesh | None = None,
                 rules=sharding.DEFAULT_RULES):
        """`rngs` (random init, `ModelFamily.init_params`) or `params` (an existing tree, kept as is).
        With `mesh`, each parameter is constrained to jaxtool's sharding of it on that mesh (under
        `jax.jit` with `out_shardings`: created sharded, never whole on one device)."""
        fam = family_of(config)
        if params is None:
            if rngs is None:
                raise ConfigError("CausalLM needs rngs= (random init) or params= (an existing parameter tree)")
            # one jitted program (eagerly, each of the init's ops would be compiled on its own)
            params = jax.jit(fam.init_params, static_argnums=0)(config, rngs.params())
        self.config = nnx.static(config)
        self.run = nnx.static(run)
        self.tokenizer = nnx.static(tokenizer)
        self.mesh = nnx.static(mesh)
        self.rules = nnx.static(tuple(rules))
        self.params = nnx.data(self._wrap(nnx.Param, fam.param_axes(config), params))
        self.lora = nnx.data(None)

    def _wrap(self, kind, axes, arrays):
        """Each array as a `kind` Variable with its logical axes and the rules (see the module doc)."""
        mesh, rules = self.mesh, self.rules

        def one(ax, a):
            if mesh is None:
                return kind(a, out_sharding=ax, sharding_rules=rules, eager_sharding=False)
            spec = sharding.logical_to_spec(ax, mesh, rules, shape=a.shape)
            a = jax.lax.with_sharding_constraint(a, jax.sharding.NamedSharding(mesh, spec))
            local = tuple((name, m) for name, m in zip(ax, spec) if name is not None)
            return kind(a, out_sharding=ax, sharding_rules=local, eager_sharding=False)

        return jax.tree.map(one, axes, arrays, is_leaf=_is_axes)

    def add_lora(self, rank: int, rngs: nnx.Rngs, targets=()) -> "CausalLM":
        """LoRA adapters (jaxtool.models.lora: A uniform, B zero, scale `run.lora_scale`) as
        `nnx.LoRAParam`s next to the frozen base: train them alone with
        `nnx.Optimizer(model, tx, wrt=nnx.LoRAParam)` and `nnx.DiffState(0, nnx.LoRAParam)`."""
        from jaxtool.models import lora

        adapters = lora.init_adapters(self.config, rank, targets, rngs.params())
        self.lora = nnx.data(self._wrap(nnx.LoRAParam, lora.adapter_axes(adapters, self.config), adapters))
        return self

    @classmethod
    def from_pretrained(cls, path: str, dtype: str = "float32", run: RunOptions | None = None) -> "CausalLM":
        """From an HF directory, a `.gguf` file or a jaxtool checkpoint (`jaxtool.convert.load`)."""
        import jax.numpy as jnp

        from jaxtool import convert

        cfg, params, tok = convert.load(path, dtype)
        return cls(cfg, params=jax.tree.map(jnp.asarray, params), tokenizer=tok,
                   run=run or RunOptions(compute_dtype=dtype))

    @property
    def family(self):
        return family_of(self.config)

    def pure_params(self) -> dict:
        """The parameter pytree of the pure functions (the arrays themselves, no copy); the base
        only (`adapters()` holds the LoRA tree)."""
        return _values(self.params)

    def adapters(self) -> dict | None:
        """The LoRA adapter tree (`jaxtool.models.lora`), or None."""
        return None if self.lora is None else _values(self.lora)

    def _forward_params(self) -> dict:
        from jaxtool.models import lora

        return lora.attach(self.pure_params(), self.adapters())

    def __call__(self, input_ids, positions=None, segment_ids=None):
        """Logits [B, S, V] in the compute dtype (`ModelFamily.forward`)."""
        return self.family.forward(self._forward_params(), input_ids, self.config, positions, segment_ids, run=self.run)

    def init_cache(self, batch: int, max_len: int, dtype=None):
        return self.family.init_cache(self.config, batch, max_len, dtype=dtype, run=self.run)

    def forward_cached(self, input_ids, cache, start, prefill: bool = False, logits_at=None):
        """(logits, cache) for tokens written at cache offsets `start` (`ModelFamily.forward_cached`)."""
        return self.family.forward_cached(self._forward_params(), input_ids, cache, start, self.config, prefill=prefill,
                                          logits_at=logits_at, run=self.run)

    def save_hf(self, out_dir: str, dtype: str | None = None, overwrite: bool = False) -> str:
        """An HF directory (`jaxtool.convert.save_hf`); LoRA adapters are merged into the weights."""
        from jaxtool import convert
        from jaxtool.models import lora

        params = lora.merge(self.pure_params(), self.adapters(), self.run.lora_scale)
        return convert.save_hf(out_dir, self.config, jax.device_get(params), self.tokenizer,
                               dtype=dtype, overwrite=overwrite)


class TunixLM(nnx.Module):
    """A `CausalLM` under the calling convention of Tunix's trainers (`google-tunix`, e.g. its DPO
    trainer): `model(tokens, positions=, attention_mask=[B, L, L], cache=None)` -> `(logits, None)`.

    Tunix's mask is causal AND key-not-padding; a token is padding exactly where its mask's diagonal
    is False, so that diagonal becomes jaxtool's `segment_ids` (1 = token, 0 = padding), whose
    attention is causal within a segment: the same mask for every non-padding query."""

    def __init__(self, lm: CausalLM):
        self.lm = lm

    def __call__(self, input_tokens, positions=None, attention_mask=None, cache=None, **_):
        if cache is not None:
            raise NotImplementedError("TunixLM: decoding with Tunix's cache is not supported "
                                      "(use CausalLM.init_cache / forward_cached)")
        seg = None
        if attention_mask is not None:
            import jax.numpy as jnp

            seg = jnp.diagonal(attention_mask, axis1=1, axis2=2).astype(jnp.int32)
        return self.lm(input_tokens, positions, seg), None
