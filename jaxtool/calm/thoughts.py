"""Thoughts for CALM's Conversational ReAct rows: an offline template (default) or an LLM.

A CRA system turn is User -> Thought1 -> Action -> Observation -> Thought2 -> Response (a turn
without an API call: User -> Thought -> Response). SGD has the user text, the call, the results and
the gold response, but no thoughts; the paper had GPT-4o write them with its Table 6 prompt.

`TemplateThoughts` writes them from the SGD annotations, deterministically and offline:
Thought1 from the called intent's schema description and the call's arguments ("The user wants to
find a restaurant of a particular cuisine in a city. I have city='San Jose', cuisine='American', so
I will call FindRestaurants."); Thought2 from the number of results and the system turn's dialogue
acts ("FindRestaurants returned 10 results. I should offer the restaurant name 71 Saint Peter; offer
the city San Jose.").

`LLMThoughts` asks a chat model with a prompt in the shape of the paper's Table 6 (the dialogue so
far, the turn's user text, action, observation and gold response; asked: the thought before the
action and the thought after the observation, as JSON) through the shared LLM-writer clients
(`jaxtool.sample.openai_client` for an OpenAI-compatible endpoint, `jaxtool.sample.llm_writer` for a
jaxtool model). Every answer is
validated — a JSON object with the asked keys as non-empty strings of at most `max_chars`
characters, with no ReAct marker (``User:``, ``Action:``, ...) starting a line and not just the gold
response repeated — and retried with the reason when it fails. Finished turns (accepted, or invalid
after every attempt) are appended to a JSONL cache keyed by the prompt, so a rerun asks nothing
twice. A turn whose answer stayed invalid, or whose endpoint call failed, gets the template
thoughts; both are counted in `stats` by reason and the build summary shows them.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import re
import time
from typing import Any, Callable, Mapping, Sequence

from jaxtool.calm.example import py_call, py_value, signature
from jaxtool.data.schema import Tool, ToolCall
from jaxtool.errors import ConfigError

from jaxtool.sample.llm_writer import Invalid, JsonlCache, parse_json_object
from jaxtool.sample.openai_client import complete_with_retries


@dataclasses.dataclass(frozen=True)
class CraTurn:
    """One SGD system turn, as the thought writers see it."""

    dialogue_id: str
    turn: int                          # index of the SYSTEM turn in the SGD dialogue
    history: str                       # the dialogue before this user turn, in CRA lines ("" at the start)
    user: str
    calls: tuple[ToolCall, ...]
    observations: tuple[str, ...]      # one per call (JSON of the service results)
    response: str                      # the gold system utterance
    acts: tuple[Mapping[str, Any], ...]  # the turn's system dialogue acts ({"act", "slot", "values"})
    tools: tuple[Tool, ...]


@dataclasses.dataclass(frozen=True)
class Thoughts:
    before: str | None   # Thought1 (before the Action); None for a turn without a call
    after: str           # Thought2 (after the Observation), or the only thought of a no-call turn


# --------------------------------------------------------------------------------------------
# template
# --------------------------------------------------------------------------------------------

def _words(name: str) -> str:
    """`restaurant_name` -> "restaurant name"; `ReserveRestaurant` -> "reserve restaurant"."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", str(name)).replace("_", " ")
    return s.lower().strip()


def _vals(values: Sequence[Any]) -> str:
    return " or ".join(str(v) for v in values)


def act_phrase(act: Mapping[str, Any]) -> str:
    """What a system dialogue act asks the assistant to do, as a verb phrase."""
    kind = str(act.get("act", "")).upper()
    slot = _words(act.get("slot") or "")
    values = list(act.get("values") or [])
    if kind == "INFORM":
        return f"tell the user the {slot} is {_vals(values)}" if values else f"tell the user the {slot}"
    if kind == "REQUEST":
        return f"ask for the {slot}" + (f", suggesting {_vals(values)}" if values else "")
    if kind == "CONFIRM":
        return f"confirm the {slot}: {_vals(values)}"
    if kind == "OFFER":
        return f"offer the {slot} {_vals(values)}"
    if kind == "INFORM_COUNT":
        return f"say that {_vals(values)} options were found"
    if kind == "OFFER_INTENT":
        return f"offer to {_words(_vals(values))}"
    if kind == "NOTIFY_SUCCESS":
        return "tell the user that it is done"
    if kind == "NOTIFY_FAILURE":
        return "tell the user that it did not work"
    if kind == "REQ_MORE":
        return "ask whether they need anything else"
    if kind == "GOODBYE":
        return "say goodbye"
    return (_words(kind) + (f" the {slot}" if slot else "")).strip()


def plan(acts: Sequence[Mapping[str, Any]]) -> str:
    phrases = [p for p in (act_phrase(a) for a in acts) if p]
    return ("I should " + "; ".join(phrases) + ".") if phrases else "I should reply to the user."


def _result_count(observation: str) -> int | None:
    try:
        v = json.loads(observation)
    except (ValueError, TypeError):
        return None
    return len(v) if isinstance(v, list) else None


class TemplateThoughts:
    """Offline thoughts from the SGD annotations (module docstring)."""

    name = "template"

    def __init__(self):
        self.stats: collections.Counter = collections.Counter()

    def write(self, t: CraTurn) -> Thoughts:
        self.stats["template"] += 1
        if not t.calls:
            return Thoughts(None, plan(t.acts))
        tools = {tool.name: tool for tool in t.tools}
        before = []
        for c in t.calls:
            desc = (tools[c.name].description if c.name in tools else "").strip().rstrip(".")
            want = f"The user wants to {desc[0].lower() + desc[1:]}." if desc else f"The user's request needs {c.name}."
            args = ", ".join(f"{k}={py_value(v)}" for k, v in c.arguments.items())
            before.append(f"{want} I have {args}, so I will call {c.name}." if args else f"{want} I will call {c.name}.")
        after = []
        for c, obs in zip(t.calls, t.observations):
            n = _result_count(obs)
            if n is None:
                after.append(f"{c.name} answered.")
            elif n == 0:
                after.append(f"{c.name} found nothing.")
            else:
                after.append(f"{c.name} returned {n} result{'s' if n != 1 else ''}.")
        return Thoughts(" ".join(before), " ".join(after) + " " + plan(t.acts))


# --------------------------------------------------------------------------------------------
# LLM
# --------------------------------------------------------------------------------------------

PROMPT_VERSION = "calm-cra-thoughts-2"  # 2: history with earlier thoughts and System: replies (Figs. 6-7)
SYSTEM = ("You annotate task-oriented dialogues with the assistant's reasoning in the ReAct style: "
          "User -> Thought -> Action -> Observation -> Thought -> System reply.")
USER_CALL = """Write the assistant's two reasoning steps for the last turn of this conversation.

Available APIs:
{apis}

Conversation so far:
{history}

Last turn:
User: {user}
Action: {action}
Observation: {observation}
System: {response}

Return a JSON object {{"thought1": "...", "thought2": "..."}}. thought1 comes before the Action: what the \
user wants and why this API call with these arguments is the right next step. thought2 comes after the \
Observation: what the result means and how it leads to the System reply. One or two sentences each, in the first \
person, without copying the System reply."""
USER_NO_CALL = """Write the assistant's reasoning step for the last turn of this conversation.

Available APIs:
{apis}

Conversation so far:
{history}

Last turn:
User: {user}
System: {response}

Return a JSON object {{"thought": "..."}}: why the assistant answers this way without calling an API now \
(for example, a value it needs is still missing, or the information is already known). One or two sentences, \
in the first person, without copying the System reply."""
RETRY = "That answer was not usable ({reason}). Answer again with only the JSON object asked for."

_MARKER = re.compile(r"(^|\n)\s*(User|Thought\d?|Action|Observation|Response|System)\s*:", re.IGNORECASE)


def build_messages(t: CraTurn) -> list[dict]:
    apis = "\n".join(signature(tool) for tool in t.tools)
    history = t.history or "(start of the conversation)"
    if t.calls:
        text = USER_CALL.format(apis=apis, history=history, user=t.user,
                                action="; ".join(py_call(c) for c in t.calls),
                                observation="; ".join(t.observations), response=t.response)
    else:
        text = USER_NO_CALL.format(apis=apis, history=history, user=t.user, response=t.response)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def validate(obj: Mapping[str, Any], t: CraTurn, max_chars: int = 400) -> Thoughts:
    keys = ("thought1", "thought2") if t.calls else ("thought",)
    got = []
    for k in keys:
        v = obj.get(k)
        if not isinstance(v, str) or not v.strip():
            raise Invalid("missing or wrong-typed key", f"{k!r} must be a non-empty string")
        v = " ".join(v.split())
        if len(v) > max_chars:
            raise Invalid("thought too long", f"{k} has {len(v)} characters (at most {max_chars})")
        if _MARKER.search(v):
            raise Invalid("thought contains a ReAct marker", v[:80])
        if v.strip().lower() == t.response.strip().lower():
            raise Invalid("thought repeats the response", v[:80])
        got.append(v)
    return Thoughts(got[0], got[1]) if t.calls else Thoughts(None, got[0])


class LLMThoughts:
    """Thoughts from a chat model (`client.complete(messages) -> str`), validated and cached."""

    name = "llm"

    def __init__(self, client, *, cache_path: str | None = None, max_attempts: int = 3, endpoint_retries: int = 3,
                 backoff_s: float = 2.0, max_chars: int = 400, sleep: Callable[[float], None] = time.sleep):
        if max_attempts < 1:
            raise ConfigError("the LLM thought writer needs max_attempts >= 1")
        self.client = client
        self.cache = JsonlCache(cache_path)
        self.max_attempts = max_attempts
        self.endpoint_retries = endpoint_retries
        self.backoff_s = backoff_s
        self.max_chars = max_chars
        self.sleep = sleep
        self.fallback = TemplateThoughts()
        self.stats: collections.Counter = collections.Counter()

    def key(self, messages: list[dict]) -> str:
        blob = json.dumps([PROMPT_VERSION, getattr(self.client, "name", ""), messages], ensure_ascii=False)
        return hashlib.sha1(blob.encode("utf-8")).hexdigest()

    def write(self, t: CraTurn) -> Thoughts:
        base = build_messages(t)
        key = self.key(base)
        hit = self.cache.get(key)
        if hit is not None:
            self.stats["cache hits"] += 1
            if hit.get("status") == "ok":
                th = hit["thoughts"]
                return Thoughts(th.get("before"), th["after"])
            self.stats[f"template used: LLM answer invalid ({hit.get('reason')})"] += 1
            return self.fallback.write(t)
        messages = list(base)
        last: Invalid | None = None
        for _ in range(self.max_attempts):
            text = self._complete(messages)
            if text is None:
                self.stats["template used: endpoint error"] += 1
                return self.fallback.write(t)
            try:
                th = validate(parse_json_object(text), t, self.max_chars)
            except Invalid as e:
                last = e
                self.stats[f"invalid answer: {e.reason}"] += 1
                messages = base + [{"role": "assistant", "content": text},
                                   {"role": "user", "content": RETRY.format(reason=str(e))}]
                continue
            self.stats["accepted"] += 1
            self.cache.put({"key": key, "dialogue_id": t.dialogue_id, "turn": t.turn, "status": "ok",
                            "thoughts": {"before": th.before, "after": th.after}})
            return th
        assert last is not None
        self.cache.put({"key": key, "dialogue_id": t.dialogue_id, "turn": t.turn, "status": "invalid",
                        "reason": last.reason, "detail": last.detail})
        self.stats[f"template used: LLM answer invalid ({last.reason})"] += 1
        return self.fallback.write(t)

    def _complete(self, messages: list[dict]) -> str | None:
        text, _ = complete_with_retries(self.client, messages, retries=self.endpoint_retries,
                                        backoff_s=self.backoff_s, sleep=self.sleep, stats=self.stats)
        return text
