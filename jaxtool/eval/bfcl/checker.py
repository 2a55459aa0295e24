"""BFCL's AST checker rules, reimplemented: is a list of decoded calls a correct answer?

A verdict compares the model's calls with the item's function docs (BFCL type names) and its
possible answers `[{func_name: {param: [acceptable values...]}}, ...]`. The rules, as BFCL's
published checker applies them (bfcl-eval 2026.3.23, `eval_checker/ast_eval/ast_checker.py`):

Per call (`check_call`), in this order, the first failure being the reported one:
1. name: the call's name equals the expected function's name (with `underscore_names`, the
   expected name has its dots replaced by underscores first — BFCL does that for models whose
   API forbids dots in tool names);
2. every parameter the doc lists as `required` is present;
3. every parameter given is both in the doc and in the possible answer (else "unexpected");
4. its type matches the doc: string, integer, float, boolean, array, tuple, dict and any
   (any = a string). Types are exact (`True` is not an integer). An int is accepted where a float is
   expected, and a tuple where a tuple is expected (compared as a list; a tuple is *not* accepted
   for an array). Arrays/tuples also check their items' type against `items.type` for at least one
   acceptable answer (one level deep). When the acceptable answers are of another type than the doc
   says (BFCL's "variables": a string such as "data['sales']" for an array), a value of the
   answers' type is accepted and compared exactly, without the normalisation below;
5. its value is acceptable:
   - strings (and `any`): compared after `standardize_string` (lower-case; spaces and , . / - _ * ^
     removed; ' turned into ");
   - arrays/tuples: element-wise equal to one acceptable list, string elements standardized
     (top level only); the optional marker "" counts as an empty list;
   - dicts: for one acceptable dict, every key given is expected and its value (standardized when a
     string) is in that key's acceptable list, and every expected key not given allows "";
   - arrays of dicts: same length as one acceptable list, dicts compared pairwise as above;
   - anything else (numbers, booleans, None): `value in acceptable` with Python equality (so
     5 == 5.0);
6. every parameter in the possible answer that was not given has "" among its acceptable values
   (an optional parameter that may be omitted).

Per item (`check_ast`), by category name, as BFCL dispatches:
- "parallel" in the name: the numbers of calls and answers are equal and, going through the
  answers in order, each is matched to the first not-yet-matched call that passes `check_call`
  (greedy, order-free);
- "multiple" in the name: exactly as many calls as answers (one), checked against the doc of the
  expected function;
- otherwise (simple): exactly one call, checked against the first doc.

Relevance (`check_relevance`): a call was made when the output decodes into at least one call;
an undecodable output or no call (`[]`) is "no call". `irrelevance`/`live_irrelevance` pass with
no call, `live_relevance` passes with a call (BFCL does not check its arguments).

Error types are BFCL's strings, so verdicts can be compared with BFCL score files.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

from jaxtool.errors import DataError
from jaxtool.eval.bfcl.decode import Call, DecodeError

# BFCL type name -> the Python type a value must have. "tuple" values arrive as lists (JSON has no
# tuples; a decoded tuple is converted first) and "any" must be a string.
PYTHON_TYPE = {
    "string": str, "integer": int, "float": float, "boolean": bool,
    "array": list, "tuple": list, "dict": dict, "any": str,
}
NESTED_TYPES = ("array", "tuple")

_STRIP = re.compile(r"[ ,./\-_*^]")


def standardize_string(s: str) -> str:
    """BFCL's string normalisation: drop spaces and , . / - _ * ^ ; lower-case; ' -> "."""
    return _STRIP.sub("", s).lower().replace("'", '"')


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The checker's answer for one item: `valid`, and for failures BFCL's `error_type` plus a
    human-readable `error`."""

    valid: bool
    error_type: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return {"valid": self.valid, "error_type": self.error_type, "error": self.error}


OK = Verdict(True)


def _fail(error_type: str, error: str) -> Verdict:
    return Verdict(False, error_type, error)


# ------------------------------------------------------------------------------------------------
# values
# ------------------------------------------------------------------------------------------------

def _answer_type(acceptable: Sequence[Any]) -> type | None:
    """The type of the first acceptable value that is not the optional marker ""."""
    for a in acceptable:
        if not (isinstance(a, str) and a == ""):
            return type(a)
    return None


def _python_type(type_name: str, where: str) -> type:
    try:
        return PYTHON_TYPE[type_name]
    except KeyError:
        raise DataError(f"{where}: BFCL type {type_name!r} is not one of {sorted(PYTHON_TYPE)}") from None


def _type_check(param: str, value: Any, acceptable: Sequence[Any], type_name: str, item_type_name: str | None,
                where: str, expected: type | None = None, item_type: type | None = None) -> tuple[Verdict, bool]:
    """(verdict, is_variable). `is_variable`: the answers are of another type than the doc says, so
    the value is compared exactly instead of structurally. `expected` / `item_type`: the Python
    types the value and its items must have (default: the Python reading of the BFCL type names)."""
    expected = expected if expected is not None else _python_type(type_name, where)
    answer_type = _answer_type(acceptable)
    is_variable = answer_type is not None and answer_type is not expected
    if type(value) is expected:
        if item_type_name is None:
            return OK, is_variable
        item_type = item_type if item_type is not None else _python_type(item_type_name, f"{where}.items")
        for answer in acceptable:
            # An acceptable value that is not a list (the optional marker "") does not constrain items.
            if not isinstance(answer, list):
                return OK, is_variable
            inner_answer_type = _answer_type(answer)
            if all(type(x) is item_type or (inner_answer_type is not None and type(x) is inner_answer_type)
                   for x in value):
                return OK, is_variable
        return _fail("type_error:nested",
                     f"Nested type checking failed for parameter {param!r}. Expected outer type {type_name} "
                     f"with inner type {item_type_name}. Parameter value: {value!r}."), is_variable
    if answer_type is not None and type(value) is answer_type:
        return OK, True
    return _fail("type_error:simple",
                 f"Incorrect type for parameter {param!r}. Expected type {type_name}, got "
                 f"{type(value).__name__}. Parameter value: {value!r}."), is_variable


def _std(v: Any) -> Any:
    return standardize_string(v) if isinstance(v, str) else v


def _check_string(param: str, value: str, acceptable: Sequence[Any]) -> Verdict:
    if standardize_string(value) in [standardize_string(a) for a in acceptable if isinstance(a, str)]:
        return OK
    return _fail("value_error:string",
                 f"Invalid value for parameter {param!r}: {value!r}. Expected one of {list(acceptable)}. "
                 "Case insensitive.")


def _check_list(param: str, value: list, acceptable: Sequence[Any]) -> Verdict:
    given = [_std(x) for x in value]
    for answer in acceptable:
        if isinstance(answer, str):
            # BFCL walks an acceptable string character by character, so the optional marker ""
            # becomes the empty list (and "ab" would accept ["a", "b"]).
            answer = list(answer)
        if isinstance(answer, (list, tuple)) and given == [_std(x) for x in answer]:
            return OK
    return _fail("value_error:list/tuple",
                 f"Invalid value for parameter {param!r}: {value!r}. Expected one of {list(acceptable)}.")


def _check_dict(param: str, value: Mapping, acceptable: Sequence[Any]) -> Verdict:
    verdict = _fail("dict_checker:unclear", f"No acceptable dict for parameter {param!r}.")
    for answer in acceptable:
        if isinstance(answer, str) and answer == "":
            continue
        if not isinstance(answer, Mapping):
            continue
        verdict = OK
        for key, v in value.items():
            if key not in answer:
                verdict = _fail("value_error:dict_key", f"Unexpected dict key parameter: {key!r}.")
                break
            options = [_std(a) for a in answer[key]]
            if _std(v) not in options:
                verdict = _fail("value_error:dict_value",
                                f"Invalid value for parameter {key!r}: {v!r}. Expected one of {options}.")
                break
        if verdict.valid:
            for key, options in answer.items():
                if key not in value and "" not in options:
                    verdict = _fail("value_error:dict_key", f"Missing dict key parameter: {key!r}.")
                    break
        if verdict.valid:
            return OK
    return verdict


def _check_list_of_dicts(param: str, value: list, acceptable: Sequence[Any]) -> Verdict:
    verdict = _fail("list_dict_checker:unclear", f"No acceptable list of dicts for parameter {param!r}.")
    for answer in acceptable:
        if not isinstance(answer, (list, str)):
            continue
        if len(value) != len(answer):  # the marker "" has length 0, so it accepts []
            verdict = _fail("value_error:list_dict_count", "Wrong number of dictionaries in the list.")
            continue
        for given, expected in zip(value, answer):
            if not isinstance(given, Mapping):
                verdict = _fail("value_error:dict_value", f"Expected a dict in {param!r}, got {given!r}.")
                break
            verdict = _check_dict(param, given, [expected])
            if not verdict.valid:
                break
        else:
            return OK
    return verdict


# ------------------------------------------------------------------------------------------------
# calls
# ------------------------------------------------------------------------------------------------

def expected_name(name: str, underscore_names: bool = False) -> str:
    return name.replace(".", "_") if underscore_names else name


def check_call(doc: Mapping[str, Any], call: Call, answer: Mapping[str, Any], *,
               underscore_names: bool = False, language: str = "python") -> Verdict:
    """One decoded call against one function doc and one possible answer `{name: {param: [values]}}`.
    `language` "java" / "javascript": each value is source text, converted first (`_convert_source`)."""
    (_, acceptable_by_param), = answer.items()
    name, given = call
    want = expected_name(doc["name"], underscore_names)
    if name != want:
        return _fail("simple_function_checker:wrong_func_name",
                     f"Function name {want!r} not found in model output (got {name!r}).")
    params = doc.get("parameters") or {}
    properties = params.get("properties") or {}
    for p in params.get("required") or []:
        if p not in given:
            return _fail("simple_function_checker:missing_required", f"Missing required parameter: {p!r}.")
    for p, value in given.items():
        if p not in properties or p not in acceptable_by_param:
            return _fail("simple_function_checker:unexpected_param", f"Unexpected parameter: {p!r}.")
        spec = properties[p]
        type_name = spec["type"]
        item_type_name = None
        where = f"function {doc['name']!r}, parameter {p!r}"
        acceptable = acceptable_by_param[p]
        if language == "python":
            if type_name in NESTED_TYPES:
                item_type_name = (spec.get("items") or {}).get("type")
                if item_type_name is None:
                    raise DataError(f"{where}: an {type_name} needs items.type")
            expected_type = _python_type(type_name, where)
            item_type = _python_type(item_type_name, f"{where}.items") if item_type_name else None
        else:
            converted = _convert_source(p, value, spec, language, where)
            if isinstance(converted, Verdict):
                return converted
            value, expected_type, item_type_name, item_type = converted
        if type_name == "tuple" and type(value) is tuple:
            value = list(value)
        if language == "python" and type_name == "float" and type(value) is int:
            value = float(value)
        verdict, is_variable = _type_check(p, value, acceptable, type_name, item_type_name, where,
                                           expected=expected_type, item_type=item_type)
        if not verdict.valid:
            return verdict
        if not is_variable:
            if expected_type is dict:
                verdict = _check_dict(p, value, acceptable)
            elif expected_type is list and item_type is dict:
                verdict = _check_list_of_dicts(p, value, acceptable)
            elif expected_type is str:
                verdict = _check_string(p, value, acceptable)
            elif expected_type is list:
                verdict = _check_list(p, value, acceptable)
            elif value not in acceptable:
                verdict = _fail("value_error:others",
                                f"Invalid value for parameter {p!r}: {value!r}. Expected one of {list(acceptable)}.")
            if not verdict.valid:
                return verdict
        elif value not in acceptable:
            return _fail("value_error:others",
                         f"Invalid value for parameter {p!r}: {value!r}. Expected one of {list(acceptable)}.")
    for p, acceptable in acceptable_by_param.items():
        if p not in given and "" not in acceptable:
            return _fail("simple_function_checker:missing_optional",
                         f"Optional parameter {p!r} not provided and not marked as optional.")
    return OK


# BFCL's type conversion tables for Java and JavaScript docs (bfcl_eval/constants/type_mappings.py):
# the Python type a converted value must have.
JAVA_TYPE = {"byte": int, "short": int, "integer": int, "float": float, "double": float, "long": int,
             "boolean": bool, "char": str, "Array": list, "ArrayList": list, "Set": set, "HashMap": dict,
             "Hashtable": dict, "Queue": list, "Stack": list, "String": str, "any": str}
JS_TYPE = {"String": str, "integer": int, "float": float, "Bigint": int, "Boolean": bool, "dict": dict,
           "array": list, "any": str}
SOURCE_NESTED_TYPES = ("Array", "ArrayList", "array")  # converted with their items' type
LANGUAGES = ("python", "java", "javascript")


def language_of(category: str) -> str:
    """BFCL's rule: a category ending in `java` is Java, `javascript` JavaScript, else Python."""
    if category.endswith("javascript"):
        return "javascript"
    if category.endswith("java"):
        return "java"
    return "python"


def _convert_source(param: str, value: Any, spec: Mapping[str, Any], language: str, where: str):
    """A Java/JavaScript value (source text such as "new ArrayList<>(Arrays.asList(1, 2))" or "50L")
    as a Python value by BFCL's own converters (`bfcl_eval/eval_checker/ast_eval/type_convertor`,
    pure string parsers, imported from the installed package), with the types to check it against:
    (value, expected type, items' type name, items' type) or a failing Verdict. As BFCL: the value
    must arrive as a string (`type_error:java` / `type_error:js`). A value the converter cannot read
    is a failing verdict here (BFCL's checker would raise)."""
    table = JAVA_TYPE if language == "java" else JS_TYPE
    tag = "java" if language == "java" else "js"
    type_name = spec["type"]
    if type_name not in table:
        raise DataError(f"{where}: {language} type {type_name!r} is not one of {sorted(table)}")
    if type(value) is not str:
        return _fail(f"type_error:{tag}", f"Incorrect type for parameter {param!r}. Expected type String, got "
                     f"{type(value).__name__}. Parameter value: {value!r}.")
    try:
        if language == "java":
            from bfcl_eval.eval_checker.ast_eval.type_convertor.java_type_converter import (
                java_type_converter as convert)
        else:
            from bfcl_eval.eval_checker.ast_eval.type_convertor.js_type_converter import js_type_converter as convert
    except ImportError as e:
        raise DataError(f"BFCL's {language} type converters need the bfcl-eval package "
                        f"(pip install --no-deps bfcl-eval): {e}") from None
    item_type_name = item_type = None
    try:
        if type_name in SOURCE_NESTED_TYPES:
            item_type_name = (spec.get("items") or {}).get("type")
            if item_type_name not in table:
                raise DataError(f"{where}: an {type_name} needs items.type among {sorted(table)}")
            item_type = table[item_type_name]
            value = convert(value, type_name, item_type_name)
        else:
            value = convert(value, type_name)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 — a converter's complaint about the model's text
        return _fail(f"type_error:{tag}", f"Parameter {param!r}: {value!r} is not a {language} {type_name} "
                     f"({type(e).__name__}: {e}).")
    return value, table[type_name], item_type_name, item_type


def _find_doc(docs: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    for d in docs:
        if d["name"] == name:
            return d
    raise DataError(f"the possible answer names function {name!r}, which is not among the item's docs "
                    f"{[d['name'] for d in docs]}")


def check_ast(category: str, docs: Sequence[Mapping[str, Any]], calls: Sequence[Call] | DecodeError,
              ground_truth: Sequence[Mapping[str, Any]], *, underscore_names: bool = False) -> Verdict:
    """An AST-category item: decoded calls (or why decoding failed) against the possible answers.
    The language (Python, or Java/JavaScript source values) follows the category name, as in BFCL."""
    if isinstance(calls, DecodeError):
        return _fail("ast_decoder:decoder_failed", f"Invalid syntax. Failed to decode AST. {calls.reason}")
    kw = {"underscore_names": underscore_names, "language": language_of(category)}
    if "parallel" in category:
        if len(calls) != len(ground_truth):
            return _fail("parallel_function_checker_no_order:wrong_count",
                         f"Wrong number of functions: {len(calls)} calls, {len(ground_truth)} expected.")
        matched: set[int] = set()
        for i, answer in enumerate(ground_truth):
            doc = _find_doc(docs, next(iter(answer)))
            errors = []
            for j, call in enumerate(calls):
                if j in matched:
                    continue
                v = check_call(doc, call, answer, **kw)
                if v.valid:
                    matched.add(j)
                    break
                errors.append(f"call {j}: {v.error_type}: {v.error}")
            else:
                return _fail("parallel_function_checker_no_order:cannot_find_match",
                             f"No call matches expected call {i} ({next(iter(answer))}). " + " | ".join(errors))
        return OK
    if "multiple" in category:
        if len(calls) != len(ground_truth):
            return _fail("multiple_function_checker:wrong_count",
                         f"Wrong number of functions: {len(calls)} calls, {len(ground_truth)} expected.")
        return check_call(_find_doc(docs, next(iter(ground_truth[0]))), calls[0], ground_truth[0], **kw)
    if len(calls) != 1:
        return _fail("simple_function_checker:wrong_count", f"Wrong number of functions: {len(calls)} calls, 1 expected.")
    return check_call(docs[0], calls[0], ground_truth[0], **kw)


def made_a_call(calls: Sequence[Call] | DecodeError) -> bool:
    """BFCL's relevance notion: the output decoded into at least one call."""
    return not isinstance(calls, DecodeError) and len(calls) > 0


def check_relevance(category: str, calls: Sequence[Call] | DecodeError) -> Verdict:
    called = made_a_call(calls)
    if "irrelevance" in category:
        if called:
            return _fail("irrelevance_error:decoder_success",
                         "Valid syntax. Successfully decoded a function call when none should be made.")
        return OK
    if not called:
        reason = calls.reason if isinstance(calls, DecodeError) else "no call in the output"
        return _fail("relevance_error:decoder_failed", f"Invalid syntax. Failed to decode a call when one was expected. {reason}")
    return OK
