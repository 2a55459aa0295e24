"""Each model family as a Flax NNX module over the same pure functions (issue 29, first part).

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
`nnx.get_partition_spec(nnx.state(model))` is exactly jaxtool's PartitionSpec of every parameter. `__call__`, `forward_cached` and `init_cache` call the
family's pure functions: there is no second copy of the math. The architecture config and the run
options are static attributes.
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxtool import sharding
from jaxtool.models.family import family_of
from jaxtool.models.run import DEFAULT_RUN, RunOptions


def _is_axes(x) -> bool:
    return isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)


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
                raise ValueError("CausalLM needs rngs= (random init) or params= (an existing parameter tree)")
            # one jitted program (eagerly, each of the init's ops would be compiled on its own)
            params = jax.jit(fam.init_params, static_argnums=0)(config, rngs.params())
        self.config = nnx.static(config)
        self.run = nnx.static(run)
        self.tokenizer = nnx.static(tokenizer)
        rules = tuple(rules)

        def param(ax, a):
            if mesh is None:
                return nnx.Param(a, out_sharding=ax, sharding_rules=rules, eager_sharding=False)
            spec = sharding.logical_to_spec(ax, mesh, rules, shape=a.shape)
            a = jax.lax.with_sharding_constraint(a, jax.sharding.NamedSharding(mesh, spec))
            local = tuple((name, m) for name, m in zip(ax, spec) if name is not None)
            return nnx.Param(a, out_sharding=ax, sharding_rules=local, eager_sharding=False)

        self.params = nnx.data(jax.tree.map(param, fam.param_axes(config), params, is_leaf=_is_axes))

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
        """The parameter pytree of the pure functions (the arrays themselves, no copy)."""
        return jax.tree.map(lambda v: v[...], self.params, is_leaf=lambda v: isinstance(v, nnx.Variable))

    def __call__(self, input_ids, positions=None, segment_ids=None):
        """Logits [B, S, V] in the compute dtype (`ModelFamily.forward`)."""
        return self.family.forward(self.pure_params(), input_ids, self.config, positions, segment_ids, run=self.run)

    def init_cache(self, batch: int, max_len: int, dtype=None):
        return self.family.init_cache(self.config, batch, max_len, dtype=dtype, run=self.run)

    def forward_cached(self, input_ids, cache, start, prefill: bool = False, logits_at=None):
        """(logits, cache) for tokens written at cache offsets `start` (`ModelFamily.forward_cached`)."""
        return self.family.forward_cached(self.pure_params(), input_ids, cache, start, self.config, prefill=prefill,
                                          logits_at=logits_at, run=self.run)

    def save_hf(self, out_dir: str, dtype: str | None = None, overwrite: bool = False) -> str:
        from jaxtool import convert

        return convert.save_hf(out_dir, self.config, jax.device_get(self.pure_params()), self.tokenizer,
                               dtype=dtype, overwrite=overwrite)
