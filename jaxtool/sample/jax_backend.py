"""`--backend jax`: a jaxtool model (checkpoint, HF dir, .gguf, "smollm2") through our generator."""

from __future__ import annotations

from typing import Sequence

from jaxtool.sample.completion import Completion, cut_at_stop
from jaxtool.sample.generate import Sampling, generate_ids


def stop_token_ids(tokenizer, cfg, stop_strings: Sequence[str] = ()) -> list[int]:
    """EOS ids of the model and tokenizer, plus stop strings that are single tokens."""
    ids = set(cfg.eos_ids)
    if tokenizer is not None:
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        for s in stop_strings:
            enc = tokenizer.encode(s, add_special_tokens=False)
            if len(enc) == 1:
                ids.add(enc[0])
    return sorted(ids)


def rows_for(n: int, batch_size: int) -> int:
    """Rows a generate batch of `n` prompts is padded to: the next power of two, capped at batch_size."""
    rows = 1
    while rows < n:
        rows *= 2
    return min(max(rows, n), max(batch_size, n))


class JaxBackend:
    name = "jax"

    def __init__(self, model, batch_size: int = 8, mesh=None):
        self.model = model
        self.tokenizer = model.tokenizer
        self.batch_size = batch_size
        self.mesh = mesh

    @classmethod
    def load(cls, path: str, dtype: str = "float32", batch_size: int = 8, **kw) -> "JaxBackend":
        import sys

        from jaxtool.api import load_model

        model = load_model(path, dtype=dtype)
        # the run's header: which dtype it computes in (compute "auto": bf16 on GPU/TPU, f32 on CPU) and
        # which attention kernel was asked for (the one used is printed when the evaluation ends)
        print(f"jax backend: {model!r}; attention {model.run.attention} requested", file=sys.stderr)
        return cls(model, batch_size=batch_size)

    def generate(self, prompts, *, max_new_tokens: int = 256, stop_strings: Sequence[str] = (),
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> list[Completion]:
        tok = self.tokenizer
        cfg = self.model.config
        stop_ids = stop_token_ids(tok, cfg, stop_strings)
        multi = [s for s in stop_strings if s and len(tok.encode(s, add_special_tokens=False)) > 1]
        sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p)

        def stop_check(_row, new_ids):
            return bool(multi) and any(s in tok.decode(new_ids) for s in multi)

        pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
        # Longest prompts first; a batch is padded to `rows_for(n, batch_size)` rows (the next power of
        # two, at most batch_size): few distinct shapes, so few compilations, and a final partial batch
        # (or a one-prompt call, as BFCL multi-turn's --sequential makes) does not pay for batch_size
        # rows. Results go back in the callers' order.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[Completion | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            batch = [list(prompts[i]) for i in rows]
            batch += [batch[-1]] * (rows_for(len(batch), self.batch_size) - len(batch))  # filler rows, discarded
            res = generate_ids(self.model.params, cfg, batch, max_new_tokens=max_new_tokens, sampling=sampling,
                               stop_ids=stop_ids, stop_check=stop_check if multi else None,
                               seed=seed + start, pad_id=pad, mesh=self.mesh, length_multiple=128,
                               run=self.model.run)
            for i, ids, lps, reason in zip(rows, res.tokens, res.logprobs, res.finish_reasons):
                body = ids[:-1] if reason == "eos" else ids
                text, hit = cut_at_stop(tok.decode(body, skip_special_tokens=False), stop_strings)
                out[i] = Completion(text=text, token_ids=ids, logprobs=lps, finish_reason="stop" if hit else reason)
        return out
