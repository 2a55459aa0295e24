"""The `llm` Type 1 -> Type 2 augmenter: DiaTool-DPO's Appendix B prompts (see `prompts`) sent to
an OpenAI-compatible chat endpoint or to a jaxtool model through its own generator.

Every answer is validated before use and rejected otherwise, counted by reason:

- it is one JSON object with the expected keys and types;
- the asked fields are exactly the required fields we asked to remove (never optional ones), and
  their values are really absent from the rewritten first user turn;
- every asked field is answered: its value occurs in the user's answer(s) (Hard: one field per turn,
  each question asking exactly the fields still missing);
- the final call's arguments are unchanged.

Value checks use `values` (case-insensitive, number/quote variants); booleans and nulls cannot be
looked for in text and pass unchecked. A rejected answer is retried (up to `max_attempts`, each retry
telling the model why); a transport failure (connection error, timeout, HTTP 408/409/429/5xx, an
envelope without a message) is retried with exponential back-off up to `endpoint_retries` times.

Finished items — accepted answers and answers that stayed invalid after every attempt — go to a JSONL
cache keyed by (prompt version, model, seed id, difficulty, fields, seed content), flushed after
each item, so a rerun after a crash or an endpoint outage resumes where it stopped and items whose
endpoint call failed are simply asked again. After `max_consecutive_endpoint_failures` items in a row
fail at the endpoint the build stops with an error (the cache keeps everything finished so far).
"""

from __future__ import annotations

import collections
import hashlib
import json
import random
import time
from typing import Any, Callable, Sequence

from jaxtool.diatool.prompts import PROMPT_VERSION, RETRY, build_messages
from jaxtool.diatool.seeds import Seed
from jaxtool.diatool.slots import NoAugmentation, SlotFilling, SlotStep, structure_problems
from jaxtool.diatool.values import mentions_all, mentions_any
from jaxtool.errors import ConfigError, JaxtoolError
from jaxtool.sample.llm_writer import BackendChatClient, ChatClient, Invalid, JsonlCache, parse_json_object
from jaxtool.sample.openai_client import complete_with_retries

# BackendChatClient, ChatClient, Invalid and parse_json_object live in jaxtool.sample.llm_writer (shared
# with CALM's thoughts writer); they are re-exported here for existing importers.
__all__ = ["AugmentCache", "BackendChatClient", "ChatClient", "EndpointDown", "Invalid", "LLMAugmenter",
           "parse_json_object", "validate_easy", "validate_hard"]


class EndpointDown(JaxtoolError):
    """Too many items in a row failed at the endpoint; finished items are in the cache."""


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------

def _str(obj: dict, key: str, where: str = "") -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v.strip():
        raise Invalid("missing or wrong-typed key", f"{where}{key!r} must be a non-empty string")
    return v.strip()


def _canon(x: Any) -> Any:
    if isinstance(x, float) and x.is_integer():
        return int(x)
    if isinstance(x, dict):
        return {k: _canon(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_canon(v) for v in x]
    return x


def _check_common(obj: dict, seed: Seed, fields: Sequence[str]) -> str:
    query = _str(obj, "user_query")
    args = obj.get("arguments")
    if not isinstance(args, dict):
        raise Invalid("missing or wrong-typed key", "'arguments' must be an object")
    if json.dumps(_canon(args), sort_keys=True) != json.dumps(_canon(seed.arguments), sort_keys=True):
        raise Invalid("arguments changed", json.dumps(args, ensure_ascii=False)[:120])
    for f in fields:
        if mentions_any(query, seed.arguments[f]):
            raise Invalid("asked field still in the first user turn", f)
    return query


def _rejection(obj: dict, seed: Seed) -> str | None:
    r = obj.get("rejection")
    if isinstance(r, str) and r.strip() and seed.call.name not in r:
        return r.strip()
    return None


def validate_easy(obj: dict, seed: Seed, fields: Sequence[str]) -> SlotFilling:
    query = _check_common(obj, seed, fields)
    missing = obj.get("missing_fields")
    if not isinstance(missing, list) or set(map(str, missing)) != set(fields):
        raise Invalid("missing fields differ from the ones asked", f"{missing!r} vs {list(fields)}")
    question = _str(obj, "assistant_question")
    answer = _str(obj, "user_answer")
    for f in fields:
        if not mentions_all(answer, seed.arguments[f]):
            raise Invalid("asked field not answered", f)
    sf = SlotFilling("easy", query, tuple(fields), (SlotStep(question, tuple(fields), answer, tuple(fields)),),
                     rejection=_rejection(obj, seed), source="llm")
    probs = structure_problems(sf, seed.required)
    if probs:
        raise Invalid("wrong dialogue shape", probs[0])
    return sf


def validate_hard(obj: dict, seed: Seed, fields: Sequence[str]) -> SlotFilling:
    query = _check_common(obj, seed, fields)
    turns = obj.get("turns")
    if not isinstance(turns, list) or len(turns) != len(fields):
        raise Invalid("wrong number of turns", f"need {len(fields)}, got "
                      f"{len(turns) if isinstance(turns, list) else type(turns).__name__}")
    remaining = list(fields)
    steps, order = [], []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise Invalid("missing or wrong-typed key", f"turns[{i}] must be an object")
        question = _str(t, "assistant_question", f"turns[{i}].")
        answer = _str(t, "user_answer", f"turns[{i}].")
        asked = t.get("asked_fields")
        if not isinstance(asked, list) or set(map(str, asked)) != set(remaining):
            raise Invalid("turn asks the wrong fields", f"turns[{i}] asked {asked!r}, still missing {remaining}")
        got = t.get("answered_field")
        if got not in remaining:
            raise Invalid("turn answers a wrong field", f"turns[{i}] answered {got!r}, still missing {remaining}")
        if not mentions_all(answer, seed.arguments[got]):
            raise Invalid("asked field not answered", f"turns[{i}]: {got}")
        steps.append(SlotStep(question, tuple(remaining), answer, (got,)))
        order.append(got)
        remaining.remove(got)
    sf = SlotFilling("hard", query, tuple(order), tuple(steps), rejection=_rejection(obj, seed), source="llm")
    probs = structure_problems(sf, seed.required)
    if probs:
        raise Invalid("wrong dialogue shape", probs[0])
    return sf


# --------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------

# The augmenter's cache: ``{"key", "seed_id", "difficulty", "status": "ok" | "invalid",
# "slot_filling" | "reason"}`` records in the shared JSONL cache.
AugmentCache = JsonlCache


# --------------------------------------------------------------------------------------------
# augmenter
# --------------------------------------------------------------------------------------------

class LLMAugmenter:
    name = "llm"

    def __init__(self, client: ChatClient, *, cache_path: str | None = None, max_attempts: int = 3,
                 endpoint_retries: int = 3, backoff_s: float = 2.0, seed: int = 0,
                 max_consecutive_endpoint_failures: int = 5, sleep: Callable[[float], None] = time.sleep):
        if max_attempts < 1:
            raise ConfigError("max_attempts must be >= 1")
        self.client = client
        self.cache = AugmentCache(cache_path)
        self.max_attempts = max_attempts
        self.endpoint_retries = endpoint_retries
        self.backoff_s = backoff_s
        self.seed = seed
        self.max_consecutive = max_consecutive_endpoint_failures
        self.sleep = sleep
        self.stats: collections.Counter = collections.Counter()
        self._consecutive_failures = 0

    def fields_for(self, seed: Seed, difficulty: str) -> list[str]:
        req = seed.required
        if difficulty == "hard":
            return list(req)
        rng = random.Random(f"{self.seed}:{seed.id}:easy-fields")
        chosen = set(rng.sample(req, rng.randint(1, len(req))))
        return [f for f in req if f in chosen]

    def key(self, seed: Seed, difficulty: str, fields: Sequence[str]) -> str:
        blob = json.dumps([PROMPT_VERSION, self.client.name, seed.id, difficulty, list(fields),
                           seed.fingerprint(), seed.tool.spec()], sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha1(blob.encode("utf-8")).hexdigest()

    def augment(self, seed: Seed, difficulty: str) -> SlotFilling:
        req = seed.required
        if not req:
            raise NoAugmentation("tool has no required field")
        if difficulty == "hard" and len(req) < 2:
            raise NoAugmentation("hard needs >= 2 required fields")
        if difficulty not in ("easy", "hard"):
            raise ValueError(f"difficulty must be 'easy' or 'hard', got {difficulty!r}")
        fields = self.fields_for(seed, difficulty)
        key = self.key(seed, difficulty, fields)
        hit = self.cache.get(key)
        if hit is not None:
            self.stats["cache hits"] += 1
            if hit.get("status") == "ok":
                return SlotFilling.from_dict(hit["slot_filling"])
            raise NoAugmentation(f"LLM answer rejected: {hit.get('reason')}")
        base = build_messages(difficulty, seed.tool.spec(), seed.query, seed.call.name, seed.arguments, fields)
        messages = list(base)
        validate = validate_easy if difficulty == "easy" else validate_hard
        last: Invalid | None = None
        for attempt in range(self.max_attempts):
            text = self._complete(messages, seed)
            try:
                sf = validate(parse_json_object(text), seed, fields)
            except Invalid as e:
                last = e
                self.stats[f"invalid answer: {e.reason}"] += 1
                messages = base + [{"role": "assistant", "content": text},
                                   {"role": "user", "content": RETRY.format(reason=str(e))}]
                continue
            self.stats["accepted"] += 1
            self.cache.put({"key": key, "seed_id": seed.id, "difficulty": difficulty, "status": "ok",
                            "slot_filling": sf.to_dict()})
            return sf
        assert last is not None
        self.stats["items rejected after all attempts"] += 1
        self.cache.put({"key": key, "seed_id": seed.id, "difficulty": difficulty, "status": "invalid",
                        "reason": last.reason, "detail": last.detail})
        raise NoAugmentation(f"LLM answer rejected: {last.reason}")

    def _complete(self, messages: list[dict], seed: Seed) -> str:
        text, err = complete_with_retries(self.client, messages, retries=self.endpoint_retries,
                                          backoff_s=self.backoff_s, sleep=self.sleep, stats=self.stats)
        if text is not None:
            self._consecutive_failures = 0
            return text
        self._consecutive_failures += 1
        self.stats["items lost to endpoint errors (not cached; a rerun retries them)"] += 1
        if self._consecutive_failures >= self.max_consecutive:
            where = f" in {self.cache.path}" if self.cache.path else ""
            raise EndpointDown(f"{self._consecutive_failures} items in a row failed at the endpoint "
                               f"(last: {err}). {len(self.cache.entries)} finished items are cached{where}; "
                               "rerun the same command to resume.")
        raise NoAugmentation("endpoint error", str(err))
