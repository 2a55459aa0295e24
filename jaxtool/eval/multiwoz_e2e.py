"""MultiWOZ end to end: an agent that queries and books through APIs, scored by Inform, Success, BLEU
and JGA — the protocol of CALM (Acikgoz et al. 2025, §5.1, App. B), which follows AutoTOD (Xu et al.
2024). This is protocol `e2e` of `jaxtool eval multiwoz`; protocol `dst` (`jaxtool.eval.multiwoz`)
is the separate zero-shot state-tracking prompt evaluation.

Dialogue loop (offline, as CALM and AutoTOD evaluate): the *user side replays the dataset's user
turns*; the model is the system. For each user turn the model sees the system prompt, the tools of
`jaxtool.envs.multiwoz.MultiwozEnv`, its own earlier replies and tool traffic, and the user's turn;
it may call tools (parsed by the chat format, executed in the environment, results fed back as tool
messages) up to `max_steps` times, and its first reply without a call is the system turn. A reply
that breaks the chat format is used as text. A turn that reaches `max_steps` without a text reply
gets an empty system turn (counted). All dialogues' current steps are decoded in one batch
(`Backend.generate`), dialogues advancing independently. The model's own replies — not the gold
system turns — form the history, so a dialogue can drift from the one the user replays; that is
inherent in offline end-to-end evaluation.

Scoring follows Tomiinek/MultiWOZ_Evaluation (`mwzeval`, metrics.py `get_dialog_success`, the
evaluator CALM's and AutoTOD's numbers come from), rewritten here:

- goal (`parse_goal`): each domain with an `info` part; informable = `info` (column names normalised);
  requestable = `reqt` ∩ {phone, address, postcode} (+ `trainID` → TRAINID), plus REFERENCE when the
  goal has a `book` part (MultiWOZ's original evaluator's `_parseGoal`; for trains only
  reference / trainID count);
- the system turn is delexicalised (`delexicalize`): venue names, train ids, phones, addresses and
  postcodes of the database, and the reference codes and taxi phones the environment issued in
  this dialogue, become `[name]`, `[trainid]`, `[phone]`, `[address]`, `[postcode]`, `[reference]`
  (placeholders the model writes itself are kept); then normalised (`normalize_response`: lower
  case, placeholders mapped to mwzeval's canonical slot names NAME / TRAINID / PHONE / ADDRESS /
  POST / REFERENCE / ..., `-s` and `-ly` removed). mwzeval also runs Moses tokenisation and
  detokenisation; jaxtool does not (no dependency on sacremoses), which can move BLEU slightly;
- the dialogue state each turn is the state of the API calls made so far
  (`MultiwozEnv.belief`, per domain, column names as the database's); active domains are estimated
  from state changes (mwzeval `get_domain_estimates_from_state`);
- Inform: for each goal domain, at turns whose active domain it is and whose text holds NAME
  (restaurant / hotel / attraction) or TRAINID (train), the venues matching that turn's state
  become the offered venues (replaced only when a previously offered venue is no longer among them);
  the domain is matched when the goal names the venue, for taxi / police / hospital, for a train
  domain with no train offered and TRAINID not requested, or when the offered venues are a non-empty
  subset of the venues matching the goal's informable constraints. Inform = every goal domain matched;
- Success (only when Inform): every requestable slot of each goal domain appears in some turn where
  the domain is active; REFERENCE counts only at turns where the gold dialogue booked that domain
  (`reference_rule="gold"`, mwzeval's rule, since MultiWOZ has no availability data) — or, with
  `reference_rule="env"`, at turns where the environment has issued a booking for the domain;
- BLEU: corpus BLEU-4 (`jaxtool.eval.bleu`, SacreBLEU defaults) of the normalised delexicalised
  replies against the gold system turns delexicalised by their own `span_info`
  (MultiWOZ 2.1 layout; word spans, end inclusive) — or, when a turn has no `span_info`, by the same
  lexicon as the replies — and normalised alike. mwzeval's reference is MultiWOZ 2.2's delexicalised
  text; the two differ a little;
- JGA: the API state (`jaxtool.eval.dst` normalisation) against the gold belief state after every
  turn, as protocol `dst` scores it.

Data: MultiWOZ 2.1-layout files (ConvLab-2 `val.json` / `test.json`; MultiWOZ 2.4's `data.json`,
whose ids end in `.json`, loads too) and the release's `db/` folder.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Iterator, Mapping, Sequence

from jaxtool.data.schema import Conversation, Message, Tool
from jaxtool.data.sources.base import BadRow, LoadReport, read_records, require_mapping
from jaxtool.envs.base import EnvBatch
from jaxtool.envs.multiwoz import VENUE_DOMAINS, MultiwozDB, MultiwozEnv
from jaxtool.errors import ConfigError
from jaxtool.eval import dst, textgen
from jaxtool.eval.bleu import corpus_bleu
from jaxtool.eval.multiwoz_data import MwozDialogue, _dialogue

GOAL_DOMAINS = ("restaurant", "hotel", "attraction", "train", "taxi", "police", "hospital")

SYSTEM_PROMPT = """You are the assistant of the Cambridge TownInfo centre. You help customers find and book \
restaurants, hotels, attractions, trains and taxis, and find the police station and hospital departments. \
Search the database with the find_* tools before you recommend anything, and book with the book_* tools \
once you know everything the booking needs; ask the customer for what is missing. Give names, train ids, \
phone numbers, addresses, postcodes and reference numbers exactly as the tools return them. Reply to the \
customer in one or two sentences."""


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class E2EDialogue:
    dialogue: MwozDialogue                     # user / gold system text and gold states per turn
    goal: dict[str, dict]                      # parse_goal
    booked: tuple[tuple[str, ...], ...]        # domains the gold dialogue booked at each turn
    span_info: tuple[list | None, ...]         # gold system turns' span_info (None: absent)

    @property
    def dialogue_id(self) -> str:
        return self.dialogue.dialogue_id


def _goal_column(name: str) -> str:
    name = str(name).lower().replace(" ", "")
    return {"arriveby": "arrive", "leaveat": "leave"}.get(name, name)


def parse_goal(goal: Mapping[str, Any], where: str = "goal") -> dict[str, dict]:
    """mwzeval-style goal: `{domain: {"informable": {...}, "requestable": set, "booking": {...}}}`."""
    if not isinstance(goal, Mapping):
        raise BadRow("bad goal", f"expected an object, got {type(goal).__name__}", field=where)
    out = {}
    for dom in GOAL_DOMAINS:
        g = goal.get(dom) or {}
        if not isinstance(g, Mapping):
            raise BadRow("bad goal", "expected an object", field=f"{where}.{dom}")
        if not g.get("info"):
            continue
        if not isinstance(g["info"], Mapping):
            raise BadRow("bad goal", "info must be an object", field=f"{where}.{dom}.info")
        reqt = [str(s).lower() for s in (g.get("reqt") or [])]
        req: set[str] = set()
        if dom == "train":
            if "trainid" in reqt or "id" in reqt:
                req.add("TRAINID")
        else:
            req |= {{"phone": "PHONE", "address": "ADDRESS", "postcode": "POST", "reference": "REFERENCE"}[s]
                    for s in reqt if s in ("phone", "address", "postcode", "reference")}
        if g.get("book"):
            req.add("REFERENCE")
        out[dom] = {"informable": {_goal_column(k): str(v).lower() for k, v in g["info"].items()},
                    "requestable": req, "booking": dict(g.get("book") or {})}
    return out


def _booked_per_turn(log: Sequence[Any]) -> tuple[tuple[str, ...], ...]:
    """Domains whose `booked` list grew at each system turn (the gold dialogue booked them then)."""
    prev: dict[str, int] = {}
    out = []
    for t in range(len(log) // 2):
        meta = (log[2 * t + 1] or {}).get("metadata") or {}
        now = []
        for dom, parts in meta.items():
            booked = ((parts or {}).get("book") or {}).get("booked") or []
            n = len(booked) if isinstance(booked, list) else 0
            if n > prev.get(dom, 0):
                now.append(dom)
            prev[dom] = n
        out.append(tuple(now))
    return tuple(out)


def load_e2e_dialogues(path: str, *, on_bad_row: str = "error", report: LoadReport | None = None,
                       limit: int | None = None) -> Iterator[E2EDialogue]:
    """Dialogues with goals from a MultiWOZ 2.1-layout file (2.4's `data.json` too)."""
    report = report or LoadReport(f"multiwoz:{path}", on_bad_row)
    n = 0
    for did, rec in read_records(path):
        if limit is not None and n >= limit:
            return
        item = None
        with report.row(did):
            rec = require_mapping(rec)
            if "dialogue_id" in rec and "log" in rec:
                did = rec["dialogue_id"]
            dia = _dialogue(did, rec)
            if "goal" not in rec:
                raise BadRow("missing goal", "end-to-end evaluation needs the dialogue's goal", field="goal")
            goal = parse_goal(rec["goal"])
            if not goal:
                raise BadRow("empty goal", "no domain of the goal has an 'info' part", field="goal")
            log = rec["log"]
            spans = tuple((log[2 * t + 1].get("span_info") if isinstance(log[2 * t + 1].get("span_info"), list)
                           else None) for t in range(len(dia.turns)))
            item = E2EDialogue(dia, goal, _booked_per_turn(log)[:len(dia.turns)], spans)
        if item is not None:
            report.keep()
            n += 1
            yield item


# --------------------------------------------------------------------------------------------
# delexicalisation and normalisation
# --------------------------------------------------------------------------------------------

SLOT_CANON = {  # placeholder (lower case) -> mwzeval's canonical slot name
    **{k: "NAME" for k in ("name", "value_name", "restaurant_name", "hotel_name", "attraction_name",
                           "hospital_name", "police_name")},
    **{k: "ADDRESS" for k in ("address", "addr", "value_address", "restaurant_address", "hotel_address",
                              "attraction_address", "hospital_address", "police_address")},
    **{k: "POST" for k in ("postcode", "post", "value_postcode", "restaurant_postcode", "hotel_postcode",
                           "attraction_postcode", "hospital_postcode", "police_postcode")},
    **{k: "PHONE" for k in ("phone", "value_phone", "restaurant_phone", "hotel_phone", "attraction_phone",
                            "hospital_phone", "police_phone", "taxi_phone")},
    **{k: "REFERENCE" for k in ("ref", "reference", "value_reference", "restaurant_reference", "hotel_reference",
                                "attraction_reference", "train_reference")},
    **{k: "TRAINID" for k in ("trainid", "train_id", "id", "value_id", "train", "train_trainid")},
    **{k: "AREA" for k in ("area", "value_area")},
    **{k: "FOOD" for k in ("food", "value_food")},
    **{k: "PRICE" for k in ("price", "pricerange", "value_price", "value_pricerange", "ticket", "fee",
                            "entrancefee", "entrance fee")},
    **{k: "TIME" for k in ("time", "leave", "arrive", "leaveat", "arriveby", "value_time", "booktime",
                           "duration", "value_duration")},
    **{k: "DAY" for k in ("day", "value_day", "bookday")},
    **{k: "PLACE" for k in ("depart", "dest", "departure", "destination", "value_place")},
    **{k: "COUNT" for k in ("choice", "people", "stay", "stars", "value_count", "value_choice", "bookpeople",
                            "bookstay")},
    **{k: "TYPE" for k in ("type", "car", "value_type", "value_car")},
    "internet": "INTERNET", "parking": "PARKING", "department": "DEPARTMENT", "open": "OPEN",
}
_PLACEHOLDER = re.compile(r"\[([\w\s\d]+)\](es|s|-s|-es|)")


def normalize_response(text: str) -> str:
    """mwzeval's `normalize_data` for a response, without Moses (module docstring)."""
    t = _PLACEHOLDER.sub(lambda m: SLOT_CANON.get(m.group(1).lower(), ""), (text or "").lower())
    return " ".join(t.replace("-s", "").replace("-ly", "").split())


class Lexicon:
    """Values to delexicalise: database names / ids / phones / addresses / postcodes, plus values a
    dialogue's environment issued (references, taxi phones)."""

    def __init__(self, values: Mapping[str, str]):
        self.values = {k.lower(): v for k, v in values.items() if len(k.strip()) >= 3}
        self._re = self._compile(self.values)

    @staticmethod
    def _compile(values: Mapping[str, str]):
        if not values:
            return None
        alts = sorted(values, key=len, reverse=True)
        return re.compile(r"(?<![\w])(" + "|".join(re.escape(a) for a in alts) + r")(?![\w])", re.IGNORECASE)

    @classmethod
    def from_db(cls, db: MultiwozDB) -> "Lexicon":
        vals: dict[str, str] = {}
        for dom in ("restaurant", "hotel", "attraction", "police", "hospital"):
            for row in db.raw.get(dom, []):
                for col, ph in (("address", "address"), ("postcode", "postcode"), ("phone", "phone")):
                    if isinstance(row.get(col), str) and row[col] not in ("?", ""):
                        vals.setdefault(row[col].lower(), ph)
        for dom in ("restaurant", "hotel", "attraction", "police"):
            for row in db.raw.get(dom, []):
                if isinstance(row.get("name"), str):
                    vals[row["name"].lower()] = "name"
        for row in db.raw.get("train", []):
            if isinstance(row.get("trainID"), str):
                vals[row["trainID"].lower()] = "trainid"
        return cls(vals)

    def extended(self, extra: Mapping[str, str]) -> "Lexicon":
        return Lexicon({**self.values, **{k.lower(): v for k, v in extra.items()}})

    def delexicalize(self, text: str) -> str:
        if not text or self._re is None:
            return text or ""
        return self._re.sub(lambda m: f"[{self.values[m.group(1).lower()]}]", text)


def delexicalize_with_spans(text: str, spans: Sequence[Sequence[Any]]) -> str:
    """A gold system turn with its MultiWOZ 2.1 `span_info` spans (word indices, end inclusive)
    replaced by `[slot]`; `dontcare` values and overlapping spans are skipped (as mwzeval)."""
    words = text.split()
    done, out, i = set(), [], 0
    good = sorted((s for s in spans if isinstance(s, (list, tuple)) and len(s) >= 5
                   and isinstance(s[3], int) and isinstance(s[4], int) and 0 <= s[3] <= s[4] < len(words)),
                  key=lambda s: s[3])
    for s in good:
        if s[3] < i or str(s[2]).lower() == "dontcare" or s[3] in done:
            continue
        out.extend(words[i:s[3]])
        out.append(f"[{str(s[1]).lower()}]")
        i = s[4] + 1
        done.add(s[3])
    out.extend(words[i:])
    return " ".join(out)


# --------------------------------------------------------------------------------------------
# Inform / Success (mwzeval's rules)
# --------------------------------------------------------------------------------------------

def estimate_domains(states: Sequence[Mapping[str, Mapping[str, str]]]) -> list[list[str]]:
    """Active domain per turn from state changes (mwzeval `get_domain_estimates_from_state`): the
    domain whose slots changed (the one with most slots if several, the previous one if it also
    changed); no change keeps the previous domain (or, when several had changed, another of those)."""
    current, old_state, old_changed = None, {}, []
    out = []
    for state in states:
        changed = [d for d in state if set(state.get(d, {}).items()) - set(old_state.get(d, {}).items())]
        if not changed:
            if current is None:
                out.append([])
                continue
            if len(old_changed) > 1:
                rest = [d for d in old_changed if d in state and d != current]
                if rest:
                    current = rest[0]
        elif current not in changed:
            current = max(changed, key=lambda d: len(state[d]))
        old_state, old_changed = state, changed
        out.append([current])
    return out


def dialog_inform_success(goal: Mapping[str, dict], booked: Sequence[Sequence[str]], utterances: Sequence[str],
                          states: Sequence[Mapping[str, Mapping[str, str]]], domains: Sequence[Sequence[str]],
                          db: MultiwozDB) -> tuple[dict, dict]:
    """(match, success) dicts per domain plus "total", for one dialogue (module docstring);
    `utterances` are normalised (canonical slot names in upper case)."""
    offered: dict[str, Any] = {d: [] for d in goal}
    provided: dict[str, set] = {d: set() for d in goal}
    for text, state, bk, active in zip(utterances, states, booked, domains):
        for dom in goal:
            if dom not in active:
                continue
            if ("NAME" in text and dom in ("restaurant", "hotel", "attraction")) or ("TRAINID" in text and dom == "train"):
                venues = db.query(dom, state[dom]) if dom in state else []
                if not offered[dom] or any(v not in venues for v in offered[dom]):
                    offered[dom] = venues
            for slot in ("PHONE", "ADDRESS", "POST", "REFERENCE", "TRAINID"):
                if slot in text and (slot != "REFERENCE" or dom in bk):
                    provided[dom].add(slot)
    for dom in goal:
        if "name" in goal[dom]["informable"] or dom in ("taxi", "police", "hospital"):
            offered[dom] = "MATCHED"
        if dom == "train" and not offered[dom] and "TRAINID" not in goal[dom]["requestable"]:
            offered[dom] = "MATCHED"
    match: dict[str, bool] = {}
    for dom in goal:
        if offered[dom] == "MATCHED":
            match[dom] = True
        elif dom in VENUE_DOMAINS and offered[dom]:
            match[dom] = set(offered[dom]) <= set(db.query(dom, goal[dom]["informable"]))
        else:
            match[dom] = False
    match["total"] = all(match.values())
    success: dict[str, bool] = {}
    if match["total"]:
        for dom in goal:
            success[dom] = goal[dom]["requestable"] <= provided[dom]
        success["total"] = all(success.values())
    return match, success


# --------------------------------------------------------------------------------------------
# the agent loop
# --------------------------------------------------------------------------------------------

def mwz_state(belief: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The environment's `domain-slot` belief as mwzeval's `{domain: {column: value}}` (booking slots dropped)."""
    out: dict[str, dict[str, str]] = {}
    for key, v in belief.items():
        dom, _, slot = key.partition("-")
        if slot.startswith("book "):
            continue
        out.setdefault(dom, {})[_goal_column(slot)] = v
    return out


@dataclasses.dataclass
class MultiwozE2EResult:
    records: list[dict]
    summary: dict
    dialogues: list[dict]

    def table(self) -> str:
        from jaxtool.eval.report import markdown_table

        return markdown_table(*table_rows(self.summary))


def evaluate_multiwoz_e2e(dialogues: Sequence[E2EDialogue], backend: Any, fmt: Any, db: MultiwozDB, *,
                          max_steps: int = 5, batch_size: int = 8, max_new_tokens: int = 256,
                          reference_rule: str = "gold", ontology: Mapping[str, Iterable[str]] | None = None,
                          system_prompt: str = SYSTEM_PROMPT, max_results: int = 3,
                          prompt_fn: textgen.PromptFn | None = None, progress: bool = False) -> MultiwozE2EResult:
    if reference_rule not in ("gold", "env"):
        raise ConfigError(f"reference rule must be 'gold' or 'env', got {reference_rule!r}")
    if max_steps < 1:
        raise ConfigError(f"--max-steps must be >= 1, got {max_steps}")
    prompt_fn = prompt_fn or textgen.encode_prompt
    stops = tuple(getattr(fmt, "stop_strings", ()) or ())
    batch = EnvBatch(lambda: MultiwozEnv(db, max_results=max_results),
                     [{"dialogue_id": d.dialogue_id} for d in dialogues])
    envs = batch.envs
    tools = tuple(Tool.from_dict(t) for t in envs[0].tools()) if envs else ()
    history: list[list[Message]] = [[Message("system", system_prompt)] for _ in dialogues]
    turn_recs: list[list[dict]] = [[] for _ in dialogues]
    n_turns = max((len(d.dialogue.turns) for d in dialogues), default=0)
    bar = textgen.progress_bar(sum(len(d.dialogue.turns) for d in dialogues), "multiwoz e2e turns", progress)
    for t in range(n_turns):
        live = [i for i, d in enumerate(dialogues) if t < len(d.dialogue.turns)]
        for i in live:
            history[i].append(Message("user", dialogues[i].dialogue.turns[t].user))
            turn_recs[i].append({"calls": [], "steps": 0, "parse_errors": 0, "reply": None})
        pending = list(live)
        for _step in range(max_steps):
            if not pending:
                break
            for s in range(0, len(pending), batch_size):
                chunk = pending[s:s + batch_size]
                prompts = [list(prompt_fn(Conversation(tuple(history[i]), tools=tools), fmt, backend.tokenizer))
                           for i in chunk]
                comps = backend.generate(prompts, max_new_tokens=max_new_tokens, stop_strings=stops, temperature=0.0)
                if len(comps) != len(chunk):
                    raise RuntimeError(f"backend returned {len(comps)} completions for {len(chunk)} prompts")
                for i, comp in zip(chunk, comps):
                    rec = turn_recs[i][t]
                    rec["steps"] += 1
                    reply = fmt.parse(comp.text)
                    if getattr(reply, "error", None) is not None:
                        rec["parse_errors"] += 1
                    calls = tuple(getattr(reply, "tool_calls", ()) or ())
                    if calls and getattr(reply, "error", None) is None:
                        history[i].append(Message("assistant", None, tool_calls=calls))
                        for c, res in zip(calls, batch.step({i: calls})[i]):
                            history[i].append(Message("tool", res.content, name=c.name))
                            rec["calls"].append({"name": c.name, "arguments": dict(c.arguments),
                                                 "result": res.content, "error": res.error})
                    else:
                        text = (reply.content if reply.content is not None else comp.text) or ""
                        rec["reply"] = text.strip()
                        history[i].append(Message("assistant", rec["reply"]))
            pending = [i for i in pending if turn_recs[i][t]["reply"] is None]
        for i in pending:  # step limit without a text reply
            turn_recs[i][t]["reply"] = ""
            turn_recs[i][t]["step_limit"] = True
            history[i].append(Message("assistant", ""))
        for i in live:
            env = envs[i]
            rec = turn_recs[i][t]
            rec["belief"] = dict(env.belief)
            rec["references"] = env.references()
            rec["booked_domains_env"] = sorted({b["domain"] for b in env.bookings})
            rec["taxi_phones"] = [b["phone"] for b in env.bookings if b["domain"] == "taxi"]
        bar.update(len(live))
    bar.close()
    return score_dialogues(dialogues, turn_recs, db, reference_rule=reference_rule, ontology=ontology)


def score_dialogues(dialogues: Sequence[E2EDialogue], turn_recs: Sequence[Sequence[dict]], db: MultiwozDB, *,
                    reference_rule: str = "gold", ontology: Mapping[str, Iterable[str]] | None = None
                    ) -> MultiwozE2EResult:
    """Inform / Success / BLEU / JGA from each turn's reply and environment state (`turn_recs[i][t]`
    holds `reply`, `belief`, `references`, `booked_domains_env`, `taxi_phones`, `calls`)."""
    lexicon = Lexicon.from_db(db)
    records, per_dialogue = [], []
    hyps, refs = [], []
    for d, trs in zip(dialogues, turn_recs):
        extra = {}
        for tr in trs:
            extra.update({r: "reference" for r in tr.get("references", [])})
            extra.update({p: "phone" for p in tr.get("taxi_phones", [])})
        lex = lexicon.extended(extra)
        states = [mwz_state(tr["belief"]) for tr in trs]
        domains = estimate_domains(states)
        delex = [lex.delexicalize(tr["reply"] or "") for tr in trs]
        normed = [normalize_response(x) for x in delex]
        if reference_rule == "gold":
            booked = list(d.booked)
        else:
            booked = [tuple(tr.get("booked_domains_env", [])) for tr in trs]
        match, success = dialog_inform_success(d.goal, booked, normed, states, domains, db)
        gold_delex = []
        for t, turn in enumerate(d.dialogue.turns):
            sp = d.span_info[t]
            gold_delex.append(delexicalize_with_spans(turn.system, sp) if sp is not None else lex.delexicalize(turn.system))
        gold_norm = [normalize_response(x) for x in gold_delex]
        hyps += normed
        refs += gold_norm
        jgas = []
        for t, (turn, tr) in enumerate(zip(d.dialogue.turns, trs)):
            pred = dst.fix_prediction(tr["belief"], ontology)
            gold = dst.normalize_state(turn.state)
            ok = dst.joint_goal(pred, gold)
            jgas.append(ok)
            records.append({"dialogue_id": d.dialogue_id, "turn": t, "user": turn.user, "gold_system": turn.system,
                            "reply": tr["reply"], "reply_delex": normed[t], "gold_delex": gold_norm[t],
                            "calls": tr.get("calls", []), "steps": tr.get("steps", 0),
                            "parse_errors": tr.get("parse_errors", 0), "step_limit": bool(tr.get("step_limit")),
                            "active_domains": domains[t], "api_state": states[t], "pred_state": pred,
                            "gold_state": gold, "jga": ok})
        per_dialogue.append({"dialogue_id": d.dialogue_id, "goal_domains": sorted(d.goal),
                             "inform": match, "success": success,
                             "requestable": {k: sorted(v["requestable"]) for k, v in d.goal.items()}})
    return MultiwozE2EResult(records, summarise(per_dialogue, records, hyps, refs, reference_rule), per_dialogue)


def summarise(per_dialogue: Sequence[dict], records: Sequence[dict], hyps: Sequence[str], refs: Sequence[str],
              reference_rule: str = "gold") -> dict:
    n = len(per_dialogue)
    nt = len(records)
    inform = sum(bool(x["inform"].get("total")) for x in per_dialogue)
    succ = sum(bool(x["success"].get("total")) for x in per_dialogue)
    per_domain = {}
    for dom in GOAL_DOMAINS:
        ds = [x for x in per_dialogue if dom in x["inform"]]
        if ds:
            per_domain[dom] = {"dialogues": len(ds), "inform": sum(x["inform"][dom] for x in ds) / len(ds),
                               "success": sum(bool(x["success"].get(dom)) for x in ds) / len(ds)}
    calls = [c for r in records for c in r["calls"]]
    bleu = corpus_bleu(list(hyps), list(refs)) if hyps else float("nan")
    s = {
        "protocol": "e2e", "scorer": "Tomiinek/MultiWOZ_Evaluation (mwzeval) rules, reimplemented",
        "reference_rule": reference_rule,
        "n_dialogues": n, "n_turns": nt,
        "inform": inform / n if n else float("nan"), "success": succ / n if n else float("nan"),
        "bleu": bleu, "jga": sum(r["jga"] for r in records) / nt if nt else float("nan"),
        "per_domain": per_domain, "tool_calls": len(calls), "tool_errors": sum(bool(c["error"]) for c in calls),
        "parse_errors": sum(r["parse_errors"] for r in records),
        "step_limit_turns": sum(r["step_limit"] for r in records),
        "note": "user turns replayed from the dataset (offline evaluation, as CALM / AutoTOD); "
                "MultiWOZ 2.1-layout data unless the file is MultiWOZ 2.4",
    }
    if n:
        s["combined"] = (s["inform"] + s["success"]) * 50 + bleu
    return s


def table_rows(summary: dict) -> tuple[list[str], list[list]]:
    rows = [["Inform", summary["n_dialogues"], summary["inform"]],
            ["Success", summary["n_dialogues"], summary["success"]],
            ["BLEU (0-100)", summary["n_turns"], summary["bleu"]],
            ["JGA (API state)", summary["n_turns"], summary["jga"]]]
    rows += [[f"Inform {d}", v["dialogues"], v["inform"]] for d, v in summary["per_domain"].items()]
    rows += [[f"Success {d}", v["dialogues"], v["success"]] for d, v in summary["per_domain"].items()]
    rows += [["tool calls (errors)", summary["tool_calls"], summary["tool_errors"]],
             ["turns at the step limit", summary["n_turns"], summary["step_limit_turns"]]]
    return ["metric", "n", "score"], rows


def chart_values(summary: dict) -> dict[str, float]:
    return {"Inform": summary["inform"], "Success": summary["success"], "BLEU/100": summary["bleu"] / 100,
            "JGA": summary["jga"]}
