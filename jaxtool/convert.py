"""Hugging Face (config.json + safetensors) and GGUF  <->  jaxtool parameter pytrees.

The model family's name table (`ModelFamily.hf_name_table`, e.g. `jaxtool.models.llama.hf`) lists
every HF tensor with our parameter path, layer index and the transform between the two layouts;
loading and saving both walk it, so the directions cannot drift apart. The family is chosen by
config.json's `model_type`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Callable

import numpy as np

from jaxtool.checkpoint import read_json
from jaxtool.errors import CheckpointError, ConfigError
from jaxtool.models.family import family_for_hf, family_of
from jaxtool.models.gguf import embedded_gguf_path
from jaxtool.models.run import DTYPES
from jaxtool.safetensors_io import open_checkpoint, save_sharded

log = logging.getLogger(__name__)

_NP_DTYPES = {"float32": np.float32, "bfloat16": DTYPES["bfloat16"], "float16": np.float16}


EMBEDDED_ALIASES = ("smollm2", "smollm2-135m-instruct", "default")


def resolve_model_path(path: str) -> str:
    """Map the embedded-model aliases ("smollm2", "default") to the installed GGUF file."""
    if isinstance(path, str) and path.lower() in EMBEDDED_ALIASES and not os.path.exists(path):
        return embedded_gguf_path()
    return path


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def state_dict_to_params(get_tensor: Callable[[str], np.ndarray], cfg, names: set[str],
                         dtype: str = "float32", source: str = "checkpoint", place=None) -> dict:
    """Build our parameter tree from HF-named tensors.

    get_tensor(name) -> np.ndarray; `names` is the set of tensor names available (to report what is
    missing or unexpected). `place(path, array)` may put each finished array on devices (sharded
    loading); by default arrays stay numpy.
    """
    want_dtype = _NP_DTYPES[dtype]
    table = family_of(cfg).hf_name_table(cfg)
    expected = {e.hf_name for e in table}
    missing = sorted(expected - names)
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise CheckpointError(f"{source}: missing tensors {missing[:5]}{more}")
    extra = sorted(n for n in names - expected
                   if not n.endswith("rotary_emb.inv_freq") and not (cfg.tie_embeddings and n == "lm_head.weight"))
    if extra:
        raise CheckpointError(f"{source}: unexpected tensors {extra[:5]} — not a plain {cfg.model_type} checkpoint "
                              "or config.json does not match it")
    shapes = family_of(cfg).param_shapes(cfg)
    out: dict = {}
    groups: dict[tuple[str, ...], list] = {}
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


def params_to_state_dict(params: dict, cfg, dtype: str | None = None) -> dict[str, np.ndarray]:
    """HF-named numpy tensors from our parameter tree (cast to `dtype`, default the source dtype)."""
    np_dtype = _NP_DTYPES[dtype or cfg.source_dtype]
    host = {}
    out = {}
    for e in family_of(cfg).hf_name_table(cfg):
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
    return read_json(path, "config.json")


def load_hf_tokenizer(hf_dir: str):
    files = set(os.listdir(hf_dir))
    if not files & {"tokenizer.json", "tokenizer_config.json", "tokenizer.model"}:
        log.warning("%s has no tokenizer files; the model loads without a tokenizer", hf_dir)
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(hf_dir)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for broken tokenizer files
        raise CheckpointError(f"{hf_dir}: the tokenizer files could not be loaded ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None


def load_hf(hf_dir: str, param_dtype: str = "float32", place=None, **cfg_overrides):
    """`(config, params, tokenizer)` from an HF directory of any registered family (single or
    index-sharded safetensors)."""
    if not os.path.isdir(hf_dir):
        raise CheckpointError(f"{hf_dir}: not a directory")
    hf_cfg = read_hf_config(hf_dir)
    source = os.path.join(hf_dir, "config.json")
    try:
        cfg = family_for_hf(hf_cfg, source).config_from_hf(hf_cfg, source=source, **cfg_overrides)
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


def save_hf(out_dir: str, cfg, params: dict, tokenizer=None, dtype: str | None = None,
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
    cfg = family_for_hf(hf_cfg, path).config_from_hf(hf_cfg, source=path, **cfg_overrides)
    params = state_dict_to_params(state.__getitem__, cfg, set(state), param_dtype, source=path, place=place)
    return cfg, params, tokenizer


# --------------------------------------------------------------------------------------------
# any of the three: one call
# --------------------------------------------------------------------------------------------

def load(path: str, param_dtype: str = "float32", shardings=None, step: int | None = None):
    """`(config, params, tokenizer)` of a jaxtool checkpoint directory (latest step unless `step`; a
    LoRA run's adapters merged into the base model it names), an HF directory or a `.gguf` file — the
    same triple whichever it is. `shardings` (a pytree of NamedShardings like the params) places the
    arrays on devices as they are read; without it, HF and GGUF arrays are numpy."""
    from jaxtool import checkpoint
    from jaxtool.models import lora

    path = resolve_model_path(path)
    place = None if shardings is None else (lambda p, a: _device_put(a, _get(shardings, p)))
    if os.path.isdir(path) and checkpoint.is_checkpoint_dir(path):
        cfg = checkpoint.read_config(path)
        if "lora" in checkpoint.read_meta(path):
            adapters, spec = checkpoint.restore_adapters(path, cfg, step)
            _, base, _ = load(spec["base_model"], param_dtype, shardings)
            params = lora.merge(base, adapters, spec["scale"])
        else:
            params = checkpoint.restore_params(path, cfg, shardings, step, dtype=param_dtype)
        return cfg, params, checkpoint.load_tokenizer(path)
    if os.path.isdir(path):
        return load_hf(path, param_dtype=param_dtype, place=place)
    if os.path.isfile(path) and path.endswith(".gguf"):
        return load_gguf(path, param_dtype=param_dtype, place=place)
    if os.path.exists(path):
        raise CheckpointError(f"{path}: expected an HF model directory, a jaxtool checkpoint directory or a .gguf file")
    raise CheckpointError(f"{path}: no such file or directory (models are loaded from local paths; "
                          "download hub models first, e.g. `hf download ORG/NAME --local-dir DIR`)")


def _device_put(a, sharding):
    import jax

    return jax.device_put(a, sharding)
