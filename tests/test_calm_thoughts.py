"""CRA thoughts by an LLM: the Table-6-shaped prompt, validation with retries, the cache, and the
template fallback — with a scripted chat client (no network)."""

import json
import os

from jaxtool.calm import cra
from jaxtool.calm.thoughts import LLMThoughts, TemplateThoughts, build_messages
from jaxtool.data.sources.base import LoadReport
from jaxtool.sample.openai_client import EndpointError

SGD = os.path.join(os.path.dirname(__file__), "fixtures", "sgd", "train")


class Scripted:
    name = "scripted"

    def __init__(self, answer):
        self.answer = answer
        self.requests = []

    def complete(self, messages):
        self.requests.append(messages)
        return self.answer(messages, len(self.requests))


def _turns():
    conv = next(iter(cra.load_sgd(os.path.join(SGD, "dialogues_001.json"), limit=1)))
    return [t for t in cra.turns(conv)]


def test_prompt_carries_the_turn():
    t = next(t for t in _turns() if t.calls)
    msgs = build_messages(t)
    text = msgs[-1]["content"]
    assert "Action: FindRestaurants(city='San Jose', cuisine='American')" in text
    assert "Observation: " + t.observations[0] in text
    assert "System: I see that at 71 Saint Peter there is a good restaurant which is in San Jose." in text
    assert '"thought1"' in text and '"thought2"' in text
    assert "FindRestaurants(cuisine, city, price_range, has_live_music, serves_alcohol)" in text


def test_invalid_answers_are_retried_then_cached(tmp_path):
    t = next(t for t in _turns() if t.calls)

    def answer(messages, n):
        if n == 1:
            return '{"thought1": "fine", "thought2": "Response: copied"}'  # a ReAct marker inside
        return json.dumps({"thought1": "They want American food in San Jose, so I search for it.",
                           "thought2": "The first result fits, so I offer it."})

    client = Scripted(answer)
    cache = str(tmp_path / "cache.jsonl")
    w = LLMThoughts(client, cache_path=cache, sleep=lambda s: None)
    th = w.write(t)
    assert th.before == "They want American food in San Jose, so I search for it."
    assert th.after == "The first result fits, so I offer it."
    assert len(client.requests) == 2 and "ReAct marker" in client.requests[1][-1]["content"]
    assert w.stats["invalid answer: thought contains a ReAct marker"] == 1 and w.stats["accepted"] == 1
    # a new writer on the same cache asks nothing
    client2 = Scripted(lambda m, n: "not json")
    w2 = LLMThoughts(client2, cache_path=cache, sleep=lambda s: None)
    assert w2.write(t) == th and client2.requests == [] and w2.stats["cache hits"] == 1


def test_template_fallback_is_counted(tmp_path):
    turns = _turns()
    bad = Scripted(lambda m, n: '{"thought": ""}')
    w = LLMThoughts(bad, cache_path=str(tmp_path / "c.jsonl"), max_attempts=2, sleep=lambda s: None)
    t = next(t for t in turns if not t.calls)
    assert w.write(t) == TemplateThoughts().write(t)
    assert w.stats["template used: LLM answer invalid (missing or wrong-typed key)"] == 1 and len(bad.requests) == 2

    def down(messages, n):
        raise EndpointError("connection refused")

    w = LLMThoughts(Scripted(down), endpoint_retries=1, sleep=lambda s: None)
    assert w.write(t) == TemplateThoughts().write(t)
    assert w.stats["template used: endpoint error"] == 1 and w.stats["endpoint errors"] == 2


def test_llm_thoughts_in_cra_rows(tmp_path):
    client = Scripted(lambda m, n: json.dumps({"thought1": "I look it up.", "thought2": "I answer.", "thought": "I reply."}))
    w = LLMThoughts(client, cache_path=str(tmp_path / "c.jsonl"))
    rows = cra.convert(cra.load_sgd(os.path.join(SGD, "dialogues_001.json"), limit=1), LoadReport("cra", "skip"), w)
    act = next(r for r in rows if r.meta["objective"] == "action")
    # Figs. 6-7: the thought is in the Input, the Output is the Action only
    assert act.input.endswith("\nThought: I look it up.") and act.meta["thoughts"] == "llm"
    assert act.output.startswith("Action: FindRestaurants(")
    no_call = next(r for r in rows if r.meta["objective"] == "response" and "Observation" not in r.input)
    assert no_call.input.endswith("\nThought: I reply.") and no_call.output.startswith("System: ")
    # later prompts to the LLM see the thoughts written for earlier turns
    assert any("Thought: I look it up." in m[-1]["content"] for m in client.requests[1:])
