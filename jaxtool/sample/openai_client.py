"""One client for OpenAI-compatible chat endpoints (vLLM, TGI, llama.cpp's server, OpenAI itself).

    client = OpenAIChatClient("http://localhost:8000/v1", "Qwen2.5-72B-Instruct")
    text = client.complete([{"role": "user", "content": "..."}])

POSTs ``{base_url}/chat/completions`` (the OpenAI convention: `base_url` ends in ``/v1``) with the
standard library only. Used by the DiaTool-DPO `llm` augmenter (`jaxtool.diatool.llm`), CALM's
ReAct thoughts writer (`jaxtool.calm.thoughts`) and the FunctionChat-Bench LLM judge
(`jaxtool.eval.llm_judge`); each keeps its own retry, cache and validation policy.

Errors are split by what a caller can do about them:

* `EndpointError` — transient, worth retrying: connection refused or reset, timeout, HTTP 408 / 409
  / 429 / 5xx, a reply that is not a chat completion.
* `ConfigError` — the request itself is wrong and retrying cannot help: any other HTTP 4xx (bad
  URL, unknown model, missing or wrong API key), a missing URL or model name.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.error
import urllib.request
from typing import Any

from jaxtool.errors import ConfigError


class EndpointError(Exception):
    """A transient failure talking to the model (worth retrying)."""


class OpenAIChatClient:
    """`base_url`, `api_key` default to the environment's ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.
    `json_mode` adds ``response_format={"type": "json_object"}`` (not every server supports it).
    `flags` names the command-line options that set the URL and the model, for error messages."""

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None, *,
                 timeout: float = 120.0, temperature: float = 0.7, max_tokens: int | None = None,
                 json_mode: bool = False, flags: tuple[str, str] = ("--llm-base-url", "--llm-model")):
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise ConfigError(f"an OpenAI-compatible endpoint is needed: pass {flags[0]} "
                              "(e.g. http://localhost:8000/v1) or set OPENAI_BASE_URL")
        if not model:
            raise ConfigError(f"the endpoint needs a model name: pass {flags[1]}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        self.flags = flags
        self.name = f"openai:{model}"

    def complete(self, messages: list[dict]) -> str:
        """The assistant's reply text to OpenAI-style `messages`."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature}
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace")
            if e.code in (408, 409, 429) or e.code >= 500:
                raise EndpointError(f"HTTP {e.code} from {self.url}: {detail}") from None
            raise ConfigError(f"{self.url} refused the request with HTTP {e.code}: {detail} "
                              f"(check {self.flags[0]}, {self.flags[1]} and the API key)") from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError,
                http.client.HTTPException) as e:
            raise EndpointError(f"{self.url}: {type(e).__name__}: {e}") from None
        try:
            payload = json.loads(raw)
            content = payload["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise EndpointError(f"{self.url}: response is not an OpenAI chat completion: "
                                f"{raw[:200].decode('utf-8', 'replace')}") from None
        if not isinstance(content, str):
            raise EndpointError(f"{self.url}: the completion has no text content")
        return content


def complete_with_retries(client, messages: list[dict], *, retries: int, backoff_s: float, sleep,
                          stats=None) -> tuple[str | None, EndpointError | None]:
    """`client.complete(messages)`, retried up to `retries` times on `EndpointError` with exponential
    back-off (`backoff_s`, 2·`backoff_s`, ...). Returns (text, None), or (None, the last error) when
    every try failed. `stats` (a Counter) counts "requests" and "endpoint errors"."""
    err: EndpointError | None = None
    for i in range(retries + 1):
        if stats is not None:
            stats["requests"] += 1
        try:
            return client.complete(messages), None
        except EndpointError as e:
            err = e
            if stats is not None:
                stats["endpoint errors"] += 1
            if i < retries:
                sleep(backoff_s * (2 ** i))
    return None, err
