"""Locating argument values in user text (number / quote / currency variants, boundaries)."""

from jaxtool.diatool.values import (find_spans, mentions_all, mentions_any, remove_spans,
                                    value_variants)


def test_variants_of_numbers_and_strings():
    assert set(value_variants(1250)) == {"1250", "1,250", "1 250"}
    assert set(value_variants(84.5)) == {"84.5", "84.50"}
    assert set(value_variants(3.0)) == {"3", "3.0"}
    assert set(value_variants("  Paris ")) == {"Paris"}
    assert set(value_variants("1500")) == {"1500", "1,500", "1 500"}
    for v in (True, False, None, "", [1], {"a": 1}):
        assert value_variants(v) is None


def test_find_spans_respects_word_and_number_boundaries():
    text = "Give me a random number between 1 and 100."
    one = text.index(" 1 ") + 1
    assert find_spans(text, 1) == [(one, one + 1, "1")]
    assert find_spans(text, 100) == [(text.index("100"), text.index("100") + 3, "100")]
    assert find_spans("Rome and Romeo", "rome") == [(0, 4, "Rome")]
    assert find_spans("take 5.5 pills", 5) == []
    assert find_spans("on the 5th", 5) == []
    assert find_spans("for 15 people", 5) == []
    assert find_spans("it costs 1,250 GBP", 1250) == [(9, 14, "1,250")]


def test_find_spans_widens_over_quotes_and_currency_signs():
    assert find_spans('Say "hi there" now', "hi there") == [(4, 14, "hi there")]
    assert find_spans("Say \u201chi\u201d", "hi") == [(4, 8, "hi")]
    text = "What's a 15% tip on a $84.50 bill?"
    s = text.index("$")
    assert find_spans(text, 84.5) == [(s, s + 6, "84.50")]
    assert find_spans(text, 15) == [(9, 11, "15")]


def test_non_ascii_neighbours_are_allowed_so_korean_particles_do_not_hide_values():
    text = "강남역에서 서울역까지 택시 불러줘"
    assert find_spans(text, "강남역") == [(0, 3, "강남역")]
    assert find_spans(text, "서울역") == [(6, 9, "서울역")]


def test_mentions_for_lists_and_uncheckable_values():
    text = "Find me a recipe with chicken and broccoli."
    assert mentions_all(text, ["chicken", "broccoli"]) and mentions_any(text, ["chicken", "rice"])
    assert not mentions_all(text, ["chicken", "rice"])
    assert mentions_all(text, True) and not mentions_any(text, True)  # booleans cannot be looked for


def test_remove_spans_with_placeholder_and_empty_replacement():
    text = "Please convert 1,250 GBP to JPY."
    spans = [(15, 20, "X"), (21, 24, "Y")]
    assert remove_spans(text, spans) == "Please convert X Y to JPY."
    assert remove_spans("in Paris today", [(3, 8, "")]) == "in today"
    assert remove_spans("weather in Paris.", [(11, 16, "")]) == "weather in."
