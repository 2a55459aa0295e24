"""DiaTool-DPO's training pipeline: continued pre-training → SFT → DiaTool-DPO (Jung et al. 2025,
§6.1 and App. C; Table 5 shows DPO alone, from the instruct model, collapsing to call accuracy 0.029).

A pipeline file names the starting model and the stages in order, each a training recipe
(`jaxtool train` YAML, path relative to the pipeline file) plus `key=value` overrides::

    model: models/Llama-3.1-8B-Instruct
    run_dir: runs/diatool_pipeline_llama3_8b
    stages:
      - {name: cpt, recipe: llama3_8b_cpt.yaml, text: data/cpt/corpus.jsonl}
      - {name: sft, recipe: llama3_8b_sft.yaml}
      - {name: dpo, recipe: llama3_8b.yaml}

`run_pipeline` trains the stages in order; stage k starts from stage k-1's exported HF model
(``model.path`` is set to it; the first stage starts from ``model``), writes to
``<run_dir>/<name>`` and exports its model (``export_hf`` forced on). A stage whose marker
``<run_dir>/<name>/stage_done.json`` exists for the same recipe, overrides and input model is reused
on a rerun, so an interrupted pipeline resumes at the stage that did not finish.

The CPT and SFT data are the user's own, in the shapes the paper describes: CPT on plain documents
(``text:`` a JSONL of ``{"text": ...}`` rows or a .txt file of documents separated by blank lines;
written as one-message conversations and trained with the `text` format — every token of a
document trained, no template), SFT on tool dialogues (any ``name:path`` source, e.g.
``conversations:`` or ``glaive:``), DiaTool-DPO on the builder's trajectory pairs
(`jaxtool data build-diatool`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Sequence

from jaxtool.config import load_config, read_yaml, to_dict
from jaxtool.errors import ConfigError, DataError

STAGE_KEYS = ("name", "recipe", "overrides", "text")


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    recipe: str                        # absolute path of the stage's training recipe
    overrides: tuple[str, ...] = ()    # key=value, applied after the recipe
    text: str | None = None            # CPT: plain documents, converted to the stage's training data


@dataclasses.dataclass(frozen=True)
class Pipeline:
    model: str
    run_dir: str
    stages: tuple[Stage, ...]


def load_pipeline(path: str, overrides: Sequence[str] = ()) -> Pipeline:
    """Read a pipeline file; `overrides` (``model=...``, ``run_dir=...``) replace its top-level keys."""
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such pipeline file")
    with open(path, encoding="utf-8") as fh:
        try:
            data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping with model, run_dir and stages")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in ("model", "run_dir"):
            raise ConfigError(f"pipeline override {item!r}: only model=... and run_dir=... can be set here "
                              "(a stage's own settings go in its recipe or its `overrides:` list)")
        data[key] = value
    unknown = sorted(set(data) - {"model", "run_dir", "stages"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; a pipeline has model, run_dir and stages")
    for key in ("model", "run_dir"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ConfigError(f"{path}: `{key}` must be a non-empty string")
    raw = data.get("stages")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: `stages` must be a non-empty list of {{name, recipe, overrides, text}}")
    base = os.path.dirname(os.path.abspath(path))
    stages, names = [], set()
    for i, st in enumerate(raw):
        where = f"{path}: stages[{i}]"
        if not isinstance(st, dict):
            raise ConfigError(f"{where} must be a mapping")
        bad = sorted(set(st) - set(STAGE_KEYS))
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad}; a stage has {list(STAGE_KEYS)}")
        name, recipe = st.get("name"), st.get("recipe")
        if not isinstance(name, str) or not name.isidentifier() or name in names:
            raise ConfigError(f"{where}.name must be a unique identifier, got {name!r}")
        names.add(name)
        if not isinstance(recipe, str) or not recipe:
            raise ConfigError(f"{where}.recipe must be a recipe file name")
        recipe = recipe if os.path.isabs(recipe) else os.path.join(base, recipe)
        if not os.path.isfile(recipe):
            raise ConfigError(f"{where}.recipe: {recipe}: no such file")
        ov = st.get("overrides") or []
        if not isinstance(ov, list) or not all(isinstance(o, str) and "=" in o for o in ov):
            raise ConfigError(f"{where}.overrides must be a list of key=value strings")
        text = st.get("text")
        if text is not None and (not isinstance(text, str) or not text):
            raise ConfigError(f"{where}.text must be a path to plain documents")
        stages.append(Stage(name, recipe, tuple(ov), text))
    return Pipeline(data["model"], data["run_dir"], tuple(stages))


def read_documents(path: str) -> list[str]:
    """Plain documents: a JSONL of ``{"text": ...}`` rows, or a text file with documents separated
    by blank lines. An empty or malformed row is an error naming file and line."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file (a CPT stage's `text:`)")
    docs: list[str] = []
    with open(path, encoding="utf-8") as fh:
        if path.endswith((".jsonl", ".json")):
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise DataError(f"{path}: line {n}: not JSON ({e})") from None
                text = row.get("text") if isinstance(row, dict) else None
                if not isinstance(text, str) or not text.strip():
                    raise DataError(f"{path}: line {n}: field 'text' must be a non-empty string")
                docs.append(text)
        else:
            docs = [d.strip() for d in fh.read().split("\n\n") if d.strip()]
    if not docs:
        raise DataError(f"{path}: no documents")
    return docs


def write_text_conversations(docs: Sequence[str], out_path: str) -> str:
    """Each document as a one-message conversation (the `conversations` source layout)."""
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"messages": [{"role": "assistant", "content": d}]}, ensure_ascii=False) + "\n")
    return out_path


def stage_config(stage: Stage, model_path: str, run_dir: str):
    """The stage's TrainConfig: its recipe + overrides, started from `model_path`, written to
    `run_dir`, exporting its HF model (the next stage's start)."""
    over = list(stage.overrides) + [f"model.path={model_path}", f"run_dir={run_dir}", "export_hf=true"]
    if stage.text is not None:
        data = write_text_conversations(read_documents(stage.text), os.path.join(run_dir, "cpt_data.jsonl"))
        over += [f"data.train=conversations:{data}", "data.format=text", "data.kind=sft"]
    return load_config(stage.recipe, over)


def _key(stage: Stage, model_path: str) -> str:
    blob = json.dumps([stage.name, dict(read_yaml(stage.recipe)["__flat__"]), list(stage.overrides), stage.text,
                       model_path], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def run_pipeline(p: Pipeline, *, train_fn: Callable | None = None, printer=print) -> list[dict[str, Any]]:
    """Train every stage in order, each from the previous stage's exported model (module docstring).
    Returns one record per stage: name, run_dir, the model it started from, its HF export, status."""
    if train_fn is None:
        from jaxtool.train import train as train_fn
    model = p.model
    out = []
    for st in p.stages:
        rd = os.path.join(p.run_dir, st.name)
        marker = os.path.join(rd, "stage_done.json")
        key = _key(st, model)
        if os.path.isfile(marker):
            with open(marker, encoding="utf-8") as fh:
                done = json.load(fh)
            if done.get("key") == key and done.get("hf_dir") and os.path.isdir(done["hf_dir"]):
                printer(f"== stage {st.name}: reusing {done['hf_dir']} ==")
                out.append({**done, "reused": True})
                model = done["hf_dir"]
                continue
        printer(f"== stage {st.name}: {os.path.basename(st.recipe)} from {model} ==")
        cfg = stage_config(st, model, rd)
        res = train_fn(cfg, printer=printer)
        if getattr(res, "status", "finished") != "finished" or not getattr(res, "hf_dir", None):
            raise ConfigError(f"stage {st.name} did not finish (status {getattr(res, 'status', '?')}); rerun the "
                              "same command to resume it")
        rec = {"stage": st.name, "recipe": st.recipe, "started_from": model, "run_dir": rd, "hf_dir": res.hf_dir,
               "steps": res.steps, "last_metrics": res.last_metrics, "key": key,
               "config": to_dict(cfg)}
        with open(marker, "w", encoding="utf-8") as fh:
            json.dump(rec, fh, indent=2, default=str)
        out.append({**rec, "reused": False})
        model = res.hf_dir
    return out


__all__ = ["Pipeline", "Stage", "load_pipeline", "read_documents", "run_pipeline", "stage_config",
           "write_text_conversations"]
