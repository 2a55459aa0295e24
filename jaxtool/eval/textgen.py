"""Plumbing shared by the evaluators: prompt encoding through a chat format, batched greedy
generation with a progress bar. (The command-line flags they share are in
`jaxtool.commands._model_args`.)

Evaluators depend only on the `Backend` protocol (`jaxtool.sample.backend`), a chat format
(`jaxtool.data.formats.get_format`) and `jaxtool.data.tokenize.prompt_ids`; those are looked up
when called, so tests can substitute scripted stand-ins.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

from jaxtool.data.schema import Conversation, Message

PromptFn = Callable[[Conversation, Any, Any], Sequence[int]]


def encode_prompt(conv: Conversation, fmt: Any, tokenizer: Any) -> list[int]:
    """Token ids of `conv` rendered by `fmt` up to the generation prompt of the next assistant turn."""
    from jaxtool.data.tokenize import prompt_ids

    return list(prompt_ids(conv, fmt, tokenizer))


def text_conversation(prompt: str, system: str | None = None) -> Conversation:
    """A one-turn conversation asking `prompt` (for tasks whose input is a block of text)."""
    msgs = ((Message("system", system),) if system else ()) + (Message("user", prompt),)
    return Conversation(messages=msgs)


def resolve_format(name: str, tokenizer: Any) -> Any:
    """The chat format `name` (`jaxtool.data.formats.get_format`) for `tokenizer`."""
    from jaxtool.data.formats import get_format

    return get_format(name, tokenizer=tokenizer)


def generate_texts(backend: Any, prompts: Sequence[Sequence[int]], *, batch_size: int = 8,
                   max_new_tokens: int = 256, stop_strings: Sequence[str] = (), desc: str = "generate",
                   progress: bool = True) -> list[str]:
    """Greedy completions for `prompts`, `batch_size` at a time, in input order."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    out: list[str] = []
    bar = progress_bar(len(prompts), desc, progress)
    for start in range(0, len(prompts), batch_size):
        chunk = [list(p) for p in prompts[start:start + batch_size]]
        comps = backend.generate(chunk, max_new_tokens=max_new_tokens, stop_strings=tuple(stop_strings),
                                 temperature=0.0)
        if len(comps) != len(chunk):
            raise RuntimeError(f"backend returned {len(comps)} completions for {len(chunk)} prompts")
        out.extend(c.text for c in comps)
        bar.update(len(chunk))
    bar.close()
    return out


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr, or a no-op stand-in when disabled."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a runtime dependency
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True)
