"""BFCL (Berkeley Function Calling Leaderboard) single-turn items, read from the data files that ship
inside the `bfcl_eval` package (`pip install --no-deps bfcl-eval`), or from a directory laid out
the same way (the test fixtures).

On disk (BFCL v4) each category is two files, both JSON Lines despite the `.json` extension::

    <data>/BFCL_v4_<category>.json
        {"id": "simple_python_0",
         "question": [[{"role": "user", "content": "Find the area of a triangle ..."}]],
         "function": [{"name": "calculate_triangle_area", "description": "...",
                       "parameters": {"type": "dict",
                                      "properties": {"base": {"type": "integer", ...}, ...},
                                      "required": ["base", "height"]}}]}
    <data>/possible_answer/BFCL_v4_<category>.json
        {"id": "simple_python_0",
         "ground_truth": [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}]}

`question` is a list of turns; the single-turn categories read here have exactly one turn (a list of
messages, sometimes opening with a system message). Function docs use BFCL's own type names
(`dict`, `float`, `tuple`, `any`, ...): `BFCLItem.functions` keeps them untouched for the AST
checker, and `doc_to_tool` converts them to JSON-schema `Tool`s for prompting. The relevance
categories (`irrelevance`, `live_irrelevance`, `live_relevance`) have no possible-answer file.

`load("simple_python")` (or a path to a `BFCL_v4_<category>.json` file) yields `Conversation`s for
the source registry; the evaluator uses `read_category`, which returns `BFCLItem`s.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import re
from typing import Any, Iterator, Mapping

from jaxtool.data.schema import Conversation, Message, SchemaError, Tool
from jaxtool.data.sources.base import BadRow, LoadReport, read_jsonl, require_field, require_mapping
from jaxtool.errors import DataError

VERSION_PREFIX = "BFCL_v4"

# The single-turn categories, in the order BFCL's leaderboard lists them (BFCL's Non-Live "simple" is
# the unweighted mean of simple_python, simple_java and simple_javascript).
AST_CATEGORIES = (
    "simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple",
    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple",
)
RELEVANCE_CATEGORIES = ("irrelevance", "live_irrelevance", "live_relevance")
CATEGORIES = AST_CATEGORIES + RELEVANCE_CATEGORIES
# simple_java / simple_javascript: argument values are Java / JavaScript source text, decoded with
# `decode.decode_source_call` and converted by BFCL's type converters before the AST checker compares
# them (checker.language_of). Nothing shipped is unsupported now; kept for callers that list it.
UNSUPPORTED_CATEGORIES: tuple[str, ...] = ()

# Categories `bfcl-score` can score: the single-turn ones plus BFCL's multi-turn categories
# (jaxtool.eval.bfcl.multi_turn, replayed on BFCL's simulators).
MULTI_TURN_CATEGORIES = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param",
                         "multi_turn_long_context")
SCORABLE_CATEGORIES = CATEGORIES + MULTI_TURN_CATEGORIES

# BFCL type name -> JSON-schema type, for prompting (the checker keeps BFCL's names).
# Unknown names become "string", as BFCL's own converter does.
JSON_SCHEMA_TYPE = {
    "integer": "integer", "float": "number", "number": "number", "string": "string",
    "boolean": "boolean", "bool": "boolean", "array": "array", "list": "array", "tuple": "array",
    "dict": "object", "object": "object", "any": "string",
}
FLOAT_HINT = " This is a float type value."


@dataclasses.dataclass(frozen=True)
class BFCLItem:
    """One BFCL test entry.

    id          : BFCL's id, e.g. "live_multiple_12-4-3"
    category    : e.g. "live_multiple"
    messages    : the (single) turn's messages, `{"role", "content"}` dicts as in the file
    functions   : the function docs exactly as in the file (BFCL type names)
    ground_truth: `[{func_name: {param: [acceptable values...]}}, ...]`, or None for the
                  relevance categories
    """

    id: str
    category: str
    messages: tuple[Mapping[str, Any], ...]
    functions: tuple[Mapping[str, Any], ...]
    ground_truth: tuple[Mapping[str, Any], ...] | None = None

    def conversation(self, *, language_hint: bool = False, float_hint: bool = False) -> Conversation:
        """The item as a `Conversation`: its messages plus the function docs as JSON-schema tools."""
        hint = PYTHON_HINT if language_hint else None
        return Conversation(
            messages=tuple(Message(m["role"], m["content"]) for m in self.messages),
            tools=tuple(doc_to_tool(f, description_suffix=hint, float_hint=float_hint) for f in self.functions),
            meta={"source": "bfcl", "id": self.id, "category": self.category},
        )


# BFCL appends this to every Python function description it shows a model (its
# `include_language_specific_hint`); the checker always sees the docs without it.
PYTHON_HINT = " Note that the provided function is in Python 3 syntax."


# ------------------------------------------------------------------------------------------------
# locating files
# ------------------------------------------------------------------------------------------------

def data_dir() -> str:
    """The `data/` directory inside the installed `bfcl_eval` package (found without importing it:
    importing `bfcl_eval` pulls dependencies a `--no-deps` install does not have)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("BFCL data needs the bfcl-eval package: pip install --no-deps bfcl-eval "
                        "(or pass a directory holding BFCL_v4_<category>.json files)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data")
    if not os.path.isdir(path):
        raise DataError(f"the installed bfcl_eval package has no data directory at {path}")
    return path


def question_file(category: str, root: str | None = None) -> str:
    return os.path.join(root or data_dir(), f"{VERSION_PREFIX}_{category}.json")


def answer_file(category: str, root: str | None = None) -> str:
    return os.path.join(root or data_dir(), "possible_answer", f"{VERSION_PREFIX}_{category}.json")


def check_category(category: str) -> str:
    if category in CATEGORIES:
        return category
    if category in UNSUPPORTED_CATEGORIES:
        raise DataError(f"BFCL category {category!r} is not supported (Java/JavaScript values need BFCL's "
                        f"language type converters); supported: {', '.join(CATEGORIES)}")
    raise DataError(f"unknown BFCL category {category!r}; expected one of {', '.join(CATEGORIES)}")


def check_scorable_category(category: str) -> str:
    """A category `bfcl-score` accepts (single-turn or multi-turn), else a DataError listing them."""
    if category in MULTI_TURN_CATEGORIES:
        return category
    if category in UNSUPPORTED_CATEGORIES or category in CATEGORIES:
        return check_category(category)
    raise DataError(f"unknown BFCL category {category!r}; expected one of {', '.join(SCORABLE_CATEGORIES)}")


def category_from_path(path: str) -> str:
    m = re.fullmatch(rf"{VERSION_PREFIX}_(.+)\.jsonl?", os.path.basename(path))
    if not m:
        raise DataError(f"{path}: cannot tell the BFCL category from the file name; expected "
                        f"{VERSION_PREFIX}_<category>.json (or pass category=...)")
    return m.group(1)


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------

def _read_jsonl(path: str) -> Iterator[tuple[int, Any]]:
    """(line index, decoded record) for each non-empty line (BFCL's `.json` files are JSON Lines); an
    undecodable line becomes an "invalid json" bad row naming the line (`require_mapping`)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    yield from read_jsonl(path)


def _check_doc(doc: Any, where: str) -> dict:
    if not isinstance(doc, Mapping):
        raise BadRow("bad function doc", f"expected an object, got {type(doc).__name__}", field=where)
    if not isinstance(doc.get("name"), str) or not doc["name"]:
        raise BadRow("bad function doc", "missing string 'name'", field=where)
    params = doc.get("parameters")
    if not isinstance(params, Mapping) or not isinstance(params.get("properties", {}), Mapping):
        raise BadRow("bad function doc", "'parameters' must be an object with an object 'properties'",
                     field=f"{where}.parameters")
    for pname, spec in (params.get("properties") or {}).items():
        if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
            raise BadRow("bad function doc", "every parameter needs a string 'type'",
                         field=f"{where}.parameters.properties.{pname}")
    req = params.get("required", [])
    if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
        raise BadRow("bad function doc", "'required' must be a list of names", field=f"{where}.parameters.required")
    return dict(doc)


def _check_ground_truth(gt: Any) -> tuple[dict, ...]:
    if not isinstance(gt, list):
        raise BadRow("bad ground truth", f"expected a list, got {type(gt).__name__}", field="ground_truth")
    for j, call in enumerate(gt):
        where = f"ground_truth[{j}]"
        if not isinstance(call, Mapping) or len(call) != 1:
            raise BadRow("bad ground truth", "each entry must be {function_name: {param: [values]}}", field=where)
        (name, params), = call.items()
        if not isinstance(params, Mapping):
            raise BadRow("bad ground truth", "parameters must be an object", field=f"{where}.{name}")
        for p, values in params.items():
            if not isinstance(values, list):
                raise BadRow("bad ground truth", "acceptable values must be a list", field=f"{where}.{name}.{p}")
    return tuple(gt)


def _item_from_record(rec: dict, category: str, answers: dict[str, Any] | None) -> BFCLItem:
    item_id = require_field(rec, "id", str)
    turns = require_field(rec, "question", list)
    if len(turns) != 1 or not isinstance(turns[0], list) or not turns[0]:
        raise BadRow("not single-turn", f"expected exactly one non-empty turn, got {len(turns)} turn(s)",
                     field="question")
    messages = []
    for j, m in enumerate(turns[0]):
        if not isinstance(m, Mapping) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise BadRow("bad message", "expected {role: system|user|assistant, content: string}",
                         field=f"question[0][{j}]")
        messages.append({"role": m["role"], "content": m["content"]})
    docs = require_field(rec, "function", list)
    functions = tuple(_check_doc(d, f"function[{j}]") for j, d in enumerate(docs))
    ground_truth = None
    if answers is not None:
        if item_id not in answers:
            raise BadRow("missing ground truth", f"id {item_id!r} is not in the possible-answer file")
        ground_truth = _check_ground_truth(answers[item_id])
    return BFCLItem(id=item_id, category=category, messages=tuple(messages), functions=functions,
                    ground_truth=ground_truth)


def _read_answers(path: str) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for i, rec in _read_jsonl(path):
        if not isinstance(rec, Mapping) or not isinstance(rec.get("id"), str) \
                or "ground_truth" not in rec:
            raise DataError(f"{path}, line {i + 1}: expected {{\"id\": str, \"ground_truth\": [...]}}")
        answers[rec["id"]] = rec["ground_truth"]
    return answers


def read_category(category: str, *, root: str | None = None, path: str | None = None, limit: int | None = None,
                  on_bad_row: str = "error", report: LoadReport | None = None) -> list[BFCLItem]:
    """All items of one category (the first `limit` when given), with their ground truth.

    root: a directory laid out like `bfcl_eval/data` (default: the installed package's);
    path: an explicit question file instead (its possible answers are looked up in
          `<dir of path>/possible_answer/<same file name>`).
    """
    check_category(category)
    qpath = path or question_file(category, root)
    apath = os.path.join(os.path.dirname(qpath), "possible_answer", os.path.basename(qpath))
    answers = None
    if category not in RELEVANCE_CATEGORIES:
        answers = _read_answers(apath)
    report = report or LoadReport(f"bfcl:{qpath}", on_bad_row=on_bad_row)
    items: list[BFCLItem] = []
    seen: set[str] = set()
    for i, rec in _read_jsonl(qpath):
        if limit is not None and len(items) >= limit:
            break
        with report.row(i + 1):
            item = _item_from_record(require_mapping(rec), category, answers)
            if item.id in seen:
                raise BadRow("duplicate id", item.id, field="id")
            seen.add(item.id)
            items.append(item)
            report.keep()
    return items


def load(path_or_name: str, *, on_bad_row: str = "error", report: LoadReport | None = None,
         limit: int | None = None, category: str | None = None, root: str | None = None,
         **_opts) -> Iterator[Conversation]:
    """Source-registry entry point: `bfcl:<category>` or `bfcl:<path to BFCL_v4_<category>.json>`.

    Yields one `Conversation` per item (messages + JSON-schema tools); `meta` carries `id`,
    `category`, the original `functions` docs and `ground_truth` (None for relevance categories).
    """
    if os.path.exists(path_or_name):
        category = category or category_from_path(path_or_name)
        items = read_category(category, path=path_or_name, limit=limit, on_bad_row=on_bad_row, report=report)
    else:
        items = read_category(category or path_or_name, root=root, limit=limit, on_bad_row=on_bad_row,
                              report=report)
    for item in items:
        conv = item.conversation()
        yield conv.replace(meta={**conv.meta, "functions": [dict(f) for f in item.functions],
                                 "ground_truth": None if item.ground_truth is None else list(item.ground_truth)})


# ------------------------------------------------------------------------------------------------
# function docs -> JSON-schema tools
# ------------------------------------------------------------------------------------------------

def _schema(spec: Mapping[str, Any], float_hint: bool) -> dict:
    out = copy.deepcopy(dict(spec))
    btype = out.get("type")
    if btype is not None:
        out["type"] = JSON_SCHEMA_TYPE.get(btype, "string")
        if btype == "float" and float_hint:
            out["format"] = "float"
            out["description"] = (out.get("description") or "") + FLOAT_HINT
    if isinstance(out.get("properties"), Mapping):
        out["properties"] = {k: _schema(v, float_hint) if isinstance(v, Mapping) else v
                             for k, v in out["properties"].items()}
    if isinstance(out.get("items"), Mapping):
        out["items"] = _schema(out["items"], float_hint)
    return out


def doc_to_tool(doc: Mapping[str, Any], *, description_suffix: str | None = None, float_hint: bool = False,
                name: str | None = None) -> Tool:
    """A BFCL function doc as a JSON-schema `Tool`.

    Types are mapped with `JSON_SCHEMA_TYPE` (dict->object, float->number, tuple->array,
    any->string) at every nesting level; `float_hint` also marks floats the way BFCL's
    function-calling handlers do (`"format": "float"` and a sentence in the description).
    `description_suffix` is appended to the function description (BFCL's language hint);
    `name` overrides the tool name (e.g. dots replaced by underscores).
    """
    params = doc.get("parameters") or {"type": "dict", "properties": {}}
    schema = _schema(params, float_hint)
    schema["type"] = "object"
    schema.setdefault("properties", {})
    desc = (doc.get("description") or "") + (description_suffix or "")
    try:
        return Tool.from_dict({"name": name or doc["name"], "description": desc, "parameters": schema})
    except SchemaError as e:
        raise BadRow("bad function doc", str(e)) from None
