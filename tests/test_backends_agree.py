"""`--backend jax` and `--backend hf` give the same BFCL verdicts on a sample (the real SmolLM2, real
BFCL items from the fixture slice, the same prompts): our generator, parser and checker path is the
one a transformers user would get."""

import os

import pytest

from jaxtool.data.formats import get_format
from jaxtool.data.tokenize import prompt_ids
from jaxtool.eval.bfcl.data import read_category
from jaxtool.eval.bfcl.run import run_items
from jaxtool.sample.hf_backend import HFBackend
from jaxtool.sample.jax_backend import JaxBackend

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "bfcl")


@pytest.mark.parametrize("fmt_name", ["pythonic"])
def test_jax_and_hf_backends_give_identical_bfcl_verdicts(fmt_name, smollm2_model, smollm2_hf):
    items = read_category("simple_python", root=FIX, limit=3) + read_category("irrelevance", root=FIX, limit=2)
    model = smollm2_model
    fmt = get_format(fmt_name, tokenizer=model.tokenizer)
    kw = dict(style="prompting", batch_size=len(items), max_new_tokens=40, progress=False)  # one batch, no filler rows
    ours = run_items(items, JaxBackend(model, batch_size=len(items)), fmt, prompt_ids, **kw)
    theirs = run_items(items, HFBackend(*smollm2_hf, batch_size=len(items)), fmt, prompt_ids, **kw)
    assert [r["id"] for r in ours] == [r["id"] for r in theirs]
    for a, b in zip(ours, theirs):
        assert a["output"] == b["output"], a["id"]      # greedy generations are identical ...
        assert (a["valid"], a["error_type"]) == (b["valid"], b["error_type"]), a["id"]  # ... and so are verdicts
