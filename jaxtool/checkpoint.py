"""Orbax checkpoints of jaxtool models and train states.

A jaxtool checkpoint directory::

    DIR/jaxtool.json        {"format": "jaxtool", "version": 1, "model": <LlamaConfig>, ...}
    DIR/tokenizer/          the tokenizer (save_pretrained layout), if any
    DIR/<step>/state        Orbax PyTree: {"params": ...} or a whole train state
    DIR/<step>/meta         JSON: step, RNG, data-iterator state, anything JSON-able

Orbax writes each step into a temporary directory and renames it only once every item is on disk
(and on multi-host, every process has finished), so a half-written step is never listed or
restored. `keep` keeps the newest N steps. Restoring takes an abstract tree whose leaves carry
their target `NamedSharding`: arrays come back straight onto the mesh.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax

from jaxtool.errors import CheckpointError
from jaxtool.models.llama import LlamaConfig

FORMAT = "jaxtool"
META_FILE = "jaxtool.json"

logging.getLogger("absl").setLevel(logging.WARNING)


def is_checkpoint_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, META_FILE))


def write_meta(ckpt_dir: str, cfg: LlamaConfig, extra: dict | None = None) -> None:
    os.makedirs(ckpt_dir, exist_ok=True)
    meta = {"format": FORMAT, "version": 1, "model": json.loads(cfg.to_json())}
    meta.update(extra or {})
    tmp = os.path.join(ckpt_dir, META_FILE + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(meta, fh, indent=2)
    os.replace(tmp, os.path.join(ckpt_dir, META_FILE))


def read_meta(ckpt_dir: str) -> dict:
    path = os.path.join(ckpt_dir, META_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{ckpt_dir}: not a jaxtool checkpoint directory (no {META_FILE})")
    try:
        with open(path) as fh:
            meta = json.load(fh)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e.msg})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def read_config(ckpt_dir: str, **overrides) -> LlamaConfig:
    try:
        cfg = LlamaConfig.from_dict(read_meta(ckpt_dir)["model"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{ckpt_dir}/{META_FILE}: bad model config ({e})") from None
    return cfg.replace(**overrides) if overrides else cfg


class Checkpointer:
    """Thin wrapper over `orbax.checkpoint.CheckpointManager` for one checkpoint directory."""

    def __init__(self, ckpt_dir: str, keep: int | None = None, create: bool = True):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.dir = os.path.abspath(ckpt_dir)
        if not create and not os.path.isdir(self.dir):
            raise CheckpointError(f"{ckpt_dir}: no such checkpoint directory")
        opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
        self._mngr = ocp.CheckpointManager(self.dir, options=opts)

    def steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, step: int, items: dict[str, Any], meta: dict | None = None, wait: bool = True) -> None:
        """Save pytrees `items` (e.g. {"params": ..., "opt_state": ...}) and JSON `meta` as `step`."""
        ocp = self._ocp
        args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
        args["meta"] = ocp.args.JsonSave(meta or {})
        self._mngr.save(step, args=ocp.args.Composite(**args), force=True)
        if wait:
            self._mngr.wait_until_finished()

    def restore(self, abstract_items: dict[str, Any], step: int | None = None) -> tuple[dict, dict]:
        """Restore the named items onto the shardings carried by their ShapeDtypeStructs (items not
        named are not read), plus the step's JSON meta."""
        ocp = self._ocp
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{self.dir}: holds no finished checkpoint step")
        if step not in self.steps():
            raise CheckpointError(f"{self.dir}: no step {step}; available: {self.steps()}")
        args = {name: ocp.args.StandardRestore(tree) for name, tree in abstract_items.items()}
        args["meta"] = ocp.args.JsonRestore()
        try:
            out = self._mngr.restore(step, args=ocp.args.Composite(**args))
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise CheckpointError(f"{self.dir}: step {step} does not match the expected structure "
                                  f"({type(e).__name__}: {e})") from None
        meta = out["meta"]
        return {name: out[name] for name in abstract_items}, meta

    def item_metadata(self, step: int | None = None):
        step = self.latest_step() if step is None else step
        return self._mngr.item_metadata(step)

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.close()


def abstract_like(tree, shardings=None):
    """ShapeDtypeStructs of `tree` (arrays or structs), carrying `shardings` if given."""
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def save_params(ckpt_dir: str, cfg: LlamaConfig, params: dict, tokenizer=None, step: int = 0,
                extra_meta: dict | None = None) -> str:
    """Save a model (params + config + tokenizer) as a jaxtool checkpoint directory."""
    write_meta(ckpt_dir, cfg, extra_meta)
    if tokenizer is not None and jax.process_index() == 0:
        tokenizer.save_pretrained(os.path.join(ckpt_dir, "tokenizer"))
    ck = Checkpointer(ckpt_dir)
    ck.save(step, {"params": params}, {"step": step})
    ck.close()
    return ckpt_dir


def restore_params(ckpt_dir: str, cfg: LlamaConfig, shardings=None, step: int | None = None) -> dict:
    """Restore the parameters of a model checkpoint or of a training run's checkpoints (latest step
    by default), straight onto `shardings` (a pytree of NamedShardings) if given. A LoRA run stores
    only adapters: the base model it names is loaded and the adapters are merged into it."""
    from jaxtool.models import lora
    from jaxtool.models.llama import abstract_params

    meta = read_meta(ckpt_dir)
    abstract = abstract_params(cfg)
    if shardings is None:
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: dev, abstract)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    ck = Checkpointer(ckpt_dir, create=False)
    try:
        if "lora" not in meta:
            items, _ = ck.restore({"params": target}, step)
            return items["params"]
        spec = meta["lora"]
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shapes = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dev),
            jax.eval_shape(lambda: lora.init_adapters(cfg, spec["rank"], spec["targets"], jax.random.key(0))))
        items, _ = ck.restore({"adapters": shapes}, step)
        items["adapters"] = jax.device_get(items["adapters"])  # merged onto wherever the base lives
    finally:
        ck.close()
    from jaxtool.api import load_model

    base = load_model(meta["base_model"], dtype=cfg.param_dtype, shardings=shardings)
    return lora.merge(base.params, items["adapters"], spec["scale"])


def load_tokenizer(ckpt_dir: str):
    tdir = os.path.join(ckpt_dir, "tokenizer")
    if not os.path.isdir(tdir):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tdir)
