"""One step of Tunix's DPO trainer on jaxtool's NNX module (a tiny random Llama); docs/nnx.md, "Tunix".

Tunix cannot be installed next to jaxtool's pins (it downgrades transformers, safetensors, tokenizers,
huggingface_hub), so run it in a virtualenv that sees jaxtool's packages:

    python -m venv --system-site-packages /work/venv-tunix
    /work/venv-tunix/bin/pip install google-tunix            # 0.1.7: about 6 minutes
    PYTHONPATH=. /work/venv-tunix/bin/python docs/examples/nnx_tunix_dpo.py

Checks: Tunix's sequence log-probs through `TunixLM` equal an independent float64 sum over the module's
logits; one DPO step runs and moves the parameters.
"""
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tunix
from flax import nnx
from tunix.sft.dpo import dpo_trainer as dpo

from jaxtool.models import preset
from jaxtool.models.nnx import CausalLM, TunixLM

t0 = time.time()

cfg = dataclasses.replace(preset("tiny"), num_layers=1)
policy = TunixLM(CausalLM(cfg, rngs=nnx.Rngs(0)))
ref = TunixLM(CausalLM(cfg, rngs=nnx.Rngs(0)))
p0 = jax.tree.map(jnp.copy, policy.lm.pure_params())
rng = np.random.RandomState(0)
B, P, R = 2, 6, 5
prompt = rng.randint(3, cfg.vocab_size, (B, P)).astype(np.int32)
pmask = np.ones((B, P), np.int32)
pmask[0, :2] = 0
prompt[0, :2] = 0                                                              # left padding
ch = rng.randint(3, cfg.vocab_size, (B, R)).astype(np.int32)
cm = np.ones((B, R), np.int32)
cm[1, 3:] = 0
ch[1, 3:] = 0                                                                  # right padding
rj = rng.randint(3, cfg.vocab_size, (B, R)).astype(np.int32)
rm = np.ones((B, R), np.int32)
rm[0, 4:] = 0
rj[0, 4:] = 0
ex = dpo.TrainingInput(prompt_ids=prompt, prompt_mask=pmask, chosen_ids=ch, chosen_mask=cm,
                       rejected_ids=rj, rejected_mask=rm)



# Tunix's log-probs of the completions through the adapter == an independent sum over our module's logits
def ours(lm, ids, mask, comp, cmask):
    seg = np.concatenate([mask, cmask], 1)
    toks = np.concatenate([ids, comp], 1)
    pos = np.maximum(np.cumsum(seg, 1) - 1, 0)
    logits = np.asarray(lm(jnp.asarray(toks), jnp.asarray(pos), jnp.asarray(seg)), np.float64)
    top = logits.max(-1, keepdims=True)
    lp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    L = comp.shape[1]
    tok_lp = np.take_along_axis(lp[:, -L - 1:-1], comp[..., None], -1)[..., 0]
    return (tok_lp * cmask).sum(-1)


tr_cfg = dpo.DPOTrainingConfig(eval_every_n_steps=100, max_steps=1, beta=0.1)
trainer = dpo.DPOTrainer(policy, ref, optax.adamw(1e-2), tr_cfg)
te = trainer._prepare_inputs(ex)
got_c, got_r = dpo.compute_logps(policy, te.input_ids, te.positions, te.attention_mask, te.logits_to_keep,
                                 te.completion_mask)
want_c = ours(policy.lm, prompt, pmask, ch, cm)
want_r = ours(policy.lm, prompt, pmask, rj, rm)
print("tunix chosen logps ", np.asarray(got_c), "\nours chosen logps  ", want_c)
print("tunix rejected logps", np.asarray(got_r), "\nours rejected logps", want_r)
np.testing.assert_allclose(np.asarray(got_c), want_c, rtol=1e-5)
np.testing.assert_allclose(np.asarray(got_r), want_r, rtol=1e-5)
trainer.train([ex])
moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(policy.lm.pure_params()), jax.tree.leaves(p0)))
print("tunix", getattr(tunix, "__version__", "?"), "| train steps:", trainer.train_steps, "| max |param change|:", moved)
assert trainer.train_steps == 1 and moved > 1e-3
after_c = ours(policy.lm, prompt, pmask, ch, cm)
after_r = ours(policy.lm, prompt, pmask, rj, rm)
print("chosen-rejected margin before", want_c - want_r, "after", after_c - after_r)
print(f"ok in {time.time() - t0:.0f}s")
