"""Sentence templates for the offline (`rules`) augmenter and for templated rejections.

One `Templates` set per language. Built in: ``"en"`` (default) and ``"ko"`` (an example set for
Korean data such as FunctionChat-Bench). Any other language is a JSON file with the same keys;
``jaxtool data build-diatool --print-templates en`` prints a set to start from.

Keys (placeholders in braces):

ask           first slot question; ``{fields}`` = the missing fields, joined
ask_more      a follow-up question in a Hard dialogue; ``{fields}`` = the fields still missing
field         how one field is named inside a question; ``{label}``
answer        the user's answer; ``{items}`` = answer_item for each field, joined
answer_item   one answered field; ``{label}``, ``{value}``
placeholder   what replaces a removed value in the first user turn; ``{label}`` (may be "")
join, join_last   separators between list items ("a, b and c")
rejections    list of polite refusals (no placeholders); one is picked per dialogue
label_from    "name" (humanised parameter name: departure_date -> "departure date") or
              "description" (the parameter description up to its first period/comma, falling back
              to the name) — useful when descriptions are in the target language and names are not
capitalize    upper-case the first letter of each generated sentence (true for English)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Mapping, Sequence

from jaxtool.errors import ConfigError

_EN = {
    "language": "en",
    "ask": "Sure, I can help with that. Could you tell me {fields}?",
    "ask_more": "Thanks! Could you also tell me {fields}?",
    "field": "the {label}",
    "answer": "{items}.",
    "answer_item": "the {label} is {value}",
    "placeholder": "a certain {label}",
    "join": ", ",
    "join_last": " and ",
    "rejections": [
        "I'm sorry, but I can't help with that. None of the tools available to me can handle this request.",
        "Unfortunately, that request is outside what I can do with my current tools, so I can't complete it.",
        "I'm afraid I don't have a tool for that, so I'm unable to help with this request.",
    ],
    "label_from": "name",
    "capitalize": True,
}

_KO = {
    "language": "ko",
    "ask": "요청을 처리하려면 {fields} 정보가 필요합니다. 알려주시겠어요?",
    "ask_more": "감사합니다. {fields} 정보도 알려주시겠어요?",
    "field": "{label}",
    "answer": "{items}입니다.",
    "answer_item": "{label}은(는) {value}",
    "placeholder": "특정 {label}",
    "join": ", ",
    "join_last": ", ",
    "rejections": [
        "죄송합니다. 현재 사용할 수 있는 도구로는 해당 요청을 처리할 수 없습니다.",
        "죄송하지만 그 요청은 제가 가진 기능으로는 도와드리기 어렵습니다.",
    ],
    "label_from": "description",
    "capitalize": False,
}

BUILTIN = {"en": _EN, "ko": _KO}

_PLACEHOLDERS = {
    "ask": {"fields"}, "ask_more": {"fields"}, "field": {"label"}, "answer": {"items"},
    "answer_item": {"label", "value"}, "placeholder": {"label"},
}


@dataclasses.dataclass(frozen=True)
class Templates:
    language: str
    ask: str
    ask_more: str
    field: str
    answer: str
    answer_item: str
    placeholder: str
    join: str
    join_last: str
    rejections: tuple[str, ...]
    label_from: str = "name"
    capitalize: bool = False

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "templates") -> "Templates":
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: expected a JSON object of templates, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; expected {sorted(fields)}")
        required = [n for n, f in fields.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ConfigError(f"{where}: missing key(s) {missing}")
        kw = dict(d)
        for key, allowed in _PLACEHOLDERS.items():
            if not isinstance(kw[key], str):
                raise ConfigError(f"{where}: key {key!r} must be a string")
            used = set(re.findall(r"{(\w+)}", kw[key]))
            if not used <= allowed:
                raise ConfigError(f"{where}: key {key!r} uses unknown placeholder(s) "
                                  f"{sorted(used - allowed)}; allowed: {sorted(allowed)}")
            if key not in ("placeholder", "field", "answer_item") and not used:
                raise ConfigError(f"{where}: key {key!r} must contain {{{sorted(allowed)[0]}}}")
        if "{value}" not in kw["answer_item"]:
            raise ConfigError(f"{where}: key 'answer_item' must contain {{value}}")
        rej = kw["rejections"]
        if not isinstance(rej, Sequence) or isinstance(rej, str) or not rej or \
                not all(isinstance(r, str) and r.strip() for r in rej):
            raise ConfigError(f"{where}: key 'rejections' must be a non-empty list of strings")
        kw["rejections"] = tuple(rej)
        if kw.get("label_from", "name") not in ("name", "description"):
            raise ConfigError(f"{where}: key 'label_from' must be 'name' or 'description'")
        for k in ("language", "join", "join_last"):
            if not isinstance(kw[k], str):
                raise ConfigError(f"{where}: key {k!r} must be a string")
        return cls(**kw)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["rejections"] = list(self.rejections)
        return d

    # -- rendering --------------------------------------------------------------------------
    def label(self, name: str, schema: Mapping[str, Any] | None = None) -> str:
        """How parameter `name` is called in text."""
        if self.label_from == "description" and schema:
            desc = schema.get("description")
            if isinstance(desc, str) and desc.strip():
                head = re.split(r"[.,;:(\n]|\s-\s", desc.strip(), maxsplit=1)[0].strip()
                if head:
                    return head
        return humanize(name)

    def join_items(self, items: Sequence[str]) -> str:
        items = list(items)
        if len(items) <= 1:
            return "".join(items)
        return self.join.join(items[:-1]) + self.join_last + items[-1]

    def _sentence(self, s: str) -> str:
        return s[:1].upper() + s[1:] if self.capitalize else s

    def question(self, labels: Sequence[str], follow_up: bool = False) -> str:
        fields = self.join_items([self.field.format(label=l) for l in labels])
        return self._sentence((self.ask_more if follow_up else self.ask).format(fields=fields))

    def answer_text(self, labelled_values: Sequence[tuple[str, str]]) -> str:
        items = self.join_items([self.answer_item.format(label=l, value=v) for l, v in labelled_values])
        return self._sentence(self.answer.format(items=items))

    def placeholder_for(self, label: str) -> str:
        return self.placeholder.format(label=label)


def humanize(name: str) -> str:
    """``departure_date`` / ``departureDate`` / ``departure-date`` -> ``departure date``."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    s = re.sub(r"[_\-.]+", " ", s)
    return re.sub(r"\s+", " ", s).strip().lower() or name


def load_templates(name_or_path: str | Mapping[str, Any] | Templates | None = "en") -> Templates:
    """A built-in set by language code (``"en"``, ``"ko"``), a JSON file path, or a dict."""
    if isinstance(name_or_path, Templates):
        return name_or_path
    if name_or_path is None:
        name_or_path = "en"
    if isinstance(name_or_path, Mapping):
        return Templates.from_dict(name_or_path)
    if name_or_path in BUILTIN:
        return Templates.from_dict(BUILTIN[name_or_path], where=f"built-in templates {name_or_path!r}")
    if not os.path.isfile(name_or_path):
        raise ConfigError(f"templates {name_or_path!r}: neither a built-in set {sorted(BUILTIN)} "
                          "nor an existing JSON file")
    try:
        with open(name_or_path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{name_or_path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    return Templates.from_dict(data, where=name_or_path)
