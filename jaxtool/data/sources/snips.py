"""SNIPS NLU benchmark (sonos/nlu-benchmark, 2017-06 custom intent engines) -> Conversations.

Input: one `train_<Intent>_full.json` / `validate_<Intent>.json` file or a directory of them. Each file is
`{"<Intent>": [{"data": [{"text": "..."}, {"text": "...", "entity": "<slot>"}, ...]}, ...]}`:
concatenating the `text` pieces gives the utterance; pieces with `entity` are slot spans.

Conversion (the generic, intent-as-tool view): the utterance (outer whitespace trimmed) is the user
message; the assistant calls the intent as a tool with the slots as arguments (`{slot: span text}`;
span texts are trimmed of surrounding spaces, which 5 training spans carry; a slot that occurs more than
once in an utterance — 61 of the 13,784 training utterances — gets the list of its span texts). The
tools are always the 7 SNIPS intents, each with the slots seen for it in the full training files
(`INTENT_SLOTS`, all optional, string-valued). The intent and slot descriptions are written for jaxtool
(SNIPS ships none). `meta["intent"]` and `meta["spans"]` (`[{"slot", "value", "start", "end"}]`,
character offsets into the user message) keep the annotation for DST-style uses.

Encoding: `train_PlayMusic_full.json` is not valid UTF-8 — an emoji is stored as a UTF-8-encoded
surrogate pair (bytes `ED A0 BC ED BD 95`). Files are read with `errors="surrogatepass"` and surrogate
pairs are joined back into the character they encode (U+1F355 there); an unpaired surrogate becomes
U+FFFD.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping

from jaxtool.data.schema import Conversation, Message, Tool, ToolCall
from jaxtool.data.sources import _common
from jaxtool.data.sources.base import BadRow, LoadReport, read_records
from jaxtool.errors import DataError

SOURCE = "snips"
RELEASE = "sonos/nlu-benchmark (2017-06-custom-intent-engines)"

INTENT_DESCRIPTIONS = {
    "AddToPlaylist": "Add a song, album or artist to a playlist.",
    "BookRestaurant": "Book a table at a restaurant.",
    "GetWeather": "Get the weather forecast for a place and time.",
    "PlayMusic": "Play music: a track, album, artist, playlist or genre.",
    "RateBook": "Give a rating to a book or other written work.",
    "SearchCreativeWork": "Search for a creative work such as a song, book, film, game or TV show.",
    "SearchScreeningEvent": "Find movie showtimes or cinemas showing a movie.",
}

# Slots per intent, as they occur in the seven train_<Intent>_full.json files (all 13,784 utterances).
INTENT_SLOTS = {
    "AddToPlaylist": ("artist", "entity_name", "music_item", "playlist", "playlist_owner"),
    "BookRestaurant": ("city", "country", "cuisine", "facility", "party_size_description", "party_size_number",
                       "poi", "restaurant_name", "restaurant_type", "served_dish", "sort", "spatial_relation",
                       "state", "timeRange"),
    "GetWeather": ("city", "condition_description", "condition_temperature", "country", "current_location",
                   "geographic_poi", "spatial_relation", "state", "timeRange"),
    "PlayMusic": ("album", "artist", "genre", "music_item", "playlist", "service", "sort", "track", "year"),
    "RateBook": ("best_rating", "object_name", "object_part_of_series_type", "object_select", "object_type",
                 "rating_unit", "rating_value"),
    "SearchCreativeWork": ("object_name", "object_type"),
    "SearchScreeningEvent": ("location_name", "movie_name", "movie_type", "object_location_type", "object_type",
                             "spatial_relation", "timeRange"),
}

SLOT_DESCRIPTIONS = {
    "album": "Album name", "artist": "Artist or band name", "best_rating": "Top of the rating scale",
    "city": "City name", "condition_description": "Weather condition asked about, e.g. rain or snow",
    "condition_temperature": "Temperature condition asked about, e.g. hot or freezing",
    "country": "Country name", "cuisine": "Type of cuisine", "current_location": "A reference to the user's current location",
    "entity_name": "Name of the song or item to add", "facility": "Required facility, e.g. parking or wifi",
    "genre": "Music genre", "geographic_poi": "Geographic point of interest, e.g. a park or mountain",
    "location_name": "Cinema name", "movie_name": "Movie title", "movie_type": "Kind of movie, e.g. animated",
    "music_item": "Kind of music item, e.g. song, album or track", "object_location_type": "Kind of venue, e.g. movie house",
    "object_name": "Title of the work", "object_part_of_series_type": "Kind of series the work belongs to",
    "object_select": "Which work is meant, e.g. this or current", "object_type": "Kind of work, e.g. book, novel or TV show",
    "party_size_description": "Who the table is for, described in words", "party_size_number": "Number of people",
    "playlist": "Playlist name", "playlist_owner": "Whose playlist it is", "poi": "Point of interest near the restaurant",
    "rating_unit": "Unit of the rating, e.g. stars or points", "rating_value": "The rating given",
    "restaurant_name": "Restaurant name", "restaurant_type": "Kind of restaurant, e.g. bar or diner",
    "served_dish": "Dish the restaurant should serve", "service": "Music service, e.g. Spotify",
    "sort": "Ordering or quality qualifier, e.g. top-rated or newest", "spatial_relation": "Spatial relation, e.g. near or close by",
    "state": "State or region name", "timeRange": "Date or time expression", "track": "Track title", "year": "Year or decade",
}


def tools() -> tuple[Tool, ...]:
    """The 7 intent tools (fixed order)."""
    return tuple(
        Tool(name=intent, description=INTENT_DESCRIPTIONS[intent],
             parameters={"type": "object",
                         "properties": {s: {"type": "string", "description": SLOT_DESCRIPTIONS[s]} for s in slots},
                         "required": []})
        for intent, slots in INTENT_SLOTS.items())


def load(path_or_name: str | None = None, *, on_bad_row: str = "error", report: LoadReport | None = None,
         limit: int | None = None) -> Iterator[Conversation]:
    """Conversations from a SNIPS intent file or a directory of them."""
    files = locate(path_or_name)
    intent_tools = tools()
    return _common.iterate(SOURCE, _rows(files), lambda i, r: convert(i, r, intent_tools),
                           on_bad_row=on_bad_row, report=report, limit=limit)


def locate(path: str | None) -> list[str]:
    if not path:
        raise DataError(f"snips reads the files of {RELEASE}: give a train_<Intent>_full.json file or a directory")
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".json"))
        if not files:
            raise DataError(f"{path}: no .json files (expected the SNIPS intent files of {RELEASE})")
        return files
    if os.path.isfile(path):
        return [path]
    raise DataError(f"{path}: no such file or directory (snips reads the local files of {RELEASE})")


def _rows(files: list[str]) -> Iterator[tuple[str, Any]]:
    """`("<file>:<i>", (intent, utterance record))` for every utterance of every file."""
    for f in files:
        base = os.path.basename(f)
        for intent, utterances in read_records(f, encoding_errors="surrogatepass"):
            if not isinstance(utterances, list):
                raise DataError(f"{f}: expected {{\"<Intent>\": [utterances]}}, but {intent!r} holds "
                                f"{type(utterances).__name__}")
            for i, u in enumerate(utterances):
                yield f"{base}:{i}", (intent, u)


def fix_surrogates(text: str) -> str:
    """Join UTF-16 surrogate pairs (left by `surrogatepass` decoding) into the characters they encode."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def convert(index: Any, row: tuple[str, Any], intent_tools: tuple[Tool, ...]) -> Conversation:
    intent, rec = row
    if intent not in INTENT_SLOTS:
        raise BadRow("unknown intent", f"{intent!r} is not one of the SNIPS intents {list(INTENT_SLOTS)}",
                     field="intent")
    if not isinstance(rec, Mapping) or not isinstance(rec.get("data"), list) or not rec["data"]:
        raise BadRow("missing field", "expected an utterance {'data': [pieces]}", field="data")
    pieces = []
    for k, p in enumerate(rec["data"]):
        if not isinstance(p, Mapping) or not isinstance(p.get("text"), str):
            raise BadRow("invalid piece", "each piece needs a string 'text'", field=f"data[{k}]")
        slot = p.get("entity")
        if slot is not None and slot not in INTENT_SLOTS[intent]:
            raise BadRow("unknown slot", f"{slot!r} is not a slot of {intent} {list(INTENT_SLOTS[intent])}",
                         field=f"data[{k}].entity")
        pieces.append((fix_surrogates(p["text"]), slot))
    full = "".join(t for t, _ in pieces)
    lead = len(full) - len(full.lstrip())
    utterance = full.strip()
    if not utterance:
        raise BadRow("empty utterance", "the pieces hold no text", field="data")
    spans, args, pos = [], {}, -lead
    for text, slot in pieces:
        if slot is not None:
            value = text.strip()
            start = pos + len(text) - len(text.lstrip())
            spans.append({"slot": slot, "value": value, "start": start, "end": start + len(value)})
            if slot in args:
                args[slot] = (args[slot] if isinstance(args[slot], list) else [args[slot]]) + [value]
            else:
                args[slot] = value
        pos += len(text)
    call = ToolCall(intent, args, id="call_0")
    meta = _common.base_meta(SOURCE, index, None, intent=intent, spans=spans)
    return _common.finish(Conversation(messages=(Message("user", utterance), Message("assistant", None, tool_calls=(call,))),
                                       tools=intent_tools, meta=meta))
