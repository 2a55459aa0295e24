"""DiaTool-DPO's dialogue MDP: the five internal states of a tool-augmented assistant and the
state trajectory of a dialogue (Jung et al. 2025, "DiaTool-DPO", §3 and Figure 1).

=====  ==============  =================================================================
state  name            the assistant is ...
=====  ==============  =================================================================
1      INITIAL         at the start, or back there after declining a request it has no
                       tool for (a rejection leaves the dialogue in state 1)
2      SLOT_FILLING    has selected a tool but lacks required arguments (slots): it asks
3      TOOL_CALL       has selected a tool with complete slots: it emits the call
4      WAIT_RESPONSE   waiting for the tool's response (the tool message)
5      COMPLETE        answering the user from the tool's output
=====  ==============  =================================================================

Labels live on the messages: every assistant message carries ``meta["state"]`` = the state its
action moves the dialogue into (1 reject, 2 slot question, 3 tool call, 5 completion) and every
tool message is state 4 (labelled explicitly by the builder; an unlabelled tool message also counts
as 4). ``Message.to_dict`` writes the label as a ``"state"`` key on the message and
``Message.from_dict`` reads it back into ``meta``, so labels survive the JSONL round trip.

A trajectory is the state sequence starting from the initial state, written ``"1-2-2-3-4-5"``.
User and system messages do not change the state and add nothing to the trajectory.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from jaxtool.data.schema import Conversation, Message
from jaxtool.errors import DataError

INITIAL = 1
SLOT_FILLING = 2
TOOL_CALL = 3
WAIT_RESPONSE = 4
COMPLETE = 5

STATE_NAMES = {
    INITIAL: "initial",
    SLOT_FILLING: "slot-filling",
    TOOL_CALL: "tool-call",
    WAIT_RESPONSE: "wait-for-tool-response",
    COMPLETE: "complete",
}
ASSISTANT_STATES = (INITIAL, SLOT_FILLING, TOOL_CALL, COMPLETE)


def labelled(message: Message, state: int, **extra) -> Message:
    """`message` with its meta replaced by ``{"state": state, **extra}`` (other meta is dropped so
    the output rows stay clean)."""
    if state not in STATE_NAMES:
        raise ValueError(f"unknown DiaTool state {state!r}")
    return Message(message.role, message.content, tool_calls=message.tool_calls, name=message.name,
                   tool_call_id=message.tool_call_id, meta={"state": state, **extra})


def _messages(conv: Conversation | Sequence[Message]) -> Sequence[Message]:
    return conv.messages if isinstance(conv, Conversation) else conv


def trajectory_states(conv: Conversation | Sequence[Message]) -> list[int]:
    """The state sequence of a labelled dialogue, starting with the initial state 1.

    Raises `DataError` naming the message when an assistant message has no valid label or a tool
    message carries a label other than 4.
    """
    states = [INITIAL]
    for i, m in enumerate(_messages(conv)):
        if m.role == "assistant":
            s = m.meta.get("state")
            if s not in ASSISTANT_STATES or isinstance(s, bool):
                raise DataError(f"messages[{i}]: assistant message needs meta state in "
                                f"{list(ASSISTANT_STATES)}, got {s!r}")
            states.append(int(s))
        elif m.role == "tool":
            s = m.meta.get("state", WAIT_RESPONSE)
            if s != WAIT_RESPONSE or isinstance(s, bool):
                raise DataError(f"messages[{i}]: tool message must be state {WAIT_RESPONSE}, got {s!r}")
            states.append(WAIT_RESPONSE)
    return states


def trajectory(conv: Conversation | Sequence[Message]) -> str:
    """``"1-2-3-4-5"``: the trajectory derived from the messages' state labels."""
    return format_trajectory(trajectory_states(conv))


def format_trajectory(states: Iterable[int]) -> str:
    return "-".join(str(s) for s in states)


def parse_trajectory(text: str) -> list[int]:
    """``"1-2-3"`` (or ``"1→2→3"``) -> ``[1, 2, 3]``."""
    parts = text.replace("→", "-").split("-")
    try:
        states = [int(p) for p in parts]
    except ValueError:
        raise DataError(f"not a trajectory: {text!r} (expected states 1-5 joined by '-')") from None
    if any(s not in STATE_NAMES for s in states):
        raise DataError(f"not a trajectory: {text!r} (states must be 1..5)")
    return states


def label_problems(conv: Conversation | Sequence[Message]) -> list[str]:
    """Disagreements between each label and the message it sits on (empty list = consistent).

    state 3 <=> an assistant message with tool calls; states 1, 2, 5 are text-only assistant
    messages; state 5 directly follows a tool message; tool messages are state 4.
    """
    problems = []
    msgs = list(_messages(conv))
    for i, m in enumerate(msgs):
        s = m.meta.get("state")
        if m.role == "assistant":
            if s == TOOL_CALL and not m.tool_calls:
                problems.append(f"messages[{i}]: state 3 but no tool call")
            if s in (INITIAL, SLOT_FILLING, COMPLETE) and (m.tool_calls or not m.content):
                problems.append(f"messages[{i}]: state {s} must be text without tool calls")
            if s == COMPLETE and (i == 0 or msgs[i - 1].role != "tool"):
                problems.append(f"messages[{i}]: state 5 must follow a tool message")
        elif m.role == "tool" and s not in (None, WAIT_RESPONSE):
            problems.append(f"messages[{i}]: tool message labelled {s!r}")
        elif m.role in ("user", "system") and s is not None:
            problems.append(f"messages[{i}]: {m.role} message carries a state label")
    return problems


def assistant_turns(conv: Conversation | Sequence[Message]) -> int:
    return sum(1 for m in _messages(conv) if m.role == "assistant")
