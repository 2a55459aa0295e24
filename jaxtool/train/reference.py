"""Reference log-probs as a column of the preference dataset.

One pass over the dataset (in order, no shuffle) with the frozen reference parameters gives, for
every pair, the chosen / rejected sequence sums and per-turn sums (`RefLogps`). The column is
cached next to the run (`reference.npz`, with a fingerprint of the data, the reference model and
the turn count) and reused on resume; `BatchDataset.with_reference` then joins it to every batch by
example index.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import numpy as np

from jaxtool import sharding
from jaxtool.data.batch import RefLogps


def dataset_fingerprint(ds) -> str:
    """A short hash of a BatchDataset's examples (token ids, masks, turn ids) and order."""
    h = hashlib.sha256()
    for stream in ds.plan.streams:
        h.update(str(len(stream)).encode())
        for f in stream:
            for k in ("inputs", "targets", "loss_mask", "turn_ids"):
                h.update(np.ascontiguousarray(f[k]).tobytes())
    return h.hexdigest()[:16]


def precompute(ds, setup, max_turns: int, path: str | None, model_id: str, n_logits_fn, printer=print) -> RefLogps:
    """RefLogps over every pair of `ds` (cached at `path` when given and still valid)."""
    key = json.dumps({"data": dataset_fingerprint(ds), "model": model_id, "max_turns": max_turns})
    if path and os.path.isfile(path):
        with np.load(path) as z:
            if "key" in z.files and str(z["key"]) == key:
                return RefLogps(z["chosen_seq"], z["rejected_seq"], z["chosen_turns"], z["rejected_turns"])
        printer(f"{path}: computed for other data or another model; recomputing")
    ref = RefLogps.zeros(len(ds), max_turns)
    with sharding.use_mesh(setup.mesh):
        for batch in ds.one_pass():
            sb = sharding.shard_batch(batch, setup.mesh)
            # to_host gathers across processes: every process fills the whole column
            vals = sharding.to_host(setup.reference_step(sb, n_logits=n_logits_fn(batch)))
            rows = np.asarray(sharding.to_host(sb.index))
            ok = rows >= 0
            for side in ("chosen", "rejected"):
                getattr(ref, f"{side}_seq")[rows[ok]] = np.asarray(vals[side]["seq"])[ok]
                if max_turns:
                    getattr(ref, f"{side}_turns")[rows[ok]] = np.asarray(vals[side]["turns"])[ok]
    if path and jax.process_index() == 0:
        tmp = path + ".tmp.npz"
        np.savez(tmp, key=np.array(key), chosen_seq=ref.chosen_seq, rejected_seq=ref.rejected_seq,
                 chosen_turns=ref.chosen_turns, rejected_turns=ref.rejected_turns)
        os.replace(tmp, path)
    return ref
