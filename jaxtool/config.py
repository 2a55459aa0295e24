"""Typed run configuration: YAML files in `configs/` + `key=value` overrides -> dataclasses.

    cfg = load_config("configs/quickstart.yaml", ["optim.lr=1e-4", "loss.beta=0.1"])

Every key is checked against the dataclass fields: an unknown or mistyped key is an error naming
the closest valid key; a value that does not parse as the field's type is an error naming the key
and the expected type. A YAML file may name a `base:` file (relative to itself) whose values it
overrides, so ablations are a few lines on top of a recipe.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from jaxtool.errors import ConfigError


@dataclasses.dataclass
class ModelConfig:
    path: str = "smollm2"          # HF dir, .gguf, jaxtool checkpoint, or "smollm2" (embedded default)
    param_dtype: str = "float32"   # stored parameters
    compute_dtype: str = "float32"  # matmuls ("bfloat16" for bf16 compute with float32 params)
    remat: str = "none"            # none | full | dots | dots_no_batch


@dataclasses.dataclass
class LoraConfig:
    enabled: bool = False
    rank: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


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
    on_bad_row: str = "error"      # error | skip
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
    type: str = "sft"              # sft | dpo | ipo | hinge | simpo | orpo | dmpo | diatool_dpo
    beta: float = 0.1
    gamma: float = 0.5             # turn discount (diatool_dpo, dmpo) / SimPO margin (simpo)
    margin: float = 0.0            # DiaTool-DPO rho
    use_phi: bool = True
    use_psi: bool = True
    label_smoothing: float = 0.0   # cDPO
    lam: float = 0.1               # ORPO lambda
    reference: str = "precomputed"  # precomputed (one pass before training) | online (frozen params)
    max_turns: int = 0             # 0 = from the data


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


LOSS_TYPES = ("sft", "dpo", "ipo", "hinge", "simpo", "orpo", "dmpo", "diatool_dpo")
CHOICES = {
    "model.remat": ("none", "full", "dots", "dots_no_batch"),
    "model.param_dtype": ("float32", "bfloat16"),
    "model.compute_dtype": ("float32", "bfloat16"),
    "data.kind": ("sft", "preference"),
    "data.truncation": ("drop", "drop_oldest_turns"),
    "data.on_bad_row": ("error", "skip"),
    "optim.schedule": ("linear", "cosine", "constant"),
    "loss.type": LOSS_TYPES,
    "loss.reference": ("precomputed", "online"),
}


# --------------------------------------------------------------------------------------------

def _fields(cls) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _all_keys(cls, prefix="") -> list[str]:
    keys = []
    for name, tp in _fields(cls).items():
        if dataclasses.is_dataclass(tp):
            keys += _all_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
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
    target = SYNONYMS.get(last.lower().replace("-", "_"))
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
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
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


def read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such config file")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    base = data.pop("base", None)
    if base:
        merged = dict(read_yaml(os.path.join(os.path.dirname(path), base))["__flat__"])
        merged.update(dict(_flatten(data)))
        return {"__flat__": merged}
    return {"__flat__": dict(_flatten(data))}


def load_config(path: str | None = None, overrides: typing.Sequence[str] = (), cls=TrainConfig):
    """Build `cls` from an optional YAML file and `key=value` overrides (later wins)."""
    cfg = cls()
    if path:
        for key, value in read_yaml(path)["__flat__"].items():
            _apply(cfg, key, value, path, cls)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        _apply(cfg, key.strip(), value, "command line", cls)
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg) -> str:
    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, tuple):
            return list(x)
        return x

    return yaml.safe_dump(plain(to_dict(cfg)), sort_keys=False)
