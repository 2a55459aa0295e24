"""Decoding model output into calls by BFCL's rules (`ast` / `json` only, never evaluated)."""

import pytest

from jaxtool.data.schema import ToolCall
from jaxtool.eval.bfcl.decode import (DecodeError, calls_from_tool_calls, decode_json, decode_pythonic, jsonable)


def test_call_list_and_single_call():
    assert decode_pythonic('[f(a=1), mod.g(b="x")]') == [("f", {"a": 1}), ("mod.g", {"b": "x"})]
    assert decode_pythonic("f(a=1)") == [("f", {"a": 1})]
    assert decode_pythonic("  f(a=1)\n") == [("f", {"a": 1})]
    assert decode_pythonic("[]") == []


def test_backtick_fences_are_stripped_but_a_language_tag_breaks_decoding():
    assert decode_pythonic("```\n[f(a=1)]\n```") == [("f", {"a": 1})]
    assert not decode_pythonic("```python\n[f(a=1)]\n```")  # BFCL fails this too


def test_prose_is_not_a_call():
    for text in ("Sure! [f(a=1)]", "I cannot do that.", "hello", "The answer is 5"):
        out = decode_pythonic(text)
        assert isinstance(out, DecodeError) and not out, text


def test_literal_values():
    calls = decode_pythonic('[f(s="x", i=-3, x=2.5e-1, b=True, n=None, l=[1, [2]], d={"k": (1, 2)}, e=...)]')
    assert calls == [("f", {"s": "x", "i": -3, "x": 0.25, "b": True, "n": None, "l": [1, [2]],
                            "d": {"k": (1, 2)}, "e": "..."})]


def test_tuples_stay_tuples():
    (_, args), = decode_pythonic("[f(c=(1.5, 2))]")
    assert args["c"] == (1.5, 2) and type(args["c"]) is tuple


def test_names_subscripts_and_calls_become_text_or_nested_calls():
    (_, a), = decode_pythonic("[f(x=data, y=data['sales'], z=g(1), w=h(k=2), v=obj.m())]")
    assert a == {"x": "data", "y": "data['sales']", "z": "g(1)", "w": {"h": {"k": 2}}, "v": "obj.m()"}


def test_positional_arguments_are_dropped():
    assert decode_pythonic("[f(5, a=1)]") == [("f", {"a": 1})]


def test_unary_operator_negates_like_bfcl():
    assert decode_pythonic("[f(a=-5, b=+5)]") == [("f", {"a": -5, "b": -5})]
    assert not decode_pythonic("[f(a=-x)]")


def test_arithmetic_on_literals_is_folded_without_eval():
    assert decode_pythonic('[f(a=3*4, b="ab"*2, c=2**10, d=1/4, e=[0]*3, g=(1+2)*-1)]') == \
        [("f", {"a": 12, "b": "abab", "c": 1024, "d": 0.25, "e": [0, 0, 0], "g": -3})]
    for text in ("[f(a=x+1)]", "[f(a=1/0)]", '[f(a="a"*10**9)]', "[f(a=2**100000)]", "[f(a=9**9**9)]",
                 "[f(a=1<<4)]"):
        assert isinstance(decode_pythonic(text), DecodeError), text


def test_unsupported_expressions_fail_the_whole_output():
    for text in ("[f(a=np.pi)]", "[f(a=lambda x: x)]", "[f(a=[i for i in y])]", "[f(a=1 < 2)]",
                 '[f(a=f"{x}")]', "[f(a={1, 2})]", "[f(a={**x})]", "[f(a={[1]: 2})]", "[f(a=1), 2]"):
        assert isinstance(decode_pythonic(text), DecodeError), text


def test_dangerous_text_is_only_read():
    (_, a), = decode_pythonic("[f(a=__import__('os').system('touch /tmp/pwned'))]")
    assert a == {"a": "__import__('os').system('touch /tmp/pwned')"}


def test_kwargs_unpacking_gives_a_none_key():
    assert decode_pythonic("[f(**x)]") == [("f", {None: "x"})]


def test_decode_json_forms():
    assert decode_json('{"name": "f", "arguments": {"a": 1}}') == [("f", {"a": 1})]
    assert decode_json('[{"name": "f", "parameters": {"a": 1}}, {"function": "g", "parameters": {}}]') == \
        [("f", {"a": 1}), ("g", {})]
    assert decode_json('{"name": "f", "arguments": "{\\"a\\": [1, 2]}"}') == [("f", {"a": [1, 2]})]
    assert decode_json("```json\n[]\n```") == []
    for text in ("", "{not json}", '{"arguments": {}}', '{"name": "f", "arguments": [1]}'):
        assert isinstance(decode_json(text), DecodeError), text


def test_calls_from_tool_calls_and_jsonable():
    calls = calls_from_tool_calls([ToolCall("f", {"a": 1}), ToolCall("g", {})])
    assert calls == [("f", {"a": 1}), ("g", {})]
    assert jsonable([("f", {"c": (1, 2), None: "x"})]) == [{"name": "f", "arguments": {"c": [1, 2], "None": "x"}}]
    assert jsonable(DecodeError("x")) is None


@pytest.mark.parametrize("bad", [None, 3])
def test_non_text_is_a_decode_error(bad):
    assert isinstance(decode_pythonic(bad), DecodeError)
    assert isinstance(decode_json(bad), DecodeError)


def test_java_and_javascript_calls_decode_to_source_text_and_score():
    from jaxtool.eval.bfcl import data as src
    from jaxtool.eval.bfcl.decode import decode_source_call
    from jaxtool.eval.bfcl.prompt import with_language_hint
    from jaxtool.eval.bfcl.score import decode_text, score_item
    from test_bfcl_data import ROOT

    assert decode_source_call('[A.b(x=new ArrayList<>(Arrays.asList(1, 2)), s="a, b", n=50L, d={k: [1, 2]})]',
                              "java") == [("A.b", {"x": "new ArrayList<>(Arrays.asList(1, 2))", "s": "a, b",
                                                   "n": "50L", "d": "{k: [1, 2]}"})]
    for bad in ("", "[A.b(x=(]", "[1 + 2]", "[A.b(x='unterminated)]", "[(lambda: 1)()]"):
        assert not decode_source_call(bad, "java"), bad
    # text is only split, never run: a call to __import__ is a name with no named arguments
    assert decode_source_call("[__import__('os')]", "java") == [("__import__", {})]
    java0 = src.read_category("simple_java", root=ROOT)[0]
    text = "[GeometryPresentation.createPresentation(controller=mapController, parent=mapArea)]"
    assert score_item(java0, decode_text(text, "pythonic", "simple_java")).valid
    assert not score_item(java0, decode_text(text.replace("mapArea", "other"), "pythonic", "simple_java")).valid
    js1 = src.read_category("simple_javascript", root=ROOT)[1]
    ok = "[getActiveDataEntries(listElement=listElement, attribute='data-active', value=true)]"
    assert score_item(js1, decode_text(ok, "pythonic", "simple_javascript")).valid
    # BFCL's prompt for Java: the hint, and every parameter shown as a string of the Java type
    doc = with_language_hint(src.read_category("simple_java", root=ROOT)[1].functions, "simple_java")[0]
    assert doc["description"].endswith("Java 8 SDK syntax.")
    props = doc["parameters"]["properties"]
    assert {p["type"] for p in props.values()} == {"string"}
    assert props["useShortName"]["description"].endswith("This is Java boolean type parameter in string representation.")


def test_one_bracket_scanner_serves_the_java_js_decoder_and_the_toolace_reader():
    # jaxtool.data.brackets is the single scanner behind decode.decode_source_call and
    # sources.toolace.split_calls; expectations written by hand
    from jaxtool.data.brackets import matching_close, split_top_level
    from jaxtool.data.sources.toolace import split_calls

    assert split_top_level("a=1, b=[1, 2], c='x,y', d=`t,${u}`, e={k: (1, 2)}") == [
        "a=1", " b=[1, 2]", " c='x,y'", " d=`t,${u}`", " e={k: (1, 2)}"]
    assert split_top_level(r"s='it\'s, fine', n=2") == [r"s='it\'s, fine'", " n=2"]
    for bad in ("a=(1, 2", "a=[1, 2)", "a='open, b=2", "a=1)"):
        assert split_top_level(bad) is None, bad
    text = "f(a='(', b=[1, (2)], c={\"k\": \")\"}) tail"
    assert matching_close(text, 1) == text.index(") tail")
    assert matching_close("f((a])", 1) == -1          # a closer that does not match its opener
    assert matching_close("f(a='x)", 1) == -1         # quote never closed
    assert split_calls("[Get Data(q=\"a)b\", n=[1,2]), g()]", ["Get Data"]) == [
        ("Get Data", "q=\"a)b\", n=[1,2]"), ("g", "")]
    assert isinstance(split_calls("[f(a=[1, 2)]"), str)
