"""The offline `rules` augmenter and the swappable templates (expected texts written by hand)."""

import json
import os
import re

import pytest

from jaxtool.data.schema import Conversation
from jaxtool.diatool.rules import RulesAugmenter
from jaxtool.diatool.seeds import extract_seed
from jaxtool.diatool.slots import NoAugmentation, SlotStep
from jaxtool.diatool.templates import humanize, load_templates
from jaxtool.errors import ConfigError

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "diatool")


def _seeds(name="seeds.jsonl"):
    out = {}
    with open(os.path.join(FIX, name), encoding="utf-8") as fh:
        for line in fh:
            c = Conversation.from_dict(json.loads(line))
            out[c.meta["id"]] = extract_seed(c, c.meta["id"])[0]
    return out


SEEDS = _seeds()


def test_hard_removes_every_required_value_and_asks_for_what_remains():
    sf = RulesAugmenter().augment(SEEDS["currency-02"], "hard")
    assert sf.query == "Please convert a certain amount a certain from currency to a certain to currency."
    assert sf.missing == ("amount", "from_currency", "to_currency")
    assert sf.steps == (
        SlotStep("Sure, I can help with that. Could you tell me the amount, the from currency and the to currency?",
                 ("amount", "from_currency", "to_currency"), "The amount is 1,250.", ("amount",)),
        SlotStep("Thanks! Could you also tell me the from currency and the to currency?",
                 ("from_currency", "to_currency"), "The from currency is GBP.", ("from_currency",)),
        SlotStep("Thanks! Could you also tell me the to currency?", ("to_currency",),
                 "The to currency is JPY.", ("to_currency",)),
    )


def test_quotes_and_currency_signs_go_with_the_value_and_optional_values_stay():
    sf = RulesAugmenter().augment(SEEDS["restaurant-01"], "hard")
    assert sf.query == ("Reserve a table at a certain restaurant name for a certain party size people on "
                        "a certain date at a certain time, and we'd like a window seat.")
    sf = RulesAugmenter().augment(SEEDS["tip-01"], "hard")
    assert sf.query == "What's a a certain tip percentage% tip on a a certain bill amount bill?"
    assert [s.answer for s in sf.steps] == ["The bill amount is 84.50.", "The tip percentage is 15."]


def test_easy_asks_all_missing_fields_in_one_question():
    aug = RulesAugmenter(seed=0)
    sf = aug.augment(SEEDS["flight-01"], "easy")
    assert len(sf.steps) == 1
    (step,) = sf.steps
    assert step.asked == step.answered == sf.missing
    assert 1 <= len(sf.missing) <= 4 and set(sf.missing) <= {"origin", "destination", "date", "passengers"}
    def occurs(value, text):  # standalone occurrence: "2" (passengers) must not match inside "2024"
        return re.search(rf"(?<![\w-]){re.escape(str(value))}(?![\w-])", text) is not None

    args = SEEDS["flight-01"].arguments
    for f in ("origin", "destination", "date", "passengers"):
        assert occurs(args[f], SEEDS["flight-01"].query)
        assert occurs(args[f], sf.query) == (f not in sf.missing)
        assert occurs(args[f], step.answer) == (f in sf.missing)
        assert (humanize(f) in step.question) == (f in sf.missing)


def test_rules_are_deterministic_and_depend_on_the_seed_number():
    seed = SEEDS["flight-01"]
    runs = [RulesAugmenter(seed=s).augment(seed, "easy").missing for s in range(12)]
    assert runs[:3] == [RulesAugmenter(seed=s).augment(seed, "easy").missing for s in range(3)]
    assert len(set(runs)) > 1


@pytest.mark.parametrize("seed_id, difficulty, reason", [
    ("joke-01", "easy", "tool has no required field"),
    ("weather-01", "hard", "hard needs >= 2 required fields"),
    ("time-01", "easy", "no required value found in the first user turn"),      # Asia/Tokyo vs "Tokyo"
    ("recipe-01", "easy", "no required value found in the first user turn"),     # a list value
    ("currency-01", "hard", "required value not found in the first user turn"),  # USD vs "US dollars"
    ("password-01", "hard", "required value not found in the first user turn"),  # a boolean
])
def test_seeds_that_cannot_be_augmented_say_why(seed_id, difficulty, reason):
    with pytest.raises(NoAugmentation) as e:
        RulesAugmenter().augment(SEEDS[seed_id], difficulty)
    assert e.value.reason == reason


def test_easy_uses_only_the_locatable_fields():
    sf = RulesAugmenter().augment(SEEDS["currency-01"], "easy")  # only 500 is in the text
    assert sf.missing == ("amount",)
    assert sf.query == "Can you convert a certain amount US dollars to euros?"


def test_optional_fields_are_never_removed_or_asked():
    sf = RulesAugmenter().augment(SEEDS["weather-02"], "easy")
    assert sf.missing == ("location",)
    assert sf.query == "How warm is it in a certain location today in celsius?"


def test_korean_template_set_uses_parameter_descriptions():
    seeds = _seeds("seeds_ko.jsonl")
    sf = RulesAugmenter("ko").augment(seeds["ko-taxi-01"], "hard")
    assert sf.query == "특정 출발 위치에서 특정 도착 위치까지 택시 불러줘"
    assert [(s.question, s.answer) for s in sf.steps] == [
        ("요청을 처리하려면 출발 위치, 도착 위치 정보가 필요합니다. 알려주시겠어요?", "출발 위치은(는) 강남역입니다."),
        ("감사합니다. 도착 위치 정보도 알려주시겠어요?", "도착 위치은(는) 서울역입니다."),
    ]
    sf = RulesAugmenter("ko").augment(seeds["ko-weather-01"], "easy")
    assert sf.query == "특정 날씨를 조회할 지역 이름 날씨 어때?"


def test_templates_from_a_json_file_replace_the_english_ones(tmp_path):
    t = load_templates("en").to_dict()
    t.update(language="en-terse", ask="Need {fields}.", ask_more="Also {fields}.", field="{label}",
             placeholder="", answer="{items}", answer_item="{value}", capitalize=False)
    path = tmp_path / "terse.json"
    path.write_text(json.dumps(t))
    sf = RulesAugmenter(str(path)).augment(SEEDS["weather-01"], "easy")
    assert sf.query == "What's the weather like in right now?"
    assert (sf.steps[0].question, sf.steps[0].answer) == ("Need location.", "Paris")


@pytest.mark.parametrize("change, message", [
    ({"asks": "x"}, r"unknown key\(s\) \['asks'\]"),
    ({"ask": "Tell me {slots}"}, r"key 'ask' uses unknown placeholder\(s\) \['slots'\]"),
    ({"answer_item": "{label}"}, r"key 'answer_item' must contain \{value\}"),
    ({"rejections": []}, "key 'rejections' must be a non-empty list of strings"),
    ({"label_from": "type"}, "key 'label_from' must be 'name' or 'description'"),
])
def test_bad_template_files_get_a_clear_error(tmp_path, change, message):
    t = load_templates("en").to_dict()
    t.update(change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(t))
    with pytest.raises(ConfigError, match=message) as e:
        load_templates(str(path))
    assert str(path) in str(e.value)


def test_missing_template_key_and_unknown_name():
    t = load_templates("en").to_dict()
    del t["ask_more"]
    with pytest.raises(ConfigError, match=r"missing key\(s\) \['ask_more'\]"):
        load_templates(t)
    with pytest.raises(ConfigError, match="neither a built-in set"):
        load_templates("fr")


def test_humanize_parameter_names():
    assert humanize("departure_date") == "departure date"
    assert humanize("fromCurrency") == "from currency"
    assert humanize("check-in") == "check in"
