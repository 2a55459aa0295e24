"""LLM-as-judge with FunctionChat-Bench's rubric files, through any OpenAI-compatible endpoint.

Flow (as FunctionChat-Bench's `EvaluationHandler`): a *call* turn that passes the exact-match rule
(`judge.calls_match`, acceptable alternatives included) is a pass without asking the LLM; every other
turn is judged by the LLM. The rubric for the turn type (`rubric_{call,completion,relevance,slot}.txt`)
is filled and sent as a single user message to `POST {base_url}/chat/completions`
(`{"model", "messages", "temperature", "max_tokens"}`; `Authorization: Bearer <key>` when a key is set).

Placeholders, filled as FunctionChat does (JSON, non-ASCII kept):
`{tools}` the offered tools (OpenAI layout), `{query}` the messages before the turn (call ids kept),
`{ground_truth}` the gold assistant message with call ids removed and `"tool_calls": null` when it has
no call (Singlecall: the gold object `{"name", "arguments"}` plus `"tool_calls": null`), `{response}`
the model's message `{"role": "assistant", "content", "tool_calls"}` (no ids; the raw text as content
when the format could not parse a call), `{acceptable_arguments}` the field as written in the data
file, JSON-encoded (call rubric only). Only these five names are replaced, so other braces in a
rubric are left alone.

Verdict parsing (`parse_verdict`): the rubric asks for the decision on its own line, repeated. The
last three non-empty lines are read bottom-up; the first line that names exactly one of pass / fail
decides. English words match whole words (pass, passed, fail, failed, failure); Korean 통과 / 합격 /
성공 / 패스 read as pass and 실패 / 불합격 / 불통과 as fail (the negated forms are removed before
looking for the positive ones). No decision in those lines -> unparseable.

Robustness: transport errors, HTTP 408 / 409 / 429 / 5xx, malformed JSON and unparseable verdicts are retried
up to `max_retries` times with exponential back-off; any other HTTP 4xx stops at once with an
error (a wrong key, model or URL will not fix itself). A turn whose verdict stays unparseable counts
as a fail with that reason. Finished verdicts are appended to a JSONL cache keyed by
(model, temperature, filled prompt), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from typing import Any, Mapping

from jaxtool.data.schema import Message, ToolCall
from jaxtool.errors import ConfigError, JaxtoolError
from jaxtool.eval.judge import TURN_TYPES, Prediction, TurnCase, Verdict, calls_match
from jaxtool.sample.openai_client import EndpointError, OpenAIChatClient

PLACEHOLDERS = ("tools", "query", "ground_truth", "response", "acceptable_arguments")


class JudgeError(JaxtoolError):
    """The judge endpoint failed in a way retrying cannot fix, or kept failing."""


def load_rubrics(directory: str) -> dict[str, str]:
    """`rubric_<type>.txt` for the four turn types from `directory`."""
    rubrics, missing = {}, []
    for t in TURN_TYPES:
        p = os.path.join(directory, f"rubric_{t}.txt")
        if os.path.isfile(p):
            with open(p, encoding="utf-8") as fh:
                rubrics[t] = fh.read().strip()
        else:
            missing.append(p)
    if missing:
        raise ConfigError(f"LLM judge rubric files not found: {missing}. Pass --rubrics DIR with FunctionChat-Bench's "
                          "rubric_{call,completion,relevance,slot}.txt")
    return rubrics


# --------------------------------------------------------------------------------------------
# rubric filling
# --------------------------------------------------------------------------------------------

def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def _call_openai(c: ToolCall, with_id: bool = False) -> dict:
    d = {"type": "function", "function": {"name": c.name, "arguments": _dumps(dict(c.arguments))}}
    return {"id": c.id, **d} if with_id and c.id is not None else d


def message_dict(m: Message, with_ids: bool = True) -> dict:
    """OpenAI layout without jaxtool's meta labels; call ids kept only when `with_ids`."""
    d: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        d["tool_calls"] = [_call_openai(c, with_ids) for c in m.tool_calls]
    if m.role == "tool":
        if with_ids and m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            d["name"] = m.name
    return d


def ground_truth_dict(case: TurnCase) -> dict:
    """The gold as FunctionChat shows it to the judge: its calls without ids and `tool_calls: null`
    when there are none; Singlecall's gold is the object `{"name", "arguments"}` (+ `tool_calls: null`)."""
    if isinstance(case.gold_raw, Mapping):
        return {**dict(case.gold_raw), "tool_calls": None}
    d = message_dict(case.gold, with_ids=False)
    d.setdefault("tool_calls", None)
    return d


def response_dict(p: Prediction) -> dict:
    content = p.text if p.error else p.content
    return {"role": "assistant", "content": content,
            "tool_calls": [_call_openai(c) for c in p.tool_calls] if p.tool_calls else None}


def fill_rubric(template: str, case: TurnCase) -> str:
    acceptable = case.acceptable_raw if case.acceptable_raw is not None else (dict(case.acceptable) or None)
    values = {
        "tools": _dumps([t.to_dict() for t in case.tools]),
        "query": _dumps([message_dict(m) for m in case.context]),
        "ground_truth": _dumps(ground_truth_dict(case)),
        "response": _dumps(response_dict(case.prediction)),
        "acceptable_arguments": _dumps(acceptable),
    }
    return re.sub(r"\{(" + "|".join(PLACEHOLDERS) + r")\}", lambda m: values[m.group(1)], template)


# --------------------------------------------------------------------------------------------
# verdicts
# --------------------------------------------------------------------------------------------

_FAIL_KO = ("불합격", "불통과", "실패")
_PASS_KO = ("통과", "합격", "성공", "패스")
_PASS_EN = re.compile(r"\bpass(?:ed|es)?\b", re.IGNORECASE)
_FAIL_EN = re.compile(r"\bfail(?:ed|s|ure)?\b", re.IGNORECASE)


def _kinds(line: str) -> set[str]:
    kinds = set()
    if _FAIL_EN.search(line) or any(w in line for w in _FAIL_KO):
        kinds.add("fail")
    rest = line
    for w in _FAIL_KO:
        rest = rest.replace(w, " ")
    if _PASS_EN.search(rest) or any(w in rest for w in _PASS_KO):
        kinds.add("pass")
    return kinds


def parse_verdict(text: str | None) -> bool | None:
    """True (pass), False (fail) or None (no decision found) — module docstring."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    for line in reversed(lines[-3:]):
        k = _kinds(line)
        if len(k) == 1:
            return "pass" in k
    return None


# --------------------------------------------------------------------------------------------
# the judge
# --------------------------------------------------------------------------------------------

class LLMJudge:
    name = "llm"

    def __init__(self, *, base_url: str, model: str, rubrics: Mapping[str, str], api_key: str | None = None,
                 cache_path: str | None = None, max_retries: int = 3, timeout: float = 120.0,
                 temperature: float = 0.1, max_tokens: int = 1024, backoff: float = 1.0):
        missing = [t for t in TURN_TYPES if t not in rubrics]
        if missing:
            raise ConfigError(f"LLM judge needs a rubric for every turn type; missing {missing}")
        if max_retries < 0:
            raise ConfigError(f"judge retries must be >= 0, got {max_retries}")
        self.client = OpenAIChatClient(base_url, model, api_key, timeout=timeout, temperature=temperature,
                                       max_tokens=max_tokens, flags=("--judge-base-url", "--judge-model"))
        self.url = self.client.url
        self.model = model
        self.rubrics = dict(rubrics)
        self.api_key = api_key
        self.max_retries = max_retries
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.backoff = backoff
        self.cache_path = cache_path
        self.requests = 0  # HTTP requests sent (for reporting and tests)
        self._cache: dict[str, dict] = self._load_cache()

    # -- cache --------------------------------------------------------------------------------
    def _load_cache(self) -> dict[str, dict]:
        cache: dict[str, dict] = {}
        if self.cache_path and os.path.isfile(self.cache_path):
            with open(self.cache_path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        cache[row["key"]] = row
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a torn last line from an interrupted run
        return cache

    def _store(self, key: str, passed: bool, text: str) -> None:
        row = {"key": key, "passed": passed, "text": text}
        self._cache[key] = row
        if self.cache_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.cache_path)), exist_ok=True)
            with open(self.cache_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    def _key(self, prompt: str) -> str:
        return hashlib.sha256(_dumps([self.model, self.temperature, prompt]).encode("utf-8")).hexdigest()

    # -- judging ------------------------------------------------------------------------------
    def judge(self, case: TurnCase) -> Verdict:
        if case.turn_type == "call" and not case.prediction.error:
            ok, _ = calls_match(case.prediction.tool_calls, case.gold.tool_calls, case.acceptable)
            if ok:
                return Verdict(True, "exact match", judge="exact")
        prompt = fill_rubric(self.rubrics[case.turn_type], case)
        key = self._key(prompt)
        if key in self._cache:
            row = self._cache[key]
            return Verdict(bool(row["passed"]), _reason(row["text"]), judge="llm")
        last_text = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                last_text = self._complete(prompt)
            except _Retryable as e:
                last_text = ""
                if attempt == self.max_retries:
                    raise JudgeError(f"judge endpoint {self.url} failed {attempt + 1} times: {e}") from None
                continue
            verdict = parse_verdict(last_text)
            if verdict is not None:
                self._store(key, verdict, last_text)
                return Verdict(verdict, _reason(last_text), judge="llm")
        return Verdict(False, f"judge verdict unparseable after {self.max_retries + 1} tries: "
                              f"{last_text[-200:]!r}", judge="llm")

    def _complete(self, prompt: str) -> str:
        self.requests += 1
        try:
            return self.client.complete([{"role": "user", "content": prompt}])
        except EndpointError as e:
            raise _Retryable(str(e)) from None
        except ConfigError as e:  # HTTP 4xx other than 408/409/429: retrying cannot help
            raise JudgeError(f"judge endpoint: {e}") from None


class _Retryable(Exception):
    pass


def _reason(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "llm: " + " / ".join(lines[-3:])[:300]
