"""The Llama family's Hugging Face tensor-name table: every HF tensor with our parameter path, layer
index and the transform between the two layouts (used by `jaxtool.convert` in both directions).

HF stores projections as [out, in]; we store [in, out] with heads split out (`wq` [D, H, Dh],
`wo` [H, Dh, D]) and stack layers on a leading axis. RoPE needs no permutation: both sides use HF's
split-half layout. The block's hooks add their tensors: q/k/v biases (`qkv_bias`, Qwen2) and the
per-head q/k norms (`qk_norm`, Qwen3).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from jaxtool.models.llama.config import LlamaConfig


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
        if cfg.qkv_bias:  # HF [n*Dh] -> ours [n, Dh]
            for hf, ours, n in (("q_proj", "bq", H), ("k_proj", "bk", K), ("v_proj", "bv", K)):
                table.append(Entry(p + f"self_attn.{hf}.bias", ("layers", ours), i, (n * Dh,),
                                   (lambda a, n=n: a.reshape(n, Dh)), (lambda a: a.reshape(-1))))
        if cfg.qk_norm:
            table += [Entry(p + "self_attn.q_norm.weight", ("layers", "q_norm"), i, (Dh,), same, same),
                      Entry(p + "self_attn.k_norm.weight", ("layers", "k_norm"), i, (Dh,), same, same)]
    return table
