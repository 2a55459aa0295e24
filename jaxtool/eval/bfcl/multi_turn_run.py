"""Running a model on BFCL's multi-turn categories, as BFCL's inference loop does
(`bfcl_eval/model_handler/base_handler.py::inference_multi_turn_prompting` / `_FC`, bfcl-eval
2026.3.23), with every entry's current step decoded in one batch.

Per entry, per user turn: the turn's user message is added; then, step after step, the model
generates; its output is decoded into calls (prompting style: BFCL's pythonic rules; fc style: the
chat format's own parser); no call (or output that does not decode) ends the turn; otherwise the
calls run on the entry's simulators (`jaxtool.envs.bfcl.BFCLEnv`: parsed, never evaluated) and each
result goes back as a `tool` message in the chat format. More than `step_limit` (BFCL's 20) steps
in one turn force-quits the entry: its remaining turns are not run, and the checker scores it
`multi_turn:force_terminated`, as BFCL does.

- `miss_func`: at the turn BFCL names, the held-out function docs become available. Prompting
  style, as BFCL: that turn's (empty) user message becomes `"{docs}\\nI have updated some more
  functions you can choose from. What about now?"` with the docs written as a Python list; fc style:
  the docs join the conversation's tools and the user message is the second sentence alone.
- `long_context`: BFCL's rule — the simulators load their long-context extensions (bigger
  directories, watch lists, card lists, ...) for `multi_turn_long_context` entries; the prompt is
  otherwise the same.
- Batching: each round collects the prompt of every unfinished entry's next step and sends them to
  `Backend.generate` in chunks of `batch_size` (longest first); entries advance independently (one
  may be in turn 3, step 5 while another starts turn 1). `sequential=True` runs one entry at a time
  to the end (the one-entry-at-a-time baseline).

Positional arguments in the model's pythonic output are dropped, as BFCL's decoder drops them
(`sort('a.pdf')` runs as `sort()`); fc-style calls carry named arguments only.

The result of an entry is BFCL's decoded form, turns -> steps -> call strings (rescorable with
`jaxtool eval bfcl-score`); steps with no call are not recorded (BFCL's checker drops them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from jaxtool.data.schema import Conversation, Message, ToolCall
from jaxtool.envs.bfcl import BFCLEnv
from jaxtool.errors import ConfigError, JaxtoolError
from jaxtool.eval.bfcl.data import PYTHON_HINT, doc_to_tool
from jaxtool.eval.bfcl.decode import DecodeError, decode_pythonic
from jaxtool.eval.bfcl.multi_turn import STEP_LIMIT, check_multi_turn
from jaxtool.eval.bfcl.prompt import system_prompt, with_language_hint

ADDITIONAL_FUNCTION_PROMPT = "I have updated some more functions you can choose from. What about now?"

PromptIds = Callable[[Any, Any, Any], Sequence[int]]


def call_string(name: str, args: Mapping[str, Any]) -> str:
    """`name(k=v, ...)` with Python literal values (what BFCL's decode_execute produces)."""
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"


@dataclasses.dataclass
class _Episode:
    entry: Mapping[str, Any]
    env: BFCLEnv
    docs: list[dict]                     # function docs shown so far (BFCL format)
    messages: list[Message]
    system_extra: str | None = None      # a system message of the entry's first turn
    turn: int = -1
    step: int = 0
    result: list[list[list[str]]] = dataclasses.field(default_factory=list)
    done: bool = False
    ended: str = "completed"             # completed | force_quit | prompt_too_long
    generations: int = 0
    max_prompt_tokens: int = 0


def _start(entry: Mapping[str, Any]) -> _Episode:
    env = BFCLEnv()
    env.reset(entry)
    return _Episode(entry=entry, env=env, docs=env.functions(), messages=[])


def _begin_turn(ep: _Episode, style: str) -> None:
    """Advance to the next turn (or finish) and add its user message."""
    ep.turn += 1
    ep.step = 0
    questions = ep.entry["question"]
    if ep.turn >= len(questions):
        ep.done = True
        return
    ep.result.append([])
    msgs = [dict(m) for m in questions[ep.turn]]
    held = ep.env.held_out(ep.turn)
    if str(ep.turn) in (ep.entry.get("missed_function") or {}):
        ep.env.add_missed(ep.turn)
        ep.docs = ep.env.functions()
        text = (f"{held}\n{ADDITIONAL_FUNCTION_PROMPT}" if style == "prompting" else ADDITIONAL_FUNCTION_PROMPT)
        msgs = [{"role": "user", "content": text}]
    for m in msgs:
        if m.get("role") == "system" and ep.turn == 0 and not ep.messages:
            ep.system_extra = m.get("content") or ""
        else:
            ep.messages.append(Message(m["role"], m.get("content")))


def _conversation(ep: _Episode, style: str) -> Conversation:
    meta = {"source": "bfcl", "id": ep.entry["id"]}
    if style == "prompting":
        sys_text = system_prompt(with_language_hint(ep.docs))
        if ep.system_extra:
            sys_text += "\n\n" + ep.system_extra
        return Conversation(messages=(Message("system", sys_text), *ep.messages), meta=meta)
    tools = tuple(doc_to_tool(d, description_suffix=PYTHON_HINT, float_hint=True) for d in ep.docs)
    msgs = ((Message("system", ep.system_extra),) if ep.system_extra else ()) + tuple(ep.messages)
    return Conversation(messages=msgs, tools=tools, meta=meta)


def _decode(text: str, fmt: Any, style: str) -> list[tuple[str, dict]] | DecodeError:
    if style == "prompting":
        return decode_pythonic(text)
    reply = fmt.parse(text)
    if getattr(reply, "error", None) is not None:
        return DecodeError(str(getattr(reply.error, "reason", reply.error)))
    return [(c.name, dict(c.arguments)) for c in (getattr(reply, "tool_calls", None) or ())]


def _advance(ep: _Episode, text: str, fmt: Any, style: str, step_limit: int) -> None:
    """Apply one generated step to the episode."""
    ep.generations += 1
    calls = _decode(text, fmt, style)
    if isinstance(calls, DecodeError) or not calls:
        # the model answered without a (decodable) call: the turn ends
        ep.messages.append(Message("assistant", text))
        _begin_turn(ep, style)
        return
    strings = [call_string(n, a) for n, a in calls]
    ep.result[-1].append(strings)
    # results of BFCL's executor for these call strings (parsed, dispatched; never evaluated)
    results = ep.env.step_strings(strings)
    if style == "prompting":
        ep.messages.append(Message("assistant", text))
    else:
        ep.messages.append(Message("assistant", None, tool_calls=tuple(ToolCall(n, a) for n, a in calls)))
    for (name, _), r in zip(calls, results):
        ep.messages.append(Message("tool", r.content, name=name))
    ep.step += 1
    if ep.step > step_limit:
        ep.done, ep.ended = True, "force_quit"


def run_multi_turn(entries: Sequence[Mapping[str, Any]], backend: Any, fmt: Any, prompt_ids: PromptIds, *,
                   style: str = "prompting", batch_size: int = 8, max_new_tokens: int = 512,
                   max_prompt_tokens: int | None = None, step_limit: int = STEP_LIMIT, sequential: bool = False,
                   irrelevance: str = "runner", progress: bool = True, desc: str = "bfcl multi-turn") -> list[dict]:
    """Run and score `entries` (each with its `ground_truth`); one record per entry, in order."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if style not in ("prompting", "fc"):
        raise ConfigError(f"prompt style must be prompting or fc, got {style!r}")
    if sequential:
        out = []
        for e in entries:
            out += run_multi_turn([e], backend, fmt, prompt_ids, style=style, batch_size=1,
                                  max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens,
                                  step_limit=step_limit, irrelevance=irrelevance, progress=False)
        return out
    from jaxtool.eval.textgen import progress_bar

    eps = [_start(e) for e in entries]
    for ep in eps:
        _begin_turn(ep, style)
    stop = list(getattr(fmt, "stop_strings", ()) or ())
    bar = progress_bar(len(eps), desc, progress)
    finished = 0
    while True:
        active = [ep for ep in eps if not ep.done]
        if not active:
            break
        prompts = {}
        for ep in active:
            ids = list(prompt_ids(_conversation(ep, style), fmt, backend.tokenizer))
            ep.max_prompt_tokens = max(ep.max_prompt_tokens, len(ids))
            if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
                ep.done, ep.ended = True, "prompt_too_long"
                continue
            prompts[id(ep)] = (ep, ids)
        order = sorted(prompts.values(), key=lambda p: -len(p[1]))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            outs = backend.generate([ids for _, ids in chunk], max_new_tokens=max_new_tokens, stop_strings=stop,
                                    temperature=0.0)
            if len(outs) != len(chunk):
                raise JaxtoolError(f"backend returned {len(outs)} completions for {len(chunk)} prompts")
            for (ep, _), out in zip(chunk, outs):
                _advance(ep, out.text, fmt, style, step_limit)
        now = sum(ep.done for ep in eps)
        bar.update(now - finished)
        finished = now
    bar.close()
    records = []
    for ep in eps:
        v = check_multi_turn(ep.entry, ep.result, irrelevance=irrelevance)
        records.append({"id": ep.entry["id"], "category": ep.entry["id"].rsplit("_", 1)[0], "valid": v.valid,
                        "error_type": v.error_type, "error": v.error, "result": ep.result, "ended": ep.ended,
                        "generations": ep.generations, "max_prompt_tokens": ep.max_prompt_tokens})
    return records


__all__ = ["ADDITIONAL_FUNCTION_PROMPT", "call_string", "run_multi_turn"]
