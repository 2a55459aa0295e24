"""BFCL's AST checker rules, one hand-made case per rule. Every rule is shown both ways: a call that
satisfies it passes, and the same call with the rule broken fails with BFCL's error type."""

import pytest

from jaxtool.errors import DataError
from jaxtool.eval.bfcl.checker import check_ast, check_call, check_relevance, standardize_string
from jaxtool.eval.bfcl.decode import DecodeError, decode_pythonic


def doc(props, required=(), name="f"):
    return {"name": name, "description": "d",
            "parameters": {"type": "dict", "properties": props, "required": list(required)}}


def P(t, **kw):
    return {"type": t, "description": "", **kw}


def verdict(d, args, answer, name=None, **kw):
    return check_call(d, (name or d["name"], args), {d["name"]: answer}, **kw)


def ok(d, args, answer, **kw):
    v = verdict(d, args, answer, **kw)
    assert v.valid, v
    return v


def bad(d, args, answer, error_type, **kw):
    v = verdict(d, args, answer, **kw)
    assert not v.valid and v.error_type == error_type, v
    return v


# ---------------------------------------------------------------------------------------------
# string normalisation
# ---------------------------------------------------------------------------------------------

def test_standardize_string_drops_bfcl_punctuation_and_case():
    assert standardize_string("April 1, 2024") == "april12024"
    assert standardize_string("San_Francisco/CA-US*x^y.") == "sanfranciscocausxy"
    assert standardize_string("it's") == 'it"s'
    # characters outside BFCL's set stay
    assert standardize_string("Paris!") == "paris!"
    assert standardize_string("a:b;c") == "a:b;c"


def test_string_values_compare_after_normalisation():
    d = doc({"city": P("string")}, ["city"])
    ok(d, {"city": "San Francisco, CA"}, {"city": ["san francisco ca"]})
    ok(d, {"city": "New-York"}, {"city": ["new york"]})
    ok(d, {"city": "it's"}, {"city": ['IT"S']})
    bad(d, {"city": "Pari"}, {"city": ["Paris"]}, "value_error:string")
    bad(d, {"city": "Paris!"}, {"city": ["Paris"]}, "value_error:string")


# ---------------------------------------------------------------------------------------------
# name, required, unexpected, optional
# ---------------------------------------------------------------------------------------------

def test_function_name_must_match():
    d = doc({"x": P("integer")}, ["x"])
    ok(d, {"x": 1}, {"x": [1]})
    bad(d, {"x": 1}, {"x": [1]}, "simple_function_checker:wrong_func_name", name="g")


def test_dotted_names_exact_by_default_and_underscored_on_request():
    d = doc({"n": P("integer")}, ["n"], name="math.factorial")
    ok(d, {"n": 5}, {"n": [5]})
    bad(d, {"n": 5}, {"n": [5]}, "simple_function_checker:wrong_func_name", name="math_factorial")
    ok(d, {"n": 5}, {"n": [5]}, name="math_factorial", underscore_names=True)
    bad(d, {"n": 5}, {"n": [5]}, "simple_function_checker:wrong_func_name", underscore_names=True)


def test_required_parameters_must_be_present():
    d = doc({"a": P("integer"), "b": P("integer")}, ["a", "b"])
    ok(d, {"a": 1, "b": 2}, {"a": [1], "b": [2]})
    v = bad(d, {"a": 1}, {"a": [1], "b": [2]}, "simple_function_checker:missing_required")
    assert "'b'" in v.error


def test_unknown_parameters_are_rejected():
    d = doc({"a": P("integer"), "b": P("integer")}, ["a"])
    ok(d, {"a": 1}, {"a": [1]})
    # not in the doc at all
    bad(d, {"a": 1, "z": 3}, {"a": [1]}, "simple_function_checker:unexpected_param")
    # in the doc but not in the possible answer
    bad(d, {"a": 1, "b": 2}, {"a": [1]}, "simple_function_checker:unexpected_param")


def test_optional_parameter_may_be_omitted_only_when_answer_lists_empty_string():
    d = doc({"a": P("integer"), "unit": P("string")}, ["a"])
    ok(d, {"a": 1}, {"a": [1], "unit": ["units", ""]})
    ok(d, {"a": 1, "unit": "Units"}, {"a": [1], "unit": ["units", ""]})
    bad(d, {"a": 1}, {"a": [1], "unit": ["units"]}, "simple_function_checker:missing_optional")


# ---------------------------------------------------------------------------------------------
# types
# ---------------------------------------------------------------------------------------------

def test_int_is_accepted_for_float_but_not_the_reverse():
    d = doc({"x": P("float")}, ["x"])
    ok(d, {"x": 5}, {"x": [5.0]})
    ok(d, {"x": 5.0}, {"x": [5.0]})
    bad(d, {"x": "5"}, {"x": [5.0]}, "type_error:simple")
    di = doc({"n": P("integer")}, ["n"])
    ok(di, {"n": 5}, {"n": [5]})
    bad(di, {"n": 5.0}, {"n": [5]}, "type_error:simple")


def test_types_are_exact_bool_is_not_int():
    di = doc({"n": P("integer")}, ["n"])
    bad(di, {"n": True}, {"n": [1]}, "type_error:simple")
    db = doc({"flag": P("boolean")}, ["flag"])
    ok(db, {"flag": True}, {"flag": [True]})
    bad(db, {"flag": 1}, {"flag": [True]}, "type_error:simple")
    bad(db, {"flag": "true"}, {"flag": [True]}, "type_error:simple")


def test_string_param_rejects_numbers_and_any_means_string():
    ds = doc({"s": P("string")}, ["s"])
    bad(ds, {"s": 3}, {"s": ["3"]}, "type_error:simple")
    da = doc({"data": P("any")}, ["data"])
    ok(da, {"data": "my_data"}, {"data": ["my_data"]})
    bad(da, {"data": 7}, {"data": ["my_data"]}, "type_error:simple")


def test_tuple_accepts_tuple_or_list_array_rejects_tuple():
    dt = doc({"c": P("tuple", items={"type": "float"})}, ["c"])
    ok(dt, {"c": (33.4, -112.0)}, {"c": [[33.4, -112.0]]})
    ok(dt, {"c": [33.4, -112.0]}, {"c": [[33.4, -112.0]]})  # BFCL's known false positive
    da = doc({"c": P("array", items={"type": "float"})}, ["c"])
    ok(da, {"c": [33.4, -112.0]}, {"c": [[33.4, -112.0]]})
    bad(da, {"c": (33.4, -112.0)}, {"c": [[33.4, -112.0]]}, "type_error:simple")


def test_dict_param_rejects_other_types():
    d = doc({"cond": P("dict")}, ["cond"])
    ok(d, {"cond": {"k": "v"}}, {"cond": [{"k": ["v"]}]})
    bad(d, {"cond": [("k", "v")]}, {"cond": [{"k": ["v"]}]}, "type_error:simple")


def test_array_items_are_type_checked_one_level_deep():
    d = doc({"xs": P("array", items={"type": "integer"})}, ["xs"])
    ok(d, {"xs": [1, 2]}, {"xs": [[1, 2]]})
    bad(d, {"xs": [1, "2"]}, {"xs": [[1, 2]]}, "type_error:nested")
    # ints inside a float array are NOT converted (the int-for-float rule is top level only) ...
    df = doc({"xs": P("array", items={"type": "float"})}, ["xs"])
    bad(df, {"xs": [1, 2]}, {"xs": [[1.0, 2.0]]}, "type_error:nested")
    # ... unless the answers allow omission: "" does not constrain item types, and 1 == 1.0
    ok(df, {"xs": [1, 2]}, {"xs": [[1.0, 2.0], ""]})


def test_variables_answer_of_other_type_is_compared_exactly():
    # parallel_multiple_21: an array parameter whose answer is the variable name "data['sales']"
    d = doc({"x": P("array", items={"type": "float"})}, ["x"])
    ok(d, {"x": "data['sales']"}, {"x": ["data['sales']"]})
    bad(d, {"x": "data['Sales']"}, {"x": ["data['sales']"]}, "value_error:others")  # no normalisation
    bad(d, {"x": 3}, {"x": ["data['sales']"]}, "type_error:simple")
    # a value of the doc's type is also compared exactly when the answers are of another type
    # (live_multiple_595-158-1: a string parameter whose answer is the integer 2)
    ds = doc({"n": P("string")}, ["n"])
    ok(ds, {"n": "Two Rooms"}, {"n": [2, "Two Rooms"]})
    bad(ds, {"n": "two rooms"}, {"n": [2, "Two Rooms"]}, "value_error:others")
    ok(ds, {"n": "two rooms"}, {"n": ["Two Rooms", 2]})  # first answer a string: normalised comparison


def test_none_answers_for_optional_typed_parameters():
    # live_simple_30-8-0 style: filterName: ["", None]
    d = doc({"a": P("integer"), "n": P("integer")}, ["a"])
    ok(d, {"a": 1, "n": None}, {"a": [1], "n": ["", None]})
    ok(d, {"a": 1}, {"a": [1], "n": ["", None]})
    bad(d, {"a": 1, "n": 0}, {"a": [1], "n": ["", None]}, "value_error:others")


# ---------------------------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------------------------

def test_numbers_and_booleans_must_be_in_the_answer_list():
    d = doc({"n": P("integer")}, ["n"])
    ok(d, {"n": 6}, {"n": [5, 6]})
    bad(d, {"n": 7}, {"n": [5, 6]}, "value_error:others")
    db = doc({"b": P("boolean")}, ["b"])
    bad(db, {"b": False}, {"b": [True]}, "value_error:others")


def test_list_values_elementwise_with_string_normalisation_and_order():
    d = doc({"stops": P("array", items={"type": "string"})}, ["stops"])
    ans = {"stops": [["Santa Barbara", "Monterey"]]}
    ok(d, {"stops": ["santa barbara", "MONTEREY"]}, ans)
    bad(d, {"stops": ["Monterey", "Santa Barbara"]}, ans, "value_error:list/tuple")
    bad(d, {"stops": ["Santa Barbara"]}, ans, "value_error:list/tuple")
    # the optional marker "" accepts an empty list
    ok(d, {"stops": []}, {"stops": [["a"], ""]})
    bad(d, {"stops": []}, {"stops": [["a"]]}, "value_error:list/tuple")


def test_dict_values_per_key():
    d = doc({"cond": P("dict")}, ["cond"])
    ans = {"cond": [{"department": ["Science"], "school": ["Bluebird High School", "Bluebird HS"], "year": ["", 2020]}]}
    ok(d, {"cond": {"department": "science", "school": "bluebird hs"}}, ans)
    ok(d, {"cond": {"department": "Science", "school": "Bluebird HS", "year": 2020}}, ans)
    bad(d, {"cond": {"department": "Science", "school": "Bluebird HS", "city": "x"}}, ans, "value_error:dict_key")
    bad(d, {"cond": {"department": "Math", "school": "Bluebird HS"}}, ans, "value_error:dict_value")
    bad(d, {"cond": {"department": "Science"}}, ans, "value_error:dict_key")  # school missing


def test_list_of_dicts_pairwise_in_order():
    d = doc({"rows": P("array", items={"type": "dict"})}, ["rows"])
    ans = {"rows": [[{"field": ["age"], "value": ["25"]}, {"field": ["job"], "value": ["engineer"]}]]}
    ok(d, {"rows": [{"field": "age", "value": "25"}, {"field": "Job", "value": "Engineer"}]}, ans)
    bad(d, {"rows": [{"field": "job", "value": "engineer"}, {"field": "age", "value": "25"}]}, ans,
        "value_error:dict_value")
    bad(d, {"rows": [{"field": "age", "value": "25"}]}, ans, "value_error:list_dict_count")


# ---------------------------------------------------------------------------------------------
# item level: simple / multiple / parallel
# ---------------------------------------------------------------------------------------------

F = doc({"a": P("integer")}, ["a"], name="f")
G = doc({"b": P("string")}, ["b"], name="g")


def test_simple_needs_exactly_one_call():
    gt = [{"f": {"a": [1]}}]
    assert check_ast("simple_python", [F], [("f", {"a": 1})], gt).valid
    assert check_ast("simple_python", [F], [("f", {"a": 1}), ("f", {"a": 1})], gt).error_type == \
        "simple_function_checker:wrong_count"
    assert check_ast("live_simple", [F], [], gt).error_type == "simple_function_checker:wrong_count"


def test_multiple_checks_the_expected_function_doc():
    gt = [{"g": {"b": ["x"]}}]
    assert check_ast("multiple", [F, G], [("g", {"b": "X"})], gt).valid
    assert check_ast("live_multiple", [F, G], [("f", {"a": 1})], gt).error_type == \
        "simple_function_checker:wrong_func_name"
    assert check_ast("multiple", [F, G], [("g", {"b": "x"}), ("g", {"b": "x"})], gt).error_type == \
        "multiple_function_checker:wrong_count"


def test_parallel_is_order_free_but_counts_must_match():
    gt = [{"f": {"a": [1]}}, {"f": {"a": [2]}}, {"g": {"b": ["x"]}}]
    assert check_ast("parallel", [F, G], [("g", {"b": "x"}), ("f", {"a": 2}), ("f", {"a": 1})], gt).valid
    assert check_ast("parallel_multiple", [F, G], [("f", {"a": 1}), ("f", {"a": 1}), ("g", {"b": "x"})], gt) \
        .error_type == "parallel_function_checker_no_order:cannot_find_match"
    assert check_ast("live_parallel", [F, G], [("f", {"a": 1}), ("f", {"a": 2})], gt).error_type == \
        "parallel_function_checker_no_order:wrong_count"


def test_parallel_matching_is_greedy_like_bfcl():
    # A perfect matching exists (answer 0 <-> f(), answer 1 <-> f(a=1)), but BFCL gives answer 0 the
    # first call that fits it, f(a=1), and then nothing is left for answer 1.
    d = doc({"a": P("integer")}, [], name="f")
    gt = [{"f": {"a": [1, ""]}}, {"f": {"a": [1]}}]
    assert not check_ast("parallel", [d], [("f", {"a": 1}), ("f", {})], gt).valid
    assert check_ast("parallel", [d], [("f", {}), ("f", {"a": 1})], gt).valid


def test_undecodable_output_fails_ast_items():
    v = check_ast("simple_python", [F], decode_pythonic("Sure, the answer is 5."), [{"f": {"a": [1]}}])
    assert not v.valid and v.error_type == "ast_decoder:decoder_failed"


def test_expected_function_missing_from_docs_is_a_data_error():
    with pytest.raises(DataError, match="'h'"):
        check_ast("multiple", [F, G], [("h", {})], [{"h": {}}])


def test_unknown_bfcl_type_is_a_data_error():
    with pytest.raises(DataError, match="'number'"):
        check_call(doc({"x": P("number")}, ["x"]), ("f", {"x": 1}), {"f": {"x": [1]}})


# ---------------------------------------------------------------------------------------------
# relevance
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,called", [
    ("I cannot help with that: no function fits.", False),
    ("[]", False),
    ("", False),
    ("[f(a=1)]", True),
    ("f()", True),
    ("[f(a=np.pi)]", False),  # undecodable (attribute value) counts as no call
])
def test_relevance_is_called_vs_not_called(text, called):
    calls = decode_pythonic(text)
    irr = check_relevance("irrelevance", calls)
    live_irr = check_relevance("live_irrelevance", calls)
    rel = check_relevance("live_relevance", calls)
    assert irr.valid == live_irr.valid == (not called)
    assert rel.valid == called
    if called:
        assert irr.error_type == "irrelevance_error:decoder_success"
    else:
        assert rel.error_type == "relevance_error:decoder_failed"


def test_relevance_accepts_decode_error_values():
    assert check_relevance("irrelevance", DecodeError("x")).valid
    assert not check_relevance("live_relevance", DecodeError("x")).valid
