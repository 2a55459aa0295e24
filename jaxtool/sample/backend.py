"""The text-generation interface every evaluator, data augmenter and sampler is written against.

Two implementations: `--backend jax` (a jaxtool model through `jaxtool.sample.generate`) and
`--backend hf` (an exported HF directory through transformers). Evaluators only ever see this
protocol, so their tests can drive them with a scripted fake backend and the real backends are
cross-checked against each other separately.

`Completion` and the `Backend` protocol are defined in `jaxtool.sample.completion` (re-exported
here); `load_backend` picks an implementation by name.
"""

from __future__ import annotations

from jaxtool.errors import JaxtoolError
from jaxtool.sample.completion import Backend, Completion

__all__ = ["BACKENDS", "Backend", "Completion", "load_backend"]

BACKENDS = ("jax", "hf")


def load_backend(kind: str, model: str, **kwargs) -> Backend:
    """`kind` "jax": a jaxtool checkpoint / HF dir / .gguf / "smollm2" through jaxtool's generator;
    "hf": an HF directory through transformers (needs torch; used to cross-check the jax backend)."""
    if kind == "jax":
        from jaxtool.sample.jax_backend import JaxBackend

        return JaxBackend.load(model, **kwargs)
    if kind == "hf":
        from jaxtool.sample.hf_backend import HFBackend

        return HFBackend.load(model, **kwargs)
    raise JaxtoolError(f"--backend must be one of {BACKENDS}, got {kind!r}")
