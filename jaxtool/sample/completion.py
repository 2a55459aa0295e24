"""What every text-generation backend returns, and the protocol it implements.

Kept apart from `jaxtool.sample.backend` (which picks an implementation by name) so that the
implementations (`jax_backend`, `hf_backend`) import this module and nothing imports them back.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence


@dataclasses.dataclass
class Completion:
    """One generated continuation.

    text         : decoded new text, cut before the first stop string (the stop string excluded)
    token_ids    : the generated token ids, up to and including EOS; with multi-token stop strings the
                   generator stops at the next check, so ids may run past the stop string (text never does)
    logprobs     : the model's log-probability of each generated token (log_softmax of the raw
                   logits at temperature 1, whatever the sampling settings)
    finish_reason: "eos" | "stop" (a stop string) | "length" (max_new_tokens reached)
    """

    text: str
    token_ids: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)
    finish_reason: str = "eos"


class Backend(Protocol):
    """Generates continuations of already-tokenised prompts."""

    name: str
    tokenizer: Any  # a transformers tokenizer

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int = 256,
        stop_strings: Sequence[str] = (),
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[Completion]:
        """One Completion per prompt, in order. temperature 0 = greedy."""
        ...


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    """`text` cut before the first stop string it contains, and whether one was found."""
    cut = min((text.find(s) for s in stop_strings if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
