"""BFCL's multi-turn simulators behind the `ToolEnv` interface.

The worlds are the classes that ship in the installed `bfcl-eval` package
(`bfcl_eval/eval_checker/multi_turn_eval/func_source_code/`: GorillaFileSystem, MathAPI, MessageAPI,
TwitterAPI, TicketAPI, TradingBot, TravelAPI, VehicleControlAPI), built for an entry the way BFCL's
executor builds them (`multi_turn_utils.execute_multi_turn_func_call`): one instance per class in the
entry's `involved_classes`, in that order; every class except the stateless `MathAPI` loads
`deepcopy(initial_config[class])` through its `_load_scenario(config, long_context=...)`, with
`long_context` on for the `multi_turn_long_context` (and `composite`) categories; the callable tools
are every public bound method, a later class's method shadowing an earlier class's of the same name.

Calls are dispatched, never evaluated. BFCL's executor rewrites `f(...)` into
`<instance>.f(...)` with a regex and `eval`s the string behind an 8-name denylist. Here a call string
is parsed with `ast` into a bare function name plus *literal* positional and keyword arguments
(`ast.literal_eval` per argument), and the bound method is looked up in this environment's own table
and called with them. Anything else — attribute chains, `__import__`, lambdas, f-strings, nested
calls, `**kwargs`, starred arguments, comprehensions, names, dunder names — is refused with an error
result, and the method never runs. (BFCL's `eval` would also run a nested call such as
`cd(folder=pwd())`; no ground-truth call of the shipped data needs one: tests/test_bfcl_env.py
parses all of them.)

Results and errors are the strings BFCL's executor returns: a `str` result as is, a `dict` as
`json.dumps` (its `str` when not serialisable), anything else `str(result)`; any exception as
`"Error during execution: <message>"` — an unknown name gives `"name 'f' is not defined"` as
Python's NameError would, wrong arguments the TypeError of the call, the denylisted names
(`kill`, `exit`, `quit`, `remove`, `unlink`, `popen`, `Popen`, `run`) BFCL's
`"Function call <name> is not allowed."`.

Kept exactly as BFCL has it (it matters for agreement with BFCL's verdicts): the simulators seed the
ids they generate (message, booking, card, order ids) from a per-instance `random.Random` seeded by
the scenario, so a model that makes one extra state-changing call shifts every later id, on the
model's instances only — BFCL's checker then sees different results/state, and so does this one.

Where this differs from BFCL's executor, on purpose:
- **No shared instances.** BFCL keeps instances in its module's `globals()` under
  `<model>_<entry id>_<class>_instance`: every later call with the same model name and entry id
  (a second scoring run in the same process, another caller) gets the already-mutated instance.
  Each `BFCLEnv` owns its instances.
- **No aliasing of module-level data.** Simulators copy their `DEFAULT_STATE` but their
  long-context extensions (`long_context.py`'s lists and dicts) are module-level objects; after
  loading, the instance's attributes are deep-copied once, so one world's mutation cannot reach
  another's.
- **String arguments are not rewritten.** BFCL's regex prepends the instance name to every
  `word(` it finds, inside string literals too (`echo(content='see ls(x)')` writes
  `'see <instance>.ls(x)'` into the file). Here arguments reach the method as written. Where a
  ground-truth string contains such a pattern, BFCL rewrites the model's and the ground truth's
  strings alike, so the state check is unaffected unless only one side contains the pattern.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
import importlib.util
import inspect
import json
import os
from typing import Any, Mapping, Sequence

from jaxtool.envs.base import EnvEntryError, ToolCall, ToolEnv, ToolResult

CLASS_MODULES = {
    "GorillaFileSystem": "gorilla_file_system",
    "MathAPI": "math_api",
    "MessageAPI": "message_api",
    "TwitterAPI": "posting_api",
    "TicketAPI": "ticket_api",
    "TradingBot": "trading_bot",
    "TravelAPI": "travel_booking",
    "VehicleControlAPI": "vehicle_control",
}
FUNC_DOC_FILES = {
    "GorillaFileSystem": "gorilla_file_system.json", "MathAPI": "math_api.json",
    "MessageAPI": "message_api.json", "TwitterAPI": "posting_api.json", "TicketAPI": "ticket_api.json",
    "TradingBot": "trading_bot.json", "TravelAPI": "travel_booking.json",
    "VehicleControlAPI": "vehicle_control.json",
}
STATELESS_CLASSES = ("MathAPI",)
DENYLIST = ("kill", "exit", "quit", "remove", "unlink", "popen", "Popen", "run")
_PACKAGE = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"
MAX_CALL_CHARS = 1_000_000  # a single call string longer than this is refused before parsing


def _import_class(name: str):
    if name not in CLASS_MODULES:
        raise EnvEntryError(f"BFCL class {name!r} is not one of the offline multi-turn simulators "
                            f"({', '.join(CLASS_MODULES)})")
    try:
        module = importlib.import_module(f"{_PACKAGE}.{CLASS_MODULES[name]}")
    except ImportError as e:
        raise EnvEntryError(f"BFCL simulator {name} needs the bfcl-eval package "
                            f"(pip install --no-deps bfcl-eval) and mpmath: {e}") from None
    return getattr(module, name)


def func_doc_dir() -> str:
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise EnvEntryError("BFCL function docs need the bfcl-eval package: pip install --no-deps bfcl-eval")
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "multi_turn_func_doc")


_DOCS: dict[str, list[dict]] = {}


def class_docs(class_name: str, root: str | None = None) -> list[dict]:
    """BFCL's function docs (its own type names) for one simulator class."""
    key = f"{root}:{class_name}"
    if key not in _DOCS:
        path = os.path.join(root or func_doc_dir(), FUNC_DOC_FILES[class_name])
        with open(path, encoding="utf-8") as fh:
            _DOCS[key] = [json.loads(line) for line in fh if line.strip()]
    return copy.deepcopy(_DOCS[key])


def is_long_context(entry_id: str) -> bool:
    """BFCL's rule: `long_context` in the entry's category (the id without its index) or `composite`."""
    category = entry_id.rsplit("_", 1)[0]
    return "long_context" in category or "composite" in category


# ------------------------------------------------------------------------------------------------
# parsing call strings (never evaluated)
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ParsedCall:
    """One call string as a bare name plus literal arguments."""

    name: str
    args: tuple = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Refused:
    """Why a call string was not run."""

    reason: str

    def __bool__(self) -> bool:
        return False


def _literal(node: ast.AST) -> Any:
    """`ast.literal_eval` on one argument node (a Refused-worthy ValueError otherwise)."""
    return ast.literal_eval(node)


def parse_call(text: str) -> ParsedCall | Refused:
    """`name(literal, key=literal, ...)` -> ParsedCall; anything else -> Refused (never raises)."""
    if not isinstance(text, str):
        return Refused(f"a call must be a string, got {type(text).__name__}")
    if len(text) > MAX_CALL_CHARS:
        return Refused(f"call string of {len(text)} characters (more than {MAX_CALL_CHARS})")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        return Refused(f"invalid syntax: {e.msg}")
    except (ValueError, RecursionError, MemoryError) as e:
        return Refused(f"unparseable call ({type(e).__name__})")
    if not isinstance(tree, ast.Call):
        return Refused(f"not a function call ({type(tree).__name__})")
    if not isinstance(tree.func, ast.Name):
        return Refused("the callee must be a bare function name (no attributes, subscripts or calls)")
    name = tree.func.id
    if name.startswith("_"):
        return Refused(f"{name}: private and dunder names are not callable")
    args, kwargs = [], {}
    try:
        for a in tree.args:
            if isinstance(a, ast.Starred):
                return Refused(f"{name}: starred arguments are not allowed")
            args.append(_literal(a))
        for kw in tree.keywords:
            if kw.arg is None:
                return Refused(f"{name}: **kwargs are not allowed")
            kwargs[kw.arg] = _literal(kw.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return Refused(f"{name}: arguments must be literals")
    return ParsedCall(name, tuple(args), kwargs)


def result_text(value: Any) -> str:
    """A simulator's return value as BFCL's executor turns it into text."""
    if type(value) is str:
        return value
    if type(value) is dict:
        try:
            return json.dumps(value)
        except Exception:  # noqa: BLE001 — BFCL's bare except: any unserialisable content
            return str(value)
    return str(value)


# ------------------------------------------------------------------------------------------------
# the environment
# ------------------------------------------------------------------------------------------------

class BFCLEnv(ToolEnv):
    """One BFCL multi-turn entry's simulators.

        env = BFCLEnv()
        env.reset(entry)                      # entry: a BFCL_v4_multi_turn_*.json row
        env.step_strings(["cd(folder='document')", "ls()"])   # -> [ToolResult, ToolResult]
        env.step([ToolCall("mkdir", {"dir_name": "temp"})])
        env.state()                           # {class name: {public attribute: value}}

    `tools()` lists the function docs available now: the involved classes' docs, without the
    entry's `excluded_function` and without its `missed_function` docs until `add_missed(turn)`
    (BFCL's miss_func category). `functions()` gives them in BFCL's own doc format.
    `long_context` defaults to BFCL's rule on the entry id.
    """

    def __init__(self, *, long_context: bool | None = None, doc_root: str | None = None):
        self._long_context_override = long_context
        self._doc_root = doc_root
        self.instances: dict[str, Any] = {}
        self._methods: dict[str, Any] = {}
        self._docs: list[dict] = []
        self._held_out: dict[str, list[dict]] = {}
        self.entry_id = ""
        self.long_context = False

    # --- building -------------------------------------------------------------------------------
    def reset(self, entry: Mapping[str, Any] | None = None) -> str | None:
        if not isinstance(entry, Mapping):
            raise EnvEntryError("BFCLEnv.reset needs a BFCL multi-turn entry (an object)")
        eid = entry.get("id")
        where = f"BFCL entry {eid!r}"
        if not isinstance(eid, str):
            raise EnvEntryError(f"{where}: field 'id' must be a string")
        classes = entry.get("involved_classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise EnvEntryError(f"{where}: field 'involved_classes' must be a list of class names")
        config = entry.get("initial_config", {})
        if not isinstance(config, Mapping):
            raise EnvEntryError(f"{where}: field 'initial_config' must be an object")
        self.entry_id = eid
        self.long_context = (is_long_context(eid) if self._long_context_override is None
                             else self._long_context_override)
        self.instances, self._methods = {}, {}
        for cname in classes:
            cls = _import_class(cname)
            inst = cls()
            if cname not in STATELESS_CLASSES:
                inst._load_scenario(copy.deepcopy(dict(config.get(cname, {}))), long_context=self.long_context)
                # detach from module-level data the scenario loader may have referenced
                inst.__dict__.update(copy.deepcopy(inst.__dict__))
            self.instances[cname] = inst
        self._bind()
        excluded = set(entry.get("excluded_function", []) or [])
        docs = [d for c in classes for d in class_docs(c, self._doc_root) if d["name"] not in excluded]
        missed = entry.get("missed_function", {}) or {}
        if not isinstance(missed, Mapping):
            raise EnvEntryError(f"{where}: field 'missed_function' must be an object {{turn: [names]}}")
        self._held_out = {}
        for turn, names in missed.items():
            held = []
            for n in names:
                # BFCL's populate step: move the doc of each missed name out of the function list
                for i, d in enumerate(docs):
                    if d["name"] == n:
                        held.append(docs.pop(i))
                        break
            self._held_out[str(turn)] = held
        self._docs = docs
        return None

    def _bind(self) -> None:
        self._methods = {}
        for cname, inst in self.instances.items():
            for mname, method in inspect.getmembers(inst, predicate=inspect.ismethod):
                if not mname.startswith("_"):
                    self._methods[mname] = method

    # --- tools ----------------------------------------------------------------------------------
    def functions(self) -> list[dict]:
        """The function docs available now, in BFCL's format (BFCL type names)."""
        return copy.deepcopy(self._docs)

    def held_out(self, turn: int) -> list[dict]:
        """The docs BFCL adds at `turn` (miss_func), in BFCL's format; [] for other turns."""
        return copy.deepcopy(self._held_out.get(str(turn), []))

    def add_missed(self, turn: int) -> list[dict]:
        """Make the docs held out for `turn` available; returns them (BFCL's format)."""
        added = self._held_out.pop(str(turn), [])
        self._docs.extend(copy.deepcopy(added))
        return copy.deepcopy(added)

    def tools(self) -> list[dict]:
        from jaxtool.envs.base import function_schema

        out = []
        for d in self._docs:
            params = d.get("parameters", {}) or {}
            out.append(function_schema(d["name"], d.get("description", ""), _json_schema_props(
                params.get("properties", {}) or {}), params.get("required", []) or []))
        return out

    # --- running --------------------------------------------------------------------------------
    def step(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        return [self._run(ParsedCall(c.name, (), dict(c.arguments))) for c in calls]

    def step_strings(self, calls: Sequence[str]) -> list[ToolResult]:
        """Run BFCL call strings (`"cd(folder='x')"`), each parsed, never evaluated."""
        out = []
        for text in calls:
            parsed = parse_call(text)
            if isinstance(parsed, Refused):
                out.append(ToolResult(f"Error during execution: call refused: {parsed.reason}", True,
                                      _name_of(text)))
            else:
                out.append(self._run(parsed))
        return out

    def _run(self, call: ParsedCall) -> ToolResult:
        name = call.name
        if name in DENYLIST:
            return ToolResult(f"Error during execution: Function call {name} is not allowed.", True, name)
        method = self._methods.get(name)
        if method is None or name.startswith("_"):
            return ToolResult(f"Error during execution: name '{name}' is not defined", True, name)
        try:
            value = method(*call.args, **dict(call.kwargs))
        except Exception as e:  # noqa: BLE001 — BFCL returns every simulator exception as text
            return ToolResult(f"Error during execution: {e}", True, name)
        return ToolResult(result_text(value), False, name)

    # --- state ----------------------------------------------------------------------------------
    def state(self) -> dict:
        """{class name: {public attribute: value}} — what BFCL's state check compares (with `==`;
        GorillaFileSystem's values are its own File/Directory objects, which define equality)."""
        return {c: {k: v for k, v in vars(inst).items() if not k.startswith("_")}
                for c, inst in self.instances.items()}

    def snapshot(self) -> Any:
        return copy.deepcopy((self.instances, self._docs, self._held_out))

    def restore(self, snap: Any) -> None:
        self.instances, self._docs, self._held_out = copy.deepcopy(snap)
        self._bind()


def _name_of(text: Any) -> str:
    if not isinstance(text, str):
        return ""
    head = text.split("(", 1)[0].strip()
    return head if head.isidentifier() else ""


_TYPE = {"integer": "integer", "float": "number", "number": "number", "string": "string", "boolean": "boolean",
         "bool": "boolean", "array": "array", "list": "array", "tuple": "array", "dict": "object",
         "object": "object", "any": "string"}


def _json_schema_props(props: Mapping[str, Any]) -> dict:
    """BFCL's doc types -> JSON-schema types (recursively for items/properties)."""
    out = {}
    for k, v in props.items():
        v = dict(v)
        if "type" in v:
            v["type"] = _TYPE.get(v["type"], "string")
        if isinstance(v.get("items"), Mapping) and "type" in v["items"]:
            v["items"] = {**v["items"], "type": _TYPE.get(v["items"]["type"], "string")}
        if isinstance(v.get("properties"), Mapping):
            v["properties"] = _json_schema_props(v["properties"])
        out[k] = v
    return out


__all__ = ["BFCLEnv", "CLASS_MODULES", "DENYLIST", "ParsedCall", "Refused", "class_docs", "is_long_context",
           "parse_call", "result_text"]
