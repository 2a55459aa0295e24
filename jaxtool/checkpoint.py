"""Orbax checkpoints of jaxtool models and train states, with an integrity manifest per step.

A jaxtool checkpoint directory::

    DIR/jaxtool.json                   {"format": "jaxtool", "version": 1, "model": <LlamaConfig>, ...}
    DIR/tokenizer/                     the tokenizer (save_pretrained layout), if any
    DIR/<step>/state                   Orbax PyTree: {"params": ...} or a whole train state
    DIR/<step>/meta                    JSON: step, RNG, data-iterator state, anything JSON-able
    DIR/<step>/jaxtool_manifest.json   size and SHA-256 of every other file of the step

Orbax writes each step into a temporary directory and renames it only once every item is on disk
(and on multi-host, every process has finished), so a half-written step is never listed or
restored. `keep` keeps the newest N steps. Restoring takes an abstract tree whose leaves carry
their target `NamedSharding`: arrays come back straight onto the mesh.

Integrity. Orbax's atomic rename protects against a crash while saving, not against what happens to
the files afterwards: a truncated copy, a deleted file, a flipped bit on disk load silently (NaN or
plain wrong weights) or fail deep inside TensorStore. So once Orbax has finalised a step, process 0
(after the save barrier, on multi-host) writes the step's manifest — every file's size and hash —
atomically (temporary file + rename), last. Restoring first checks the files it is about to read
against the manifest; a mismatch is a `CheckpointCorruptError` naming the step and the file.
`Checkpointer.restore_newest_good` then falls back to the newest step that checks out and says so
(a resumed run, `jaxtool convert orbax-to-hf` without `--step`). Restoring only the parameters
(`restore_params`, conversion) neither reads nor checks the step's training metadata (`meta`,
optimizer state), so damage there does not block exporting the weights. A step without a manifest
(written by an older jaxtool, or killed between Orbax's rename and the manifest) is restored
unverified with a warning (refused with `--require-manifest` / JAXTOOL_REQUIRE_MANIFEST=1); if it
cannot be read, that too is a `CheckpointCorruptError`. Every file of a restored item must be listed
in the manifest: one that is not (a manifest emptied or edited) is refused like a damaged file. The
manifest detects damage, not tampering — it is not signed.

The hash is SHA-256 with 8 MiB reads, several files at once: hashlib releases the GIL, and SHA-256
runs on the CPU's SHA extensions (measured here at 2× blake2b, see tests/test_checkpoint_integrity.py).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
from typing import Any, Callable, Iterable

import jax

from jaxtool.errors import CheckpointCorruptError, CheckpointError, JaxtoolError
from jaxtool.models.family import family_of, get_family

FORMAT = "jaxtool"
META_FILE = "jaxtool.json"
MANIFEST = "jaxtool_manifest.json"
HASH = "sha256"
_CHUNK = 8 << 20
REQUIRE_MANIFEST_ENV = "JAXTOOL_REQUIRE_MANIFEST"

log = logging.getLogger(__name__)
logging.getLogger("absl").setLevel(logging.WARNING)


def _not_disk_full(record: logging.LogRecord) -> bool:
    """Drop Orbax's logged tracebacks of a full disk (one per background thread, ~300 lines): the
    save raises one `CheckpointError` naming the directory instead (`Checkpointer._named_os_errors`)."""
    exc = record.exc_info[1] if record.exc_info else None
    return "No space left on device" not in f"{record.getMessage()} {exc}"


logging.getLogger("absl").addFilter(_not_disk_full)


def is_checkpoint_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, META_FILE))


def write_meta(ckpt_dir: str, cfg, extra: dict | None = None) -> None:
    os.makedirs(ckpt_dir, exist_ok=True)
    meta = {"format": FORMAT, "version": 1, "model": json.loads(cfg.to_json())}
    meta.update(extra or {})
    tmp = os.path.join(ckpt_dir, f"{META_FILE}.tmp.{jax.process_index()}.{os.getpid()}")  # one per process: hosts of a pod write it at once
    with open(tmp, "w") as fh:
        json.dump(meta, fh, indent=2)
    os.replace(tmp, os.path.join(ckpt_dir, META_FILE))


def read_meta(ckpt_dir: str) -> dict:
    path = os.path.join(ckpt_dir, META_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{ckpt_dir}: not a jaxtool checkpoint directory (no {META_FILE})")
    meta = read_json(path, "checkpoint metadata")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def read_json(path: str, what: str) -> Any:
    """A JSON file (UTF-8) or a CheckpointError naming the file, what it is and what is wrong."""
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: {what} is not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: {what} is not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: {what} is not readable JSON ({type(e).__name__})") from None


def read_config(ckpt_dir: str, **overrides):
    """The architecture config stored with a checkpoint (its family from `model_type`)."""
    where = f"{ckpt_dir}/{META_FILE}"
    try:
        model = read_meta(ckpt_dir)["model"]
        if not isinstance(model, dict):
            raise TypeError(f"'model' must be an object, got {type(model).__name__}")
        cfg = get_family(model.get("model_type", "llama"), where).config_cls.from_dict(model)
    except JaxtoolError as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{where}: bad model config ({e})") from None
    except (KeyError, TypeError, AttributeError, ValueError, ArithmeticError) as e:
        raise CheckpointError(f"{where}: bad model config ({type(e).__name__}: {e})") from None
    return cfg.replace(**overrides) if overrides else cfg


# ------------------------------------------------------------------------------------------------
# integrity manifests
# ------------------------------------------------------------------------------------------------

def _file_hash(path: str, algo: str = HASH) -> str:
    h = hashlib.new(algo)
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _hash_files(paths: list[str], algo: str = HASH) -> list[str]:
    if len(paths) <= 1:
        return [_file_hash(p, algo) for p in paths]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1, len(paths))) as pool:
        return list(pool.map(lambda p: _file_hash(p, algo), paths))


def _step_files(step_path: str) -> list[str]:
    """Paths (relative, '/'-separated, sorted) of every file of a step, the manifest excluded."""
    out = []
    for root, dirs, files in os.walk(step_path):
        dirs.sort()
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), step_path).replace(os.sep, "/")
            if rel != MANIFEST and not rel.startswith(MANIFEST + ".tmp"):
                out.append(rel)
    return sorted(out)


def write_manifest(step_path: str, step: int | None = None) -> dict:
    """Write `<step_path>/jaxtool_manifest.json` (sizes and hashes of every file) atomically."""
    rels = _step_files(step_path)
    full = [os.path.join(step_path, r) for r in rels]
    digests = _hash_files(full)
    manifest = {"format": "jaxtool-manifest", "version": 1, "step": step, "hash": HASH,
                "files": {r: {"size": os.path.getsize(p), HASH: d} for r, p, d in zip(rels, full, digests)}}
    tmp = os.path.join(step_path, f"{MANIFEST}.tmp.{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, os.path.join(step_path, MANIFEST))
    try:  # make the rename itself durable
        fd = os.open(step_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return manifest


def verify_step(step_path: str, step: int, items: Iterable[str] | None = None, where: str | None = None,
                require_manifest: bool | None = None) -> bool:
    """Check a step's files against its manifest: only the files of `items` (top-level entries of the
    step, e.g. "params"), or all of them when `items` is None. Every file on disk under those items
    must be listed (a manifest that omits a file — `"files": {}` — covers nothing and is refused), and
    every listed file must match its size and hash. True if checked; False if the step has no manifest
    (restored unverified, with a warning; `require_manifest` — default: the environment variable
    JAXTOOL_REQUIRE_MANIFEST=1 — refuses it instead). A damaged step raises `CheckpointCorruptError`
    naming step and file. The manifest detects damage (bit rot, truncation, deletion, a partial copy),
    not tampering: whoever can rewrite the files can rewrite the manifest too."""
    where = where or os.path.dirname(step_path)
    mpath = os.path.join(step_path, MANIFEST)
    if not os.path.isfile(mpath):
        if require_manifest is None:
            require_manifest = os.environ.get(REQUIRE_MANIFEST_ENV, "") not in ("", "0")
        if require_manifest:
            raise CheckpointCorruptError(
                f"{where}: checkpoint step {step} has no integrity manifest ({MANIFEST}); refused because "
                f"--require-manifest / {REQUIRE_MANIFEST_ENV}=1 is set (drop it to restore the step unverified)",
                step=step, file=MANIFEST)
        log.warning("%s: checkpoint step %s has no integrity manifest (%s): restoring it unverified "
                    "(--require-manifest or %s=1 refuses such steps)", where, step, MANIFEST, REQUIRE_MANIFEST_ENV)
        return False

    def bad(file: str, why: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(f"{where}: checkpoint step {step} is damaged: {file}: {why}", step=step, file=file)

    try:
        manifest = read_json(mpath, "integrity manifest")
        files = manifest["files"]
        algo = manifest.get("hash", HASH)
        if not isinstance(files, dict) or algo not in hashlib.algorithms_available:
            raise TypeError
        checks = [(rel, int(info["size"]), str(info[algo])) for rel, info in files.items()]
    except (CheckpointError, KeyError, TypeError, ValueError, AttributeError):
        raise bad(MANIFEST, "the integrity manifest itself is unreadable") from None
    wanted = None if items is None else set(items)
    if wanted is not None:
        checks = [c for c in checks if "/" in c[0] and c[0].split("/", 1)[0] in wanted]
    listed = {c[0] for c in checks}
    for rel in _step_files(step_path):  # coverage: a file the manifest does not list is not verified
        if (wanted is None or ("/" in rel and rel.split("/", 1)[0] in wanted)) and rel not in listed:
            raise bad(rel, "file is not listed in the integrity manifest (the manifest was altered or the "
                           "file added after the save)")
    for rel, size, _ in checks:
        path = os.path.join(step_path, rel)
        if not os.path.isfile(path):
            raise bad(rel, "file is missing")
        actual = os.path.getsize(path)
        if actual != size:
            raise bad(rel, f"file is {actual} bytes, {size} were written (truncated or overwritten)")
    digests = _hash_files([os.path.join(step_path, rel) for rel, _, _ in checks], algo)
    for (rel, _, want), got in zip(checks, digests):
        if got != want:
            raise bad(rel, f"contents differ from what was written ({algo} mismatch: bit rot or an overwrite)")
    return True


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


class Checkpointer:
    """Thin wrapper over `orbax.checkpoint.CheckpointManager` for one checkpoint directory, adding
    a manifest per step (written after Orbax finalises it) and checking it on restore."""

    def __init__(self, ckpt_dir: str, keep: int | None = None, create: bool = True):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.dir = os.path.abspath(ckpt_dir)
        if not create and not os.path.isdir(self.dir):
            raise CheckpointError(f"{ckpt_dir}: no such checkpoint directory")
        opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
        self._mngr = ocp.CheckpointManager(self.dir, options=opts)
        self._unmanifested: list[int] = []

    def steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def step_path(self, step: int) -> str:
        return os.path.join(self.dir, str(step))

    def save(self, step: int, items: dict[str, Any], meta: dict | None = None, wait: bool = True) -> None:
        """Save pytrees `items` (e.g. {"params": ..., "opt_state": ...}) and JSON `meta` as `step`;
        its manifest follows once Orbax has finalised it (at once with `wait`, else at the next
        `save` / `wait` / `close`)."""
        ocp = self._ocp
        self._write_manifests()
        args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
        args["meta"] = ocp.args.JsonSave(meta or {})
        with self._named_os_errors(step):
            self._mngr.save(step, args=ocp.args.Composite(**args), force=True)
        self._unmanifested.append(step)
        if wait:
            self._write_manifests()

    def _named_os_errors(self, step):
        """Turn a failed write (disk full, permission, quota) into one `CheckpointError` naming the
        directory, with Orbax's temporary step directories removed."""
        import contextlib
        import errno
        import glob
        import shutil

        @contextlib.contextmanager
        def guard():
            try:
                yield
            except JaxtoolError:
                raise
            except Exception as e:  # noqa: BLE001 - Orbax wraps OSErrors in its own types
                os_err, cur = None, e
                while cur is not None and os_err is None:
                    os_err = cur if isinstance(cur, OSError) else None
                    cur = cur.__cause__ or cur.__context__
                text = str(e)
                full = (os_err is not None and os_err.errno in (errno.ENOSPC, errno.EDQUOT)) \
                    or "No space left on device" in text
                if os_err is None and not full:
                    raise
                for tmp in glob.glob(os.path.join(self.dir, "*.orbax-checkpoint-tmp*")):
                    shutil.rmtree(tmp, ignore_errors=True)
                why = ("no space left on the device" if full else
                       f"{os_err.strerror or os_err}" + (f" ({os_err.filename})" if os_err.filename else ""))
                raise CheckpointError(f"{self.dir}: cannot save checkpoint step {step}: {why}; the partial step "
                                      "was removed (free space, or set run_dir on a disk with room, then "
                                      "resume with --resume)") from None

        return guard()

    def _write_manifests(self) -> None:
        """Manifests of the finished saves: after Orbax's finalisation (and on multi-host its
        barrier), by process 0, then a barrier so no process reads a step before its manifest."""
        if not self._unmanifested:
            return
        with self._named_os_errors(self._unmanifested[-1]):
            self._mngr.wait_until_finished()
        present = set(self.steps())
        if jax.process_index() == 0:
            for step in self._unmanifested:
                if step in present and os.path.isdir(self.step_path(step)):  # `keep` may have removed it
                    write_manifest(self.step_path(step), step)
        self._unmanifested = []
        _barrier("jaxtool_checkpoint_manifest")

    def verify(self, step: int, items: Iterable[str] | None = None) -> bool:
        """`verify_step` on one step of this directory."""
        return verify_step(self.step_path(step), step, items, where=self.dir)

    def restore(self, abstract_items: dict[str, Any], step: int | None = None, *, with_meta: bool = True,
                verify: str = "items") -> tuple[dict, dict]:
        """Restore the named items onto the shardings carried by their ShapeDtypeStructs (items not
        named are not read), plus the step's JSON meta (`with_meta`; else {}).

        verify: "items" checks the files of the items read against the step's manifest, "all" every
        file of the step, "none" nothing. A damaged step is a `CheckpointCorruptError`."""
        ocp = self._ocp
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{self.dir}: holds no finished checkpoint step")
        if step not in self.steps():
            raise CheckpointError(f"{self.dir}: no step {step}; available: {self.steps()}")
        names = list(abstract_items) + (["meta"] if with_meta else [])
        verified = verify != "none" and self.verify(step, None if verify == "all" else names)
        args = {name: ocp.args.StandardRestore(tree) for name, tree in abstract_items.items()}
        if with_meta:
            args["meta"] = ocp.args.JsonRestore()
        try:
            out = self._mngr.restore(step, args=ocp.args.Composite(**args))
        except JaxtoolError:
            raise
        except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise many types, even a bare Exception
            if verified:  # the files are as written: the step does not fit what the caller expects
                raise CheckpointError(f"{self.dir}: step {step} does not match the expected structure "
                                      f"({_short(e)})") from None
            raise CheckpointCorruptError(f"{self.dir}: checkpoint step {step} could not be read (it has no "
                                         f"integrity manifest to name the damaged file): {_short(e)}",
                                         step=step) from None
        meta = out["meta"] if with_meta else {}
        if with_meta and not isinstance(meta, dict):
            raise CheckpointCorruptError(f"{self.dir}: checkpoint step {step} is damaged: meta: expected a JSON "
                                         f"object, got {type(meta).__name__}", step=step, file="meta")
        return {name: out[name] for name in abstract_items}, meta

    def restore_newest_good(self, abstract_items: dict[str, Any], *, with_meta: bool = True, verify: str = "items",
                            warn: Callable[[str], None] | None = None
                            ) -> tuple[int, dict, dict, list[CheckpointCorruptError]]:
        """Restore the newest step that is intact: (step, items, meta, the damaged newer steps'
        errors). Each damaged step is reported through `warn` (default: a logged warning) with the
        step and file, and so is the step fallen back to."""
        warn = warn or log.warning
        damaged: list[CheckpointCorruptError] = []
        steps = sorted(self.steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"{self.dir}: holds no finished checkpoint step")
        for step in steps:
            try:
                items, meta = self.restore(abstract_items, step, with_meta=with_meta, verify=verify)
            except CheckpointCorruptError as e:
                damaged.append(e)
                warn(str(e))
                continue
            if damaged:
                warn(f"{self.dir}: falling back to step {step}, the newest intact step "
                     f"(damaged: {', '.join(f'step {e.step}' for e in damaged)})")
            return step, items, meta, damaged
        raise CheckpointCorruptError(f"{self.dir}: no intact checkpoint step to restore: "
                                     + "; ".join(f"step {e.step}: {e.file or 'unreadable'}" for e in damaged),
                                     step=damaged[0].step, file=damaged[0].file)

    def quarantine(self, step: int) -> str:
        """Move a damaged step aside (`<step>.damaged`, which Orbax does not list), so a resumed run
        can save that step number again; the files stay for inspection. Returns the new path."""
        src = self.step_path(step)
        dst = f"{src}.damaged"
        n = 1
        while os.path.exists(dst):
            dst = f"{src}.damaged.{n}"
            n += 1
        if jax.process_index() == 0 and os.path.isdir(src):
            os.replace(src, dst)
        _barrier(f"jaxtool_checkpoint_quarantine_{step}")
        self._mngr.reload()
        return dst

    def item_metadata(self, step: int | None = None):
        step = self.latest_step() if step is None else step
        return self._mngr.item_metadata(step)

    def wait(self) -> None:
        self._mngr.wait_until_finished()
        self._write_manifests()

    def close(self) -> None:
        self._write_manifests()
        self._mngr.close()


def abstract_like(tree, shardings=None):
    """ShapeDtypeStructs of `tree` (arrays or structs), carrying `shardings` if given."""
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def save_params(ckpt_dir: str, cfg, params: dict, tokenizer=None, step: int = 0,
                extra_meta: dict | None = None) -> str:
    """Save a model (params + config + tokenizer) as a jaxtool checkpoint directory."""
    write_meta(ckpt_dir, cfg, extra_meta)
    if tokenizer is not None and jax.process_index() == 0:
        tokenizer.save_pretrained(os.path.join(ckpt_dir, "tokenizer"))
    ck = Checkpointer(ckpt_dir)
    ck.save(step, {"params": params}, {"step": step})
    ck.close()
    return ckpt_dir


def _restore_one(ckpt_dir: str, name: str, target, step: int | None):
    """One item of a step (`step`, or the newest intact step), neither reading nor checking the
    step's training metadata: a damaged `meta` or optimizer state does not block the weights."""
    ck = Checkpointer(ckpt_dir, create=False)
    try:
        if step is None:
            _, items, _, _ = ck.restore_newest_good({name: target}, with_meta=False)
        else:
            items, _ = ck.restore({name: target}, step, with_meta=False)
    finally:
        ck.close()
    return items[name]


def restore_params(ckpt_dir: str, cfg, shardings=None, step: int | None = None, dtype="float32") -> dict:
    """Restore the parameters of a model checkpoint or of a full fine-tuning run's checkpoints
    (latest intact step by default), straight onto `shardings` (a pytree of NamedShardings) if
    given, as `dtype`. LoRA runs store only adapters: see `restore_adapters` (`jaxtool.load_model`
    merges them into the base model the run names)."""
    meta = read_meta(ckpt_dir)
    if "lora" in meta:
        raise CheckpointError(f"{ckpt_dir}: a LoRA run's checkpoint holds adapters, not parameters "
                              "(load it with jaxtool.load_model, which merges them into the base)")
    abstract = family_of(cfg).abstract_params(cfg, dtype)
    if shardings is None:
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: dev, abstract)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return _restore_one(ckpt_dir, "params", target, step)


def restore_adapters(ckpt_dir: str, cfg, step: int | None = None) -> tuple[dict, dict]:
    """(adapters on host, the run's LoRA spec {"rank", "alpha", "targets", "scale"}) of a LoRA run."""
    from jaxtool.models import lora

    meta = read_meta(ckpt_dir)
    spec = meta.get("lora")
    try:
        rank, targets, scale = int(spec["rank"]), list(spec["targets"]), float(spec["scale"])
        base = meta["base_model"]
        if rank < 1 or not isinstance(base, str) or not all(isinstance(t, str) for t in targets):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{ckpt_dir}/{META_FILE}: bad LoRA settings 'lora'={spec!r:.120}, "
                              f"'base_model'={meta.get('base_model')!r:.120}") from None
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    try:
        shapes = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dev),
            jax.eval_shape(lambda: lora.init_adapters(cfg, rank, targets, jax.random.key(0))))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{ckpt_dir}/{META_FILE}: LoRA targets {targets} do not fit the model ({e})") from None
    adapters = _restore_one(ckpt_dir, "adapters", shapes, step)
    return jax.device_get(adapters), {**spec, "rank": rank, "targets": targets, "scale": scale, "base_model": base}


def load_tokenizer(ckpt_dir: str):
    tdir = os.path.join(ckpt_dir, "tokenizer")
    if not os.path.isdir(tdir):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(tdir)
    except Exception as e:  # noqa: BLE001 - transformers/tokenizers raise many types for bad files
        raise CheckpointError(f"{tdir}: the tokenizer could not be loaded ({_short(e, 200)})") from None
