"""CALM-IT converters on real slices (tests/fixtures: SNIPS, SGD train, and the hand-written xlam /
ToolACE rows in their published layouts). Expected strings below were written by hand from reading
the fixture files, not produced by the code under test."""

import copy
import json
import os

import pytest

from jaxtool.calm import cra, dst, fc
from jaxtool.calm.example import CalmExample
from jaxtool.calm.thoughts import TemplateThoughts
from jaxtool.data import sources
from jaxtool.data.calls import parse_json_calls
from jaxtool.data.schema import Conversation, Message, ToolCall
from jaxtool.data.sources.base import LoadReport

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
SNIPS = os.path.join(FIX, "snips")
SGD = os.path.join(FIX, "sgd", "train")
XLAM = os.path.join(FIX, "xlam", "xlam_sample.json")
TOOLACE = os.path.join(FIX, "toolace", "toolace_sample.json")


def _skip_report(name="t"):
    return LoadReport(source=name, on_bad_row="skip")


# --------------------------------------------------------------------------------------------
# SNIPS -> DST
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dst_rows():
    convs = list(sources.load("snips", SNIPS))
    rep = _skip_report()
    rows = dst.convert(convs, rep)
    assert rep.bad_rows == 0 and len(rows) == 145
    return {r.input: r for r in rows}


def test_dst_hand_checked_rows(dst_rows):
    r = dst_rows["User: book The Middle East restaurant in IN for noon"]
    # CALM Fig. 4: the DST output is the System turn
    assert r.output == ('System: {"domain": "BookRestaurant", "slot_values": {"restaurant_name": "The Middle East", '
                        '"restaurant_type": "restaurant", "state": "IN", "timeRange": "noon"}}')
    r = dst_rows["User: Will it be sunny one hundred thirty five days from now in Monterey Bay National Marine Sanctuary"]
    assert r.output == ('System: {"domain": "GetWeather", "slot_values": {"condition_description": "sunny", '
                        '"timeRange": "one hundred thirty five days from now", '
                        '"geographic_poi": "Monterey Bay National Marine Sanctuary"}}')
    # upstream #1125: music_item occurs twice -> the list of its spans
    r = dst_rows["User: add The Field album to my romantic evening album"]
    assert r.output.startswith("System: ")
    assert json.loads(r.output[len("System: "):]) == {"domain": "AddToPlaylist", "slot_values": {
        "artist": "The Field", "music_item": ["album", "album"], "playlist_owner": "my", "playlist": "romantic evening"}}
    assert r.task == "dst" and r.meta["objective"] == "dst"


def test_dst_instruction_is_built_from_the_data(dst_rows):
    instr = next(iter(dst_rows.values())).instruction
    lines = instr.splitlines()
    # SearchCreativeWork's fixture rows use exactly these two slots
    assert "The user can seek for SearchCreativeWork by slots - object_name, object_type." in lines
    assert sum(line.startswith("The user can seek for ") for line in lines) == 7
    assert "Do not capture any other slots!" in lines
    # the sample output is the first utterance with >= 2 slots (AddToPlaylist file, row 0), first two slots
    assert lines[-1] == 'Sample output: {"domain": "AddToPlaylist", "slot_values": {"music_item": "song", "playlist": "Cita Romántica"}}'


def test_dst_instruction_lists_only_slots_that_occur():
    convs = [Conversation((Message("user", "play jazz"), Message("assistant", tool_calls=(ToolCall("PlayMusic", {"genre": "jazz"}),)))),
             Conversation((Message("user", "rate it 5"), Message("assistant", tool_calls=(ToolCall("RateBook", {"rating_value": "5"}),))))]
    instr = dst.instruction(dst.domain_slots(convs), dst.sample_output(convs))
    assert "The user can seek for PlayMusic by slots - genre." in instr
    assert "The user can seek for RateBook by slots - rating_value." in instr
    assert "Sample output" not in instr  # no utterance with two slots


def test_dst_slot_text_not_in_utterance_is_counted(tmp_path):
    # a whitespace-only slot piece: the loader trims it to "" -> no text of the utterance
    bad = {"GetWeather": [
        {"data": [{"text": "weather in "}, {"text": "Paris", "entity": "city"}]},
        {"data": [{"text": "weather in "}, {"text": "  ", "entity": "city"}, {"text": "today", "entity": "timeRange"}]},
    ]}
    (tmp_path / "train_GetWeather_full.json").write_text(json.dumps(bad))
    rep = _skip_report()
    rows = dst.convert(list(sources.load("snips", str(tmp_path))), rep)
    assert [r.input for r in rows] == ["User: weather in Paris"]
    assert dict(rep.skipped) == {"slot text not in utterance": 1}
    # a value that is not a span of the utterance (e.g. a normalised value)
    conv = Conversation((Message("user", "book for two people"),
                         Message("assistant", tool_calls=(ToolCall("BookRestaurant", {"party_size_number": "2"}),))),
                        meta={"row": 7})
    rep = _skip_report()
    assert dst.convert([conv], rep) == [] and rep.skipped["slot text not in utterance"] == 1
    with pytest.raises(Exception, match="row 7.*slot text not in utterance"):
        dst.convert([conv], LoadReport(source="dst", on_bad_row="error"))


# --------------------------------------------------------------------------------------------
# Hammer masking and ToolACE
# --------------------------------------------------------------------------------------------

def test_hammer_unmasked_rows_hand_checked():
    convs = list(sources.load("xlam", XLAM, on_bad_row="skip"))
    rows = fc.convert_hammer(convs, _skip_report(), seed=0, mask_prob=0.0)
    by_row = {r.meta["row"]: r for r in rows}
    # CALM Fig. 5: the query between [BEGIN OF QUERY] / [END OF QUERY]; task, tools, format blocks in order
    assert by_row[0].input == "[BEGIN OF QUERY]\nUser: What are the current weather conditions in Sydney?\n[END OF QUERY]"
    assert by_row[0].output == '[{"name": "current_weather", "arguments": {"city": "Sydney"}}]'
    assert by_row[2].output == ('[{"name": "hourly_forecast", "arguments": {"location": "Oslo", "hours": 12}}, '
                                '{"name": "current_weather", "arguments": {"city": "Bergen"}}]')
    assert by_row[11].output == "[]" and by_row[11].meta["objective"] == "no_call"  # irrelevance row
    instr = by_row[0].instruction
    assert instr.startswith("[BEGIN OF TASK INSTRUCTION]\n") and "[BEGIN OF FORMAT INSTRUCTION]" in instr
    blocks = ["[BEGIN OF TASK INSTRUCTION]", "[END OF TASK INSTRUCTION]\n\n[BEGIN OF AVAILABLE TOOLS]",
              "[END OF AVAILABLE TOOLS]\n\n[BEGIN OF FORMAT INSTRUCTION]"]
    assert sorted(instr.index(b) for b in blocks) == [instr.index(b) for b in blocks]
    assert instr.endswith("[END OF FORMAT INSTRUCTION]") and "[BEGIN OF QUERY]" not in instr
    assert [t["name"] for t in fc.tools_from_instruction(instr)] == ["current_weather", "hourly_forecast"]


# the original calls of the xlam fixture, written by hand from xlam_sample.json
XLAM_CALLS = {
    0: [("current_weather", {"city": "Sydney"})],
    1: [("user_metadata", {"username": "nike", "fresh": "1"}), ("user_metadata", {"username": "adidas", "fresh": "1"})],
    2: [("hourly_forecast", {"location": "Oslo", "hours": 12}), ("current_weather", {"city": "Bergen"})],
}


def _check_masked(row: CalmExample):
    info = row.meta["hammer"]
    assert info["masked"] is True
    fmap = info["functions"]
    assert len(set(fmap.values())) == len(fmap) and not set(fmap.values()) & set(fmap)  # one-to-one, all renamed
    for orig, pm in info["parameters"].items():
        assert len(set(pm.values())) == len(pm)
    tools = {t["name"]: t for t in fc.tools_from_instruction(row.instruction)}
    assert set(tools) == set(fmap.values())
    for orig, new in fmap.items():  # descriptions and types kept, parameter names renamed
        assert set(tools[new]["parameters"]["properties"]) == set(info["parameters"][orig].values())
    calls = parse_json_calls(row.output)
    assert calls, row.output
    for c in calls:  # the masked sample parses against its masked tools
        spec = tools[c.name]["parameters"]
        assert set(c.arguments) <= set(spec["properties"])
    inv = {v: k for k, v in fmap.items()}
    unmasked = []
    for c in calls:
        orig = inv[c.name]
        pinv = {v: k for k, v in info["parameters"][orig].items()}
        unmasked.append((orig, {pinv[k]: v for k, v in c.arguments.items()}))
    for orig in fmap:  # the original names are gone from the text
        assert f'"{orig}"' not in row.instruction + row.input + row.output
    return unmasked


def test_hammer_masking_is_consistent_and_maps_back():
    convs = list(sources.load("xlam", XLAM, on_bad_row="skip"))
    rows = fc.convert_hammer(convs, _skip_report(), seed=3, mask_prob=1.0)
    by_row = {r.meta["row"]: r for r in rows}
    for k, expected in XLAM_CALLS.items():
        # the defaults rule may change a value the call passes unchanged; none of these rows do that
        assert _check_masked(by_row[k]) == expected
    for r in rows:
        if r.output != "[]":
            _check_masked(r)
    assert by_row[11].output == "[]"
    # deterministic by seed; another seed gives other names
    again = {r.meta["row"]: r for r in fc.convert_hammer(convs, _skip_report(), seed=3, mask_prob=1.0)}
    other = {r.meta["row"]: r for r in fc.convert_hammer(convs, _skip_report(), seed=4, mask_prob=1.0)}
    assert [again[k].output for k in sorted(again)] == [by_row[k].output for k in sorted(by_row)]
    assert by_row[0].output != other[0].output


def test_hammer_mask_rate():
    convs = list(sources.load("xlam", XLAM, on_bad_row="skip"))
    # each conversation is masked or not as a whole; rate 0 / 1 are exact, 2/3 lies in between
    for p, lo, hi in ((0.0, 0, 0), (1.0, 12, 12), (2 / 3, 1, 11)):
        rows = fc.convert_hammer(convs, _skip_report(), seed=0, mask_prob=p)
        n = len({r.meta["row"] for r in rows if r.meta["hammer"]["masked"]})
        assert lo <= n <= hi, (p, n)


def test_hammer_over_toolace_masks_history_and_results_consistently():
    convs = list(sources.load("toolace", TOOLACE, on_bad_row="skip"))
    rows = fc.convert_hammer(convs, _skip_report(), seed=0, mask_prob=1.0)
    row6 = [r for r in rows if r.meta["row"] == 6]  # Get Team Score, asked twice
    assert [r.meta["objective"] for r in row6] == ["call", "call"]  # text turns are not Hammer rows
    second = row6[1]
    _check_masked(second)
    new = second.meta["hammer"]["functions"]["Get Team Score"]
    assert "Get Team Score" not in second.instruction + second.input + second.output
    assert f"Tool ({new}): " in second.input and f'"name": "{new}"' in second.input.splitlines()[2]
    team = second.meta["hammer"]["parameters"]["Get Team Score"]["team_name"]
    assert json.loads(second.output)[0]["arguments"][team] == "Celtics"


def test_toolace_rows_hand_checked():
    rep = _skip_report("toolace")
    convs = list(sources.load("toolace", TOOLACE, on_bad_row="skip", report=rep))
    assert rep.skipped["unparseable call"] == 1  # row 8: counted by the loader, not dropped silently
    rows = fc.convert_toolace(convs, _skip_report())
    r0 = [r for r in rows if r.meta["row"] == 0]
    assert [r.output for r in r0] == [
        '[Market Trends API(trend_type="MOST_ACTIVE", country="us")]',
        "The most active US stocks right now are NVIDIA (NVDA) and Tesla (TSLA)."]
    assert r0[0].input == "[BEGIN OF QUERY]\nUser: What are the most active stocks in the US market right now?\n[END OF QUERY]"
    assert r0[1].input == (
        "[BEGIN OF QUERY]\n"
        "User: What are the most active stocks in the US market right now?\n"
        'Assistant: [Market Trends API(trend_type="MOST_ACTIVE", country="us")]\n'
        'Tool (Market Trends API): {"trends": [{"symbol": "NVDA", "volume": 412000000}, {"symbol": "TSLA", "volume": 98000000}]}\n'
        "[END OF QUERY]")
    r2 = [r for r in rows if r.meta["row"] == 2]
    assert [r.output for r in r2] == [
        "Sure. Please provide a password to protect the new address.",
        '[newAddress(password="S3cure!pass")]',
        "Your new Ethereum address is 0x9b1a7e1f7c1d2f4e5a6b7c8d9e0f1a2b3c4d5e6f. Keep the password safe."]
    assert [r.meta["objective"] for r in r2] == ["text", "call", "text"]
    assert "[BEGIN OF AVAILABLE TOOLS]" in r2[0].instruction and "reply in plain text" in r2[0].instruction


# --------------------------------------------------------------------------------------------
# SGD -> CRA
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cra_rows():
    rep = _skip_report()
    rows = cra.convert(cra.load_sgd(SGD), rep, TemplateThoughts())
    assert rep.bad_rows == 0
    return rows


T1 = ("The user wants to find a restaurant of a particular cuisine in a city. "
      "I have city='San Jose', cuisine='American', so I will call FindRestaurants.")
T2 = "FindRestaurants returned 10 results. I should offer the restaurant name 71 Saint Peter; offer the city San Jose."


def test_cra_rows_hand_checked(cra_rows):
    """CALM Figs. 6-7: thoughts are given in the Input; action prediction outputs only the Action,
    response generation (its own instruction, no tool list) only `System: <gold>`; the history keeps
    earlier Thoughts, Actions, Observations and System replies."""
    d = {(r.meta["dialogue_id"], r.meta["turn"], r.meta["objective"]): r for r in cra_rows}
    first = d[("1_00000", 1, "response")]
    assert first.input == ("User: I am feeling hungry so I would like to find a place to eat.\n"
                           "Thought: I should ask for the city.")
    assert first.output == "System: Do you have a specific which you want the eating place to be located at?"
    assert first.instruction == cra.RESPONSE_INSTRUCTION and "FindRestaurants" not in first.instruction
    history = ("User: I am feeling hungry so I would like to find a place to eat.\n"
               "Thought: I should ask for the city.\n"
               "System: Do you have a specific which you want the eating place to be located at?\n"
               "User: I would like for it to be in San Jose.\n"
               "Thought: I should ask for the cuisine, suggesting Mexican or Italian.\n"
               "System: Is there a specific cuisine type you enjoy, such as Mexican, Italian or something else?\n"
               "User: I usually like eating the American type of food.")
    act = d[("1_00000", 5, "action")]
    assert act.input == history + "\nThought: " + T1
    assert act.output == "Action: FindRestaurants(city='San Jose', cuisine='American')"
    assert act.instruction.endswith("Available functions:\n"
                                    "ReserveRestaurant(restaurant_name, city, time, date, party_size)\n"
                                    "FindRestaurants(cuisine, city, price_range, has_live_music, serves_alcohol)")
    resp = d[("1_00000", 5, "response")]
    assert resp.input.startswith(history + "\nThought: " + T1 + "\n"
                                 "Action: FindRestaurants(city='San Jose', cuisine='American')\nObservation: [{")
    assert resp.input.endswith("\nThought: " + T2)
    assert resp.output == "System: I see that at 71 Saint Peter there is a good restaurant which is in San Jose."
    assert resp.instruction == cra.RESPONSE_INSTRUCTION
    # the next turn's history carries both thoughts, the call, its results and the System reply
    nxt = d[("1_00000", 7, "response")]
    assert ("\nThought: " + T1 + "\nAction: FindRestaurants(city='San Jose', cuisine='American')\nObservation: [{"
            in nxt.input)
    assert ("\nThought: " + T2 + "\nSystem: I see that at 71 Saint Peter there is a good restaurant which is in "
            "San Jose.\n") in nxt.input
    assert "Response:" not in "".join(r.input + r.output for r in cra_rows)


def test_cra_generate_layout_trains_the_thoughts():
    """§4.2's prose (the model generates its thoughts): the named option `layout="generate"`."""
    rows = cra.convert(cra.load_sgd(os.path.join(SGD, "dialogues_001.json"), limit=1), _skip_report(),
                       TemplateThoughts(), layout="generate")
    d = {(r.meta["turn"], r.meta["objective"]): r for r in rows}
    act, resp = d[(5, "action")], d[(5, "response")]
    assert act.input.endswith("\nUser: I usually like eating the American type of food.")
    assert act.output == "Thought: " + T1 + "\nAction: FindRestaurants(city='San Jose', cuisine='American')"
    assert resp.input.rsplit("\n", 1)[1].startswith("Observation: [{")
    assert resp.output == ("Thought: " + T2 + "\n"
                           "System: I see that at 71 Saint Peter there is a good restaurant which is in San Jose.")
    assert d[(1, "response")].output == ("Thought: I should ask for the city.\n"
                                         "System: Do you have a specific which you want the eating place to be "
                                         "located at?")
    with pytest.raises(Exception, match="--cra-layout"):
        cra.convert([], _skip_report(), layout="prose")


def _raw_sgd():
    raw = {}
    for f in sorted(os.listdir(SGD)):
        if f.startswith("dialogues_"):
            with open(os.path.join(SGD, f), encoding="utf-8") as fh:
                for dia in json.load(fh):
                    raw[dia["dialogue_id"]] = dia
    return raw


def test_cra_keeps_gold_response_and_observation(cra_rows):
    raw = _raw_sgd()
    n_sys = sum(t["speaker"] == "SYSTEM" for d in raw.values() for t in d["turns"])
    n_calls = sum("service_call" in f for d in raw.values() for t in d["turns"] if t["speaker"] == "SYSTEM"
                  for f in t["frames"])
    resp = [r for r in cra_rows if r.meta["objective"] == "response"]
    acts = [r for r in cra_rows if r.meta["objective"] == "action"]
    assert len(resp) == n_sys and len(acts) == n_calls and n_calls > 0
    checked = 0
    for r in resp:
        turn = raw[r.meta["dialogue_id"]]["turns"][r.meta["turn"]]
        assert r.output == "System: " + turn["utterance"]  # verbatim
        frames = [f for f in turn["frames"] if "service_call" in f]
        if frames:
            last_obs = r.input.rsplit("\nObservation: ", 1)[1].split("\nThought: ", 1)[0]
            assert json.loads(last_obs) == frames[0]["service_results"]
            call = frames[0]["service_call"]
            action = r.input.rsplit("\nAction: ", 1)[1].split("\n", 1)[0]
            assert action == call["method"] + "(" + ", ".join(f"{k}={v!r}" for k, v in call["parameters"].items()) + ")"
            checked += 1
        else:  # no call: the input ends with the user's turn and its thought
            user = raw[r.meta["dialogue_id"]]["turns"][r.meta["turn"] - 1]
            assert r.input.splitlines()[-2] == "User: " + user["utterance"]
            assert r.input.splitlines()[-1].startswith("Thought: ")
    assert checked == n_calls


def test_cra_call_without_results_is_counted(tmp_path):
    d = tmp_path / "train"
    d.mkdir()
    with open(os.path.join(SGD, "dialogues_001.json"), encoding="utf-8") as fh:
        dialogues = json.load(fh)
    broken = copy.deepcopy(dialogues[:1])
    frame = broken[0]["turns"][5]["frames"][0]
    assert "service_call" in frame
    del frame["service_results"]
    (d / "dialogues_001.json").write_text(json.dumps(broken))
    (d / "schema.json").write_text(open(os.path.join(SGD, "schema.json"), encoding="utf-8").read())
    rep = _skip_report()
    rows = cra.convert(cra.load_sgd(str(d)), rep)
    assert dict(rep.skipped) == {"service call without results": 1}
    turns = {(r.meta["turn"], r.meta["objective"]) for r in rows}
    assert (5, "action") not in turns and (5, "response") not in turns and (7, "response") in turns
    later = next(r for r in rows if r.meta["turn"] == 7)
    assert "Action:" not in later.input and "System: I see that at 71 Saint Peter" in later.input
    with pytest.raises(Exception, match="service call without results"):
        cra.convert(cra.load_sgd(str(d)), LoadReport(source="cra", on_bad_row="error"))


# --------------------------------------------------------------------------------------------
# only the Output is trained
# --------------------------------------------------------------------------------------------

def test_only_output_tokens_are_trained(smollm2_tokenizer, dst_rows, cra_rows):
    from jaxtool.data.formats import get_format
    from jaxtool.data.tokenize import tokenize_conversation

    fmt = get_format("alpaca", tokenizer=smollm2_tokenizer)
    eos = smollm2_tokenizer.eos_token
    toolace = fc.convert_toolace(list(sources.load("toolace", TOOLACE, on_bad_row="skip")), _skip_report())
    hammer = fc.convert_hammer(list(sources.load("xlam", XLAM, on_bad_row="skip")), _skip_report(), mask_prob=1.0)
    samples = [next(iter(dst_rows.values())), hammer[0], toolace[0], toolace[1],
               next(r for r in cra_rows if r.meta["objective"] == "action"),
               next(r for r in cra_rows if r.meta["objective"] == "response")]
    for ex in samples:
        tok = tokenize_conversation(ex.to_conversation(), fmt, smollm2_tokenizer)
        mask = tok.loss_mask.tolist()
        first = mask.index(1)
        assert all(mask[first:]) and not any(mask[:first])  # one trained stretch, at the end
        ids = tok.input_ids.tolist()
        assert smollm2_tokenizer.decode(ids[first:]) == ex.output + eos
        prompt = smollm2_tokenizer.decode(ids[:first])
        assert prompt.endswith("\n\n### Input:\n" + ex.input + "\n\n### Response:")
        assert "### Instruction:\n" + ex.instruction in prompt
