"""Dialogue-state-tracking metrics for MultiWOZ: value normalisation, joint goal accuracy, slot
accuracy and slot F1, following IC-DST (Hu et al. 2022; `evaluate_metrics.py`, `utils/typo_fix.py`,
gold preprocessing in `data/create_data.py`).

Slots: the 30 slots of the five evaluated domains (restaurant, hotel, attraction, taxi, train), named
as IC-DST names them (`hotel-pricerange`, `hotel-book people`, `taxi-leaveat`, ...). Gold slots of
other domains (hospital, police, bus) are dropped.

`normalize_value`, applied to gold *and* predicted values:
- lower-case, strip, typographic apostrophes to `'`, whitespace collapsed;
- absent: `""`, `not mentioned`, `none` (an annotation artifact in MultiWOZ 2.1, ignored as TRADE
  and IC-DST's 30-slot setting ignore it);
- `dontcare`: `dontcare`, `dont care`, `don't care`, `do not care`, `do n't care`, `doesn't matter`,
  `does not matter`, `no preference`;
- `b&b` / `b and b` -> `bed and breakfast`; `guesthouse` -> `guest house`; `center` -> `centre`;
  `-` -> space (MultiWOZ's text normalisation); ` s ` possessive split joined (`john s` -> `johns`);
- times `H:MM` / `H.MM` -> `HH:MM`.
IC-DST additionally fixes a fixed list of dataset typos and MultiWOZ's `mapping.pair` word
replacements; jaxtool does not reproduce those lists.

`fix_prediction` (predictions only, as IC-DST's `typo_fix`): for named-entity slots (names,
departure / destination, attraction type, food), when an ontology is given, the value is snapped to
the ontology entry that differs only by a leading `the ` or one of the suffixes ` hotel`,
` restaurant`, ` cinema`, ` guest house`, ` theatre`, ` airport`, ` street`, ` gallery`,
` museum`; a value with no such entry is dropped, as in IC-DST.

Metrics per turn (IC-DST `evaluate`): joint goal (the normalised predicted state equals the gold
state; a gold `a|b` accepts either), slot accuracy over the 30 slots (`(30 - missed gold - wrong
predictions) / 30`, a wrong value counted once), slot F1 over (slot, value) pairs (1.0 when both are
empty).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

DOMAIN_SLOTS: dict[str, tuple[str, ...]] = {
    "restaurant": ("food", "pricerange", "area", "name", "book day", "book people", "book time"),
    "hotel": ("name", "type", "pricerange", "area", "stars", "parking", "internet", "book day", "book people",
              "book stay"),
    "attraction": ("name", "type", "area"),
    "taxi": ("departure", "destination", "leaveat", "arriveby"),
    "train": ("departure", "destination", "day", "leaveat", "arriveby", "book people"),
}
DOMAINS = tuple(DOMAIN_SLOTS)
SLOTS = tuple(f"{d}-{s}" for d, ss in DOMAIN_SLOTS.items() for s in ss)
NAMED_ENTITY_SLOTS = ("hotel-name", "train-destination", "train-departure", "attraction-type", "attraction-name",
                      "restaurant-name", "taxi-departure", "taxi-destination", "restaurant-food")

ABSENT = ("", "not mentioned", "none")
DONTCARE = ("dontcare", "dont care", "don't care", "do not care", "do n't care", "doesn't matter",
            "does not matter", "no preference")
_WHOLE = {"center": "centre"}
_PREFIXES = ("the ",)
_SUFFIXES = (" hotel", " restaurant", " cinema", " guest house", " theatre", " airport", " street", " gallery",
             " museum")

# slot spellings a model may use -> canonical slot of the domain
SLOT_ALIASES = {
    "price range": "pricerange", "price": "pricerange", "pricerange": "pricerange",
    "leave at": "leaveat", "leaveat": "leaveat", "leave": "leaveat", "leave time": "leaveat",
    "arrive by": "arriveby", "arriveby": "arriveby", "arrive": "arriveby", "arrival time": "arriveby",
    "bookday": "book day", "book day": "book day", "bookpeople": "book people", "book people": "book people",
    "people": "book people", "booktime": "book time", "book time": "book time", "time": "book time",
    "bookstay": "book stay", "book stay": "book stay", "stay": "book stay",
    "destination": "destination", "departure": "departure", "depart": "departure", "dest": "destination",
}


def canonical_slot(domain: str, slot: str) -> str | None:
    """`"<domain>-<slot>"` for a slot name as a model may write it (`bookday`, `price range`,
    `book_people`, `leaveAt`), or None if the domain has no such slot. `day` is the train's own slot
    and the booking day elsewhere."""
    s = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", slot).replace("_", " ").replace("-", " ").lower()
    s = " ".join(s.split())
    if domain not in DOMAIN_SLOTS:
        return None
    if s == "day":
        s = "day" if domain == "train" else "book day"
    s = SLOT_ALIASES.get(s, s)
    return f"{domain}-{s}" if s in DOMAIN_SLOTS[domain] else None


def normalize_value(value: Any) -> str | None:
    """The comparable form of a slot value, or None when absent (module docstring)."""
    if value is None:
        return None
    s = str(value).replace("\u2019", "'").replace("\u2018", "'").strip().lower()
    s = " ".join(s.split())
    if s in ABSENT:
        return None
    if s in DONTCARE:
        return "dontcare"
    s = re.sub(r"\bb ?& ?b\b|\bb and b\b", "bed and breakfast", s)
    s = s.replace("guesthouse", "guest house")
    t = re.fullmatch(r"(\d{1,2})[:.](\d{2})", s)
    if t:
        return f"{int(t.group(1)):02d}:{t.group(2)}"
    s = s.replace("-", " ")
    s = re.sub(r"(?<=\w) s\b", "s", s)
    s = " ".join(s.split())
    return _WHOLE.get(s, s) or None


def normalize_state(state: Mapping[str, Any], slots: Iterable[str] = SLOTS) -> dict[str, str]:
    """Normalised values of the evaluated slots; absent values removed. Alternatives `a|b` are
    normalised one by one."""
    keep = set(slots)
    out = {}
    for k, v in state.items():
        if k not in keep:
            continue
        if isinstance(v, str) and "|" in v:
            alts = [a for a in (normalize_value(x) for x in v.split("|")) if a]
            if alts:
                out[k] = "|".join(alts)
            continue
        nv = normalize_value(v)
        if nv is not None:
            out[k] = nv
    return out


def snap_to_ontology(value: str, candidates: Iterable[str]) -> str | None:
    """IC-DST's prefix/suffix repair: `value` if listed, else the listed variant with/without a
    leading `the ` and one known suffix, else None."""
    cands = set(candidates)
    if value in cands:
        return value
    v = value
    for p in _PREFIXES:
        if v.startswith(p):
            v = v[len(p):]
            break
    for s in _SUFFIXES:
        if v.endswith(s):
            v = v[: -len(s)]
            break
    for p in ("",) + _PREFIXES:
        for s in ("",) + _SUFFIXES:
            if p + v + s in cands:
                return p + v + s
    return None


def fix_prediction(state: Mapping[str, str], ontology: Mapping[str, Iterable[str]] | None = None) -> dict[str, str]:
    """Normalised predicted state with IC-DST's named-entity repair when an ontology is given."""
    out = {}
    for k, v in normalize_state(state).items():
        if ontology is not None and k in NAMED_ENTITY_SLOTS and k in ontology and v != "dontcare":
            cands = {x for entry in ontology[k] for x in (normalize_value(a) for a in str(entry).split("|")) if x}
            v = snap_to_ontology(v, cands)
            if v is None:
                continue
        out[k] = v
    return out


def _resolve_alternatives(pred: Mapping[str, str], gold: Mapping[str, str]) -> dict[str, str]:
    g = dict(gold)
    for k, v in gold.items():
        if "|" in v:
            g[k] = pred[k] if k in pred and pred[k] in v.split("|") else v.split("|")[0]
    return g


def joint_goal(pred: Mapping[str, str], gold: Mapping[str, str]) -> bool:
    return dict(pred) == _resolve_alternatives(pred, gold)


def slot_accuracy(pred: Mapping[str, str], gold: Mapping[str, str], n_slots: int = len(SLOTS)) -> float:
    g = _resolve_alternatives(pred, gold)
    missed = [k for k, v in g.items() if pred.get(k) != v]
    wrong = [k for k, v in pred.items() if g.get(k) != v and k not in missed]
    return (n_slots - len(missed) - len(wrong)) / n_slots


def slot_f1(pred: Mapping[str, str], gold: Mapping[str, str]) -> float:
    g = _resolve_alternatives(pred, gold)
    if not g:
        return 1.0 if not pred else 0.0
    tp = sum(1 for k, v in g.items() if pred.get(k) == v)
    fp = sum(1 for k, v in pred.items() if g.get(k) != v)
    fn = len(g) - tp
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return 2 * p * r / (p + r) if p + r else 0.0
