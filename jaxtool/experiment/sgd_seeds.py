"""Type 1 seed dialogues from Schema-Guided Dialogue (SGD) for the DiaTool-DPO experiment, and the
split of those seeds *by service*.

A DiaTool-DPO Type 1 seed is user → tool call (every required argument) → tool result → completion
(`jaxtool.diatool.seeds`). SGD dialogues rarely start that way: the system usually asks for the
missing slots first. `seed_dialogue` cuts one seed episode out of an SGD conversation
(`jaxtool.data.sources.sgd`):

- the episode ends at the first system turn that calls an API (one call; its result; the
  system's next utterance is the completion);
- every user utterance before that call is kept, in order, joined with a space into *one* first
  user turn, provided every system turn in between only asked for slots (all its dialogue acts are
  ``REQUEST``). So "I need a restaurant." / "Where?" / "In San Jose, Italian please." becomes one
  turn "I need a restaurant. In San Jose, Italian please." — the real user's words, with the
  system's questions removed. ``meta["seed_origin"]`` says ``natural`` (the dialogue already
  started with the call) or ``merged``;
- the tool result keeps at most `max_results` of SGD's ``service_results`` (default 3; the
  completion speaks about the first one or two), so prompts stay within the sequence budget.

Slot values in the call must still appear in the joined turn for the rules augmenter to remove them
(Type 2); where they do not, the augmenter counts the seed as not augmentable.

`split_by_service` assigns each seed to ``train`` or ``heldout`` by the services its tools come
from: a seed is held out when *all* its services are held-out services, trains when *none* is, and
is dropped (counted) when it mixes both — so no held-out service's tools, slots or dialogues are
ever seen in training.

The bundled ``jaxtool/assets/sgd/seeds.jsonl.gz`` is `extract_seed_dialogues` applied to the 16 SGD
train files in the shared data slice (CC BY-SA 4.0; see ``jaxtool/assets/sgd/README.md``);
`tests/test_experiment_diatool.py` re-derives it from those files when they are present.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
from typing import Iterable, Sequence

from jaxtool.data.schema import Conversation, Message
from jaxtool.errors import ConfigError, DataError

ORIGINS = ("natural", "merged")


class NoSeed(Exception):
    """An SGD conversation without a usable seed episode; `reason` is the counted category."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def _acts(message: Message) -> list[str]:
    return [a.get("act") for fr in message.meta.get("frames", []) for a in fr.get("actions", [])]


def seed_dialogue(conv: Conversation, max_results: int = 3) -> Conversation:
    """The seed episode of one SGD conversation (module docstring), or `NoSeed`."""
    msgs = conv.messages
    k = next((i for i, m in enumerate(msgs) if m.role == "assistant" and m.tool_calls), None)
    if k is None:
        raise NoSeed("no API call")
    users = []
    for m in msgs[:k]:
        if m.role == "user":
            users.append((m.content or "").strip())
        elif m.role == "assistant":
            acts = _acts(m)
            if not acts or any(a != "REQUEST" for a in acts):
                raise NoSeed("the system does more than ask for slots before the call")
        else:
            raise NoSeed(f"a {m.role} message before the first call")
    if not users or not all(users):
        raise NoSeed("no user turn before the call")
    call = msgs[k]
    if len(call.tool_calls) != 1:
        raise NoSeed("parallel calls")
    if k + 2 >= len(msgs) or msgs[k + 1].role != "tool" or msgs[k + 2].role != "assistant":
        raise NoSeed("no tool result and completion after the call")
    tool, completion = msgs[k + 1], msgs[k + 2]
    if completion.tool_calls or not (completion.content or "").strip():
        raise NoSeed("no completion after the call")
    try:
        results = json.loads(tool.content or "[]")
    except json.JSONDecodeError:
        raise NoSeed("tool result is not JSON") from None
    if isinstance(results, list):
        results = results[:max_results]
    name = call.tool_calls[0].name
    services = conv.meta.get("tool_services", {})
    meta = {"id": conv.meta.get("id"), "source": "sgd", "services": list(conv.meta.get("services", [])),
            "call_service": services.get(name), "seed_origin": "natural" if len(users) == 1 else "merged",
            "user_turns_joined": len(users)}
    return Conversation(
        messages=(Message("user", " ".join(users)),
                  Message("assistant", None, tool_calls=call.tool_calls),
                  Message("tool", json.dumps(results, ensure_ascii=False), name=tool.name,
                          tool_call_id=tool.tool_call_id),
                  Message("assistant", completion.content.strip())),
        tools=conv.tools, meta=meta)


@dataclasses.dataclass
class SeedExtraction:
    dialogues: list[Conversation]
    read: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def to_dict(self) -> dict:
        return {"read": self.read, "kept": len(self.dialogues), "skipped": dict(self.skipped.most_common()),
                "origin": dict(collections.Counter(c.meta["seed_origin"] for c in self.dialogues))}


def extract_seed_dialogues(convs: Iterable[Conversation], max_results: int = 3) -> SeedExtraction:
    """`seed_dialogue` over SGD conversations, every drop counted by reason."""
    out = SeedExtraction([])
    for conv in convs:
        out.read += 1
        try:
            out.dialogues.append(seed_dialogue(conv, max_results))
        except NoSeed as e:
            out.skipped[e.reason] += 1
    return out


def from_sgd(path: str, max_results: int = 3) -> SeedExtraction:
    """Seed dialogues from an SGD split directory (``schema.json`` + ``dialogues_*.json``)."""
    from jaxtool.data.sources import sgd

    return extract_seed_dialogues(sgd.load(path), max_results)


def bundled_path() -> str:
    from importlib.resources import files

    return str(files("jaxtool") / "assets" / "sgd" / "seeds.jsonl.gz")


def read_seed_dialogues(path: str) -> list[Conversation]:
    """Seed dialogues written by `write_seed_dialogues` (errors name the file and line)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such seed file")
    out = []
    with _open(path, "r") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not JSON ({e.msg})") from None
            conv = Conversation.from_dict(row, where=f"{path}:{n}")
            for key in ("id", "services", "seed_origin"):
                if key not in conv.meta:
                    raise DataError(f"{path}:{n}: meta lacks {key!r} (not a seed file written by jaxtool)")
            out.append(conv)
    return out


def write_seed_dialogues(dialogues: Sequence[Conversation], path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with _open(path, "w") as fh:
        for c in dialogues:
            fh.write(c.to_json() + "\n")


def _open(path: str, mode: str):
    """Text file, gzip-compressed when the name ends in .gz (mtime 0: the same bytes every time)."""
    if path.endswith(".gz"):
        import gzip

        if mode == "w":
            return io.TextIOWrapper(gzip.GzipFile(path, "wb", mtime=0), encoding="utf-8")
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def split_by_service(dialogues: Sequence[Conversation], heldout_services: Sequence[str]
                     ) -> tuple[list[Conversation], list[Conversation], int]:
    """`(train, heldout, n_mixed_dropped)` by the services of each dialogue's tools (module docstring)."""
    held = set(heldout_services)
    known = {s for c in dialogues for s in c.meta["services"]}
    unknown = sorted(held - known)
    if unknown:
        raise ConfigError(f"held-out services {unknown} have no seed dialogue (services with seeds: {sorted(known)})")
    train, heldout, mixed = [], [], 0
    for c in dialogues:
        s = set(c.meta["services"])
        if s <= held:
            heldout.append(c)
        elif not s & held:
            train.append(c)
        else:
            mixed += 1
    return train, heldout, mixed


def service_table(dialogues: Sequence[Conversation]) -> dict[str, dict]:
    """Per called service: seeds, natural/merged, required-slot counts of the called tool."""
    table: dict[str, dict] = {}
    for c in dialogues:
        svc = c.meta.get("call_service") or "?"
        row = table.setdefault(svc, {"seeds": 0, "natural": 0, "merged": 0, "required": collections.Counter()})
        row["seeds"] += 1
        row[c.meta["seed_origin"]] += 1
        call = c.messages[1].tool_calls[0]
        tool = c.tool(call.name)
        row["required"][len(tool.required) if tool else -1] += 1
    return {k: {**v, "required": dict(sorted(v["required"].items()))} for k, v in sorted(table.items())}
