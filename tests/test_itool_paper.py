"""iTool as the paper states it (Zeng et al. 2025; issue 23 items 1-7), each a behaviour the code
before these changes did not have:

1. Eq. 7 / Table 7: the self-evaluation prompt carries the ground-truth response, per query, in the
   chat format's call syntax, and asks for a judgement relative to it.
2. §3.2: a pair's prompt is the query + the path to the node (context, untrained); chosen / rejected
   are the single steps, with no end-of-turn after a non-terminal step.
3. Table 5 "simulation" = simulation steps in the Expand phase: tests/test_mcts.py.
4. §4.1 / App. B.1: warm-up ratio 0.1, 90/10 train/valid split, the checkpoint best on valid kept per
   stage; Fig. 6's mixed-SFT baseline (`warmup: mixed`).
5. App. B.2 / Fig. 10: any registered preference objective as the iteration's update, with its own
   hyper-parameters.
6. The 8B recipe's RL stage on an NF4 base: tests/test_memory.py (slow).
7. One MCTSConfig; no step boundary inside a call's argument; Eq. 8's γ.
And the difficulty split's tie-averaged ranks are scipy's `rankdata` (checked against a hand loop).
"""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from jaxtool.config import load_config
from jaxtool.data.formats import get_format
from jaxtool.data.schema import Conversation
from jaxtool.errors import ConfigError
from jaxtool.itool import ItoolConfig, ItoolRun
from jaxtool.eval.tool_tasks import Example

HERE = os.path.dirname(__file__)
CONFIGS = os.path.join(HERE, "..", "configs", "itool")

WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
                          "required": ["city"]}}


def _example(i: int, city: str, temp: float = 3.5) -> Example:
    msgs = [{"role": "user", "content": f"Weather in {city}?"},
            {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
                "name": "get_weather", "arguments": json.dumps({"city": city, "temp": temp})}}]}]
    return Example(f"q{i}", Conversation.from_dict({"tools": [WEATHER], "messages": msgs}))


# ------------------------------------------------------------------------------------------------
# 1. the Eval Prompt with the ground truth (Eq. 7, Table 7)
# ------------------------------------------------------------------------------------------------

def test_eval_prompt_carries_each_querys_ground_truth_in_the_formats_call_syntax(smollm2_tokenizer, monkeypatch):
    from jaxtool.itool import search_adapter as SA
    from jaxtool.sample import mcts

    tok = smollm2_tokenizer
    fmt = get_format("pythonic", tokenizer=tok)
    exs = [_example(0, "St. Louis"), _example(1, "Oslo", 7.0)]
    golds = [SA.gold_response_text(fmt, e) for e in exs]
    assert golds[0] == '[get_weather(city="St. Louis", temp=3.5)]' or golds[0] == "[get_weather(city='St. Louis', temp=3.5)]"
    assert "Oslo" in golds[1] and "St. Louis" not in golds[1]
    ev = SA.eval_prompt_in_format(fmt, tok, golds=golds)
    assert ev.per_query and len(ev.suffix_ids) == 2
    texts = [tok.decode(list(r)) for r in ev.suffix_ids]
    for g, t in zip(golds, texts):
        assert f"Ground Truth Response: {g}" in t
        assert "relative to the ground truth" in t and "fragment" in t
        assert t.endswith("(")  # the answer letter comes next
    plain = tok.decode(list(SA.eval_prompt_in_format(fmt, tok).suffix_ids))
    assert "Ground Truth" not in plain  # mcts.eval_gold: false — today's prompt, as the option

    # run_mcts hands the search one suffix per query of each group (padding rows copy the last)
    seen = []

    def fake_search(params, config, batch, cfg, *, eval_prompt, **kw):
        seen.append(eval_prompt)
        raise StopIteration

    monkeypatch.setattr(mcts, "search", fake_search)

    class _Model:
        tokenizer, params, run = tok, None, None

        class config:
            pad_token_id = 0

    mc = ItoolConfig().mcts
    mc.queries_per_search = 2
    with pytest.raises(StopIteration):
        SA.run_mcts(_Model(), [[1, 2], [3, 4]], fmt, mc, [tok.eos_token_id], judge=None, seed=0, golds=golds)
    assert [tok.decode(list(r)) for r in seen[0].suffix_ids] == texts


# ------------------------------------------------------------------------------------------------
# 2. the step layout of a pair (§3.2)
# ------------------------------------------------------------------------------------------------

def test_step_layout_trains_only_the_single_steps_after_an_untrained_prefix(tmp_path):
    from jaxtool.data.sources.base import LoadReport
    from jaxtool.data.token_pairs import read_token_pairs
    from jaxtool.data.tokenize import TruncationReport
    from jaxtool.itool.pairs import PairRecord, training_row_ids

    EOT = 99
    prompt = [1, 5, 6, 7]
    inner = PairRecord("q0", 0, "x", "a", "b", 0.9, 0.1, 1, prefix_ids=[10, 11], chosen_ids=[20, 21, 22],
                       rejected_ids=[30, 31])                   # a non-terminal step: no end-of-turn
    last = PairRecord("q0", 0, "x", "a", "b", 0.9, 0.1, 2, prefix_ids=[10, 11, 20, 21, 22], chosen_ids=[40, EOT],
                      rejected_ids=[50, 51, EOT])               # terminal steps end with the sampled end-of-turn
    rows = [training_row_ids(r, prompt)[0] for r in (inner, last)]
    assert rows[0]["prompt_ids"] == prompt + [10, 11] and rows[0]["chosen_ids"] == [20, 21, 22]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = TruncationReport(policy="drop", max_length=64)
    pairs = read_token_pairs(str(path), 128, 64, rep, LoadReport(str(path)))
    (c0, r0), (c1, r1) = pairs
    for side, ctx, step in ((c0, prompt + [10, 11], [20, 21, 22]), (r0, prompt + [10, 11], [30, 31]),
                            (c1, prompt + [10, 11, 20, 21, 22], [40, EOT])):
        assert side.input_ids.tolist() == ctx + step
        trained = side.input_ids[side.loss_mask > 0].tolist()
        assert trained == step                                  # the prefix path is context, never trained
    assert EOT not in c0.input_ids.tolist() and EOT not in r0.input_ids.tolist()
    assert rep.kept == 2
    # today's layout stays as the option (the authors' scripts): prefix + step as one trained turn
    cfg = load_config(None, ["pair_layout=response"], cls=ItoolConfig)
    assert cfg.pair_layout == "response" and ItoolConfig().pair_layout == "step"
    with pytest.raises(ConfigError, match="pair_layout"):
        ItoolRun(load_config(None, ["pair_layout=path"], cls=ItoolConfig))


def test_a_token_pair_row_with_a_bad_id_is_named(tmp_path):
    from jaxtool.data.sources.base import LoadReport
    from jaxtool.data.token_pairs import read_token_pairs
    from jaxtool.data.tokenize import TruncationReport
    from jaxtool.errors import DataError

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt_ids": [1], "chosen_ids": [500], "rejected_ids": [2]}) + "\n")
    with pytest.raises(DataError, match="chosen_ids"):
        read_token_pairs(str(path), 128, None, TruncationReport(policy="drop", max_length=None), LoadReport(str(path)))


# ------------------------------------------------------------------------------------------------
# 4. warm-up: ratio 0.1, 90/10 split, best checkpoint on valid, mixed SFT
# ------------------------------------------------------------------------------------------------

def _dialogues(path, n=30) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            e = _example(i, f"City{i}", float(i))
            fh.write(json.dumps({**e.conversation.to_dict(), "meta": {"id": f"q{i}"}}) + "\n")
    return str(path)


class _FakeTrain:
    """Stands in for `jaxtool.train.train`: records the TrainConfig, writes valid losses per step to
    metrics.jsonl (lowest at step `best`), 'exports' the input model."""

    def __init__(self, best=2):
        self.configs, self.best = [], best

    def __call__(self, cfg, *, resume=False, printer=print):
        import shutil

        from jaxtool.train.trainer import TrainResult

        self.configs.append(cfg)
        os.makedirs(cfg.run_dir, exist_ok=True)
        hf = os.path.join(cfg.run_dir, "hf")
        shutil.copytree(cfg.model.path, hf, dirs_exist_ok=True)
        steps = 3 * cfg.eval_every if cfg.eval_every else 1
        with open(os.path.join(cfg.run_dir, "metrics.jsonl"), "w") as fh:
            for s in range(cfg.eval_every, steps + 1, cfg.eval_every or 1):
                loss = 1.0 if s == self.best * cfg.eval_every else 2.0 + s
                fh.write(json.dumps({"split": "eval", "step": s, "loss": loss}) + "\n")
        return TrainResult(run_dir=cfg.run_dir, steps=steps, status="finished", last_metrics={"loss": 1.0},
                           eval_metrics=None, wall_s=0.0, tokens_per_s=0.0, hf_dir=hf,
                           checkpoint_dir=os.path.join(cfg.run_dir, "checkpoints"))


def _cfg(model_dir, run_dir, data, *more):
    return load_config(None, [f"run_dir={run_dir}", f"model.path={model_dir}", f"data.train=[conversations:{data}]",
                              "data.format=hermes", "data.guard=none", "iterations=0", "curriculum.batch_size=4",
                              "curriculum.epochs=1", "progress=false", "seed=0", *more], cls=ItoolConfig)


def test_warmup_holds_out_10_percent_and_keeps_the_best_checkpoint_on_valid(tiny_model_dir, tmp_path, monkeypatch):
    import jaxtool.api
    import jaxtool.train

    assert ItoolConfig().curriculum.warmup_ratio == 0.1 and ItoolConfig().curriculum.valid_fraction == 0.1
    fake = _FakeTrain(best=2)
    monkeypatch.setattr(jaxtool.train, "train", fake)
    loaded = []

    class _Loaded:
        def save_hf(self, out, overwrite=False):
            os.makedirs(out, exist_ok=True)
            return out

    def fake_load(path, step=None, **kw):
        loaded.append((path, step))
        return _Loaded()

    monkeypatch.setattr(jaxtool.api, "load_model", fake_load)
    run_dir = str(tmp_path / "run")
    summary = ItoolRun(_cfg(tiny_model_dir, run_dir, _dialogues(tmp_path / "d.jsonl")), printer=lambda *a, **k: None).run()
    w = os.path.join(run_dir, "warmup")
    for lv in ("easy", "medium", "hard"):
        train_ids = {json.loads(ln)["meta"]["id"] for ln in open(f"{w}/{lv}.jsonl")}
        valid_ids = {json.loads(ln)["meta"]["id"] for ln in open(f"{w}/{lv}_valid.jsonl")}
        assert len(valid_ids) == 1 and len(train_ids) == 9 and not train_ids & valid_ids   # 90/10 of 10
    assert [c.data.valid for c in fake.configs] == [f"conversations:{w}/{lv}_valid.jsonl" for lv in ("easy", "medium", "hard")]
    assert all(c.optim.warmup_ratio == 0.1 and c.eval_every == 3 and c.save_every == 3 for c in fake.configs)
    # each stage's model is the checkpoint best on valid (step 6 of 9), not the last
    assert [s for _, s in loaded] == [6, 6, 6]
    st = summary["warmup"]["stages"]
    assert all(v["best_step"] == 6 and v["model"].endswith("best_hf") for v in st.values())
    assert [c.model.path for c in fake.configs][1:] == [st["stage1_easy"]["model"], st["stage2_medium"]["model"]]


def test_mixed_warmup_is_one_sft_over_all_levels(tiny_model_dir, tmp_path, monkeypatch):
    import jaxtool.train

    fake = _FakeTrain(best=3)   # the last step is the best: no reload
    monkeypatch.setattr(jaxtool.train, "train", fake)
    run_dir = str(tmp_path / "run")
    summary = ItoolRun(_cfg(tiny_model_dir, run_dir, _dialogues(tmp_path / "d.jsonl"), "warmup=mixed"),
                       printer=lambda *a, **k: None).run()
    assert len(fake.configs) == 1 and list(summary["warmup"]["stages"]) == ["stage1_mixed"]
    c = fake.configs[0]
    assert c.data.train == f"conversations:{run_dir}/warmup/mixed.jsonl" and c.optim.lr == 5e-5
    assert sum(1 for _ in open(f"{run_dir}/warmup/mixed.jsonl")) == 27
    assert summary["final_model"] == os.path.join(run_dir, "warmup", "stage1_mixed", "hf")


# ------------------------------------------------------------------------------------------------
# 5. any registered preference objective as the update
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss,params,want", [
    ("simpo", [], {"beta": 2.5, "gamma": 0.5}),
    ("dpo", [], {"beta": 0.1, "label_smoothing": 0.0}),
    ("ipo", ["beta=0.2"], {"beta": 0.2}),
    ("orpo", ["lam=0.3"], {"lam": 0.3}),
])
def test_the_update_runs_any_preference_objective_with_its_own_hyperparameters(tmp_path, loss, params, want):
    import dataclasses

    from jaxtool.itool.config import stage_train_config, update_loss_overrides

    c = load_config(None, [f"simpo.loss={loss}", f"simpo.params=[{','.join(params)}]"], cls=ItoolConfig)
    tc = stage_train_config(c, model_path=str(tmp_path), train="preference:x.jsonl", run_dir=str(tmp_path / "r"),
                            kind="preference", lr=1e-6, epochs=1, batch_size=2, schedule="constant", warmup_ratio=0.0,
                            loss=update_loss_overrides(c.simpo))
    assert tc.loss.type == loss and dataclasses.asdict(tc.loss.params) == want


def test_the_update_refuses_what_is_not_its_objectives():
    from jaxtool.itool.config import UpdateConfig, update_loss_overrides

    with pytest.raises(ConfigError, match="preference"):
        update_loss_overrides(UpdateConfig(loss="sft"))
    with pytest.raises(ConfigError, match=r"simpo.beta is SimPO's.*simpo.params"):
        update_loss_overrides(UpdateConfig(loss="dpo", beta=0.3))
    with pytest.raises(ConfigError, match="lam"):
        update_loss_overrides(UpdateConfig(loss="orpo", params=("beta=1",)))


# ------------------------------------------------------------------------------------------------
# 7. one MCTSConfig; step boundaries outside a call's arguments; Eq. 8's γ
# ------------------------------------------------------------------------------------------------

def test_the_recipe_section_is_the_search_config():
    import dataclasses

    from jaxtool.itool.config import MctsConfig
    from jaxtool.itool.search_adapter import mcts_config
    from jaxtool.sample.mcts import MCTSConfig

    ours = {f.name: f.default for f in dataclasses.fields(MctsConfig)}
    for f in dataclasses.fields(MCTSConfig):
        if f.name != "seed":
            assert ours[f.name] == f.default, f.name           # e.g. max_step_tokens: 64 on both sides
    assert set(ours) - {f.name for f in dataclasses.fields(MCTSConfig)} == {"queries_per_search", "eval_gold"}
    assert mcts_config(MctsConfig(), 7) == MCTSConfig(seed=7)
    assert MCTSConfig().discount == 1.0                        # γ of Eq. 8: the value chosen (see docs/itool.md)


def test_no_step_boundary_inside_a_calls_arguments(smollm2_tokenizer):
    import jax.numpy as jnp

    from jaxtool.models import llama
    from jaxtool.sample import mcts as M
    from jaxtool.sample.mcts.env import DecodeEnv

    tok = smollm2_tokenizer
    rules = M.step_rules_for(tok, eos_ids=[tok.eos_token_id])
    cfg = llama.preset("smollm2-135m")
    z = jnp.zeros((1, 4), jnp.int32)
    env = DecodeEnv(None, cfg, None, M.MCTSConfig(), rules, z, jnp.ones((1,), jnp.int32), z,
                    jnp.ones((1,), jnp.int32), (1, 2, 3, 4), None, 16)

    def boundaries(text, before="", guard=True):
        """The texts up to each step end of `text`, decoded token by token after `before`."""
        pre = tok(before, add_special_tokens=False)["input_ids"] if before else []
        ids = tok(text, add_special_tokens=False)["input_ids"]
        resp = jnp.asarray([pre + ids], jnp.int32)
        arg = env._arg_state(resp, jnp.asarray([len(pre)], jnp.int32))
        out, start = [], 0
        for k, t in enumerate(ids):
            end, arg = env._soft_end(jnp.asarray([t], jnp.int32), arg, jnp.asarray([True]), guard)
            if bool(end[0]):
                out.append(tok.decode(ids[start:k + 1]))
                start = k + 1
        return out

    text = 'I will check. [get_weather(city="St. Louis", temp=3.5)] Then I answer.'
    assert boundaries(text) == ["I will check.", ' [get_weather(city="St. Louis", temp=3.5)]', " Then I answer."]
    assert boundaries("[get_weather(city='St. Louis\nMO', temp=3.5)]") == ["[get_weather(city='St. Louis\nMO', temp=3.5)]"]
    # a step that starts inside a call (the previous one was cut by max_step_tokens) stays inside it
    assert boundaries(' Louis", temp=3.5)] Done.', before='[get_weather(city="St.') == [' Louis", temp=3.5)]', " Done."]
    # without the guard (the code before, kept as guard_arguments=False) "St." and "3." end steps
    assert boundaries(text, guard=False)[:3] == ["I will check.", ' [get_weather(city="St.', ' Louis", temp=3.']
    assert M.arg_transitions("Louis") is None and M.arg_transitions('="') == ((0, 1, 0, 0, 2, 2), (0,) * 6)


# ------------------------------------------------------------------------------------------------
# tie-averaged ranks (issue 26): scipy's rankdata, checked against a hand-written loop
# ------------------------------------------------------------------------------------------------

def _hand_average_ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i:j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def test_average_ranks_are_scipys_rankdata_and_agree_with_a_hand_loop_on_ties():
    from jaxtool.itool.difficulty import average_ranks

    rng = random.Random(1)
    for _ in range(20):
        v = [rng.randint(0, 4) for _ in range(rng.randint(1, 15))]   # many ties
        np.testing.assert_array_equal(average_ranks(v), _hand_average_ranks(v))
    assert average_ranks([3, 1, 3, 3]).tolist() == [3.0, 1.0, 3.0, 3.0]
