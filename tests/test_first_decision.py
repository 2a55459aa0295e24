"""First-decision probabilities (`jaxtool.eval.first_decision`): the call opener read off each format's
own rendering, and P(opener | history) against transformers' model on the same weights."""

import json
import os

import numpy as np
import pytest

from jaxtool.data.formats import get_format
from jaxtool.data.schema import Conversation

HERE = os.path.dirname(__file__)


def _seeds(n=3):
    with open(os.path.join(HERE, "fixtures", "diatool", "seeds.jsonl"), encoding="utf-8") as fh:
        return [Conversation.from_dict(json.loads(ln)) for ln in list(fh)[:n]]


def test_call_opener_of_each_format_is_its_literal_call_prefix(smollm2_tokenizer):
    from jaxtool.eval.first_decision import call_opener

    conv = _seeds(1)[0]
    history = conv.replace(messages=conv.messages[:1])
    expect = {"hermes": '<tool_call>\n{"name": "', "pythonic": "["}
    for name, prefix in expect.items():
        fmt = get_format(name, tokenizer=smollm2_tokenizer)
        prompt, opener = call_opener(history, fmt, smollm2_tokenizer)
        text = smollm2_tokenizer.decode(opener)
        # the common prefix may stop a token early where BPE merges the quote with the name; it never
        # reaches into the name and always starts the call syntax
        assert prefix.startswith(text) and text, (name, text)
        assert len(text) >= (len("<tool_call>") if name == "hermes" else 1)
        # the prompt is the history plus the assistant header the model generates after (ChatML)
        assert smollm2_tokenizer.decode(prompt).endswith("<|im_start|>assistant\n"), name


def test_opener_probability_equals_transformers(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    import jaxtool
    from jaxtool.eval.first_decision import call_opener, first_decisions, opener_probs

    model = jaxtool.load_model(tiny_model_dir)
    fmt = get_format("hermes", tokenizer=model.tokenizer)
    convs = _seeds(3)
    recs = first_decisions(convs, model, fmt, batch_size=2)
    assert [r["turn_type"] for r in recs][:2] == ["call", "completion"]
    hf = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32).eval()
    from jaxtool.eval.dialog import collect_turns

    turns = collect_turns(convs)
    assert len(turns) == len(recs)
    for t, r in zip(turns, recs):
        prompt, opener = call_opener(t.history, fmt, model.tokenizer)
        ids = torch.tensor([prompt + opener])
        with torch.no_grad():
            logp = torch.log_softmax(hf(ids).logits[0].double(), -1)
        want = float(np.exp(sum(logp[len(prompt) - 1 + i, tok].item() for i, tok in enumerate(opener))))
        assert r["p_call"] == pytest.approx(want, rel=1e-4, abs=1e-9)
    # batch composition does not change a row's value (right padding under causal attention)
    rows = [call_opener(t.history, fmt, model.tokenizer) for t in turns]
    one = opener_probs(model, rows[:1], batch_size=1)
    np.testing.assert_allclose(one[0], recs[0]["p_call"], rtol=1e-5)
