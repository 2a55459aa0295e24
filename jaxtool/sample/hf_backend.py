"""`--backend hf`: an exported HF directory through transformers + PyTorch.

Used to cross-check the jax backend (same prompts, same verdicts) and to evaluate models jaxtool
did not train. PyTorch is needed only here (pip install "jaxtool[test]" or torch itself).
"""

from __future__ import annotations

import os
from typing import Sequence

from jaxtool.errors import CheckpointError, JaxtoolError
from jaxtool.sample.completion import Completion, cut_at_stop


class HFBackend:
    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    @classmethod
    def load(cls, path: str, batch_size: int = 8, dtype: str = "float32", **kw) -> "HFBackend":
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise JaxtoolError("--backend hf needs PyTorch: pip install torch") from None
        from jaxtool.api import resolve_model_path

        path = resolve_model_path(path)
        tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        if os.path.isfile(path) and path.endswith(".gguf"):
            d, f = os.path.split(path)
            model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=tdtype)
            tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
        elif os.path.isfile(os.path.join(path, "config.json")):
            model = AutoModelForCausalLM.from_pretrained(path, dtype=tdtype)
            tok = AutoTokenizer.from_pretrained(path)
        else:
            raise CheckpointError(f"{path}: --backend hf needs an HF directory or a .gguf file "
                                  "(convert jaxtool checkpoints with `jaxtool convert orbax-to-hf`)")
        return cls(model.eval(), tok, batch_size=batch_size)

    def generate(self, prompts, *, max_new_tokens: int = 256, stop_strings: Sequence[str] = (),
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> list[Completion]:
        import torch

        tok = self.tokenizer
        eos = self.model.generation_config.eos_token_id
        eos = set([eos] if isinstance(eos, int) else (eos or []))
        if tok.eos_token_id is not None:
            eos.add(tok.eos_token_id)
        for s in stop_strings:
            enc = tok.encode(s, add_special_tokens=False)
            if len(enc) == 1:
                eos.add(enc[0])
        pad = tok.pad_token_id if tok.pad_token_id is not None else min(eos)
        out: list[Completion] = []
        torch.manual_seed(seed)
        for start in range(0, len(prompts), self.batch_size):
            batch = [list(p) for p in prompts[start:start + self.batch_size]]
            width = max(len(p) for p in batch)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])  # left padding for decoder-only
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
            kw = dict(do_sample=temperature > 0, max_new_tokens=max_new_tokens, eos_token_id=sorted(eos),
                      pad_token_id=pad, return_dict_in_generate=True, output_logits=True)
            if temperature > 0:
                kw.update(temperature=temperature, top_k=top_k or None, top_p=top_p)
            if any(len(tok.encode(s, add_special_tokens=False)) > 1 for s in stop_strings):
                kw.update(stop_strings=list(stop_strings), tokenizer=tok)
            with torch.no_grad():
                res = self.model.generate(ids, attention_mask=mask, **kw)
            new = res.sequences[:, width:]
            logps = torch.stack(res.logits, dim=1).float().log_softmax(-1)
            for i in range(len(batch)):
                row = new[i].tolist()
                n = len(row)
                for j, t in enumerate(row):
                    if t in eos:
                        n = j + 1
                        break
                row = row[:n]
                lps = [float(logps[i, j, t]) for j, t in enumerate(row)]
                reason = "eos" if row and row[-1] in eos else "length"
                body = row[:-1] if reason == "eos" else row
                text, hit = cut_at_stop(tok.decode(body, skip_special_tokens=False), stop_strings)
                out.append(Completion(text=text, token_ids=row, logprobs=lps,
                                      finish_reason="stop" if hit else reason))
        return out
