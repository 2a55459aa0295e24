"""DiaTool-DPO MDP state labels and trajectory strings."""

import json

import pytest

from jaxtool.data.schema import Conversation, Message, ToolCall
from jaxtool.diatool.states import (label_problems, labelled, parse_trajectory, trajectory,
                                    trajectory_states)
from jaxtool.errors import DataError


def _conv(*msgs):
    return Conversation(messages=tuple(msgs))


CALL = Message("assistant", None, tool_calls=(ToolCall("f", {"x": 1}),))


def test_trajectory_from_labels_slot_filling_dialogue():
    conv = _conv(Message("system", "sys"), Message("user", "book it"),
                 labelled(Message("assistant", "which day?"), 2), Message("user", "monday"),
                 labelled(Message("assistant", "what time?"), 2), Message("user", "9"),
                 labelled(CALL, 3), labelled(Message("tool", "ok", name="f"), 4),
                 labelled(Message("assistant", "booked"), 5))
    assert trajectory_states(conv) == [1, 2, 2, 3, 4, 5]
    assert trajectory(conv) == "1-2-2-3-4-5"
    assert label_problems(conv) == []


def test_rejection_stays_in_initial_state():
    conv = _conv(Message("user", "fly me to the moon"), labelled(Message("assistant", "sorry, I can't"), 1))
    assert trajectory(conv) == "1-1"


def test_unlabelled_tool_message_counts_as_4_but_unlabelled_assistant_is_an_error():
    conv = _conv(Message("user", "q"), labelled(CALL, 3), Message("tool", "r", name="f"))
    assert trajectory(conv) == "1-3-4"
    bad = _conv(Message("user", "q"), CALL)
    with pytest.raises(DataError, match=r"messages\[1\].*assistant message needs meta state"):
        trajectory(bad)
    with pytest.raises(DataError, match="tool message must be state 4"):
        trajectory(_conv(Message("user", "q"), labelled(CALL, 3), Message("tool", "r", meta={"state": 5})))


def test_labels_survive_the_json_round_trip():
    conv = _conv(Message("user", "q"), labelled(CALL, 3), labelled(Message("tool", "r", name="f"), 4),
                 labelled(Message("assistant", "done"), 5))
    d = json.loads(conv.to_json())
    assert [m.get("state") for m in d["messages"]] == [None, 3, 4, 5]
    back = Conversation.from_dict(d)
    assert trajectory(back) == "1-3-4-5"


def test_label_problems_catch_labels_that_disagree_with_the_message():
    conv = _conv(Message("user", "q"), labelled(Message("assistant", "text"), 3),
                 labelled(CALL, 2), labelled(Message("assistant", "done"), 5))
    probs = label_problems(conv)
    assert "messages[1]: state 3 but no tool call" in probs
    assert "messages[2]: state 2 must be text without tool calls" in probs
    assert "messages[3]: state 5 must follow a tool message" in probs


def test_parse_trajectory_accepts_arrows_and_rejects_junk():
    assert parse_trajectory("1→2→2→3→4→5") == [1, 2, 2, 3, 4, 5]
    assert parse_trajectory("1-1") == [1, 1]
    with pytest.raises(DataError):
        parse_trajectory("1-6")
    with pytest.raises(DataError):
        parse_trajectory("1-x")
