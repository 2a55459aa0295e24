"""jaxtool.data.brackets: the one quote-aware scanner behind BFCL's Java/JS argument split and the
ToolACE call reader (hand-written cases)."""

from jaxtool.data.brackets import JS_QUOTES, PY_QUOTES, matching_close, spans, split_top_level


def _runs(text, quotes=PY_QUOTES):
    return [(text[b:e], kind) for b, e, kind in spans(text, 0, quotes)]


def test_spans_cover_the_text_and_mark_string_literals():
    assert _runs('a="x, y", b=2') == [("a=", "text"), ('"x, y"', "quoted"), (", b=2", "text")]
    assert _runs(r"s='it\'s', t") == [("s=", "text"), (r"'it\'s'", "quoted"), (", t", "text")]
    assert _runs("x='open") == [("x=", "text"), ("'open", "unclosed")]
    assert _runs("f(`a,b`)", JS_QUOTES) == [("f(", "text"), ("`a,b`", "quoted"), (")", "text")]
    assert _runs("f(`a,b`)") == [("f(`a,b`)", "text")]          # a backtick is no Python quote
    assert _runs("") == [] and _runs('""') == [('""', "quoted")]


def test_split_and_matching_close_skip_quoted_brackets():
    assert split_top_level('a, "b, c", [d, e], {f: (g, h)}') == ["a", ' "b, c"', " [d, e]", " {f: (g, h)}"]
    assert split_top_level("a, (b") is None and split_top_level("a, 'b") is None and split_top_level("a]") is None
    t = "f(x=')', y=[1, (2)])  g()"
    assert matching_close(t, 1) == t.index("  g") - 1
    assert matching_close("f(x=[1)", 1) == -1 and matching_close("f(", 1) == -1
