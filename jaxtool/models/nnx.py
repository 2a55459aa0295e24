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

`LayeredLM` (`model.per_layer()`) is the same model with one `nnx.Module` per layer holding that
layer's weights as its own `nnx.Param` attributes, for qwix's model-level API
(`qwix.quantize_model`, `qwix.apply_lora_to_model`; docs/nnx.md "qwix"), which looks a matmul's
weight up among the attributes of the module whose call runs the matmul.
"""

from __future__ import annotations

import math

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

    def per_layer(self) -> "LayeredLM":
        """The same model as a `LayeredLM`: one submodule per layer (a copy of each layer's slice),
        the form qwix's model-level API works on. LoRA adapters are not carried over."""
        if self.lora is not None:
            raise ConfigError("CausalLM.per_layer: the model carries jaxtool LoRA adapters; merge them first "
                              "(lora.merge) or add qwix's LoRA on the per-layer view instead")
        return LayeredLM(self.config, params=self.pure_params(), run=self.run, tokenizer=self.tokenizer,
                         mesh=self.mesh, rules=self.rules)

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


# ============================================================================================
# the per-layer view (qwix's model-level API)
# ============================================================================================

_TOP = ("embed", "final_norm", "lm_head")


def _raw(v):
    """What the pure functions get for a module attribute: a Variable's array itself (so qwix can
    trace the matmul's operand back to it), or what qwix put in its place."""
    return v.get_raw_value() if isinstance(v, nnx.Variable) else v


class _Kernel:
    """A projection's 2-D kernel [in, out] (the module's attribute: a Param's array, or the quantised
    `ptq.WithAux` qwix's PTQ put in its place) as the pure functions see the parameter: `.shape` is
    the parameter's (e.g. wq [D, H, Dh]); `.reshape` to the 2-D operand `llama._matmul` makes gives
    the kernel itself — the very array (or qwix's object) reaches `lax.dot_general`, where qwix
    intercepts it; `.astype` casts the array (qwix's quantised kernel keeps its own dtype)."""

    def __init__(self, kernel, shape):
        self.kernel, self.shape = kernel, tuple(shape)

    ndim = property(lambda self: len(self.shape))
    dtype = property(lambda self: self.kernel.dtype)

    def astype(self, dtype):
        if not isinstance(self.kernel, jax.Array) or self.kernel.dtype == dtype:
            return self   # qwix's quantised kernel: not its `WithAux.astype` (see `_Quantised`)
        return _Kernel(self.kernel.astype(dtype), self.shape)

    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else tuple(shape)
        if shape != tuple(self.kernel.shape):
            raise JaxtoolError(f"the per-layer view stores this projection as its 2-D kernel "
                               f"{tuple(self.kernel.shape)} (parameter shape {self.shape}); asked for {shape}")
        return self.kernel


class _Quantised:
    """The output layer's weight as qwix's PTQ left it (`ptq.WithAux`), for `unembed`: its `.astype`
    hands back qwix's object unchanged, which qwix's intercepted `einsum` takes (qwix 0.1.8's own
    `WithAux.astype` fails on a QArray: `flax_util.update_boxed` has no case for it)."""

    def __init__(self, q):
        self.q = q

    def astype(self, dtype):
        return self.q


def _kernel_axes(axes: tuple, n_in: int, table: dict) -> tuple:
    """The logical axes of a projection's 2-D kernel: each side's axes merged into one, named after
    the one the rules shard (e.g. (heads, head_dim) -> heads, with head_dim replicated)."""
    def merge(group):
        sharded = [a for a in group if table.get(a)]
        return sharded[0] if sharded else group[0]

    return merge(axes[:n_in]), merge(axes[n_in:])


class _Layer(nnx.Module):
    """One transformer block's weights as this module's own `nnx.Param` attributes (names as in the
    family's layer dict: wq, ..., w_down, attn_norm, ...; projections as 2-D kernels [in, out]).
    Called with the family's block function, it runs the block on its weights inside its own call
    (`hidden_states`'s per-layer path), so the block's matmuls are this module's."""

    def __init__(self, weights: dict, shapes: dict):
        for name, w in weights.items():
            setattr(self, name, w)
        self.names = nnx.static(tuple(weights))
        self.shapes = nnx.static(tuple((n, tuple(s)) for n, s in shapes.items()))   # the parameter shapes

    def weights(self) -> dict:
        """The layer dict the pure block takes (projections as `_Kernel`s)."""
        shapes = dict(self.shapes)
        out = {}
        for name in self.names:
            v = _raw(getattr(self, name))
            plain = isinstance(v, jax.Array) and tuple(v.shape) == shapes[name]
            out[name] = v if plain else _Kernel(v, shapes[name])
        return out

    def __call__(self, run_block):
        return run_block(self.weights())


@nnx.jit
def _layered_forward(model, input_ids, positions, segment_ids):
    return model.forward(input_ids, positions, segment_ids)


class LayeredLM(nnx.Module):
    """A `CausalLM` with one submodule per layer, for qwix's model-level API (docs/nnx.md "qwix").

    `embed`, `final_norm` (and `lm_head`) are `nnx.Param` attributes of this module; layer i's
    weights are attributes of `layers[i]`: norms (and biases) as in the parameter tree, each
    projection as its matmul's 2-D kernel [in, out] (nnx.Linear's layout: wq [D, H·Dh], wo [H·Dh, D]),
    with the logical axes merged accordingly ((heads, head_dim) -> heads; head_dim is never
    sharded) — qwix quantises and adapts the operand of the matmul it intercepts and carries the
    weight's sharding metadata over to it, which needs the two to have the same shape.
    `__call__` runs the family's `hidden_states` (per-layer path: the block runs inside each layer's
    call) and `unembed` on them, compiled with `nnx.jit`, so every matmul's weight operand is the
    calling module's Param. No second copy of the math. (A family's `hidden_states` must take the
    layers as a tuple of such callables: Llama's does, and Qwen2 / Qwen3 use it.)

    `nnx.to_pure_dict(nnx.state(view))` = {embed, final_norm, [lm_head], layers: {i: layer i's dict,
    projections 2-D}}; `pure_params()` reshapes and stacks it into the family's tree (`stacked()`:
    back to a `CausalLM`), `CausalLM.per_layer()` / `LayeredLM(cfg, params=tree)` go the other way.

    `run.swiglu_checkpoint` is switched off and `run.remat` must be "none": a checkpoint traces its
    function apart from the module, where qwix cannot see (nor replace) the weights; the cost is more
    saved activations under differentiation."""

    def __init__(self, config, *, rngs: nnx.Rngs | None = None, params: dict | None = None,
                 run: RunOptions = DEFAULT_RUN, tokenizer=None, mesh: jax.sharding.Mesh | None = None,
                 rules=sharding.DEFAULT_RULES):
        if run.remat != "none":
            raise ConfigError(f"LayeredLM needs run.remat='none' (got {run.remat!r}): a rematerialised "
                              "layer is traced apart from the module, where qwix cannot see its weights")
        base = CausalLM(config, rngs=rngs, params=params, run=run, tokenizer=tokenizer, mesh=mesh, rules=rules)
        self.config = nnx.static(config)
        self.run = nnx.static(run.replace(swiglu_checkpoint=False))
        self.tokenizer = nnx.static(tokenizer)
        self.mesh = nnx.static(mesh)
        self.rules = nnx.static(tuple(rules))
        fam = family_of(config)
        for name in _TOP:
            if name in base.params:
                setattr(self, name, base.params[name])
        axes, shapes = fam.param_axes(config)["layers"], fam.param_shapes(config)["layers"]
        table = {name: m for name, m in self.rules}
        layers = []
        for i in range(config.num_layers):
            weights = {}
            for name, var in base.params["layers"].items():
                w, ax = var[...][i], axes[name][1:]
                if name in fam.projections:
                    n_in = fam.projections[name][0]
                    spec = (None if mesh is None else
                            sharding.logical_to_spec(ax, mesh, self.rules, shape=w.shape))
                    w = w.reshape(math.prod(w.shape[:n_in]), math.prod(w.shape[n_in:]))
                    ax2 = _kernel_axes(ax, n_in, table)
                    if spec is not None:   # the mesh axes jaxtool gives the parameter, merged the same way
                        spec = (next((m for m in spec[:n_in] if m is not None), None),
                                next((m for m in spec[n_in:] if m is not None), None))
                    weights[name] = self._param(w, ax2, spec)
                else:
                    spec = None if mesh is None else sharding.logical_to_spec(ax, mesh, self.rules, shape=w.shape)
                    weights[name] = self._param(w, ax, spec)
            layers.append(_Layer(weights, {n: shapes[n][1:] for n in base.params["layers"]}))
        self.layers = nnx.List(layers)

    def _param(self, a, axes, spec):
        if spec is None:
            return nnx.Param(a, out_sharding=axes, sharding_rules=self.rules, eager_sharding=False)
        a = jax.lax.with_sharding_constraint(a, jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(*spec)))
        local = tuple((name, m) for name, m in zip(axes, spec) if name is not None)
        return nnx.Param(a, out_sharding=axes, sharding_rules=local, eager_sharding=False)

    @property
    def family(self):
        return family_of(self.config)

    def _top(self) -> dict:
        top = {name: _raw(getattr(self, name)) for name in _TOP if hasattr(self, name)}
        if not isinstance(top["embed"], jax.Array):
            raise JaxtoolError("qwix quantised the embedding table (the output layer's weight in a model with tied "
                               "embeddings), which the embedding lookup cannot read: match the layers only, "
                               "e.g. QuantizationRule(module_path='layers/.*', ...)")
        if "lm_head" in top and not isinstance(top["lm_head"], jax.Array):
            top["lm_head"] = _Quantised(top["lm_head"])
        return top

    def pure_params(self) -> dict:
        """The family's parameter tree (projections reshaped, layers stacked: a copy)."""
        import jax.numpy as jnp

        top = self._top()
        layers = [{n: _raw(getattr(layer, n)) for n in layer.names} for layer in self.layers]
        bad = sorted({n for w in layers for n, a in w.items() if not isinstance(a, jax.Array)}
                     | {n for n, a in top.items() if not isinstance(a, jax.Array)})
        if bad:
            raise JaxtoolError(f"LayeredLM.pure_params: {bad} were replaced by qwix's quantised arrays; "
                               "the parameter tree holds float weights (keep the unquantised model for it)")
        shapes = dict(self.layers[0].shapes)
        stacked = {n: jnp.stack([w[n].reshape(shapes[n]) for w in layers]) for n in layers[0]}
        return {**top, "layers": stacked}

    def stacked(self) -> CausalLM:
        """Back to a `CausalLM` (the pure functions' stacked layout, scanned layers)."""
        run = self.run.replace(swiglu_checkpoint=DEFAULT_RUN.swiglu_checkpoint)
        return CausalLM(self.config, params=self.pure_params(), run=run, tokenizer=self.tokenizer,
                        mesh=self.mesh, rules=self.rules)

    def forward(self, input_ids, positions=None, segment_ids=None):
        """The forward pass itself (not compiled): `hidden_states` with the per-layer submodules as
        the layers, then `unembed`."""
        top = self._top()
        h = self.family.hidden_states({**top, "layers": tuple(self.layers)}, input_ids, self.config, positions,
                                      segment_ids, run=self.run)
        return self.family.unembed(top, h, self.config, self.run)

    def __call__(self, input_ids, positions=None, segment_ids=None):
        """Logits [B, S, V] in the compute dtype (= `CausalLM`'s on the same weights)."""
        return _layered_forward(self, input_ids, positions, segment_ids)
