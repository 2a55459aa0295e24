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


def model_id(model_cfg) -> str:
    """What identifies the reference model in a cache key: its path and dtypes (compute "auto" as the dtype
    it resolves to on this backend, so a cache written with an explicit float32 on CPU still serves)."""
    from jaxtool.models.run import default_compute_dtype

    compute = default_compute_dtype() if model_cfg.compute_dtype == "auto" else model_cfg.compute_dtype
    return f"{model_cfg.path}|{model_cfg.param_dtype}|{compute}"


def cache_serves(stored_key: str, data: str, model_id: str, max_turns: int) -> bool:
    """Whether a cache written under `stored_key` holds this column: same data and reference model,
    and at least `max_turns` per-turn sums (a turn's sum does not depend on how many turns are kept,
    so plain DPO (0 turns) can use DiaTool-DPO's cache, and a cache with more turns is sliced)."""
    try:
        k = json.loads(stored_key)
        return k["data"] == data and k["model"] == model_id and int(k["max_turns"]) >= max_turns
    except (ValueError, KeyError, TypeError):
        return False


def precompute(ds, setup, max_turns: int, path: str | None, model_id: str, n_logits_fn, printer=print) -> RefLogps:
    """RefLogps over every pair of `ds` (cached at `path` when given and still valid)."""
    data = dataset_fingerprint(ds)
    key = json.dumps({"data": data, "model": model_id, "max_turns": max_turns})
    if path and os.path.isfile(path):
        with np.load(path) as z:
            if "key" in z.files and cache_serves(str(z["key"]), data, model_id, max_turns):
                ref = RefLogps.zeros(len(z["chosen_seq"]), max_turns)   # turns: width max(max_turns, 1)
                ref.chosen_seq[:], ref.rejected_seq[:] = z["chosen_seq"], z["rejected_seq"]
                if max_turns:
                    ref.chosen_turns[:] = z["chosen_turns"][:, :max_turns]
                    ref.rejected_turns[:] = z["rejected_turns"][:, :max_turns]
                return ref
        printer(f"{path}: computed for other data, another model or fewer turns; recomputing")
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
