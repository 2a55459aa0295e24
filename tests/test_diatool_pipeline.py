"""DiaTool-DPO's CPT -> SFT -> DiaTool-DPO pipeline (§6.1 / App. C) end to end on a tiny random model:
each stage starts from the previous stage's exported model, CPT trains every token of a document,
a rerun reuses finished stages, and the 8B pipeline's recipes load."""

import argparse
import json
import os

import pytest

from jaxtool.errors import ConfigError, DataError

HERE = os.path.dirname(__file__)
SEEDS = os.path.join(HERE, "fixtures", "diatool", "seeds.jsonl")
ROOT = os.path.join(HERE, "..")

COMMON = """model:
  path: unused
data:
  max_length: 512
  bucket_multiple: 64
  limit: 2
batch_size: 2
epochs: 1
progress: false
log_every: 1
export_hf: true
"""


def _write(path, text):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return str(path)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    from jaxtool.data.schema import Conversation
    from jaxtool.diatool import RulesAugmenter, build, collect_seeds

    out = str(tmp_path_factory.mktemp("pairs"))
    convs = [Conversation.from_dict(json.loads(ln)) for ln in open(SEEDS, encoding="utf-8")]
    seeds, _ = collect_seeds([(c.meta.get("id", str(i)), c) for i, c in enumerate(convs)])
    build(seeds[:4], RulesAugmenter(seed=0), out, subset="all", valid_fraction=0.0, rng_seed=0)
    return out


def test_text_format_trains_every_document_token(tiny_model_dir):
    from transformers import AutoTokenizer

    from jaxtool.data.formats import get_format
    from jaxtool.data.schema import Conversation, Message
    from jaxtool.data.tokenize import tokenize_conversation

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    fmt = get_format("text", tokenizer=tok)
    doc = "The weather in Paris is sunny today."
    t = tokenize_conversation(Conversation(messages=(Message("assistant", doc),)), fmt, tok)
    ids, mask = t.input_ids.tolist(), t.loss_mask.tolist()
    first = mask.index(1)
    assert tok.decode(ids[first:]) == doc + tok.eos_token and all(mask[first:])
    assert tok.decode(ids[:first]) in ("", tok.bos_token)  # nothing but an automatic BOS before the document


@pytest.mark.slow  # three tiny training runs + HF exports (130 s at load 15 on this 2-core machine)
def test_pipeline_hands_each_stage_model_to_the_next(tmp_path, tiny_model_dir, pairs_dir):
    from jaxtool.diatool.pipeline import load_pipeline, run_pipeline

    docs = _write(tmp_path / "corpus.txt", "Paris is the capital of France.\n\nThe Seine flows through Paris.\n")
    _write(tmp_path / "cpt.yaml", COMMON + "loss:\n  type: sft\noptim:\n  lr: 1.0e-3\n")
    _write(tmp_path / "sft.yaml", COMMON.replace("data:\n", f"data:\n  train: conversations:{SEEDS}\n  format: hermes\n")
           + "loss:\n  type: sft\noptim:\n  lr: 1.0e-3\n")
    _write(tmp_path / "dpo.yaml", COMMON.replace("data:\n", f"data:\n  kind: preference\n  train: diatool:{pairs_dir}/train.jsonl\n"
                                                             "  format: hermes\n")
           + "loss:\n  type: diatool_dpo\n  beta: 0.5\n  gamma: 0.5\n  margin: 2.0\noptim:\n  lr: 1.0e-4\n")
    run_dir = tmp_path / "run"
    pf = _write(tmp_path / "pipeline.yaml", f"""model: {tiny_model_dir}
run_dir: {run_dir}
stages:
  - {{name: cpt, recipe: cpt.yaml, text: {docs}}}
  - {{name: sft, recipe: sft.yaml}}
  - {{name: dpo, recipe: dpo.yaml}}
""")
    seen = []

    def train_and_record(cfg, printer=print):
        from jaxtool.train import train

        seen.append((cfg.model.path, cfg.data.format, cfg.loss.type, cfg.run_dir))
        return train(cfg, printer=lambda *a, **k: None)

    recs = run_pipeline(load_pipeline(pf), train_fn=train_and_record, printer=lambda *a: None)
    assert [r["stage"] for r in recs] == ["cpt", "sft", "dpo"]
    assert seen[0][:3] == (tiny_model_dir, "text", "sft")
    assert seen[1][:3] == (str(run_dir / "cpt" / "hf"), "hermes", "sft")
    assert seen[2][:3] == (str(run_dir / "sft" / "hf"), "hermes", "diatool_dpo")
    for r in recs:
        assert os.path.isfile(os.path.join(r["hf_dir"], "config.json")) and r["steps"] >= 1
    # the CPT stage's data: the two documents as one-message conversations
    rows = [json.loads(ln) for ln in open(run_dir / "cpt" / "cpt_data.jsonl", encoding="utf-8")]
    assert [r["messages"][0]["content"] for r in rows] == ["Paris is the capital of France.",
                                                           "The Seine flows through Paris."]
    # a rerun trains nothing
    seen.clear()
    again = run_pipeline(load_pipeline(pf), train_fn=train_and_record, printer=lambda *a: None)
    assert seen == [] and all(r["reused"] for r in again)
    assert again[-1]["hf_dir"] == recs[-1]["hf_dir"]


def test_pipeline_file_errors_name_the_field(tmp_path):
    from jaxtool.diatool.pipeline import load_pipeline, read_documents

    _write(tmp_path / "r.yaml", COMMON + "loss:\n  type: sft\n")
    bad = _write(tmp_path / "p.yaml", "model: m\nrun_dir: r\nstages:\n  - {name: cpt, recipe: nope.yaml}\n")
    with pytest.raises(ConfigError, match=r"stages\[0\]\.recipe: .*nope\.yaml: no such file"):
        load_pipeline(bad)
    dup = _write(tmp_path / "d.yaml", "model: m\nrun_dir: r\nstages:\n  - {name: a, recipe: r.yaml}\n"
                 "  - {name: a, recipe: r.yaml}\n")
    with pytest.raises(ConfigError, match=r"stages\[1\]\.name must be a unique"):
        load_pipeline(dup)
    with pytest.raises(ConfigError, match="only model=... and run_dir="):
        load_pipeline(dup, ["stages=x"])
    j = _write(tmp_path / "c.jsonl", '{"text": "ok"}\n{"txt": "no"}\n')
    with pytest.raises(DataError, match=r"c\.jsonl: line 2: field 'text'"):
        read_documents(j)


def test_8b_pipeline_recipes_load():
    from jaxtool.commands import diatool as cmd
    from jaxtool.diatool.pipeline import load_pipeline, stage_config

    p = load_pipeline(os.path.join(ROOT, "configs", "diatool_dpo", "pipeline_llama3_8b.yaml"))
    assert [s.name for s in p.stages] == ["cpt", "sft", "dpo"]
    cpt = stage_config(p.stages[0].__class__(**{**p.stages[0].__dict__, "text": None}), "m0", "/tmp/x")
    assert (cpt.data.format, cpt.loss.type) == ("text", "sft")
    dpo = stage_config(p.stages[2], "/runs/sft/hf", "/tmp/y")
    hp = dpo.loss.params
    assert (dpo.model.path, dpo.loss.type, hp.beta, hp.gamma, hp.margin, dpo.optim.lr) == \
        ("/runs/sft/hf", "diatool_dpo", 0.5, 0.5, 2.0, 1e-7)
    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers())
    args = parser.parse_args(["diatool", "pipeline", "x.yaml", "model=m"])
    assert args.config == "x.yaml" and args.overrides == ["model=m"]
