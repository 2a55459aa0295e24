"""Typed run configuration: YAML files in `configs/` + `key=value` overrides -> dataclasses.

    cfg = load_config("configs/quickstart.yaml", ["optim.lr=1e-4", "loss.beta=0.1"])

Every key is checked against the dataclass fields: an unknown or mistyped key is an error naming
the closest valid key; a value that does not parse as the field's type is an error naming the key
and the expected type. A YAML file may name a `base:` file (relative to itself) whose values it
overrides, so ablations are a few lines on top of a recipe.

`loss:` is a tagged union over the objectives of `jaxtool.objectives`: `loss.type` picks one, and the
other `loss.*` keys are that objective's typed hyper-parameters (plus `reference`, `max_turns`), so
e.g. `loss.gamma` is SimPO's target margin under `type: simpo` and the turn discount under
`type: diatool_dpo` — each documented on its own dataclass.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from jaxtool import recipe_yaml
from jaxtool.errors import ConfigError


@dataclasses.dataclass
class ModelConfig:
    path: str = "smollm2"          # HF dir, .gguf, jaxtool checkpoint, or "smollm2" (embedded default)
    param_dtype: str = "float32"   # stored parameters
    compute_dtype: str = "auto"  # matmuls: "auto" = bfloat16 on GPU/TPU, float32 on CPU; or "float32" / "bfloat16"
    remat: str = "none"            # none | full | dots | dots_no_batch (projections saved, attention recomputed)
    attention: str = "auto"        # auto (cuDNN flash on GPU, splash on TPU, XLA on CPU) | xla | cudnn | splash
    logits_chunk: int = 1024       # tokens per chunk of the output layer + softmax in the loss; 0 = full logits


@dataclasses.dataclass
class LoraConfig:
    enabled: bool = False
    rank: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = ()  # projections to adapt; empty = every one the model family lets LoRA adapt
    base_quant: str = "none"       # frozen base storage: none | int8 | nf4 (QLoRA: dequantised in each matmul)


@dataclasses.dataclass
class DataConfig:
    kind: str = "sft"              # sft | preference
    train: str = ""                # source spec: "name:path" (see `jaxtool data inspect`), or a path
    valid: str = ""                # optional held-out set, same kind
    format: str = "hermes"         # chat format (jaxtool.data.formats)
    max_length: int = 1024         # longest tokenized example (tokens)
    max_prompt_length: int = 0     # drop (and count) examples whose prompt (tokens before the first
                                   # assistant turn) is longer; 0 = no limit
    truncation: str = "drop"       # drop | drop_oldest_turns
    packing: bool = False          # SFT only: pack several examples per row
    bucket_multiple: int = 128     # padding buckets (fewer shapes, fewer recompiles)
    limit: int = 0                 # use only the first N examples (0 = all)
    on_bad_row: str = "skip"       # skip (count by reason, report printed and written) | error
    shuffle: bool = True


@dataclasses.dataclass
class OptimConfig:
    lr: float = 1e-5
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "linear"       # linear (warmup then linear decay to 0) | cosine | constant
    warmup_steps: int = 0
    warmup_ratio: float = 0.0      # used when warmup_steps is 0
    grad_clip: float = 1.0         # global-norm clip; 0 = off
    grad_accum: int = 1            # micro-batches per optimizer step


@dataclasses.dataclass
class LossConfig:
    """`loss:` — the objective (`type`, an entry of `jaxtool.objectives`) and its typed
    hyper-parameters (`params`); `loss.beta` etc. read through to `params`."""

    type: str = "sft"              # an objective of jaxtool.objectives (sft, dpo, simpo, diatool_dpo, ...)
    reference: str = "precomputed"  # precomputed (one pass before training) | online (frozen params)
    max_turns: int = 0             # 0 = from the data
    params: Any = None             # the objective's hyper-parameter dataclass (built by load_config)

    def __post_init__(self):
        if self.params is None:
            from jaxtool import objectives

            self.params = objectives.make_hparams(self.type)

    def __getattr__(self, name: str):
        params = self.__dict__.get("params")
        if params is not None and name in {f.name for f in dataclasses.fields(params)}:
            return getattr(params, name)
        raise AttributeError(f"loss.{name}: not a hyper-parameter of loss.type={self.__dict__.get('type')!r}")

    @property
    def objective(self):
        from jaxtool import objectives

        return objectives.get(self.type)

    def flat(self) -> dict:
        """{type, reference, max_turns, <hyper-parameters>} as written in YAML."""
        return {"type": self.type, "reference": self.reference, "max_turns": self.max_turns,
                **dataclasses.asdict(self.params)}


LOSS_COMMON = ("type", "reference", "max_turns")


@dataclasses.dataclass
class MeshConfig:
    data: int = -1
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass
class TrainConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    batch_size: int = 8            # global batch (pairs for preference training)
    epochs: int = 1
    max_steps: int = 0             # 0 = as many as the epochs give
    seed: int = 0
    run_dir: str = "runs/run"
    save_every: int = 0            # 0 = only at the end (and on SIGTERM/SIGINT)
    keep: int = 3                  # checkpoints kept
    log_every: int = 1
    eval_every: int = 0            # 0 = only at the end (when data.valid is set)
    export_hf: bool = False        # write <run_dir>/hf at the end (LoRA merged)
    selective_logits: bool = True  # output layer + softmax only at trained (assistant) positions
    progress: bool = True



def train_config(**sections) -> TrainConfig:
    """A TrainConfig from keyword sections, for code that builds recipes (the quickstart's and the
    experiments' stages): ``train_config(lora=dict(enabled=True, rank=16), optim=dict(lr=1e-3),
    loss=dict(type="diatool_dpo", beta=0.5), batch_size=4)``. ``loss`` is the tagged union: its
    ``type`` picks the hyper-parameter dataclass of the other keys."""
    from jaxtool import objectives

    c = TrainConfig()
    for section, values in sections.items():
        if section == "loss":
            values = dict(values)
            kind = values.pop("type")
            common = {k: values.pop(k) for k in LOSS_COMMON if k in values}
            c.loss = LossConfig(type=kind, params=objectives.make_hparams(kind, values), **common)
        elif isinstance(values, dict):
            setattr(c, section, dataclasses.replace(getattr(c, section), **values))
        else:
            setattr(c, section, values)
    return c

CHOICES = {
    "model.remat": ("none", "full", "dots", "dots_no_batch"),
    "model.attention": ("auto", "xla", "cudnn", "splash"),
    "lora.base_quant": ("none", "int8", "nf4"),
    "model.param_dtype": ("float32", "bfloat16"),
    "model.compute_dtype": ("float32", "bfloat16", "auto"),   # auto: bfloat16 on GPU/TPU, float32 on CPU
    "data.kind": ("sft", "preference"),
    "data.truncation": ("drop", "drop_oldest_turns"),
    "data.on_bad_row": ("error", "skip"),
    "optim.schedule": ("linear", "cosine", "constant"),
    "loss.reference": ("precomputed", "online"),
}


# --------------------------------------------------------------------------------------------

def _fields(cls) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _all_keys(cls, prefix="") -> list[str]:
    keys = []
    for name, tp in _fields(cls).items():
        if tp is LossConfig:
            keys += [f"{prefix}{name}.{k}" for k in _loss_keys()]
        elif dataclasses.is_dataclass(tp):
            keys += _all_keys(tp, f"{prefix}{name}.")
        elif name != "params":
            keys.append(prefix + name)
    return keys


def _loss_keys() -> list[str]:
    """Every key `loss:` may hold under some objective (for suggestions)."""
    from jaxtool import objectives

    keys = list(LOSS_COMMON)
    for name in objectives.names():
        keys += [k for k in objectives.hparam_fields(name) if k not in keys]
    return keys


# common names from other trainers -> ours (used only to suggest the right key)
SYNONYMS = {
    "learning_rate": "lr", "max_grad_norm": "grad_clip", "clip": "grad_clip", "num_epochs": "epochs",
    "gradient_accumulation_steps": "grad_accum", "grad_accumulation": "grad_accum", "batch": "batch_size",
    "train_batch_size": "batch_size", "max_seq_len": "max_length", "max_seq_length": "max_length",
    "seq_len": "max_length", "lr_scheduler_type": "schedule", "scheduler": "schedule", "warmup": "warmup_steps",
    "adam_beta1": "b1", "adam_beta2": "b2", "adam_epsilon": "eps", "lora_r": "rank", "r": "rank",
    "lora_alpha": "alpha", "target_modules": "targets", "output_dir": "run_dir", "save_steps": "save_every",
    "logging_steps": "log_every", "eval_steps": "eval_every", "loss_type": "type", "rho": "margin",
}


def _unknown(key: str, cls, where: str) -> ConfigError:
    keys = _all_keys(cls)
    *section, last = key.split(".")
    prefix = ".".join(section) + "." if section else ""
    in_section = [k for k in keys if k.startswith(prefix) and "." not in k[len(prefix):]] if prefix else \
        [k for k in keys if "." not in k]
    close: list[str] = []
    norm = last.lower().replace("-", "_")
    target = SYNONYMS.get(norm)
    if target is None:  # a near-miss of a synonym ("learning_rat") means what the synonym means
        near = difflib.get_close_matches(norm, list(SYNONYMS), n=1, cutoff=0.85)
        target = SYNONYMS[near[0]] if near else None
    if target:
        close = [k for k in in_section if k == prefix + target] or [k for k in keys if k.rsplit(".", 1)[-1] == target]
    if not close and in_section:
        names = [k[len(prefix):] for k in in_section]
        close = [prefix + n for n in difflib.get_close_matches(last, names, n=1, cutoff=0.5)]
    if not close:  # right name, wrong section (e.g. "lr" for "optim.lr")
        close = [k for k in keys if k.rsplit(".", 1)[-1] == (target or last)]
    if not close:
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def _coerce(value: Any, tp, key: str, where: str):
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], key, where)
    if origin is tuple or tp is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.strip("[]()").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} expects a list, got {value!r}")
        inner = get_args(tp)[0] if get_args(tp) else str
        return tuple(_coerce(v, inner, key, where) for v in value)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
                return value.lower() in ("true", "yes", "1", "on")
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            v = float(value)
            if not math.isfinite(v):
                raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
            return v
        if tp is str:
            if isinstance(value, (dict, list)) or value is None:  # null would become the string "None"
                raise ValueError
            return str(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{where}: {key} expects {tp.__name__}, got {value!r}") from None
    return value


def _apply(obj, key: str, value: Any, where: str, root_cls) -> None:
    parts = key.split(".")
    target = obj
    for i, p in enumerate(parts[:-1]):
        fields = _fields(type(target))
        if p not in fields or not dataclasses.is_dataclass(fields[p]):
            raise _unknown(key, root_cls, where)
        target = getattr(target, p)
    fields = _fields(type(target))
    name = parts[-1]
    if name not in fields or dataclasses.is_dataclass(fields[name]):
        raise _unknown(key, root_cls, where)
    v = _coerce(value, fields[name], key, where)
    if key in CHOICES and v not in CHOICES[key]:
        raise ConfigError(f"{where}: {key} must be one of {CHOICES[key]}, got {v!r}")
    setattr(target, name, v)


def _flatten(d: dict, prefix="") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((prefix + str(k), v))
    return out


def read_yaml(path: str, _seen: tuple[str, ...] = ()) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such config file")
    real = os.path.realpath(path)
    if real in _seen:
        raise ConfigError(f"{path}: `base:` chain loops back to itself ({' -> '.join(_seen + (real,))})")
    try:
        with open(path, encoding="utf-8") as fh:
            data = recipe_yaml.load(fh, path) or {}  # duplicate keys, deep nesting, huge ints: named
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{path}: `base:` must be one file name (relative to this file), got {base!r}")
        merged = dict(read_yaml(os.path.join(os.path.dirname(path), base), _seen + (real,))["__flat__"])
        merged.update(dict(_flatten(data)))
        return {"__flat__": merged}
    return {"__flat__": dict(_flatten(data))}


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    try:
        value = recipe_yaml.load(raw, f"override {item[:60]!r}") if raw.strip() else ""
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({first}); quote it to pass a "
                          "string") from None
    return key.strip(), value


def load_config(path: str | None = None, overrides: typing.Sequence[str] = (), cls=TrainConfig):
    """Build `cls` from an optional YAML file and `key=value` overrides (later wins)."""
    cfg = cls()
    items: list[tuple[str, Any, str]] = []
    if path:
        items += [(k, v, path) for k, v in read_yaml(path)["__flat__"].items()]
    items += [(*_parse_override(item), "command line") for item in overrides]
    loss_paths = _loss_paths(cls)                  # e.g. ["loss"], or ["sft.loss", "dpo.loss"]
    loss_items: dict[str, dict[str, tuple[Any, str]]] = {lp: {} for lp in loss_paths}
    for key, value, where in items:
        lp = next((lp for lp in loss_paths if key.startswith(lp + ".")), None)
        rest = key[len(lp) + 1:] if lp else ""
        if lp and rest not in LOSS_COMMON:
            loss_items[lp][rest] = (value, where)   # hyper-parameters: typed once loss.type is known
            continue
        _apply(cfg, key, value, where, cls)
    for lp in loss_paths:
        target = cfg
        for part in lp.split("."):
            target = getattr(target, part)
        _build_loss(target, loss_items[lp], lp, cls)
    validate(cfg)
    return cfg


def _loss_paths(cls, prefix: str = "") -> list[str]:
    out = []
    for name, tp in _fields(cls).items():
        if tp is LossConfig:
            out.append(prefix + name)
        elif dataclasses.is_dataclass(tp):
            out += _loss_paths(tp, f"{prefix}{name}.")
    return out


def _build_loss(lc: LossConfig, items: dict[str, tuple[Any, str]], prefix: str, root_cls) -> None:
    from jaxtool import objectives

    obj = objectives.get(lc.type)
    hints = get_type_hints(obj.hparams)
    values = {}
    for name, (value, where) in items.items():
        key = f"{prefix}.{name}"
        if name not in hints:
            if name in _loss_keys():
                raise ConfigError(f"{where}: {key} is not a hyper-parameter of loss.type={lc.type!r} "
                                  f"(its keys: {', '.join(list(hints) + list(LOSS_COMMON))})")
            raise _unknown(key, root_cls, where)
        values[name] = _coerce(value, hints[name], key, where)
    # keys not given keep the config's current values (a nested config's own defaults, e.g. the
    # quickstart's DiaTool-DPO margin), unless loss.type changed to an objective with other keys
    if isinstance(lc.params, obj.hparams):
        values = {**dataclasses.asdict(lc.params), **values}
    lc.params = obj.hparams(**values)


def validate(cfg, prefix: str = "") -> None:
    """Range checks of a TrainConfig that the types alone don't catch (named keys, before any work);
    TrainConfigs nested in another config (e.g. the quickstart's `sft`, `dpo`) are checked too."""
    if not isinstance(cfg, TrainConfig):
        if dataclasses.is_dataclass(cfg):
            for f in dataclasses.fields(cfg):
                v = getattr(cfg, f.name)
                if dataclasses.is_dataclass(v) and not isinstance(v, type):
                    validate(v, f"{prefix}{f.name}.")
        return
    def need(ok: bool, key: str, msg: str) -> None:  # noqa: E306
        if not ok:
            raise ConfigError(f"{prefix}{key} {msg}")
    need(cfg.batch_size >= 1, "batch_size", f"must be >= 1, got {cfg.batch_size}")
    need(cfg.epochs >= 1, "epochs", f"must be >= 1, got {cfg.epochs}")
    need(cfg.max_steps >= 0, "max_steps", f"must be >= 0 (0 = as many as the epochs give), got {cfg.max_steps}")
    need(cfg.save_every >= 0, "save_every", f"must be >= 0 (0 = only at the end), got {cfg.save_every}")
    need(cfg.eval_every >= 0, "eval_every", f"must be >= 0 (0 = only at the end), got {cfg.eval_every}")
    need(cfg.log_every >= 1, "log_every", f"must be >= 1, got {cfg.log_every}")
    need(cfg.keep >= 1, "keep", f"must be >= 1 (checkpoints kept), got {cfg.keep}")
    need(bool(cfg.run_dir) and isinstance(cfg.run_dir, str), "run_dir", f"must be a directory path, got {cfg.run_dir!r}")
    need(cfg.optim.grad_accum >= 1, "optim.grad_accum", f"must be >= 1, got {cfg.optim.grad_accum}")
    need(cfg.optim.lr >= 0, "optim.lr", f"must be >= 0, got {cfg.optim.lr}")
    need(0.0 <= cfg.optim.warmup_ratio <= 1.0, "optim.warmup_ratio", f"must lie in [0, 1], got {cfg.optim.warmup_ratio}")
    need(cfg.optim.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {cfg.optim.warmup_steps}")
    need(cfg.optim.grad_clip >= 0, "optim.grad_clip", f"must be >= 0 (0 = off), got {cfg.optim.grad_clip}")
    need(cfg.lora.rank >= 1, "lora.rank", f"must be >= 1, got {cfg.lora.rank}")
    need(cfg.lora.base_quant == "none" or cfg.lora.enabled, "lora.base_quant",
         f"={cfg.lora.base_quant!r} quantises the frozen base of a LoRA run: set lora.enabled=true")
    need(cfg.model.logits_chunk >= 0, "model.logits_chunk", f"must be >= 0 (0 = full logits), got {cfg.model.logits_chunk}")
    need(cfg.data.limit >= 0, "data.limit", f"must be >= 0 (0 = all), got {cfg.data.limit}")
    need(cfg.data.max_length >= 2, "data.max_length", f"must be >= 2, got {cfg.data.max_length}")
    need(cfg.data.max_prompt_length >= 0, "data.max_prompt_length", f"must be >= 0, got {cfg.data.max_prompt_length}")
    need(cfg.data.bucket_multiple >= 1, "data.bucket_multiple", f"must be >= 1, got {cfg.data.bucket_multiple}")
    need(cfg.loss.max_turns >= 0, "loss.max_turns", f"must be >= 0 (0 = from the data), got {cfg.loss.max_turns}")
    for name in ("data", "fsdp", "tensor"):
        v = getattr(cfg.mesh, name)
        need(v == -1 or v >= 1, f"mesh.{name}", f"must be >= 1 or -1 (all remaining devices), got {v}")


def to_dict(cfg) -> dict:
    """Plain nested dict of a config (the loss written flat, as in YAML)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, LossConfig):
            out[f.name] = v.flat()
        elif dataclasses.is_dataclass(v):
            out[f.name] = to_dict(v)
        else:
            out[f.name] = v
    return out


def dump_yaml(cfg) -> str:
    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, tuple):
            return list(x)
        return x

    return yaml.safe_dump(plain(to_dict(cfg)), sort_keys=False)
