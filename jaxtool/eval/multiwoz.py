"""MultiWOZ dialogue-state tracking, zero-shot, in the prompt style CALM was evaluated with.

CALM (Acikgoz et al. 2025) reports MultiWOZ 2.4 JGA for zero-shot LLMs prompted as in Hudeček &
Dušek (2023), "Are LLMs all you need for task-oriented dialogue?" (the pipeline the CALM authors'
TD-Eval / AutoTOD code uses): for each user turn, first ask the model which domain the turn is about,
then give it that domain's slots with short descriptions, the dialogue history and the customer's
last utterance, and ask for the values stated *in that utterance* as `'slot':'value'` pairs. The turn
updates are accumulated into the dialogue state (a new value overwrites; nothing is ever removed),
and the accumulated state is compared with the gold state after every turn (joint goal accuracy).
jaxtool's prompt texts below are its own wording of that recipe.

Teacher forcing: the dialogue history in the prompts is the gold text; the *state* is the model's own
accumulated prediction (as in IC-DST and Hudeček & Dušek; errors carry over turns).

Domain of a turn: `--domain predicted` (default) asks the model; an unreadable answer keeps the
previous turn's domain. `--domain gold` uses the domains of the user's gold dialogue acts (ConvLab-2
annotation), else the previous turn's; a turn with no domain at all gets no update. With several gold
domains, one state prompt per domain is asked.

Reading the model's state answer (`parse_state`), in order: a JSON object; else every
`'slot':'value'` / `"slot": "value"` pair; else `slot: value` or `slot = value` lines / hyphen- or
comma-separated pairs. Slot names are mapped to the domain's slots (`bookday`, `book_day`,
`price range`, `leaveAt`, ...); unknown slots and empty values are ignored.

Data: the evaluation runs on MultiWOZ 2.1-layout files (ConvLab-2 `val.json`/`test.json`, MultiWOZ
2.1 `data.json` subsets). MultiWOZ 2.4's refined labels are not available to jaxtool's tests; a score
on 2.1-format validation dialogues is not a MultiWOZ 2.4 test score.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterable, Mapping, Sequence

from jaxtool.errors import ConfigError, DataError
from jaxtool.eval import dst, textgen
from jaxtool.eval.multiwoz_data import MwozDialogue, MwozTurn

SLOT_HELP: dict[str, dict[str, str]] = {
    "restaurant": {"food": "type of cuisine served", "pricerange": "price range (cheap / moderate / expensive)",
                   "area": "part of town (north / east / south / west / centre)", "name": "name of the restaurant",
                   "bookday": "day of the reservation (monday ... sunday)", "bookpeople": "number of people",
                   "booktime": "time of the reservation, 24-hour hh:mm"},
    "hotel": {"name": "name of the hotel", "type": "hotel or guest house",
              "pricerange": "price range (cheap / moderate / expensive)",
              "area": "part of town (north / east / south / west / centre)", "stars": "star rating (0-5)",
              "parking": "free parking wanted (yes / no)", "internet": "free wifi wanted (yes / no)",
              "bookday": "day of arrival (monday ... sunday)", "bookpeople": "number of guests",
              "bookstay": "number of nights"},
    "attraction": {"name": "name of the attraction", "type": "kind of attraction (museum, college, park, ...)",
                   "area": "part of town (north / east / south / west / centre)"},
    "taxi": {"departure": "pick-up place", "destination": "drop-off place",
             "leaveat": "earliest departure time, 24-hour hh:mm", "arriveby": "latest arrival time, 24-hour hh:mm"},
    "train": {"departure": "departure station", "destination": "arrival station",
              "day": "day of travel (monday ... sunday)", "leaveat": "earliest departure time, 24-hour hh:mm",
              "arriveby": "latest arrival time, 24-hour hh:mm", "bookpeople": "number of tickets"},
}

DOMAIN_PROMPT = """Which domain is the customer's last utterance about? Choose one of: restaurant, hotel, \
attraction, taxi, train. Give the most likely domain, judging mainly by the last utterance. Answer with the \
domain name only.

Conversation so far:
{history}
Customer's last utterance: {utterance}
Domain:"""

STATE_PROMPT = """You track what a customer wants from a {domain} booking service. Read the customer's last \
utterance and write down the values it gives for these slots:
{slots}
Write only slots whose value is stated in the last utterance, as 'slot':'value' pairs separated by \
hyphens, for example 'area':'centre'-'pricerange':'cheap'. Use 'dontcare' when the customer says any \
value is fine. Write nothing if the utterance gives no value.

Conversation so far:
{history}
Customer's last utterance: {utterance}
Values:"""


def history_text(turns: Sequence[MwozTurn], upto: int) -> str:
    lines = []
    for t in turns[:upto]:
        lines.append(f"Customer: {t.user}")
        lines.append(f"Assistant: {t.system}")
    return "\n".join(lines) if lines else "(start of the conversation)"


def domain_prompt(dia: MwozDialogue, t: int) -> str:
    return DOMAIN_PROMPT.format(history=history_text(dia.turns, t), utterance=dia.turns[t].user)


def state_prompt(dia: MwozDialogue, t: int, domain: str) -> str:
    slots = "\n".join(f"- {s}: {d}" for s, d in SLOT_HELP[domain].items())
    return STATE_PROMPT.format(domain=domain, slots=slots, history=history_text(dia.turns, t),
                               utterance=dia.turns[t].user)


def parse_domain(text: str) -> str | None:
    """The first domain name in the answer (plural / capitalised forms accepted)."""
    m = re.search(r"\b(restaurant|hotel|attraction|taxi|train)s?\b", text or "", re.IGNORECASE)
    return m.group(1).lower() if m else None


_QUOTED = re.compile(r"""(['"])([^'"]+?)\1\s*[:=]\s*(['"])(.*?)\3(?=\s*(?:[-,;\n]|$))""")
_PLAIN = re.compile(r"""^\s*[-*]?\s*([A-Za-z_ ]+?)\s*[:=]\s*(.+?)\s*$""")


def parse_state(text: str, domain: str) -> dict[str, str]:
    """`{"<domain>-<slot>": value}` from the model's answer (module docstring)."""
    text = (text or "").strip()
    pairs: list[tuple[str, Any]] = []
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            obj = json.loads(text[start:end + 1])
            if isinstance(obj, dict):
                # CALM's DST answer nests the slots: {"domain": ..., "slot_values": {...}}
                inner = obj.get("slot_values")
                pairs = list(inner.items()) if isinstance(inner, dict) else list(obj.items())
        except json.JSONDecodeError:
            pass
    if not pairs:
        pairs = [(m.group(2), m.group(4)) for m in _QUOTED.finditer(text)]
    if not pairs:
        for chunk in re.split(r"\n|\s-\s|,|;", text):
            m = _PLAIN.match(chunk)
            if m:
                pairs.append((m.group(1), m.group(2).strip().strip("'\"")))
    out = {}
    for slot, value in pairs:
        key = dst.canonical_slot(domain, str(slot))
        if key is None or value is None or isinstance(value, (dict, list)):
            continue
        if dst.normalize_value(value) is not None:
            out[key] = str(value).strip()
    return out


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class MultiwozResult:
    records: list[dict]
    summary: dict

    def table(self) -> str:
        from jaxtool.eval.report import markdown_table

        return markdown_table(*table_rows(self.summary))


def evaluate_multiwoz(dialogues: Sequence[MwozDialogue], backend: Any, fmt: Any, *, domain_source: str = "predicted",
                      ontology: Mapping[str, Iterable[str]] | None = None, batch_size: int = 8,
                      max_new_tokens: int = 64, prompt_fn: textgen.PromptFn | None = None,
                      progress: bool = False) -> MultiwozResult:
    if domain_source not in ("predicted", "gold"):
        raise ConfigError(f"domain source must be 'predicted' or 'gold', got {domain_source!r}")
    prompt_fn = prompt_fn or textgen.encode_prompt
    stops = tuple(getattr(fmt, "stop_strings", ()) or ())

    def run(texts: list[str], desc: str) -> list[str]:
        ids = [list(prompt_fn(textgen.text_conversation(p), fmt, backend.tokenizer)) for p in texts]
        return textgen.generate_texts(backend, ids, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                      stop_strings=stops, desc=desc, progress=progress)

    index = [(d, t) for d, dia in enumerate(dialogues) for t in range(len(dia.turns))]
    domain_out: dict[tuple[int, int], str] = {}
    if domain_source == "predicted":
        answers = run([domain_prompt(dialogues[d], t) for d, t in index], "multiwoz domains")
        domain_out = dict(zip(index, answers))

    turn_domains: dict[tuple[int, int], tuple[str, ...]] = {}
    for d, dia in enumerate(dialogues):
        prev: tuple[str, ...] = ()
        for t, turn in enumerate(dia.turns):
            if domain_source == "gold":
                doms = tuple(x for x in turn.domains if x in dst.DOMAINS) or prev
            else:
                got = parse_domain(domain_out[(d, t)])
                doms = (got,) if got else prev
            turn_domains[(d, t)] = doms
            prev = doms

    state_index = [(d, t, dom) for d, t in index for dom in turn_domains[(d, t)]]
    state_out = run([state_prompt(dialogues[d], t, dom) for d, t, dom in state_index], "multiwoz states")
    updates: dict[tuple[int, int], dict[str, str]] = {}
    raw_states: dict[tuple[int, int], dict[str, str]] = {}
    for (d, t, dom), text in zip(state_index, state_out):
        updates.setdefault((d, t), {}).update(parse_state(text, dom))
        raw_states.setdefault((d, t), {})[dom] = text

    records = []
    for d, dia in enumerate(dialogues):
        state: dict[str, str] = {}
        for t, turn in enumerate(dia.turns):
            update = dst.fix_prediction(updates.get((d, t), {}), ontology)
            state.update(update)
            gold = dst.normalize_state(turn.state)
            records.append({
                "dialogue_id": dia.dialogue_id, "turn": t, "user": turn.user,
                "gold_domains": list(turn.domains), "domains": list(turn_domains[(d, t)]),
                "domain_output": domain_out.get((d, t)), "state_outputs": raw_states.get((d, t), {}),
                "turn_update": update, "pred_state": dict(state), "gold_state": gold,
                "dropped_gold_slots": sorted(k for k in turn.state if k not in dst.SLOTS),
                "jga": dst.joint_goal(state, gold), "slot_acc": dst.slot_accuracy(state, gold),
                "slot_f1": dst.slot_f1(state, gold),
            })
    return MultiwozResult(records, summarise(records, len(dialogues), domain_source))


def _restrict(state: Mapping[str, str], domain: str) -> dict[str, str]:
    return {k: v for k, v in state.items() if k.startswith(domain + "-")}


def summarise(records: Sequence[dict], n_dialogues: int, domain_source: str = "predicted") -> dict:
    n = len(records)
    per_domain = {}
    for dom in dst.DOMAINS:
        rs = [r for r in records if _restrict(r["gold_state"], dom)]
        if rs:
            ok = sum(dst.joint_goal(_restrict(r["pred_state"], dom), _restrict(r["gold_state"], dom)) for r in rs)
            per_domain[dom] = {"turns": len(rs), "jga": ok / len(rs)}
    labelled = [r for r in records if r["gold_domains"]]
    summary = {
        "n_dialogues": n_dialogues, "n_turns": n, "domain_source": domain_source,
        "jga": sum(r["jga"] for r in records) / n if n else float("nan"),
        "slot_accuracy": sum(r["slot_acc"] for r in records) / n if n else float("nan"),
        "slot_f1": sum(r["slot_f1"] for r in records) / n if n else float("nan"),
        "per_domain_jga": per_domain,
        "dropped_gold_slots": sum(len(r["dropped_gold_slots"]) for r in records),
        "note": "MultiWOZ 2.1-layout data; not MultiWOZ 2.4 test labels unless the file is 2.4",
    }
    if domain_source == "predicted" and labelled:
        hits = sum(bool(set(r["domains"]) & set(r["gold_domains"])) for r in labelled)
        summary["domain_accuracy"] = hits / len(labelled)
    return summary


def table_rows(summary: dict) -> tuple[list[str], list[list]]:
    rows = [["joint goal accuracy", summary["n_turns"], summary["jga"]],
            ["slot accuracy", summary["n_turns"], summary["slot_accuracy"]],
            ["slot F1", summary["n_turns"], summary["slot_f1"]]]
    rows += [[f"JGA {d}", v["turns"], v["jga"]] for d, v in summary["per_domain_jga"].items()]
    if "domain_accuracy" in summary:
        rows.append(["domain accuracy", "", summary["domain_accuracy"]])
    return ["metric", "turns", "score"], rows


def chart_values(summary: dict) -> dict[str, float]:
    vals = {"JGA": summary["jga"], "slot acc": summary["slot_accuracy"], "slot F1": summary["slot_f1"]}
    vals.update({f"JGA {d}": v["jga"] for d, v in summary["per_domain_jga"].items()})
    return vals


def load_ontology(path: str) -> dict[str, list[str]]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as e:
        raise DataError(f"{path}: cannot read the ontology ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: ontology is not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DataError(f"{path}: expected an IC-DST ontology, a JSON object of \"domain-slot\" -> list of values")
    return data
