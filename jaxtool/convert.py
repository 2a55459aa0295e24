"""Hugging Face (config.json + safetensors) and GGUF  <->  jaxtool parameter pytrees.

One name table (`hf_name_table`) lists every HF tensor with our parameter path, layer index and
the transform between the two layouts; loading and saving both walk it, so the directions cannot
drift apart. HF stores projections as [out, in]; we store [in, out] with heads split out
(`wq` [D, H, Dh], `wo` [H, Dh, D]) and stack layers on a leading axis. RoPE needs no permutation:
both sides use HF's split-half layout.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from typing import Callable

import numpy as np

from jaxtool.errors import CheckpointError, ConfigError
from jaxtool.models.llama import DTYPES, LlamaConfig, param_shapes
from jaxtool.safetensors_io import open_checkpoint, save_sharded

log = logging.getLogger(__name__)

_NP_DTYPES = {"float32": np.float32, "bfloat16": DTYPES["bfloat16"], "float16": np.float16}


@dataclasses.dataclass(frozen=True)
class Entry:
    hf_name: str
    path: tuple[str, ...]           # our parameter path, e.g. ("layers", "wq")
    layer: int | None               # index into the stacked layer axis
    hf_shape: tuple[int, ...]
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def hf_name_table(cfg: LlamaConfig) -> list[Entry]:
    D, H, K, Dh, F, V = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                         cfg.intermediate_size, cfg.vocab_size)
    same = lambda a: a  # noqa: E731
    T = lambda a: a.T  # noqa: E731

    def heads_in(n):  # HF [n*Dh, D] -> ours [D, n, Dh]
        return (lambda a: a.T.reshape(D, n, Dh)), (lambda a: a.reshape(D, n * Dh).T)

    q_in, q_out = heads_in(H)
    kv_in, kv_out = heads_in(K)
    o_in = lambda a: a.T.reshape(H, Dh, D)  # noqa: E731  HF [D, H*Dh] -> [H, Dh, D]
    o_out = lambda a: a.reshape(H * Dh, D).T  # noqa: E731

    table = [Entry("model.embed_tokens.weight", ("embed",), None, (V, D), same, same),
             Entry("model.norm.weight", ("final_norm",), None, (D,), same, same)]
    if not cfg.tie_embeddings:
        table.append(Entry("lm_head.weight", ("lm_head",), None, (V, D), T, T))
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        table += [
            Entry(p + "input_layernorm.weight", ("layers", "attn_norm"), i, (D,), same, same),
            Entry(p + "post_attention_layernorm.weight", ("layers", "mlp_norm"), i, (D,), same, same),
            Entry(p + "self_attn.q_proj.weight", ("layers", "wq"), i, (H * Dh, D), q_in, q_out),
            Entry(p + "self_attn.k_proj.weight", ("layers", "wk"), i, (K * Dh, D), kv_in, kv_out),
            Entry(p + "self_attn.v_proj.weight", ("layers", "wv"), i, (K * Dh, D), kv_in, kv_out),
            Entry(p + "self_attn.o_proj.weight", ("layers", "wo"), i, (D, H * Dh), o_in, o_out),
            Entry(p + "mlp.gate_proj.weight", ("layers", "w_gate"), i, (F, D), T, T),
            Entry(p + "mlp.up_proj.weight", ("layers", "w_up"), i, (F, D), T, T),
            Entry(p + "mlp.down_proj.weight", ("layers", "w_down"), i, (D, F), T, T),
        ]
    return table


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def state_dict_to_params(get_tensor: Callable[[str], np.ndarray], cfg: LlamaConfig, names: set[str],
                         dtype: str = "float32", source: str = "checkpoint", place=None) -> dict:
    """Build our parameter tree from HF-named tensors.

    get_tensor(name) -> np.ndarray; `names` is the set of tensor names available (to report what is
    missing or unexpected). `place(path, array)` may put each finished array on devices (sharded
    loading); by default arrays stay numpy.
    """
    want_dtype = _NP_DTYPES[dtype]
    table = hf_name_table(cfg)
    expected = {e.hf_name for e in table}
    missing = sorted(expected - names)
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise CheckpointError(f"{source}: missing tensors {missing[:5]}{more}")
    extra = sorted(n for n in names - expected
                   if not n.endswith("rotary_emb.inv_freq") and not (cfg.tie_embeddings and n == "lm_head.weight"))
    if extra:
        raise CheckpointError(f"{source}: unexpected tensors {extra[:5]} — not a plain Llama checkpoint "
                              "or config.json does not match it")
    shapes = param_shapes(cfg)
    out: dict = {}
    groups: dict[tuple[str, ...], list[Entry]] = {}
    for e in table:
        groups.setdefault(e.path, []).append(e)
    for path, entries in groups.items():
        shape = tuple(_get(shapes, path))
        buf = np.empty(shape, dtype=want_dtype)
        for e in entries:
            a = get_tensor(e.hf_name)
            if tuple(a.shape) != e.hf_shape:
                raise CheckpointError(f"{source}: tensor {e.hf_name!r} has shape {tuple(a.shape)}, "
                                      f"config.json implies {e.hf_shape}")
            a = e.to_ours(np.asarray(a))
            if e.layer is None:
                buf[...] = a.astype(want_dtype)
            else:
                buf[e.layer] = a.astype(want_dtype)
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = place(path, buf) if place else buf
    return out


def params_to_state_dict(params: dict, cfg: LlamaConfig, dtype: str | None = None) -> dict[str, np.ndarray]:
    """HF-named numpy tensors from our parameter tree (cast to `dtype`, default the source dtype)."""
    np_dtype = _NP_DTYPES[dtype or cfg.source_dtype]
    host = {}
    out = {}
    for e in hf_name_table(cfg):
        if e.path not in host:
            host[e.path] = np.asarray(_get(params, e.path))
        a = host[e.path]
        a = a if e.layer is None else a[e.layer]
        out[e.hf_name] = np.ascontiguousarray(e.to_hf(a).astype(np_dtype))
    return out


# --------------------------------------------------------------------------------------------
# HF directories
# --------------------------------------------------------------------------------------------

def read_hf_config(hf_dir: str) -> dict:
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"{hf_dir}: no config.json (not a Hugging Face model directory)")
    try:
        with open(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None


def load_hf_tokenizer(hf_dir: str):
    files = set(os.listdir(hf_dir))
    if not files & {"tokenizer.json", "tokenizer_config.json", "tokenizer.model"}:
        log.warning("%s has no tokenizer files; the model loads without a tokenizer", hf_dir)
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(hf_dir)


def load_hf(hf_dir: str, param_dtype: str = "float32", place=None, **cfg_overrides):
    """`(config, params, tokenizer)` from an HF Llama directory (single or index-sharded safetensors)."""
    if not os.path.isdir(hf_dir):
        raise CheckpointError(f"{hf_dir}: not a directory")
    hf_cfg = read_hf_config(hf_dir)
    try:
        cfg = LlamaConfig.from_hf(hf_cfg, source=os.path.join(hf_dir, "config.json"),
                                  param_dtype=param_dtype, **cfg_overrides)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    files = open_checkpoint(hf_dir)
    params = state_dict_to_params(lambda n: files[n].get(n), cfg, set(files), param_dtype,
                                  source=hf_dir, place=place)
    return cfg, params, load_hf_tokenizer(hf_dir)


def prepare_out_dir(out_dir: str, overwrite: bool) -> None:
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise CheckpointError(f"{out_dir}: exists and is not a directory")
        if os.listdir(out_dir):
            if not overwrite:
                raise CheckpointError(f"{out_dir}: output directory is not empty (pass --overwrite to replace it)")
            shutil.rmtree(out_dir)
    os.makedirs(out_dir, exist_ok=True)


def save_hf(out_dir: str, cfg: LlamaConfig, params: dict, tokenizer=None, dtype: str | None = None,
            overwrite: bool = False, max_shard_bytes: int = 2 * 1024 ** 3) -> str:
    """Write an HF directory `AutoModelForCausalLM.from_pretrained` loads with no custom code:
    config.json, generation_config.json, (sharded) safetensors + index, tokenizer files."""
    dtype = dtype or cfg.source_dtype
    if dtype not in _NP_DTYPES:
        raise CheckpointError(f"export dtype must be one of {list(_NP_DTYPES)}, got {dtype!r}")
    prepare_out_dir(out_dir, overwrite)
    tensors = params_to_state_dict(params, cfg, dtype)
    save_sharded(tensors, out_dir, max_shard_bytes=max_shard_bytes)
    with open(os.path.join(out_dir, "config.json"), "w") as fh:
        json.dump(cfg.to_hf(dtype), fh, indent=2)
    gen = {"_from_model_config": True, "bos_token_id": cfg.bos_token_id,
           "eos_token_id": list(cfg.eos_token_id) if isinstance(cfg.eos_token_id, tuple) else cfg.eos_token_id}
    if cfg.pad_token_id is not None:
        gen["pad_token_id"] = cfg.pad_token_id
    with open(os.path.join(out_dir, "generation_config.json"), "w") as fh:
        json.dump(gen, fh, indent=2)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir


# --------------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------------

def load_gguf(path: str, param_dtype: str = "float32", place=None, **cfg_overrides):
    """`(config, params, tokenizer)` from a Llama GGUF file (de-quantised to float32 first)."""
    from jaxtool.models.gguf import read_gguf

    hf_cfg, state, tokenizer = read_gguf(path)
    cfg = LlamaConfig.from_hf(hf_cfg, source=path, param_dtype=param_dtype, **cfg_overrides)
    params = state_dict_to_params(state.__getitem__, cfg, set(state), param_dtype, source=path, place=place)
    return cfg, params, tokenizer
