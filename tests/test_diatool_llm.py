"""The `llm` augmenter: a real HTTP round trip to a local OpenAI-compatible endpoint (with a 500
error and a malformed answer), answer validation by reason, the resume cache, and a scripted fake
jaxtool Backend."""

import argparse
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jaxtool.commands import build_diatool as diatool_cli
from jaxtool.data.schema import Conversation
from jaxtool.sample.openai_client import OpenAIChatClient
from jaxtool.diatool.llm import (BackendChatClient, EndpointDown, Invalid, LLMAugmenter,
                                 parse_json_object, validate_easy, validate_hard)
from jaxtool.diatool.prompts import build_messages
from jaxtool.diatool.seeds import extract_seed
from jaxtool.diatool.slots import NoAugmentation
from jaxtool.errors import ConfigError
from jaxtool.sample.backend import Completion

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "diatool")
SEEDS_PATH = os.path.join(FIX, "seeds.jsonl")


def _seeds():
    out = {}
    with open(SEEDS_PATH, encoding="utf-8") as fh:
        for line in fh:
            c = Conversation.from_dict(json.loads(line))
            out[c.meta["id"]] = extract_seed(c, c.meta["id"])[0]
    return out


SEEDS = _seeds()


def _surface(value):
    return f"{value:,}" if isinstance(value, int) and value >= 1000 else str(value)


def good_answer(seed, difficulty, fields):
    """What a well-behaved model would answer (values written as the seed's user wrote them)."""
    query = seed.query
    for f in fields:
        query = query.replace(_surface(seed.arguments[f]), "something")
    if difficulty == "easy":
        return {"user_query": query, "missing_fields": list(fields),
                "assistant_question": "Could you give me " + " and ".join(fields) + "?",
                "user_answer": "; ".join(_surface(seed.arguments[f]) for f in fields),
                "arguments": seed.arguments, "rejection": "Sorry, I have no tool for that."}
    turns, remaining = [], list(fields)
    for f in fields:
        turns.append({"assistant_question": "What about " + ", ".join(remaining) + "?",
                      "asked_fields": list(remaining), "user_answer": f"It's {_surface(seed.arguments[f])}.",
                      "answered_field": f})
        remaining.remove(f)
    return {"user_query": query, "turns": turns, "arguments": seed.arguments}


def _chat(content):
    return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


class Endpoint:
    """A local OpenAI-compatible /v1/chat/completions server answering from a script.

    Each script entry is `(status, payload)` or a function `request_json -> (status, payload)`;
    when the script runs out, `default` answers."""

    def __init__(self, script=(), default=None):
        self.script = list(script)
        self.default = default
        self.requests = []
        ep = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ep.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                step = ep.script.pop(0) if ep.script else ep.default
                status, payload = step(body) if callable(step) else step
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _aug(url, tmp_path=None, **kw):
    client = OpenAIChatClient(url, "test-model", "test-key", timeout=10)
    kw.setdefault("backoff_s", 0.0)
    return LLMAugmenter(client, cache_path=str(tmp_path / "cache.jsonl") if tmp_path else None, **kw)


# ---- HTTP round trip ------------------------------------------------------------------------

def test_round_trip_survives_a_500_and_a_malformed_answer(tmp_path):
    seed = SEEDS["currency-02"]
    fields = _aug("http://unused/v1").fields_for(seed, "easy")
    answer = good_answer(seed, "easy", fields)
    script = [(500, {"error": "overloaded"}),
              (200, _chat("Sure! Here is the dialogue: {\"user_query\": oops")),
              (200, _chat("```json\n" + json.dumps(answer) + "\n```"))]
    with Endpoint(script) as ep:
        aug = _aug(ep.url, tmp_path, endpoint_retries=2)
        sf = aug.augment(seed, "easy")
    assert sf.query == answer["user_query"] and sf.missing == tuple(fields) and sf.source == "llm"
    assert sf.steps[0].answer == answer["user_answer"] and sf.rejection == "Sorry, I have no tool for that."
    assert aug.stats["requests"] == 3 and aug.stats["endpoint errors"] == 1
    assert aug.stats["invalid answer: not a JSON object"] == 1 and aug.stats["accepted"] == 1
    r = ep.requests
    assert [x["path"] for x in r] == ["/v1/chat/completions"] * 3
    assert r[0]["auth"] == "Bearer test-key" and r[0]["body"]["model"] == "test-model"
    assert r[0]["body"]["messages"] == r[1]["body"]["messages"]  # the 500 is retried unchanged
    retry = r[2]["body"]["messages"]
    assert len(retry) == 4 and retry[2]["role"] == "assistant" and "not a JSON object" in retry[3]["content"]
    assert seed.query in r[0]["body"]["messages"][1]["content"]


def test_hard_answer_over_http_and_non_retryable_http_errors(tmp_path):
    seed = SEEDS["flight-01"]
    fields = seed.required
    with Endpoint([(200, _chat(json.dumps(good_answer(seed, "hard", fields))))]) as ep:
        sf = _aug(ep.url).augment(seed, "hard")
    assert [s.answered for s in sf.steps] == [(f,) for f in fields]
    assert [len(s.asked) for s in sf.steps] == [4, 3, 2, 1]
    assert sf.query == "Book me a flight from something to something on something for something passengers."
    with Endpoint([(401, {"error": "bad key"})]) as ep:
        with pytest.raises(ConfigError, match="HTTP 401"):
            _aug(ep.url).augment(seed, "hard")
    with Endpoint([(200, {"unexpected": True})], default=(200, {"unexpected": True})) as ep:
        with pytest.raises(NoAugmentation, match="endpoint error"):
            _aug(ep.url, endpoint_retries=1).augment(seed, "hard")
        assert len(ep.requests) == 2


def test_resume_from_the_cache_after_an_endpoint_outage(tmp_path):
    a, b = SEEDS["weather-01"], SEEDS["bmi-01"]

    def answer(body):
        prompt = body["messages"][1]["content"]
        seed = a if a.query in prompt else b
        return 200, _chat(json.dumps(good_answer(seed, "easy", seed.required if seed is a else
                                                 _aug("http://unused/v1").fields_for(seed, "easy"))))

    with Endpoint([answer], default=(503, {"error": "down"})) as ep:
        aug = _aug(ep.url, tmp_path, endpoint_retries=1)
        assert aug.augment(a, "easy").missing == ("location",)
        with pytest.raises(NoAugmentation, match="endpoint error"):
            aug.augment(b, "easy")
        assert len(ep.requests) == 3  # a once, b twice (one retry), nothing cached for b
    cached = [json.loads(l) for l in open(tmp_path / "cache.jsonl")]
    assert [(c["seed_id"], c["status"]) for c in cached] == [("weather-01", "ok")]
    with Endpoint(default=answer) as ep:  # rerun: only b goes to the endpoint
        aug = _aug(ep.url, tmp_path)
        assert aug.augment(a, "easy").missing == ("location",)
        assert aug.augment(b, "easy").source == "llm"
        assert len(ep.requests) == 1 and b.query in ep.requests[0]["body"]["messages"][1]["content"]
        assert aug.stats["cache hits"] == 1


def test_too_many_endpoint_failures_in_a_row_stop_the_build(tmp_path):
    with Endpoint(default=(500, {"error": "down"})) as ep:
        aug = _aug(ep.url, tmp_path, endpoint_retries=0, max_consecutive_endpoint_failures=2)
        with pytest.raises(NoAugmentation):
            aug.augment(SEEDS["weather-01"], "easy")
        with pytest.raises(EndpointDown, match=r"2 items in a row failed.*cache\.jsonl.*rerun"):
            aug.augment(SEEDS["stock-01"], "easy")


def test_answers_that_stay_invalid_are_cached_and_not_asked_again(tmp_path):
    seed = SEEDS["weather-01"]
    bad = good_answer(seed, "easy", ["location"])
    bad["user_query"] = seed.query  # still says "Paris"
    with Endpoint(default=(200, _chat(json.dumps(bad)))) as ep:
        aug = _aug(ep.url, tmp_path, max_attempts=2)
        with pytest.raises(NoAugmentation, match="asked field still in the first user turn"):
            aug.augment(seed, "easy")
        assert len(ep.requests) == 2
        aug2 = _aug(ep.url, tmp_path, max_attempts=2)
        with pytest.raises(NoAugmentation, match="LLM answer rejected"):
            aug2.augment(seed, "easy")
        assert len(ep.requests) == 2


def test_a_torn_cache_line_is_ignored(tmp_path):
    (tmp_path / "cache.jsonl").write_text('{"key": "abc", "status": "ok"}\n{"key": "trunc')
    aug = _aug("http://unused/v1", tmp_path)
    assert aug.cache.unreadable_lines == 1 and list(aug.cache.entries) == ["abc"]


# ---- validation -----------------------------------------------------------------------------

def _mutate(obj, path, value):
    obj = json.loads(json.dumps(obj))
    cur = obj
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return obj


REQ3 = ["amount", "from_currency", "to_currency"]


@pytest.mark.parametrize("difficulty, fields, path, value, reason", [
    ("easy", ["amount"], ("user_query",), "Please convert 1,250 GBP to JPY.", "asked field still in the first user turn"),
    ("easy", ["amount"], ("arguments", "amount"), 1300, "arguments changed"),
    ("easy", ["amount"], ("missing_fields",), ["amount", "to_currency"], "missing fields differ from the ones asked"),
    ("easy", ["amount"], ("user_answer",), "a thousand-ish", "asked field not answered"),
    ("easy", ["amount"], ("assistant_question",), "", "missing or wrong-typed key"),
    ("hard", REQ3, ("turns",), [], "wrong number of turns"),
    ("hard", REQ3, ("turns", 1, "asked_fields"), ["to_currency"], "turn asks the wrong fields"),
    ("hard", REQ3, ("turns", 1, "answered_field"), "amount", "turn answers a wrong field"),
    ("hard", REQ3, ("turns", 2, "user_answer"), "The other one.", "asked field not answered"),
    ("hard", REQ3, ("user_query",), "Please convert something GBP to something.", "asked field still in the first user turn"),
])
def test_each_validation_rule_rejects_with_its_reason(difficulty, fields, path, value, reason):
    seed = SEEDS["currency-02"]
    obj = _mutate(good_answer(seed, difficulty, fields), path, value)
    check = validate_easy if difficulty == "easy" else validate_hard
    with pytest.raises(Invalid) as e:
        check(obj, seed, fields)
    assert e.value.reason == reason
    check(good_answer(seed, difficulty, fields), seed, fields)  # the unmutated answer passes


def test_integral_floats_count_as_unchanged_arguments_and_rejections_naming_the_tool_are_dropped():
    seed = SEEDS["currency-02"]
    obj = good_answer(seed, "easy", ["amount"])
    obj["arguments"] = {**seed.arguments, "amount": 1250.0}
    obj["rejection"] = "I can't call convert_currency here."
    sf = validate_easy(obj, seed, ["amount"])
    assert sf.rejection is None


def test_parse_json_object():
    assert parse_json_object('Here you go:\n```json\n{"a": 1}\n```') == {"a": 1}
    for bad in ("no json here", "[1, 2]", '{"a": }'):
        with pytest.raises(Invalid, match="not a JSON object"):
            parse_json_object(bad)


def test_prompts_carry_the_inputs_and_the_requested_shape():
    seed = SEEDS["flight-01"]
    easy = build_messages("easy", seed.tool.spec(), seed.query, seed.call.name, seed.arguments, ["date"])
    hard = build_messages("hard", seed.tool.spec(), seed.query, seed.call.name, seed.arguments, seed.required)
    assert easy[0]["role"] == "system" and "JSON" in easy[0]["content"]
    body = easy[1]["content"]
    assert seed.query in body and '"book_flight"' in body and '"missing_fields": ["date"]' in body
    assert "ONE question" in body and "same language" in body
    assert "exactly 4 question/answer turns" in hard[1]["content"]
    assert "origin, destination, date, passengers" in hard[1]["content"]


# ---- a jaxtool model through the Backend protocol ---------------------------------------------

class ScriptedBackend:
    name = "scripted"

    def __init__(self, tokenizer, texts):
        self.tokenizer = tokenizer
        self.texts = list(texts)
        self.prompts = []

    def generate(self, prompts, *, max_new_tokens=256, stop_strings=(), temperature=0.0, top_k=0, top_p=1.0, seed=0):
        self.prompts.extend(prompts)
        return [Completion(self.texts.pop(0), finish_reason="eos") for _ in prompts]


def test_backend_client_renders_the_chat_template_and_validates_the_answer(smollm2_tokenizer):
    seed = SEEDS["translate-01"]
    answer = good_answer(seed, "hard", seed.required)
    backend = ScriptedBackend(smollm2_tokenizer, ["I think the answer is yes.", json.dumps(answer)])
    aug = LLMAugmenter(BackendChatClient(backend, max_new_tokens=512), backoff_s=0)
    sf = aug.augment(seed, "hard")
    assert sf.query == "Translate 'something' into something."
    assert aug.stats["invalid answer: not a JSON object"] == 1 and aug.stats["accepted"] == 1
    first = smollm2_tokenizer.decode(backend.prompts[0])
    assert first.startswith("<|im_start|>system\n") and first.endswith("<|im_start|>assistant\n")
    assert seed.query in first
    second = smollm2_tokenizer.decode(backend.prompts[1])
    assert "I think the answer is yes.<|im_end|>" in second and "Your reply was rejected" in second


# ---- the command line with --augmenter llm --------------------------------------------------

@pytest.fixture(autouse=True)
def _own_jsonl_reader(monkeypatch):
    """Read `conversations:` specs with the builder's own reader even once the project's source
    registry is merged, so these tests exercise this module's behaviour (ids, error texts) only."""
    import jaxtool.diatool.sources as sources

    monkeypatch.setattr(sources, "_registry", lambda: None)


def _cli(*argv):
    parser = argparse.ArgumentParser()
    diatool_cli.register(parser.add_subparsers())
    args = parser.parse_args(["build-diatool", *argv])
    return args.func(args)


def _fake_model(failing_seed=None):
    """A fake model that rewrites every seed well, except that requests about `failing_seed` get a 500."""
    def answer(body):
        prompt = body["messages"][1]["content"]
        seed = next(s for s in SEEDS.values() if s.query in prompt)
        if seed.id == failing_seed:
            return 500, {"error": "flaky"}
        fields = re.search(r"these required fields: (.*)\.\n", prompt).group(1).split(", ")
        return 200, _chat(json.dumps(good_answer(seed, "hard" if "HARD" in prompt else "easy", fields)))
    return answer


def test_cli_llm_build_resumes_after_endpoint_errors(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--seeds", SEEDS_PATH, "--limit", "6", "--augmenter", "llm", "--llm-model", "m", "--llm-api-key", "k",
            "--llm-endpoint-retries", "0", "--rejections", "llm", "--no-bfcl-guard", "--no-progress",
            "--valid-fraction", "0", "--out", str(out)]
    with Endpoint(default=_fake_model(failing_seed="flight-01")) as ep:
        assert _cli("--llm-base-url", ep.url, *argv) == 0
    # flight-01 easy + hard failed (2); the other 5 seeds' easy items (5) and the hard items of the
    # seeds with N >= 2 required fields: currency-01, currency-02, restaurant-01 (3)
    assert len(ep.requests) == 2 + 5 + 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["augmentation"]["easy"] == {"ok": 5, "endpoint error": 1}
    assert summary["augmentation"]["hard"] == {"ok": 3, "hard needs >= 2 required fields": 2, "endpoint error": 1}
    rows = [json.loads(l) for l in open(out / "train.jsonl")]
    assert {r["seed_id"] for r in rows if r["type"] == 2} == {"seeds:weather-01", "seeds:currency-01",
                                                              "seeds:currency-02", "seeds:restaurant-01",
                                                              "seeds:stock-01"}
    rejections = {r["rejected"]["messages"][-1]["content"] for r in rows if r["kind"] == "t2-easy-reject"}
    assert rejections == {"Sorry, I have no tool for that."}
    # the endpoint is healthy again: the rerun asks only for the two flight items
    with Endpoint(default=_fake_model()) as ep:
        assert _cli("--llm-base-url", ep.url, *argv) == 0
    assert len(ep.requests) == 2 and all("Boston" in r["body"]["messages"][1]["content"] for r in ep.requests)
    rows = [json.loads(l) for l in open(out / "train.jsonl")]
    assert "seeds:flight-01" in {r["seed_id"] for r in rows if r["type"] == 2}
    capsys.readouterr()


def test_cli_llm_needs_an_endpoint_and_a_model(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="endpoint is needed: pass --llm-base-url"):
        _cli("--seeds", SEEDS_PATH, "--out", str(tmp_path), "--augmenter", "llm", "--llm-model", "m")
    with pytest.raises(ConfigError, match="needs a model name"):
        _cli("--seeds", SEEDS_PATH, "--out", str(tmp_path), "--augmenter", "llm", "--llm-base-url", "http://x/v1")
    with pytest.raises(ConfigError, match="--llm-backend needs --llm-model-path"):
        _cli("--seeds", SEEDS_PATH, "--out", str(tmp_path), "--augmenter", "llm", "--llm-backend", "jax")
