"""Scripted stand-ins for the evaluators' tests: a character-level tokenizer, a tiny chat format and a
backend that answers each prompt with a function of the prompt text. They implement the documented
interfaces (`Backend.generate`, `ChatFormat.prompt/parse/stop_strings`, `prompt_ids`) and nothing more.

Fake format: the prompt is one line per message (`<role>: <content or CALL json>`), the tools as JSON on
a `tools:` line, then `assistant:`. A reply `CALL {"name": ..., "arguments": {...}}` (several separated
by ` ; `) is a tool call; `CALL <not json>` is a parse error; anything else is text.

`install_fake_stack` puts them in place of jaxtool's backend loader, chat formats and prompt encoder
for a command-level test. `Endpoint` is a local HTTP server playing an OpenAI-compatible
chat-completions endpoint.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import sys
import threading
import types
from typing import Callable, Sequence

from jaxtool.data.schema import ToolCall
from jaxtool.sample.backend import Completion


class CharTokenizer:
    eos_token_id = 0

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in ids)


@dataclasses.dataclass
class FakeReply:
    content: str | None
    tool_calls: list
    error: str | None = None


class FakeFormat:
    name = "fake"
    stop_strings = ("<end>",)

    def prompt(self, conv) -> str:
        lines = ["tools: " + json.dumps([t.name for t in conv.tools])]
        for m in conv.messages:
            if m.tool_calls:
                body = " ; ".join("CALL " + json.dumps({"name": c.name, "arguments": dict(c.arguments)},
                                                       ensure_ascii=False) for c in m.tool_calls)
            else:
                body = m.content or ""
            lines.append(f"{m.role}: {body}")
        lines.append("assistant:")
        return "\n".join(lines)

    def parse(self, text: str) -> FakeReply:
        text = text.strip()
        if not text.startswith("CALL"):
            return FakeReply(text, [])
        calls = []
        for part in text.split(" ; "):
            try:
                obj = json.loads(part[len("CALL"):].strip())
                calls.append(ToolCall(obj["name"], obj.get("arguments", {})))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                return FakeReply(None, [], error=f"bad call: {e}")
        return FakeReply(None, calls)


def fake_prompt_ids(conv, fmt, tokenizer) -> list[int]:
    return tokenizer.encode(fmt.prompt(conv))


def install_fake_stack(monkeypatch, load_backend: Callable) -> None:
    """`jaxtool.sample.backend.load_backend` becomes `load_backend`; `jaxtool.data.formats.get_format`
    gives a `FakeFormat` and `jaxtool.data.tokenize.prompt_ids` is `fake_prompt_ids` (for this test)."""
    import jaxtool.sample.backend as backend_mod

    monkeypatch.setattr(backend_mod, "load_backend", load_backend)
    formats = types.ModuleType("jaxtool.data.formats")
    formats.get_format = lambda name, tokenizer=None: FakeFormat()
    tokenize = types.ModuleType("jaxtool.data.tokenize")
    tokenize.prompt_ids = fake_prompt_ids
    monkeypatch.setitem(sys.modules, "jaxtool.data.formats", formats)
    monkeypatch.setitem(sys.modules, "jaxtool.data.tokenize", tokenize)


def call_text(name: str, **arguments) -> str:
    return "CALL " + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


class ScriptedBackend:
    """`respond(prompt_text) -> reply text`; records every generate() call."""

    name = "scripted"

    def __init__(self, respond: Callable[[str], str]):
        self.tokenizer = CharTokenizer()
        self.respond = respond
        self.calls: list[dict] = []
        self.prompts: list[str] = []

    def generate(self, prompts, *, max_new_tokens=256, stop_strings=(), temperature=0.0, top_k=0, top_p=1.0, seed=0):
        texts = [self.tokenizer.decode(p) for p in prompts]
        self.calls.append({"n": len(prompts), "max_new_tokens": max_new_tokens, "stop_strings": tuple(stop_strings),
                           "temperature": temperature})
        self.prompts.extend(texts)
        return [Completion(text=self.respond(t)) for t in texts]


def last_user(prompt: str) -> str:
    """The content of the last `user:` line of a fake-format prompt."""
    for line in reversed(prompt.splitlines()):
        if line.startswith("user: "):
            return line[len("user: "):]
    return ""


class Endpoint:
    """A chat-completions server; `script` maps the decoded request body to (status, reply text)."""

    def __init__(self, script):
        self.script = script
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status, text = outer.script(body, len(outer.requests))
                payload = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}) \
                    if status == 200 else json.dumps({"error": text})
                data = payload.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
