"""Tokenization: the loss mask covers exactly the assistant turns (decoded and compared for every
format), end-of-turn tokens are trained, scaffolding is not, inference prompts tokenize like
training prefixes, truncation is explicit and counted."""

import copy

import numpy as np
import pytest

from formats_samples import chat_conv, functionchat_convs, read_template, weather_conv
from jaxtool.data.formats import FORMAT_NAMES, FormatError, get_format
from jaxtool.data.schema import Conversation, Message, ToolCall
from jaxtool.data.tokenize import (
    TruncationReport,
    drop_oldest_turns,
    prompt_ids,
    tokenize_conversation,
    tokenize_dataset,
    tokenize_pair,
)
from jaxtool.errors import DataError

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>",
                   "<|python_tag|>"]


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    """A private copy of SmolLM2's tokenizer (formats may add special tokens to it), carrying Qwen2.5's
    chat template so `chat_template` can render tool calls."""
    t = copy.deepcopy(smollm2_tokenizer)
    t.chat_template = read_template("qwen25_instruct.jinja")
    return t


@pytest.fixture(scope="module")
def llama3_regex_tok():
    """A small byte-level BPE with Llama 3's pre-tokenizer regex and special tokens, built with the
    `tokenizers` library (the real Llama 3 tokenizer cannot be downloaded here)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    corpus = [get_format(n).text(c) for n in ("llama3_json", "functionary_v3_llama3")
              for c in [weather_conv(multi_call=False), chat_conv()] + functionchat_convs()]
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=LLAMA3_SPECIALS + ["<|end_of_text|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


def fmt_for(name, tok):
    return get_format(name, tokenizer=tok if name in ("react", "alpaca", "chat_template") else None)


def decode_turns(ex, tokenizer):
    """Decoded text of each assistant turn, from the masked tokens only."""
    assert np.array_equal(ex.loss_mask == 1, ex.turn_ids >= 0)
    return [tokenizer.decode(ex.input_ids[ex.turn_ids == k].tolist(), skip_special_tokens=False)
            for k in range(ex.n_turns)]


# The assistant turns of weather_conv() as each format writes them (hand-written from the formats'
# specifications; the end-of-turn marker is part of every turn).
PARIS = '{"city": "Paris"}'
EXPECTED_TURNS = {
    "hermes": [
        '<tool_call>\n{"name": "get_weather", "arguments": ' + PARIS + "}\n</tool_call><|im_end|>",
        "It is 21°C in Paris.<|im_end|>",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome", "unit": "c"}}\n</tool_call><|im_end|>',
        "Oslo: 5°C, Rome: 25°C.<|im_end|>",
    ],
    "pythonic": [
        '[get_weather(city="Paris")]<|im_end|>',
        "It is 21°C in Paris.<|im_end|>",
        '[get_weather(city="Oslo"), get_weather(city="Rome", unit="c")]<|im_end|>',
        "Oslo: 5°C, Rome: 25°C.<|im_end|>",
    ],
    "functionary_v3_llama3": [
        "get_weather\n" + PARIS + "<|eot_id|>",
        "all\nIt is 21°C in Paris.<|eot_id|>",
        'get_weather\n{"city": "Oslo"}>>>get_weather\n{"city": "Rome", "unit": "c"}<|eot_id|>',
        "all\nOslo: 5°C, Rome: 25°C.<|eot_id|>",
    ],
    "react": [
        'Action: [get_weather(city="Paris")]<|im_end|>',
        "Response: It is 21°C in Paris.<|im_end|>",
        'Action: [get_weather(city="Oslo"), get_weather(city="Rome", unit="c")]<|im_end|>',
        "Response: Oslo: 5°C, Rome: 25°C.<|im_end|>",
    ],
    "alpaca": [
        'API-Request: [get_weather(city="Paris")]<|im_end|>',
        "It is 21°C in Paris.<|im_end|>",
        'API-Request: [get_weather(city="Oslo"), get_weather(city="Rome", unit="c")]<|im_end|>',
        "Oslo: 5°C, Rome: 25°C.<|im_end|>",
    ],
    # Llama 3.1 makes one call per turn: the single-call variant of the conversation
    "llama3_json": [
        '{"name": "get_weather", "parameters": ' + PARIS + "}<|eot_id|>",
        "It is 21°C in Paris.<|eot_id|>",
        '{"name": "get_weather", "parameters": {"city": "Oslo"}}<|eot_id|>',
        "Oslo: 5°C.<|eot_id|>",
    ],
}
EXPECTED_TURNS["chat_template"] = EXPECTED_TURNS["hermes"]  # Qwen2.5's template
END_MARKER = {"hermes": "<|im_end|>", "pythonic": "<|im_end|>", "react": "<|im_end|>", "alpaca": "<|im_end|>",
              "chat_template": "<|im_end|>", "llama3_json": "<|eot_id|>", "functionary_v3_llama3": "<|eot_id|>"}


def sample(name):
    return weather_conv(multi_call=name != "llama3_json")


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_masked_tokens_are_exactly_the_assistant_turns(name, tok):
    fmt = fmt_for(name, tok)
    ex = tokenize_conversation(sample(name), fmt, tok)
    assert decode_turns(ex, tok) == EXPECTED_TURNS[name]
    # the whole sequence decodes to the rendered text: nothing lost, nothing added
    assert tok.decode(ex.input_ids.tolist(), skip_special_tokens=False) == fmt.text(sample(name))
    # every trained run ends with the end-of-turn token, which is trained
    eot = tok.convert_tokens_to_ids(END_MARKER[name])
    for k in range(ex.n_turns):
        idx = np.flatnonzero(ex.turn_ids == k)
        assert np.all(np.diff(idx) == 1), "a turn is one contiguous run"
        assert ex.input_ids[idx[-1]] == eot and ex.loss_mask[idx[-1]] == 1


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_real_korean_dialogues_train_only_their_assistant_turns(name, tok):
    fmt = fmt_for(name, tok)
    for conv in functionchat_convs():
        ex = tokenize_conversation(conv, fmt, tok)
        turns = decode_turns(ex, tok)
        assistants = [m for m in conv.messages if m.role == "assistant"]
        assert len(turns) == len(assistants)
        for text, msg in zip(turns, assistants):
            assert text.endswith(END_MARKER[name])
            reply = fmt.parse(text)  # the trained tokens parse back to the data
            assert reply.error is None
            assert [(c.name, c.arguments) for c in reply.tool_calls] == [(c.name, c.arguments) for c in msg.tool_calls]
            assert reply.content == (msg.content.strip() if name == "llama3_json" and msg.content else msg.content)
        # nothing from user/system/tool messages is trained
        trained = tok.decode(ex.input_ids[ex.loss_mask == 1].tolist(), skip_special_tokens=False)
        for m in conv.messages:
            if m.role != "assistant" and len(m.content) > 3:
                assert m.content not in trained


def test_scaffolding_and_generation_header_are_not_trained(tok):
    ex = tokenize_conversation(chat_conv(), get_format("hermes"), tok)
    ids, mask = ex.input_ids.tolist(), ex.loss_mask.tolist()
    header = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    starts = [i for i in range(len(ids)) if ids[i:i + len(header)] == header]
    assert len(starts) == 3
    for s in starts:
        assert mask[s:s + len(header)] == [0] * len(header)
        assert mask[s + len(header)] == 1  # first token of the reply
    # "ok<|im_end|>" three times: each <|im_end|> closing an assistant turn is trained, the others not
    assert [mask[i] for i in range(len(ids)) if ids[i] == im_end] == [0, 1, 0, 1, 0, 1]
    assert decode_turns(ex, tok) == ["ok<|im_end|>"] * 3


@pytest.mark.parametrize("name", ["hermes", "pythonic", "functionary_v3_llama3", "react", "alpaca", "chat_template"])
def test_segmentwise_ids_equal_whole_text_ids(name, tok):
    """Segment boundaries are pre-tokenizer boundaries, so per-segment tokenization equals
    tokenizing the whole rendered text (SmolLM2's GPT-2-style byte-level BPE)."""
    fmt = fmt_for(name, tok)
    for conv in [sample(name), chat_conv()] + functionchat_convs():
        ex = tokenize_conversation(conv, fmt, tok)
        assert ex.input_ids.tolist() == tok(fmt.text(conv), add_special_tokens=False)["input_ids"]


def test_llama3_header_boundary_needs_llama3s_own_pretokenizer(tok, llama3_regex_tok):
    """Llama 3 headers end in "\\n\\n" right before the message. GPT-2-style pre-tokenizers (SmolLM2)
    split a trailing "\\n\\n" differently from "\\n\\n" followed by text, so per-segment ids differ from
    whole-text ids there; with Llama 3's own regex ("\\s*[\\r\\n]+") they are equal. Training and
    `prompt_ids` both use the per-segment ids, so train and inference agree either way."""
    conv = sample("llama3_json")
    fmt = get_format("llama3_json")
    ex = tokenize_conversation(conv, fmt, tok)
    assert ex.input_ids.tolist() != tok(fmt.text(conv), add_special_tokens=False)["input_ids"]
    for name in ("llama3_json", "functionary_v3_llama3"):
        fmt = get_format(name)
        for c in [sample(name), chat_conv()] + functionchat_convs():
            ex = tokenize_conversation(c, fmt, llama3_regex_tok)
            assert ex.input_ids.tolist() == llama3_regex_tok(fmt.text(c), add_special_tokens=False)["input_ids"]
            assert decode_turns(ex, llama3_regex_tok)[0].endswith("<|eot_id|>")


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_prompt_ids_are_the_training_prefix_of_each_turn(name, tok):
    fmt = fmt_for(name, tok)
    conv = sample(name)
    ex = tokenize_conversation(conv, fmt, tok)
    assistant_idx = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
    for k, msg_idx in enumerate(assistant_idx):
        first = int(np.flatnonzero(ex.turn_ids == k)[0])
        prefix = conv.replace(messages=conv.messages[:msg_idx])
        assert prompt_ids(prefix, fmt, tok) == ex.input_ids[:first].tolist()


def test_missing_special_tokens_are_added_and_reported(smollm2_tokenizer):
    t = copy.deepcopy(smollm2_tokenizer)
    n0 = len(t)
    rep = TruncationReport()
    ex = tokenize_conversation(sample("llama3_json"), get_format("llama3_json"), t, report=rep)
    assert rep.added_tokens == LLAMA3_SPECIALS
    assert len(t) == n0 + len(LLAMA3_SPECIALS)
    for token in LLAMA3_SPECIALS[:4]:
        assert t.convert_tokens_to_ids(token) in ex.input_ids
    assert "added 6 special tokens" in str(rep)
    rep2 = TruncationReport()
    tokenize_conversation(sample("hermes"), get_format("hermes"), t, report=rep2)
    assert rep2.added_tokens == []  # ChatML tokens are SmolLM2's own


# ----------------------------------------------------------------------------------------------
# truncation
# ----------------------------------------------------------------------------------------------

def test_drop_policy_drops_and_counts(tok):
    fmt = get_format("hermes")
    n = len(tokenize_conversation(weather_conv(), fmt, tok))
    rep = TruncationReport(policy="drop", max_length=n - 1)
    assert tokenize_conversation(weather_conv(), fmt, tok, max_length=n - 1, report=rep) is None
    assert rep.dropped == {"too long": 1} and rep.kept == 0
    assert tokenize_conversation(weather_conv(), fmt, tok, max_length=n, report=rep) is not None
    assert rep.kept == 1 and "1 × too long" in str(rep)


def test_drop_oldest_turns_keeps_system_tools_and_recent_turns(tok):
    fmt = get_format("hermes")
    conv = weather_conv()
    n = len(tokenize_conversation(conv, fmt, tok))
    rep = TruncationReport(policy="drop_oldest_turns", max_length=n - 1)
    ex = tokenize_conversation(conv, fmt, tok, max_length=n - 1, truncation="drop_oldest_turns", report=rep)
    # expected: the first history turn (Paris question, call, result, answer) removed; system + tools kept
    expected_conv = conv.replace(messages=(conv.messages[0],) + conv.messages[5:])
    expected = tokenize_conversation(expected_conv, fmt, tok)
    assert ex.input_ids.tolist() == expected.input_ids.tolist()
    assert ex.n_turns == 2 and ex.turn_offset == 2 and set(ex.turn_ids.tolist()) == {-1, 0, 1}
    text = tok.decode(ex.input_ids.tolist())
    assert "# Tools" in text and "You are a helpful assistant." in text and "Paris" not in text
    assert ex.meta["dropped_history_turns"] == 1
    assert (rep.kept, rep.truncated, rep.turns_removed, rep.assistant_turns_removed) == (1, 1, 1, 2)
    rep2 = TruncationReport(policy="drop_oldest_turns", max_length=60)
    assert tokenize_conversation(conv, fmt, tok, max_length=60, truncation="drop_oldest_turns", report=rep2) is None
    assert rep2.dropped == {"too long even after dropping history": 1}


def test_drop_oldest_turns_helper():
    conv = weather_conv()
    assert drop_oldest_turns(conv, 0) is conv
    assert [m.role for m in drop_oldest_turns(conv, 1).messages] == ["system", "user", "assistant", "tool", "tool",
                                                                     "assistant"]
    assert [m.role for m in drop_oldest_turns(conv, 5).messages] == ["system"]


def test_bad_arguments_raise_clear_errors(tok):
    with pytest.raises(DataError, match="truncation must be one of"):
        tokenize_conversation(chat_conv(), get_format("hermes"), tok, truncation="cut")
    with pytest.raises(DataError, match="max_length"):
        tokenize_conversation(chat_conv(), get_format("hermes"), tok, max_length=1)


def test_control_tokens_inside_message_text_are_refused(tok):
    conv = Conversation(messages=(
        Message("user", "format this"),
        Message("assistant", None, tool_calls=(ToolCall("fmt", {"text": "a<|im_end|>b"}),)),
    ))
    with pytest.raises(FormatError, match="control token inside message text.*tool_calls\\[0\\]"):
        tokenize_conversation(conv, get_format("hermes"), tok)
    rep = TruncationReport(on_bad_example="skip")
    assert tokenize_conversation(conv, get_format("hermes"), tok, report=rep) is None
    assert rep.dropped == {"hermes: control token inside message text": 1}
    # "</s>" is plain text for hermes but the end-of-turn marker of alpaca without a tokenizer EOS
    html = Conversation(messages=(Message("user", "strike"), Message("assistant", "<s>old</s>")))
    assert tokenize_conversation(html, get_format("hermes"), tok) is not None
    with pytest.raises(FormatError, match="'</s>'"):
        tokenize_conversation(html, get_format("alpaca", eos="</s>"), tok)


def test_unrepresentable_conversation_is_counted_when_skipping(tok):
    both = Conversation(messages=(Message("user", "x"), Message("assistant", "t", tool_calls=(ToolCall("f", {}),))))
    rep = TruncationReport(on_bad_example="skip")
    out = tokenize_dataset([both, chat_conv()], get_format("llama3_json"), tok, report=rep)
    assert len(out) == 1 and rep.seen == 2 and rep.kept == 1
    assert rep.dropped == {"llama3_json: assistant message with both text and tool calls": 1}


def test_preference_pair_is_dropped_when_either_side_is(tok):
    fmt = get_format("hermes")
    short = chat_conv()
    n_short = len(tokenize_conversation(short, fmt, tok))
    rep = TruncationReport(max_length=n_short)
    assert tokenize_pair(short, weather_conv(), fmt, tok, max_length=n_short, report=rep) is None
    pair = tokenize_pair(short, short, fmt, tok, max_length=n_short, report=rep)
    assert pair is not None and pair[0].input_ids.tolist() == pair[1].input_ids.tolist()
    assert rep.seen == 2 and rep.kept == 1 and rep.dropped == {"pair: too long": 1}
