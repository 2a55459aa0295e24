"""The offline, deterministic Type 1 -> Type 2 augmenter.

It removes the values of chosen *required* fields from the first user turn — only where a value
actually occurs there (see `values` for the variants searched) — replacing each occurrence with the
template's placeholder ("a certain city"), and writes the slot questions and answers from the
parameter names (or descriptions) with the language's `Templates`. Optional fields are never
touched or asked about. The answer repeats each value as it was written in the original turn.

Easy: a random non-empty subset of the locatable required fields (size uniform in 1..L).
Hard: every required field (needs N >= 2, all locatable), asked in schema order.
Randomness comes from ``random.Random(f"{seed}:{seed_id}:...")`` so a build is reproducible.

Why a seed may give no Type 2 dialogue (`NoAugmentation.reason`): no required field; a required
value that cannot be found in the first turn (hard) or none that can (easy); two fields' values
overlapping in the text; a removal that would also erase another argument's value.
"""

from __future__ import annotations

import random

from jaxtool.diatool.seeds import Seed
from jaxtool.diatool.slots import NoAugmentation, SlotFilling, SlotStep, structure_problems
from jaxtool.diatool.templates import Templates, load_templates
from jaxtool.diatool.values import find_spans, mentions_any, remove_spans, value_variants


class RulesAugmenter:
    name = "rules"

    def __init__(self, templates: Templates | str | None = None, seed: int = 0):
        self.templates = load_templates(templates)
        self.seed = seed

    def _rng(self, seed: Seed, purpose: str) -> random.Random:
        return random.Random(f"{self.seed}:{seed.id}:{purpose}")

    def locatable_fields(self, seed: Seed) -> list[str]:
        """Required fields whose value occurs in the first user turn."""
        args = seed.arguments
        return [f for f in seed.required if find_spans(seed.query, args.get(f))]

    def augment(self, seed: Seed, difficulty: str) -> SlotFilling:
        req = seed.required
        if not req:
            raise NoAugmentation("tool has no required field")
        found = self.locatable_fields(seed)
        if difficulty == "easy":
            if not found:
                raise NoAugmentation("no required value found in the first user turn",
                                     _why_not_found(seed, req))
            rng = self._rng(seed, "easy-fields")
            k = rng.randint(1, len(found))
            chosen = set(rng.sample(found, k))
            fields = [f for f in req if f in chosen]
        elif difficulty == "hard":
            if len(req) < 2:
                raise NoAugmentation("hard needs >= 2 required fields")
            lost = [f for f in req if f not in found]
            if lost:
                raise NoAugmentation("required value not found in the first user turn",
                                     _why_not_found(seed, lost))
            fields = list(req)
        else:
            raise ValueError(f"difficulty must be 'easy' or 'hard', got {difficulty!r}")
        query, surfaces = self._remove(seed, fields)
        sf = self._dialogue(seed, difficulty, query, fields, surfaces)
        probs = structure_problems(sf, req)
        assert not probs, probs  # the templates above always give this shape
        return sf

    def _remove(self, seed: Seed, fields: list[str]) -> tuple[str, dict[str, str]]:
        args = seed.arguments
        props = seed.tool.properties
        spans, surfaces = [], {}
        for f in fields:
            found = find_spans(seed.query, args[f])
            surfaces[f] = found[0][2]
            label = self.templates.label(f, props.get(f))
            for s, e, _ in found:
                if any(s < te and ts < e for ts, te, _ in spans):
                    raise NoAugmentation("values of two fields overlap in the first user turn", f)
                spans.append((s, e, self.templates.placeholder_for(label)))
        query = remove_spans(seed.query, spans)
        for f in fields:
            if mentions_any(query, args[f]):
                raise NoAugmentation("removed value still present after removal", f)
        for other, v in args.items():
            if other not in fields and find_spans(seed.query, v) and not find_spans(query, v):
                raise NoAugmentation("removing a required value would also remove another argument",
                                     f"{other}")
        return query, surfaces

    def _dialogue(self, seed: Seed, difficulty: str, query: str, fields: list[str],
                  surfaces: dict[str, str]) -> SlotFilling:
        t = self.templates
        props = seed.tool.properties
        label = {f: t.label(f, props.get(f)) for f in fields}
        if difficulty == "easy":
            steps = [SlotStep(question=t.question([label[f] for f in fields]), asked=tuple(fields),
                              answer=t.answer_text([(label[f], surfaces[f]) for f in fields]),
                              answered=tuple(fields))]
        else:
            steps = []
            for i, f in enumerate(fields):
                remaining = fields[i:]
                steps.append(SlotStep(question=t.question([label[r] for r in remaining], follow_up=i > 0),
                                      asked=tuple(remaining),
                                      answer=t.answer_text([(label[f], surfaces[f])]),
                                      answered=(f,)))
        return SlotFilling(difficulty=difficulty, query=query, missing=tuple(fields), steps=tuple(steps),
                           source="rules")


def _why_not_found(seed: Seed, fields: list[str]) -> str:
    args = seed.arguments
    parts = []
    for f in fields:
        v = args.get(f)
        kind = "unlocatable type" if value_variants(v) is None else "not in text"
        parts.append(f"{f}={v!r} ({kind})")
    return ", ".join(parts)
