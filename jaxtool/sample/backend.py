"""The text-generation interface every evaluator, data augmenter and sampler is written against.

Two implementations: `--backend jax` (a jaxtool model through `jaxtool.sample.generate`) and
`--backend hf` (an exported HF directory through transformers). Evaluators only ever see this
protocol, so their tests can drive them with a scripted fake backend and the real backends are
cross-checked against each other separately.
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


BACKENDS = ("jax", "hf")


def load_backend(kind: str, model: str, **kwargs) -> Backend:
    """`kind` "jax": a jaxtool checkpoint / HF dir / .gguf / "smollm2" through jaxtool's generator;
    "hf": an HF directory through transformers (needs torch; used to cross-check the jax backend)."""
    from jaxtool.errors import JaxtoolError

    if kind == "jax":
        from jaxtool.sample.jax_backend import JaxBackend

        return JaxBackend.load(model, **kwargs)
    if kind == "hf":
        from jaxtool.sample.hf_backend import HFBackend

        return HFBackend.load(model, **kwargs)
    raise JaxtoolError(f"--backend must be one of {BACKENDS}, got {kind!r}")
