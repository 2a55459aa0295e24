"""Schema-Guided Dialogue (DSTC8, google-research-datasets/dstc8-schema-guided-dialogue) -> Conversations.

Input: a split directory of the official release (`schema.json` + `dialogues_*.json`), or one
`dialogues_NNN.json` file with `schema.json` beside it (or passed as `schema=`). Each dialogues file is a
JSON list of `{"dialogue_id", "services", "turns": [{"speaker": "USER"|"SYSTEM", "utterance",
"frames": [...]}]}`; the schema is a list of services with slots and intents. (The Hugging Face copy,
`schema_guided_dstc8`, is re-encoded column-wise by a loading script and is not read here.)

Conversion, one conversation per dialogue:

- tools: one per intent of each service the dialogue uses; parameters are the intent's required slots
  (`required`) and optional slots (with the schema's default as `default`), each a string with the slot
  description, and `enum` = the possible values of categorical slots. A tool is named after the intent
  (the `method` of SGD's service calls); if two services of one dialogue share an intent name, those tools
  are named `Service_N.Intent` (`qualify="always"` does that for every tool). `meta["tool_services"]` maps
  tool names to services.
- USER turn -> user message; its meta carries `frames` (the turn's frames as given: dialogue acts,
  slot spans, per-service state) and `dialogue_state` = the latest state of every service seen so far
  (`{service: {"active_intent", "requested_slots", "slot_values"}}`), which is what DST and ReAct
  targets need.
- SYSTEM turn -> for frames with a `service_call`: an assistant message calling `method(parameters)`
  (several frames -> parallel calls), then one tool message per call whose content is the JSON of
  `service_results` (`[]` when nothing matched); then the assistant message with the utterance, whose
  meta carries the frames (without the call and results, which are now messages).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, Mapping

from jaxtool.data.schema import Conversation, Message, Tool, ToolCall
from jaxtool.data.sources import _common
from jaxtool.data.sources.base import BadRow, LoadReport, read_records, require_field, require_mapping
from jaxtool.errors import ConfigError, DataError

SOURCE = "sgd"
RELEASE = "google-research-datasets/dstc8-schema-guided-dialogue"


def load(path_or_name: str | None = None, *, on_bad_row: str = "error", report: LoadReport | None = None,
         limit: int | None = None, schema: str | None = None, qualify: str = "auto") -> Iterator[Conversation]:
    """Conversations from an SGD split directory or dialogues file (see the module docstring)."""
    if qualify not in ("auto", "always"):
        raise ConfigError(f"sgd qualify must be 'auto' or 'always', got {qualify!r}")
    files, schema_path = locate(path_or_name, schema)
    services = load_schema(schema_path)
    rows = ((f"{os.path.basename(f)}:{i}", rec) for f in files for i, rec in read_records(f))
    return _common.iterate(SOURCE, rows, lambda i, r: convert(i, r, services, qualify=qualify),
                           on_bad_row=on_bad_row, report=report, limit=limit)


def locate(path: str | None, schema: str | None = None) -> tuple[list[str], str]:
    """`(dialogue files, schema file)` for a split directory or a single dialogues file."""
    if not path:
        raise DataError(f"sgd reads the official release files: give the split directory of {RELEASE}, "
                        "e.g. 'sgd:data/dstc8-schema-guided-dialogue/train'")
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.startswith("dialogues_") and f.endswith(".json"))
        if not files:
            raise DataError(f"{path}: no dialogues_*.json files (expected an SGD split directory of {RELEASE})")
        schema_path = schema or os.path.join(path, "schema.json")
    elif os.path.isfile(path):
        files = [path]
        schema_path = schema or os.path.join(os.path.dirname(path) or ".", "schema.json")
    else:
        raise DataError(f"{path}: no such file or directory (sgd reads the local files of {RELEASE}, "
                        "not a hub dataset)")
    if not os.path.isfile(schema_path):
        raise DataError(f"{schema_path}: SGD schema file not found (pass schema=PATH to the sgd source)")
    return files, schema_path


def load_schema(path: str) -> dict[str, dict]:
    """`{service_name: service}` from an SGD `schema.json`."""
    services = {}
    for i, svc in read_records(path):
        if not isinstance(svc, Mapping) or not isinstance(svc.get("service_name"), str):
            raise DataError(f"{path}: entry {i} is not a service with a 'service_name'")
        name = svc["service_name"]
        for key in ("slots", "intents"):
            if not isinstance(svc.get(key), list):
                raise DataError(f"{path}: service {name!r} has no list field {key!r}")
        slot_names = {s.get("name") for s in svc["slots"] if isinstance(s, Mapping)}
        for intent in svc["intents"]:
            if not isinstance(intent, Mapping) or not isinstance(intent.get("name"), str):
                raise DataError(f"{path}: service {name!r} has an intent without a 'name'")
            used = list(intent.get("required_slots") or []) + list(intent.get("optional_slots") or {})
            missing = [u for u in used if u not in slot_names]
            if missing:
                raise DataError(f"{path}: intent {name}.{intent['name']} uses undefined slots {missing}")
        services[name] = svc
    return services


def service_tools(svc: Mapping[str, Any], name_of: dict[str, str]) -> list[Tool]:
    """One Tool per intent of a service; `name_of` maps intent name -> tool name."""
    slots = {s["name"]: s for s in svc["slots"]}
    tools = []
    for intent in svc["intents"]:
        props: dict[str, dict] = {}
        required = list(intent.get("required_slots") or [])
        optional = dict(intent.get("optional_slots") or {})
        for slot_name in required + [s for s in optional if s not in required]:
            slot = slots[slot_name]  # load_schema checked that every slot an intent uses is defined
            prop: dict[str, Any] = {"type": "string", "description": slot.get("description", "")}
            if slot.get("is_categorical") and slot.get("possible_values"):
                prop["enum"] = list(slot["possible_values"])
            if slot_name in optional:
                prop["default"] = optional[slot_name]
            props[slot_name] = prop
        tools.append(Tool(name=name_of[intent["name"]], description=intent.get("description", ""),
                          parameters={"type": "object", "properties": props, "required": required}))
    return tools


def _tool_names(service_names: list[str], services: dict, qualify: str) -> dict[tuple[str, str], str]:
    counts: dict[str, int] = {}
    for s in service_names:
        for intent in services[s]["intents"]:
            counts[intent["name"]] = counts.get(intent["name"], 0) + 1
    return {(s, i["name"]): (f"{s}.{i['name']}" if qualify == "always" or counts[i["name"]] > 1 else i["name"])
            for s in service_names for i in services[s]["intents"]}


def convert(index: Any, record: Any, services: dict[str, dict], *, qualify: str = "auto") -> Conversation:
    rec = require_mapping(record)
    dialogue_services = require_field(rec, "services", list)
    turns = require_field(rec, "turns", list)
    for s in dialogue_services:
        if s not in services:
            raise BadRow("unknown service", f"{s!r} is not in the schema", field="services")
    names = _tool_names(dialogue_services, services, qualify)
    tools = []
    for s in dialogue_services:
        tools.extend(service_tools(services[s], {i: n for (svc, i), n in names.items() if svc == s}))

    messages: list[Message] = []
    state: dict[str, dict] = {}
    n_calls = 0
    for k, turn in enumerate(turns):
        field = f"turns[{k}]"
        if not isinstance(turn, Mapping):
            raise BadRow("invalid turn", f"expected an object, got {type(turn).__name__}", field=field)
        speaker, text, frames = turn.get("speaker"), turn.get("utterance"), turn.get("frames", [])
        if not isinstance(text, str):
            raise BadRow("invalid turn", "missing string 'utterance'", field=field)
        if not isinstance(frames, list) or not all(isinstance(f, Mapping) for f in frames):
            raise BadRow("invalid turn", "'frames' must be a list of objects", field=field)
        for j, fr in enumerate(frames):
            if fr.get("service") not in dialogue_services:
                raise BadRow("unknown service", f"frame service {fr.get('service')!r} is not among the dialogue's "
                             f"services {dialogue_services}", field=f"{field}.frames[{j}]")
        if speaker == "USER":
            for fr in frames:
                if isinstance(fr.get("state"), Mapping):
                    state[fr["service"]] = dict(fr["state"])
            messages.append(Message("user", text, meta={"turn": k, "frames": [dict(f) for f in frames],
                                                         "dialogue_state": {s: dict(v) for s, v in state.items()}}))
        elif speaker == "SYSTEM":
            calls, results = [], []
            for j, fr in enumerate(frames):
                if "service_call" not in fr:
                    continue
                call, result = _service_call(fr, names, f"{field}.frames[{j}]")
                calls.append(ToolCall(call.name, call.arguments, id=f"call_{n_calls}"))
                results.append(result)
                n_calls += 1
            if calls:
                messages.append(Message("assistant", None, tool_calls=tuple(calls), meta={"turn": k}))
                for call, result in zip(calls, results):
                    messages.append(Message("tool", result, name=call.name, tool_call_id=call.id, meta={"turn": k}))
            kept = [{key: v for key, v in f.items() if key not in ("service_call", "service_results")} for f in frames]
            messages.append(Message("assistant", text, meta={"turn": k, "frames": kept}))
        else:
            raise BadRow("invalid turn", f"speaker must be USER or SYSTEM, got {speaker!r}", field=field)
    meta = _common.base_meta(SOURCE, index, _common.dataset_id(rec, "dialogue_id"), services=list(dialogue_services),
                             tool_services={n: s for (s, _), n in names.items()})
    return _common.finish(Conversation(messages=tuple(messages), tools=tuple(tools), meta=meta))


def _service_call(frame: Mapping[str, Any], names: dict, field: str) -> tuple[ToolCall, str]:
    sc = frame["service_call"]
    if not isinstance(sc, Mapping) or not isinstance(sc.get("method"), str):
        raise BadRow("invalid service call", "expected {'method': str, 'parameters': {...}}", field=field)
    key = (frame["service"], sc["method"])
    if key not in names:
        raise BadRow("call to unknown tool", f"{frame['service']} has no intent {sc['method']!r}",
                     field=f"{field}.service_call")
    params = sc.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise BadRow("invalid service call", "'parameters' must be an object", field=f"{field}.service_call")
    results = frame.get("service_results", [])
    if not isinstance(results, list):
        raise BadRow("invalid service call", "'service_results' must be a list", field=f"{field}.service_results")
    return ToolCall(names[key], dict(params)), json.dumps(results, ensure_ascii=False)
