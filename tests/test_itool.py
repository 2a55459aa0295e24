"""iTool around the search: the difficulty split, the replay buffer's perplexity and top-10% selection
(against a plain numpy NLL from `llama.forward` logits), outcome verdicts on hand-written answers,
bad input counted by reason, the recipes, and the loop end to end on a tiny random Llama — resumed
after a stage fails, without redoing finished stages."""

from __future__ import annotations

import itertools
import json
import math
import os
import random

import numpy as np
import pytest

from jaxtool.config import load_config
from jaxtool.data.formats import get_format
from jaxtool.data.schema import Conversation, ToolCall
from jaxtool.errors import ConfigError
from jaxtool.itool import ItoolConfig, ItoolRun
from jaxtool.itool.buffer import gold_tokens, initial_buffer, perplexities, select_top
from jaxtool.itool.difficulty import LEVELS, average_ranks, criteria_of, split_by_difficulty
from jaxtool.eval.tool_tasks import Example, examples_from_conversations, load_examples, make_guard
from jaxtool.eval.outcome import OutcomeJudge, compare_calls, judge_text

HERE = os.path.dirname(__file__)
FIX = os.path.join(HERE, "fixtures")
XLAM = f"xlam:{FIX}/xlam/xlam_sample.json"
TOOLACE = f"toolace:{FIX}/toolace/toolace_sample.json"
GLAIVE = f"glaive:{FIX}/glaive/glaive_v2_sample.json"
CONFIGS = os.path.join(HERE, "..", "configs", "itool")

WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {
               "city": {"type": "string"}, "days": {"type": "integer"},
               "unit": {"type": "string", "default": "celsius"}}, "required": ["city"]}}
TIME = {"name": "get_time", "description": "Local time.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def conv(calls, tools=(WEATHER, TIME), query="Weather in Paris for 3 days?", content=None):
    msgs = [{"role": "user", "content": query},
            {"role": "assistant", "content": content,
             "tool_calls": [{"type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
                            for n, a in calls]}]
    return Conversation.from_dict({"tools": list(tools), "messages": msgs})


def example(calls, **kw) -> Example:
    c = conv(calls, **kw)
    return Example("ex", c.replace(meta={"id": "ex"}))


# ------------------------------------------------------------------------------------------------
# difficulty split
# ------------------------------------------------------------------------------------------------

class _E:
    def __init__(self, i, crit):
        self.id, self.crit = f"e{i:02d}", crit


def test_average_ranks_share_ties():
    assert average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_split_is_even_monotone_and_deterministic():
    rng = random.Random(0)
    exs = [_E(i, (rng.randint(1, 4), rng.randint(100, 900), rng.randint(0, 3))) for i in range(20)]
    split = split_by_difficulty(exs, criteria=lambda e: e.crit)
    sizes = [len(split.levels[lv]) for lv in LEVELS]
    assert sizes == [7, 7, 6] and sum(sizes) == 20
    level = {e.id: LEVELS.index(lv) for lv in LEVELS for e in split.levels[lv]}
    # an example at least as hard on every criterion and harder on one is never in an easier level
    dominated = 0
    for a, b in itertools.permutations(exs, 2):
        if all(x >= y for x, y in zip(a.crit, b.crit)) and a.crit != b.crit:
            dominated += 1
            assert level[a.id] >= level[b.id], (a.crit, b.crit)
    assert dominated > 20  # the property was exercised
    # the mean of every criterion grows from easy to hard
    for k in range(3):
        means = [np.mean([e.crit[k] for e in split.levels[lv]]) for lv in LEVELS]
        assert means[0] <= means[1] <= means[2], (k, means)
    # order of the input does not matter
    shuffled = exs[:]
    random.Random(1).shuffle(shuffled)
    again = split_by_difficulty(shuffled, criteria=lambda e: e.crit)
    assert {lv: [e.id for e in again.levels[lv]] for lv in LEVELS} == \
           {lv: [e.id for e in split.levels[lv]] for lv in LEVELS}


def test_split_by_hand():
    # ranks (n_tools, chars, calls): a (1, 1, 1.5) b (2, 2, 1.5) c (3, 3, 3) -> scores 3.5/3, 5.5/3, 9/3
    exs = [_E(2, (5, 50, 2)), _E(0, (1, 10, 1)), _E(1, (2, 20, 1))]
    split = split_by_difficulty(exs, criteria=lambda e: e.crit)
    assert [[e.id for e in split.levels[lv]] for lv in LEVELS] == [["e00"], ["e01"], ["e02"]]
    assert split.scores == pytest.approx({"e00": 3.5 / 3, "e01": 5.5 / 3, "e02": 3.0})


def test_criteria_of_an_example():
    ex = example([("get_weather", {"city": "Paris"}), ("get_time", {"city": "Paris"})])
    assert criteria_of(ex) == (2, len(json.dumps([WEATHER, TIME], ensure_ascii=False)), 2)


# ------------------------------------------------------------------------------------------------
# examples: bad input is counted, never raised, never silently dropped
# ------------------------------------------------------------------------------------------------

def test_fixture_sources_count_every_drop_by_reason():
    exs, rep = load_examples([XLAM, TOOLACE, GLAIVE], get_format("pythonic"), guard=None)
    # the fixtures' NOTE.md files list one deliberately broken row per reason, three per source
    src = {k: v for k, v in rep.dropped.items() if k.startswith("source: ")}
    assert sum(src.values()) == 9
    assert src["source: call to unknown tool"] == 3 and src["source: missing field"] == 3
    # ToolACE names with spaces or a slash ("Market Trends API", "Get Quote/Info") have no pythonic call
    assert rep.dropped["gold not expressible in pythonic"] >= 2
    assert rep.seen == len(exs) + sum(rep.dropped.values())
    assert all(e.gold.role == "assistant" for e in exs)
    # the same data in hermes: the names are fine there
    exs_h, rep_h = load_examples([TOOLACE], get_format("hermes"), guard=None)
    assert "gold not expressible in hermes" not in rep_h.dropped and len(exs_h) == 8 - rep_h.dropped.get(
        "gold call does not fit its tool schema", 0) - rep_h.dropped.get("no assistant turn", 0)


def test_bad_schema_bad_gold_and_benchmark_queries_are_counted():
    bad_tool = {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}},
                                            "required": ["b"]}}
    rows = [
        ("ok", conv([("get_weather", {"city": "Paris"})])),
        ("schema", Conversation.from_dict({"tools": [bad_tool], "messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})),
        ("missing_required", conv([("get_weather", {"days": 3})])),
        ("unknown_arg", conv([("get_time", {"city": "Rome", "tz": "CET"})])),
        ("no_assistant", Conversation.from_dict({"messages": [{"role": "user", "content": "hi"}]})),
        ("bfcl", conv([("get_weather", {"city": "Paris"})],
                      query="Find the area of a triangle with a base of 10 units and height of 5 units.")),
        ("ok", conv([("get_time", {"city": "Oslo"})])),
    ]
    guard = make_guard("bfcl", os.path.join(FIX, "bfcl"))
    from jaxtool.eval.tool_tasks import ExampleReport

    rep = ExampleReport()
    exs = examples_from_conversations(rows, get_format("pythonic"), guard=guard, report=rep)
    assert [e.id for e in exs] == ["ok"]
    assert dict(rep.dropped) == {"tool schema invalid": 1, "gold call does not fit its tool schema": 2,
                                 "no assistant turn": 1, "benchmark test query": 1, "duplicate id": 1}
    assert rep.seen == 7 and rep.kept == 1


# ------------------------------------------------------------------------------------------------
# outcome correctness
# ------------------------------------------------------------------------------------------------

def test_outcome_verdicts_on_hand_written_answers():
    fmt = get_format("pythonic")
    gold = example([("get_weather", {"city": "Paris", "days": 3})])

    def v(text, finished=True):
        o = judge_text(gold, text, fmt, finished=finished)
        return o.correct, o.reason

    assert v('[get_weather(city="Paris", days=3)]') == (True, "correct")
    assert v('[get_weather(days=3.0, city="paris")]') == (True, "correct")           # order, case, 3 == 3.0
    assert v('[get_weather(city="Paris", days=3, unit="celsius")]') == (True, "correct")  # the default
    assert v('[get_weather(city="Paris", days=3, unit="kelvin")]') == (False, "wrong arguments")
    assert v('[get_weather(city="Paris", days=4)]') == (False, "wrong arguments")
    assert v('[get_weather(city="Paris")]') == (False, "wrong arguments")
    assert v('[get_weather(city="Paris", days=True)]') == (False, "wrong arguments")  # a bool is no number
    assert v('[get_time(city="Paris")]') == (False, "wrong function name")
    assert v('[get_weather(city="Paris", days=3), get_time(city="Paris")]') == (False, "wrong number of calls")
    assert v("It is sunny in Paris.") == (False, "no call")
    assert v('[get_weather(city="Paris", days=') == (False, "unparseable")
    assert v('[get_weather(city="Paris", days=', finished=False) == (False, "call never closed")
    assert v("   ") == (False, "empty response")
    parallel = example([("get_weather", {"city": "Paris"}), ("get_time", {"city": "Oslo"})])
    assert judge_text(parallel, '[get_time(city="Oslo"), get_weather(city="Paris")]', fmt).correct
    text_gold = Example("t", Conversation.from_dict({"tools": [WEATHER], "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]}))
    assert judge_text(text_gold, "Hi there.", fmt).correct
    assert judge_text(text_gold, '[get_weather(city="Paris")]', fmt).reason == "call when none expected"
    assert compare_calls([ToolCall("f", {"x": [1, {"k": "A b"}]})], [ToolCall("f", {"x": [1.0, {"k": "ab"}]})],
                         []).correct


def test_outcome_on_a_bfcl_item_uses_the_ast_checker():
    import jaxtool.eval  # noqa: F401  (registers the bfcl source)
    from jaxtool.data.sources import load

    c = next(iter(load(f"bfcl:{FIX}/bfcl/BFCL_v4_simple_python.json", limit=1)))
    c = c.replace(messages=c.messages + (c.messages[-1].__class__("assistant", "x"),))
    ex = Example("bfcl0", c)
    fmt = get_format("pythonic")
    assert judge_text(ex, "[calculate_triangle_area(base=10, height=5)]", fmt).correct
    bad = judge_text(ex, "[calculate_triangle_area(base=10, height=6)]", fmt)
    assert (bad.correct, bad.reason) == (False, "value_error:others")
    assert judge_text(ex, "[calculate_triangle_area(base=10,", fmt).reason == "ast_decoder:decoder_failed"


def test_outcome_judge_decodes_ids_and_counts_reasons(tiny_model_dir):
    from transformers import AutoTokenizer

    fmt = get_format("pythonic")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    judge = OutcomeJudge([example([("get_weather", {"city": "Paris"})])], fmt, tok, [end])
    ids = tok.encode('[get_weather(city="Paris")]', add_special_tokens=False)
    assert judge(0, ids + [end]) == 1.0
    assert judge(0, tok.encode('[get_weather(city="Rome")]', add_special_tokens=False) + [end]) == 0.0
    assert judge(0, ids[:-3]) == 0.0            # stopped by the length limit inside the call
    assert judge(5, ids) == 0.0                 # no such query: counted, not raised
    assert dict(judge.counts) == {"correct": 1, "wrong arguments": 1, "call never closed": 1, "gold unusable": 1}


# ------------------------------------------------------------------------------------------------
# replay buffer: perplexity of the gold answer (Eq. 4) and top-10% selection
# ------------------------------------------------------------------------------------------------

def test_buffer_perplexity_and_top_selection_match_numpy(tiny_model_dir, tmp_path):
    import jax

    import jaxtool
    from jaxtool.data.tokenize import tokenize_conversation
    from jaxtool.models import llama

    model = jaxtool.load_model(tiny_model_dir)
    fmt = get_format("hermes")
    exs, _ = load_examples([f"conversations:{_dialogues(tmp_path / 'd.jsonl')}"], fmt, guard=None)
    assert len(exs) == 10 and len({len(gold_tokens(e, fmt, model.tokenizer)[0].ids) for e in exs}) > 3
    toks = [gold_tokens(e, fmt, model.tokenizer)[0] for e in exs]
    ppl = perplexities(model.params, model.config, toks, batch_size=4, length_multiple=32)
    # reference: full logits of every sequence (right-padded into one batch: causal attention keeps
    # the padding out of the real positions), log-softmax and NLL in float64 numpy
    tcs = [tokenize_conversation(e.conversation, fmt, model.tokenizer) for e in exs]
    L = max(len(t) for t in tcs)
    batch = np.zeros((len(tcs), L), np.int32)
    for i, t in enumerate(tcs):
        batch[i, :len(t)] = t.input_ids
    logits = np.asarray(jax.jit(lambda p, x: llama.forward(p, x, model.config))(model.params, batch), np.float64)
    ref = []
    for i, tc in enumerate(tcs):
        mask = (tc.turn_ids == tc.turn_ids.max()) & (tc.loss_mask > 0)
        lg = logits[i, :len(tc)]
        logp = lg - lg.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        tgt = np.nonzero(mask)[0]
        ref.append(math.exp(-logp[tgt - 1, tc.input_ids[tgt]].mean()))
    np.testing.assert_allclose(ppl, ref, rtol=2e-4)
    scores = {e.id: p for e, p in zip(exs, ppl)}
    for frac in (0.1, 0.25):
        k = math.ceil(frac * len(exs))
        assert select_top(scores, frac) == [exs[i].id for i in np.argsort(-np.array(ref))[:k]]
    assert len(select_top(scores, 0.1)) == 1 and len(select_top(scores, 0.11)) == 2   # ceil(0.1 * 10), ceil(1.1)
    ids = [f"x{i}" for i in range(11)]
    half = initial_buffer(ids, 0.5, seed=3)
    assert len(half) == 6 and set(half) <= set(ids) and half == initial_buffer(list(reversed(ids)), 0.5, seed=3)


# ------------------------------------------------------------------------------------------------
# recipes
# ------------------------------------------------------------------------------------------------

def test_recipes_carry_the_papers_settings():
    c = load_config(os.path.join(CONFIGS, "llama3_8b.yaml"), cls=ItoolConfig)
    assert (c.curriculum.lrs, c.curriculum.epochs, c.curriculum.batch_size) == ((5e-5, 2e-5, 1e-5), 3, 64)
    assert (c.simpo.loss, c.simpo.beta, c.simpo.gamma, c.simpo.lr, c.simpo.epochs, c.simpo.batch_size) == \
           ("simpo", 2.5, 0.5, 1e-6, 2, 64)
    m = c.mcts
    assert (m.depth, m.width, m.simulations, m.iterations, m.c_puct, m.temperature, c.seed) == (3, 3, 2, 5, 1.0, 1.5, 42)
    assert m.eval_weights == (1.0, 0.1, -1.0, -2.0) and m.eval_samples == 4
    assert (c.buffer.init_fraction, c.buffer.select_fraction) == (0.5, 0.1)
    assert (c.filters.max_similarity, c.filters.min_q_gap, c.filters.min_chosen_q) == (0.95, 0.1, 0.3)
    assert c.lora.enabled and c.model.compute_dtype == "bfloat16"
    # the stand-alone warm-up stage recipes agree with the loop's curriculum
    for k, name in enumerate(("stage1_easy", "stage2_medium", "stage3_hard")):
        s = load_config(os.path.join(CONFIGS, "warmup", f"{name}.yaml"))
        assert (s.optim.lr, s.epochs, s.batch_size, s.lora.enabled) == (c.curriculum.lrs[k], 3, 64, True)
    small = load_config(os.path.join(CONFIGS, "smollm2.yaml"), cls=ItoolConfig)
    assert small.model.path == "smollm2" and small.data.train == ("bundled",)
    with pytest.raises(ConfigError, match="did you mean 'mcts.depth'"):
        load_config(None, ["mcts.dept=2"], cls=ItoolConfig)
    with pytest.raises(ConfigError, match="search must be one of"):
        ItoolRun(load_config(None, ["search=beam"], cls=ItoolConfig))


# ------------------------------------------------------------------------------------------------
# the loop: warm-up chaining and resume (training recorded), and end to end on a tiny model
# ------------------------------------------------------------------------------------------------

CITIES = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Quito", "Bern", "Riga", "Doha", "Baku"]


def _dialogues(path) -> str:
    """Ten short weather/time queries (a tiny model trains on them in seconds) plus one whose tool
    schema is broken (required names a missing property): counted, not trained on."""
    rows = []
    for i, city in enumerate(CITIES):
        tools = [WEATHER, TIME][: 1 + i % 2]
        calls = [("get_weather", {"city": city, "days": 1 + i % 3})] + ([("get_time", {"city": city})] if i % 4 == 3 else [])
        rows.append({**conv(calls, tools=tools, query=f"Weather in {city}?").to_dict(), "meta": {"id": f"q{i}"}})
    broken = {"name": "f", "parameters": {"type": "object", "properties": {}, "required": ["x"]}}
    rows.append({"tools": [broken], "messages": [{"role": "user", "content": "hi"},
                                                 {"role": "assistant", "content": "hello"}], "meta": {"id": "bad"}})
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def _tiny_cfg(model_dir, run_dir, data, *more):
    return load_config(None, [
        f"run_dir={run_dir}", f"model.path={model_dir}", f"data.train=[conversations:{data}]", "data.format=hermes",
        "data.max_length=512", "data.guard=none", "iterations=1", "buffer.select_fraction=0.5",
        "buffer.batch_size=8", "sample.n=4", "sample.max_new_tokens=8", "sample.batch_queries=3",
        "curriculum.batch_size=4", "curriculum.epochs=1", "simpo.batch_size=4", "simpo.epochs=1", "simpo.lr=1e-3",
        "simpo.extra=[data.bucket_multiple=64]", "mesh.data=1", "progress=false", "seed=0", *more], cls=ItoolConfig)


class _RecordedTrain:
    """Stands in for `jaxtool.train.train`: records each stage's TrainConfig and 'exports' the input
    model unchanged (the loop's orchestration is what is tested; training itself is in test_train)."""

    def __init__(self):
        self.configs = []

    def __call__(self, cfg, *, resume=False, printer=print):
        import shutil

        from jaxtool.train.trainer import TrainResult

        self.configs.append(cfg)
        hf = os.path.join(cfg.run_dir, "hf")
        shutil.copytree(cfg.model.path, hf, dirs_exist_ok=True)
        return TrainResult(run_dir=cfg.run_dir, steps=1, status="finished", last_metrics={"loss": 1.0},
                           eval_metrics=None, wall_s=0.0, tokens_per_s=0.0, hf_dir=hf)


def test_warmup_chains_the_stages_and_resumes_after_a_kill(tiny_model_dir, tmp_path, monkeypatch):
    import jaxtool.train

    run_dir = str(tmp_path / "run")
    cfg = _tiny_cfg(tiny_model_dir, run_dir, _dialogues(tmp_path / "d.jsonl"), "warmup=run", "iterations=0")
    rec = _RecordedTrain()
    monkeypatch.setattr(jaxtool.train, "train", rec)
    real = ItoolRun._sft_stage

    def killed_in_stage_2(self, k, level, model_path, data_file):
        if k == 1:
            raise RuntimeError("killed in stage 2")
        return real(self, k, level, model_path, data_file)

    monkeypatch.setattr(ItoolRun, "_sft_stage", killed_in_stage_2)
    first = ItoolRun(cfg, printer=lambda *a, **k: None)
    with pytest.raises(RuntimeError, match="killed in stage 2"):
        first.run()
    assert first.ran == ["./data", "warmup/split", "warmup/stage1_easy"] and len(rec.configs) == 1
    monkeypatch.setattr(ItoolRun, "_sft_stage", real)
    second = ItoolRun(cfg, printer=lambda *a, **k: None)
    summary = second.run()
    assert second.ran == ["warmup/stage2_medium", "warmup/stage3_hard"] and len(rec.configs) == 3
    stages = [os.path.join(run_dir, "warmup", f"stage{k + 1}_{lv}") for k, lv in enumerate(LEVELS)]
    assert [c.model.path for c in rec.configs] == [tiny_model_dir, stages[0] + "/hf", stages[1] + "/hf"]
    assert [c.optim.lr for c in rec.configs] == [5e-5, 2e-5, 1e-5]
    assert [c.data.train for c in rec.configs] == [f"conversations:{run_dir}/warmup/{lv}.jsonl" for lv in LEVELS]
    assert all(c.data.kind == "sft" and c.loss.type == "sft" and c.epochs == 1 and c.export_hf for c in rec.configs)
    # the split written for the stages: even thirds of the 10 good queries (the broken one counted)
    sizes = [sum(1 for _ in open(f"{run_dir}/warmup/{lv}.jsonl")) for lv in LEVELS]
    assert sizes == [4, 3, 3] and [c.batch_size for c in rec.configs] == [4, 3, 3]
    report = json.load(open(os.path.join(run_dir, "data", "report.json")))
    assert report["dropped"] == {"tool schema invalid": 1} and report["kept"] == 10
    assert summary["final_model"] == stages[2] + "/hf"
    # resuming: keys added to the config since the run started count as their defaults, keys that
    # only change how things are computed may change; anything else is refused by name
    stored = os.path.join(run_dir, "config.yaml")
    lines = open(stored).read().split("\n")
    open(stored, "w").write("\n".join(ln for ln in lines if not ln.strip().startswith("prior:")))
    third = ItoolRun(_tiny_cfg(tiny_model_dir, run_dir, tmp_path / "d.jsonl", "warmup=run", "iterations=0",
                               "buffer.batch_size=2", "model.remat=full"), printer=lambda *a, **k: None)
    third.run()
    assert third.ran == [] and len(rec.configs) == 3
    with pytest.raises(ConfigError, match=r"differ.*curriculum.epochs|curriculum.epochs.*differ"):
        ItoolRun(_tiny_cfg(tiny_model_dir, run_dir, tmp_path / "d.jsonl", "warmup=run", "iterations=0",
                           "curriculum.epochs=2")).run()


def test_loop_end_to_end_on_a_tiny_model_resumes_at_the_failed_stage(tiny_model_dir, tmp_path, monkeypatch):
    run_dir = str(tmp_path / "run")
    cfg = _tiny_cfg(tiny_model_dir, run_dir, _dialogues(tmp_path / "d.jsonl"), "warmup=skip", "search=sample")
    real_update = ItoolRun._update

    def killed(self, it_dir, model_path):
        raise RuntimeError("killed in update")

    monkeypatch.setattr(ItoolRun, "_update", killed)
    first = ItoolRun(cfg, printer=lambda *a, **k: None)
    with pytest.raises(RuntimeError, match="killed in update"):
        first.run()
    assert first.ran == ["./data", "iter_1/buffer", "iter_1/search", "iter_1/filter"]

    def must_not_run(*a, **k):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(ItoolRun, "_update", real_update)
    for name in ("_data", "_buffer", "_search", "_filter"):
        monkeypatch.setattr(ItoolRun, name, must_not_run)
    second = ItoolRun(cfg, printer=lambda *a, **k: None)
    summary = second.run()
    assert second.ran == ["iter_1/update"]

    it = os.path.join(run_dir, "iter_1")
    for f in ("buffer.json", "search.json", "pairs.jsonl", "filtered.json", "train_pairs.jsonl", "metrics.json",
              "model/config.json", "model/tokenizer.json"):
        assert os.path.isfile(os.path.join(it, f)), f
    buf = json.load(open(os.path.join(it, "buffer.json")))
    assert buf["model"] == tiny_model_dir and buf["size"] == 5 and buf["scored"] == 5   # 50% of 10
    assert len(buf["selected"]) == 3 and buf["selected"] == sorted(buf["perplexity"], key=lambda i: -buf["perplexity"][i])[:3]
    pairs = [json.loads(ln) for ln in open(os.path.join(it, "pairs.jsonl"))]
    assert [p["query_id"] for p in pairs] == buf["selected"]     # one pair per query (4 samples each)
    for p in pairs:
        assert {"prompt", "prefix", "chosen", "rejected", "q_chosen", "q_rejected", "depth", "kept"} <= set(p)
        assert p["q_chosen"] >= p["q_rejected"] and p["depth"] == 0 and p["prefix"] == ""
        assert len(p["sample_outcomes"]) == 4
    search = json.load(open(os.path.join(it, "search.json")))
    assert sum(search["outcomes"]["verdicts"].values()) == 12    # every sample judged and counted
    filt = json.load(open(os.path.join(it, "filtered.json")))
    assert filt["extracted"] == 3 and filt["kept"] + sum(filt["dropped"].values()) == 3
    assert filt["kept"] == sum(1 for _ in open(os.path.join(it, "train_pairs.jsonl"))) >= 1
    metrics = json.load(open(os.path.join(it, "metrics.json")))
    assert set(metrics["wall_s"]) == {"buffer", "search", "filter", "update", "iteration"}
    assert metrics["update"]["steps"] == 1 and summary["final_model"] == os.path.join(it, "model")
    import jax

    import jaxtool

    before = jax.tree.leaves(jaxtool.load_model(tiny_model_dir).params)
    after = jax.tree.leaves(jaxtool.load_model(os.path.join(it, "model")).params)
    assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(before, after))
    # another config on the same run directory is refused, naming the key
    with pytest.raises(ConfigError, match="simpo.lr"):
        ItoolRun(_tiny_cfg(tiny_model_dir, run_dir, tmp_path / "d.jsonl", "warmup=skip", "search=sample",
                           "simpo.lr=1e-2")).run()


def test_loop_end_to_end_with_the_mcts_search(tiny_model_dir, tmp_path, monkeypatch):
    """Data, buffer, the real MCTS, filters, training rows; the SimPO update's training is recorded
    (real SimPO training runs in the test above — one compile of the preference step is enough)."""
    import jaxtool.train
    from jaxtool.itool.filters import filter_pairs
    from jaxtool.itool.pairs import Pair

    rec = _RecordedTrain()
    monkeypatch.setattr(jaxtool.train, "train", rec)

    run_dir = str(tmp_path / "run")
    cfg = _tiny_cfg(tiny_model_dir, run_dir, _dialogues(tmp_path / "d.jsonl"), "warmup=skip", "search=mcts",
                    "mcts.depth=2", "mcts.width=2", "mcts.simulations=1", "mcts.iterations=2",
                    "mcts.max_step_tokens=4", "mcts.max_total_tokens=12", "mcts.eval_samples=0",
                    "mcts.temperature=1.0", "mcts.queries_per_search=2",
                    # a random tiny model's Q values are near 0: let every pair through to train on
                    "filters.min_q_gap=-10", "filters.min_chosen_q=-10", "filters.max_similarity=1.0")
    run = ItoolRun(cfg, printer=lambda *a, **k: None)
    summary = run.run()
    assert run.ran == ["./data", "iter_1/buffer", "iter_1/search", "iter_1/filter", "iter_1/update"]
    it = os.path.join(run_dir, "iter_1")
    buf = json.load(open(os.path.join(it, "buffer.json")))
    search = json.load(open(os.path.join(it, "search.json")))
    assert search["queries"] == 3 and search["stats"]["groups"] == 2          # 2 + 1 (padded) queries
    st = search["stats"]
    assert sum(search["outcomes"]["verdicts"].values()) == st["outcome_checks"] - st["filler_checks"] > 0
    pairs = [json.loads(ln) for ln in open(os.path.join(it, "pairs.jsonl"))]
    assert pairs and {p["query_id"] for p in pairs} <= set(buf["selected"])
    # at most one pair per expanded node: the root and the expanded children (2 expansions per query)
    assert all(0 <= p["depth"] < 2 for p in pairs) and len(pairs) <= 2 * 3
    for p in pairs:
        assert p["q_chosen"] >= p["q_rejected"] and len(p["chosen_ids"]) <= 4
        assert p["prefix"] == "" if p["depth"] == 0 else p["prefix_ids"]
    filt = json.load(open(os.path.join(it, "filtered.json")))
    assert filt["kept"] + sum(filt["dropped"].values()) == len(pairs) == filt["extracted"]
    # the filters are mcts.filter_pairs' (token similarity, Q gap, chosen Q), per pair
    for p in pairs:
        pr = Pair(0, 0, p["depth"], [], 0, p["chosen_ids"], p["rejected_ids"], p["q_chosen"], p["q_rejected"], 0, 0)
        assert bool(filter_pairs([pr], 1.0, -10, -10)[0]) == (p["kept"] or p["reason"] == "control token in response")
    rows = [json.loads(ln) for ln in open(os.path.join(it, "train_pairs.jsonl"))]
    assert len(rows) == filt["kept"]
    kept = [p for p in pairs if p["kept"]]
    for r, p in zip(rows, kept):  # pair_layout: step (§3.2): prompt = the query + the path, sides = the single steps
        assert r["layout"] == "step" and r["prompt_ids"][len(r["prompt_ids"]) - len(p["prefix_ids"]):] == p["prefix_ids"]
        assert (r["chosen_ids"], r["rejected_ids"]) == (p["chosen_ids"], p["rejected_ids"])
    upd = json.load(open(os.path.join(it, ".done", "update.json")))["result"]
    assert rows and upd["pairs"] == len(rows) and os.path.isfile(os.path.join(it, "model", "config.json"))
    (tc,) = rec.configs
    assert (tc.data.kind, tc.loss.type, tc.loss.beta, tc.loss.gamma) == ("preference", "simpo", 2.5, 0.5)
    assert tc.data.train == f"preference:{it}/train_pairs.jsonl" and tc.model.path == tiny_model_dir
    assert summary["final_model"] == upd["model"] == os.path.join(it, "model")
