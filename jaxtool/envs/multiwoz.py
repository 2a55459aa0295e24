"""MultiWOZ as a tool environment: per-domain query / book APIs over the dataset's own database.

CALM (Acikgoz et al. 2025, §5.1 and App. B) evaluates MultiWOZ 2.4 end to end as an AutoTOD-style
agent (Xu et al. 2024, "Rethinking task-oriented dialogue systems: from complex modularity to
zero-shot autonomous agent"): the model calls query / book APIs over the MultiWOZ database and then
answers the user. This module is that database and those APIs; `jaxtool.eval.multiwoz_e2e` runs the
dialogues and scores them.

Database (`MultiwozDB`): the `db/*.json` files of the MultiWOZ release (budzianowski/multiwoz
`db/`; a user-supplied directory, never downloaded) — restaurant, hotel, attraction, train (lists of
records), police, hospital; `taxi_db.json` gives car colours / types. Queries follow the rules of the
community's reference evaluator, Tomiinek/MultiWOZ_Evaluation (`mwzeval/database.py`,
`MultiWOZVenueDatabase.query`), so that what the agent is shown and what the scorer counts as "the
venues matching the state" are the same thing:

- column names lower-cased without spaces, `arriveBy` -> `arrive`, `leaveAt` -> `leave`; ignored
  columns: attraction location/openhours, hotel location/price/takesbookings, restaurant
  location/introduction/signature;
- a constraint on a column the domain lacks is ignored; `dontcare`-like values are ignored; values
  are canonicalised (`normalize_value`: venue names, food, type, times, `free` -> `yes`);
- `leave`: the record's time must be >= the constraint; `arrive`: <= the constraint (minutes);
- names (hotel, attraction, restaurant), restaurant food and train departure / destination match
  when fuzzy partial ratio >= 90 (`partial_ratio`, fuzzywuzzy's difflib algorithm); other columns
  exactly; a record value `?` matches anything;
- results are record ids (`trainid` for trains) in file order.

Tools (`MultiwozEnv.tools()`): `find_<domain>` for restaurant, hotel, attraction, train (optional
keyword constraints, the domain's informable slots), `book_restaurant(name, people, day, time)`,
`book_hotel(name, people, day, stay)`, `book_train(trainid, people)`, `book_taxi(departure,
destination, leaveat | arriveby)`, `find_police()`, `find_hospital(department)`. A query returns the
number of matches and the first `max_results` records (the columns a user may ask for). Booking
checks that the venue / train exists and every required argument is present; MultiWOZ has no
availability data, so a well-formed booking always succeeds and returns a reference code
(deterministic: 8 characters from a hash of the entry id, the domain and the booking's ordinal).
Taxi bookings return a car (colour + type) and a 10-digit phone number drawn the same way.

Dialogue state (for JGA): every argument of a query or booking call becomes a slot of the state,
named as `jaxtool.eval.dst` names them (`restaurant-food`, `hotel-book stay`, `train-leaveat`), the
value lower-cased (times as `HH:MM` where readable); a new value overwrites, nothing is removed. `state()` returns `{"belief": {...}, "bookings": [...],
"calls": n}`.

Bad calls never raise: an unknown function, an argument the function does not take, a missing
required argument or a venue not in the database is a `ToolResult(error=True)` whose text names it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
from typing import Any, Mapping, Sequence

from jaxtool.envs.base import EnvEntryError, ToolCall, ToolEnv, ToolResult, function_schema
from jaxtool.errors import DataError

VENUE_DOMAINS = ("restaurant", "hotel", "attraction", "train")
IGNORE_COLUMNS = {"attraction": ("location", "openhours"), "hotel": ("location", "price", "takesbookings"),
                  "restaurant": ("location", "introduction", "signature")}
FUZZY_COLUMNS = {"hotel": {"name"}, "attraction": {"name"}, "restaurant": {"name", "food"},
                 "train": {"departure", "destination"}}
DONTCARE = ("dontcare", "not mentioned", "don't care", "dont care", "do n't care", "do not care")


# --------------------------------------------------------------------------------------------
# value canonicalisation and fuzzy matching (mwzeval/normalization.py, mwzeval/database.py rules)
# --------------------------------------------------------------------------------------------

_NAME_FIXES = {
    "hotel du vin bistro": "hotel du vin and bistro", "the river bar and grill": "the river bar steakhouse and grill",
    "nando's": "nandos", "city center b and b": "city center north b and b", "acorn house": "acorn guest house",
    "caffee uno": "caffe uno", "cafe uno": "caffe uno", "rosa's": "rosas bed and breakfast",
    "restaurant called two two": "restaurant two two", "restaurant 2 two": "restaurant two two",
    "restaurant two 2": "restaurant two two", "restaurant 2 2": "restaurant two two",
    "restaurant 1 7": "restaurant one seven", "restaurant 17": "restaurant one seven",
    "lime house": "limehouse", "cityrooms": "cityroomz", "whale of time": "whale of a time",
    "huntingdon hotel": "huntingdon marriott hotel", "holiday inn exlpress, cambridge": "express by holiday inn cambridge",
    "university hotel": "university arms hotel", "arbury guesthouse and lodge": "arbury lodge guesthouse",
    "bridge house": "bridge guest house", "arbury guesthouse": "arbury lodge guesthouse",
    "nandos in the city centre": "nandos city centre", "broughton gallery": "broughton house gallery",
    "scudamores punt co": "scudamores punting co", "cambridge botanic gardens": "cambridge university botanic gardens",
    "the junction": "junction theatre", "trinity street college": "trinity college", "christ college": "christ's college",
    "christs": "christ's college", "history of science museum": "whipple museum of the history of science",
    "parkside pools": "parkside swimming pool",
    "the botanical gardens at cambridge university": "cambridge university botanic gardens",
    "cafe jello museum": "cafe jello gallery",
}
_FOOD_FIXES = {"eriterean": "mediterranean", "brazilian": "portuguese", "sea food": "seafood", "portugese": "portuguese",
               "modern american": "north american", "americas": "north american", "intalian": "italian",
               "italain": "italian", "asian or oriental": "asian", "english": "british", "australasian": "australian",
               "gastropod": "gastropub", "brutish": "british", "bristish": "british", "europeon": "european"}
_TYPE_FIXES = {"swimming pool": "swimmingpool", "mutliple sports": "multiple sports", "night club": "nightclub",
               "guest house": "guesthouse"}
_TIME_WORDS = {"afternoon": "13:00", "lunch": "12:00", "noon": "12:00", "mid-day": "12:00",
               "around lunch time": "12:00", "morning": "08:00"}


def canonical_time(value: str) -> str:
    """A time phrase as `HH:MM` where it can be read (mwzeval's `time_to_canonical`, main rules)."""
    t = str(value).strip().lower()
    if t in _TIME_WORDS:
        return _TIME_WORDS[t]
    for prefix in ("by ", "after ", "afer "):
        if t.startswith(prefix):
            t = t[len(prefix):].strip()
    pm = t.endswith("pm") or t.endswith("p.m.")
    for suffix in ("a.m.", "p.m.", "am", "pm"):
        if t.endswith(suffix):
            t = t[:-len(suffix)].strip()
            break
    if pm:
        parts = t.split(":")
        if len(parts) == 2 and parts[0].isdigit():
            return f"{int(parts[0]) + 12}:{parts[1]}"
        if len(parts) == 1 and parts[0].isdigit():
            return f"{int(parts[0]) + 12}:00"
    if not t:
        return "00:00"
    if t[-1] in ".,?":
        t = t[:-1]
    if t.isdigit() and len(t) == 4:
        return t[:2] + ":" + t[2:]
    if t.isdigit():
        return t.zfill(2) + ":00"
    t = t.replace(" ", "") if ":" in t else t
    if len(t) == 4 and t[1] == ":":
        return "0" + t
    return t


def minutes(time_string: str) -> int:
    """Minutes after midnight of `HH:MM` (0 for anything else, as mwzeval)."""
    if not re.match(r"[0-9][0-9]:[0-9][0-9]", time_string):
        return 0
    return int(time_string[:2]) * 60 + int(time_string[3:5])


def normalize_value(column: str, value: Any) -> str:
    """mwzeval's `normalize_state_slot_value` for a database column."""
    v = str(value).strip().lower()
    if column in ("name", "destination", "departure"):
        v = v.replace(" & ", " and ").replace("&", " and ").replace(" '", "'")
        return _NAME_FIXES.get(v, v)
    if column == "type":
        return _TYPE_FIXES.get(v, v)
    if column == "food":
        return _FOOD_FIXES.get(v, v)
    if column in ("arrive", "leave"):
        return canonical_time(v)
    if column in ("parking", "internet"):
        return "yes" if v == "free" else v
    return v


def partial_ratio(a: str, b: str) -> int:
    """fuzzywuzzy's `fuzz.partial_ratio` (pure-Python difflib variant): the best `SequenceMatcher`
    ratio of the shorter string against equally long windows of the longer one that start where a
    matching block suggests; 0-100, rounded."""
    if not a or not b:
        return 0
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    best = 0.0
    for i, j, _ in difflib.SequenceMatcher(None, short, long_, autojunk=False).get_matching_blocks():
        start = max(0, j - i)
        window = long_[start:start + len(short)]
        r = difflib.SequenceMatcher(None, short, window, autojunk=False).ratio()
        if r > 0.995:
            return 100
        best = max(best, r)
    return int(round(100 * best))


def _column(name: str) -> str:
    if name == "id":
        return name
    name = name.lower().replace(" ", "")
    return {"arriveby": "arrive", "leaveat": "leave"}.get(name, name)


# --------------------------------------------------------------------------------------------
# database
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class MultiwozDB:
    """The venue tables (columns normalised) plus police, hospital and taxi data, from `db/*.json`."""

    tables: dict[str, list[dict]]
    raw: dict[str, list[dict]]
    taxi: dict
    path: str = ""

    @classmethod
    def load(cls, path: str) -> "MultiwozDB":
        """Read `<path>/{restaurant,hotel,attraction,train,police,hospital,taxi}_db.json` (`path` may
        also be the dataset root holding `db/`)."""
        if os.path.isdir(os.path.join(path, "db")) and not os.path.exists(os.path.join(path, "restaurant_db.json")):
            path = os.path.join(path, "db")
        if not os.path.isdir(path):
            raise DataError(f"--multiwoz-db {path}: no such directory (give MultiWOZ's db/ folder)")
        tables, raw = {}, {}
        taxi: dict = {}
        for domain in VENUE_DOMAINS + ("police", "hospital", "taxi"):
            f = os.path.join(path, f"{domain}_db.json")
            if not os.path.exists(f):
                if domain in ("police", "hospital", "taxi"):
                    continue
                raise DataError(f"{f}: missing (the MultiWOZ database needs {domain}_db.json; "
                                f"--multiwoz-db names the folder)")
            try:
                with open(f, encoding="utf-8") as fh:
                    data = json.load(fh)
            except json.JSONDecodeError as e:
                raise DataError(f"{f}: not valid JSON ({e.msg}, line {e.lineno})") from None
            if domain == "taxi":
                taxi = data[0] if isinstance(data, list) and data else (data if isinstance(data, dict) else {})
                continue
            if not isinstance(data, list) or not all(isinstance(r, Mapping) for r in data):
                raise DataError(f"{f}: expected a JSON list of records")
            raw[domain] = [dict(r) for r in data]
            if domain in VENUE_DOMAINS:
                rows = []
                for i, r in enumerate(data):
                    row = {_column(k): v for k, v in r.items() if k not in IGNORE_COLUMNS.get(domain, ())}
                    key = "trainid" if domain == "train" else "id"
                    if key not in row:
                        raise DataError(f"{f}: record {i} has no '{'trainID' if domain == 'train' else 'id'}' field")
                    rows.append(row)
                tables[domain] = rows
        return cls(tables, raw, taxi, path)

    def columns(self, domain: str) -> set[str]:
        rows = self.tables.get(domain) or []
        return set(rows[0]) if rows else set()

    def query(self, domain: str, constraints: Mapping[str, Any], fuzzy_ratio: int = 90) -> list[str]:
        """Ids (train ids for trains) of the records matching `constraints` (mwzeval's rules, module
        docstring). Constraint keys are column names, `arriveby`/`leaveat` accepted."""
        if domain not in self.tables:
            return []
        cons = {_column(k): v for k, v in constraints.items()}
        query: dict[str, Any] = {}
        for col in self.columns(domain):
            if col not in cons or cons[col] is None:
                continue
            v = str(cons[col]).strip().lower()
            if v in DONTCARE or v == "":
                continue
            v = normalize_value(col, v)
            query[col] = minutes(v) if col in ("arrive", "leave") else v
        out = []
        for row in self.tables[domain]:
            ok = True
            for col, v in query.items():
                have = row.get(col)
                if have is None or have == "?":
                    continue
                if col == "arrive":
                    ok = minutes(str(have)) <= v
                elif col == "leave":
                    ok = minutes(str(have)) >= v
                elif col in FUZZY_COLUMNS.get(domain, ()):
                    ok = partial_ratio(str(have), v) >= fuzzy_ratio
                else:
                    ok = str(have) == v
                if not ok:
                    break
            if ok:
                out.append(str(row["trainid" if domain == "train" else "id"]))
        return out

    def record(self, domain: str, rid: str) -> dict | None:
        key = "trainid" if domain == "train" else "id"
        for row in self.tables.get(domain, []):
            if str(row[key]) == str(rid):
                return row
        return None

    def find_by_name(self, domain: str, name: str) -> dict | None:
        """The record whose canonical name equals `name` (canonicalised), else the best fuzzy match >= 90."""
        want = normalize_value("name", name)
        rows = self.tables.get(domain, [])
        for row in rows:
            if str(row.get("name", "")).lower() == want:
                return row
        ids = self.query(domain, {"name": name})
        return self.record(domain, ids[0]) if ids else None


# --------------------------------------------------------------------------------------------
# the environment
# --------------------------------------------------------------------------------------------

_S = {"type": "string"}
INFORMABLE: dict[str, dict[str, str]] = {   # tool argument -> description
    "restaurant": {"name": "restaurant name", "food": "type of food", "pricerange": "cheap, moderate or expensive",
                   "area": "centre, north, south, east or west"},
    "hotel": {"name": "hotel name", "type": "hotel or guesthouse", "pricerange": "cheap, moderate or expensive",
              "area": "centre, north, south, east or west", "stars": "star rating 0-5",
              "parking": "yes if free parking is wanted", "internet": "yes if free wifi is wanted"},
    "attraction": {"name": "attraction name", "type": "e.g. museum, college, park, nightclub",
                   "area": "centre, north, south, east or west"},
    "train": {"departure": "departure station", "destination": "arrival station", "day": "day of travel",
              "leaveat": "leave at or after, HH:MM", "arriveby": "arrive by, HH:MM"},
}
BOOK_ARGS: dict[str, dict[str, tuple[str, bool]]] = {  # argument -> (state slot, required)
    "restaurant": {"name": ("name", True), "people": ("book people", True), "day": ("book day", True),
                   "time": ("book time", True)},
    "hotel": {"name": ("name", True), "people": ("book people", True), "day": ("book day", True),
              "stay": ("book stay", True)},
    "train": {"trainid": ("", True), "people": ("book people", True)},
    "taxi": {"departure": ("departure", True), "destination": ("destination", True), "leaveat": ("leaveat", False),
             "arriveby": ("arriveby", False)},
}
SHOWN_COLUMNS = {"restaurant": ("name", "food", "pricerange", "area", "address", "postcode", "phone"),
                 "hotel": ("name", "type", "pricerange", "area", "stars", "parking", "internet", "address",
                           "postcode", "phone"),
                 "attraction": ("name", "type", "area", "entrancefee", "address", "postcode", "phone"),
                 "train": ("trainid", "departure", "destination", "day", "leave", "arrive", "duration", "price")}


def _tool_schemas() -> list[dict]:
    tools = []
    for dom, args in INFORMABLE.items():
        tools.append(function_schema(f"find_{dom}", f"Search the {dom} database; all constraints optional.",
                                     {a: {"type": "string", "description": d} for a, d in args.items()}))
    descr = {"restaurant": "Book a table at a restaurant.", "hotel": "Book a hotel stay.",
             "train": "Book train tickets.", "taxi": "Book a taxi (give leaveat or arriveby)."}
    for dom, args in BOOK_ARGS.items():
        tools.append(function_schema(f"book_{dom}", descr[dom], {a: dict(_S) for a in args},
                                     [a for a, (_, req) in args.items() if req]))
    tools.append(function_schema("find_police", "The police station's address and phone.", {}))
    tools.append(function_schema("find_hospital", "Hospital departments and phone numbers.",
                                 {"department": {"type": "string", "description": "department name"}}))
    return tools


_TOOLS = _tool_schemas()
_ALLOWED = {t["function"]["name"]: set(t["function"]["parameters"]["properties"]) for t in _TOOLS}
_REQUIRED = {t["function"]["name"]: set(t["function"]["parameters"]["required"]) for t in _TOOLS}
_STATE_SLOT = {"leaveat": "leaveat", "arriveby": "arriveby"}


class MultiwozEnv(ToolEnv):
    """One dialogue's booking world over a shared, read-only `MultiwozDB` (module docstring)."""

    def __init__(self, db: MultiwozDB, max_results: int = 3):
        self.db = db
        self.max_results = max_results
        self.entry_id = ""
        self.belief: dict[str, str] = {}
        self.bookings: list[dict] = []
        self.calls = 0

    def tools(self) -> list[dict]:
        return [dict(t) for t in _TOOLS]

    def reset(self, entry: Mapping[str, Any] | None = None) -> str | None:
        entry = entry or {}
        if not isinstance(entry, Mapping):
            raise EnvEntryError(f"MultiwozEnv entry must be an object, got {type(entry).__name__}")
        self.entry_id = str(entry.get("dialogue_id", ""))
        self.belief, self.bookings, self.calls = {}, [], 0
        return None

    def state(self) -> dict:
        return {"belief": dict(self.belief), "bookings": [dict(b) for b in self.bookings], "calls": self.calls}

    def snapshot(self) -> Any:
        return (dict(self.belief), [dict(b) for b in self.bookings], self.calls)

    def restore(self, snap: Any) -> None:
        self.belief, self.bookings, self.calls = dict(snap[0]), [dict(b) for b in snap[1]], snap[2]

    def references(self) -> list[str]:
        return [b["reference"] for b in self.bookings if "reference" in b]

    def step(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        return [self._one(c) for c in calls]

    # ---------------------------------------------------------------------------------------

    def _code(self, domain: str, k: int, alphabet: str, n: int) -> str:
        h = hashlib.sha256(f"{self.entry_id}|{domain}|{k}".encode()).digest()
        return "".join(alphabet[b % len(alphabet)] for b in h[:n])

    def _set(self, domain: str, slot: str, value: Any) -> None:
        v = str(value).strip().lower()
        if v and slot in ("leaveat", "arriveby", "book time") and v not in DONTCARE:
            v = canonical_time(v)
        if v:
            self.belief[f"{domain}-{slot}"] = v

    def _one(self, call: ToolCall) -> ToolResult:
        name, args = call.name, dict(call.arguments)
        self.calls += 1
        if name not in _ALLOWED:
            return ToolResult(f"Error: unknown function {name!r}; available: {sorted(_ALLOWED)}", True, name)
        extra = sorted(set(args) - _ALLOWED[name])
        if extra:
            return ToolResult(f"Error: {name}() got unexpected argument(s) {extra}; it takes {sorted(_ALLOWED[name])}",
                              True, name)
        missing = sorted(_REQUIRED[name] - {k for k, v in args.items() if str(v).strip()})
        if missing:
            return ToolResult(f"Error: {name}() is missing required argument(s) {missing}", True, name)
        bad = [k for k, v in args.items() if isinstance(v, (dict, list))]
        if bad:
            return ToolResult(f"Error: {name}(): argument(s) {bad} must be text", True, name)
        kind, _, domain = name.partition("_")
        if kind == "find":
            return self._find(name, domain, args)
        return self._book(name, domain, args)

    def _find(self, name: str, domain: str, args: dict) -> ToolResult:
        if domain == "police":
            rows = self.db.raw.get("police", [])
            return ToolResult(json.dumps({"count": len(rows), "results": rows[:1]}, ensure_ascii=False), False, name)
        if domain == "hospital":
            rows = self.db.raw.get("hospital", [])
            dep = str(args.get("department", "")).strip().lower()
            if dep:
                self._set("hospital", "department", dep)
                rows = [r for r in rows if dep in str(r.get("department", "")).lower()]
            return ToolResult(json.dumps({"count": len(rows), "results": rows[:self.max_results]},
                                         ensure_ascii=False), False, name)
        for k, v in args.items():
            self._set(domain, k, v)
        ids = self.db.query(domain, args)
        shown = []
        for rid in ids[:self.max_results]:
            row = self.db.record(domain, rid) or {}
            shown.append({c: row[c] for c in SHOWN_COLUMNS[domain] if c in row})
        return ToolResult(json.dumps({"count": len(ids), "results": shown}, ensure_ascii=False), False, name)

    def _book(self, name: str, domain: str, args: dict) -> ToolResult:
        booking: dict[str, Any] = {"domain": domain}
        if domain in ("restaurant", "hotel"):
            row = self.db.find_by_name(domain, str(args["name"]))
            if row is None:
                return ToolResult(f"Error: no {domain} named {args['name']!r} in the database", True, name)
            booking["name"] = row["name"]
        elif domain == "train":
            row = self.db.record("train", str(args["trainid"]).strip().upper())
            if row is None:
                return ToolResult(f"Error: no train with id {args['trainid']!r}", True, name)
            booking["trainid"] = row["trainid"]
            for col, slot in (("departure", "departure"), ("destination", "destination"), ("day", "day")):
                self._set("train", slot, row[col])
        else:  # taxi
            if not str(args.get("leaveat", "")).strip() and not str(args.get("arriveby", "")).strip():
                return ToolResult("Error: book_taxi() needs leaveat or arriveby", True, name)
        for arg, (slot, _) in BOOK_ARGS[domain].items():
            if slot and arg in args:
                self._set(domain, slot, args[arg])
        booking.update({k: str(v) for k, v in args.items() if k not in booking})
        k = sum(b["domain"] == domain for b in self.bookings)
        if domain == "taxi":
            colors = self.db.taxi.get("taxi_colors") or ["black"]
            types = self.db.taxi.get("taxi_types") or ["toyota"]
            h = self._code("taxi", k, "0123456789", 12)
            booking["car"] = f"{colors[int(h[:3]) % len(colors)]} {types[int(h[3:6]) % len(types)]}"
            booking["phone"] = "07" + self._code("taxi-phone", k, "0123456789", 9)[:9]
        else:
            booking["reference"] = self._code(domain, k, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 8)
        self.bookings.append(booking)
        out = {k2: v for k2, v in booking.items() if k2 in ("name", "trainid", "reference", "car", "phone")}
        return ToolResult(json.dumps({"booked": True, **out}, ensure_ascii=False), False, name)
