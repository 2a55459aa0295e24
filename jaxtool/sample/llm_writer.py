"""What every LLM-written-data builder shares: a chat client over a jaxtool model, the JSON-object
reader for a model's reply, the `Invalid` answer a validator raises, and the append-only JSONL cache
of finished items.

Used by the DiaTool-DPO `llm` augmenter (`jaxtool.diatool.llm`) and CALM's ReAct thoughts writer
(`jaxtool.calm.thoughts`); the OpenAI-compatible endpoint client is beside it
(`jaxtool.sample.openai_client`). Living here, below both applications, means neither application
imports the other (tests/test_layering.py).
"""

from __future__ import annotations

import json
import os
from typing import Protocol

from jaxtool.errors import ConfigError


class ChatClient(Protocol):
    name: str

    def complete(self, messages: list[dict]) -> str:
        """The assistant's reply text to OpenAI-style `messages`."""
        ...


class BackendChatClient:
    """A jaxtool `Backend` (``load_backend("jax"|"hf", model)``) used as a chat model: the messages
    are rendered with the tokenizer's chat template and the new text is the reply."""

    def __init__(self, backend, *, max_new_tokens: int = 1024, temperature: float = 0.7, seed: int = 0):
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self._calls = 0
        self.name = f"backend:{getattr(backend, 'name', type(backend).__name__)}"

    def complete(self, messages: list[dict]) -> str:
        tok = self.backend.tokenizer
        if not getattr(tok, "chat_template", None):
            raise ConfigError(f"{self.name}: the model's tokenizer has no chat template, so the "
                              "prompt cannot be rendered for it")
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok.encode(text, add_special_tokens=False)
        self._calls += 1
        out = self.backend.generate([ids], max_new_tokens=self.max_new_tokens,
                                    temperature=self.temperature, seed=self.seed + self._calls)
        return out[0].text


class Invalid(Exception):
    """A model answer that failed validation: `reason` is what the stats count, `detail` says more."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def parse_json_object(text: str) -> dict:
    """The JSON object in a model reply (a ```json fence or text around it is tolerated)."""
    s = (text or "").strip()
    start, end = s.find("{"), s.rfind("}")
    if start < 0 or end <= start:
        raise Invalid("not a JSON object", s[:80])
    try:
        obj = json.loads(s[start:end + 1])
    except json.JSONDecodeError as e:
        raise Invalid("not a JSON object", f"{e.msg} at char {e.pos}") from None
    if not isinstance(obj, dict):
        raise Invalid("not a JSON object")
    return obj


class JsonlCache:
    """Append-only JSONL of finished items, each a record with a ``"key"`` (the rest is the
    caller's: status, result or reason). Flushed after each item, so a rerun after a crash resumes;
    a torn last line (a crash mid-write) is ignored and counted in `unreadable_lines`."""

    def __init__(self, path: str | None):
        self.path = path
        self.entries: dict[str, dict] = {}
        self.unreadable_lines = 0
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                        self.entries[rec["key"]] = rec
                    except (ValueError, KeyError, TypeError):
                        self.unreadable_lines += 1

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, rec: dict) -> None:
        self.entries[rec["key"]] = rec
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                fh.flush()


__all__ = ["BackendChatClient", "ChatClient", "Invalid", "JsonlCache", "parse_json_object"]
