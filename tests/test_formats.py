"""Chat formats: renders match the real templates / hand-written goldens, parsers round-trip every
call exactly (hypothesis) and never raise, tools and system prompts reach the prompt."""

import copy
import importlib.util
import json
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from formats_samples import (
    WEATHER_TOOL,
    chat_conv,
    functionchat_convs,
    read_template,
    template_messages,
    weather_conv,
)
from jaxtool.data.calls import ParseError
from jaxtool.data.formats import (
    FORMAT_NAMES,
    FormatError,
    Reply,
    Segment,
    get_format,
    typescript_schema,
)
from jaxtool.data.schema import Conversation, Message, Tool, ToolCall
from jaxtool.errors import ConfigError

TOOL_FORMATS = ("llama3_json", "functionary_v3_llama3", "hermes", "pythonic", "react", "alpaca")


@pytest.fixture(scope="module")
def qwen_tok(smollm2_tokenizer):
    """SmolLM2's tokenizer carrying Qwen2.5's tool-calling chat template (a copy: the session
    fixture is shared)."""
    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = read_template("qwen25_instruct.jinja")
    return tok


def fmt_for(name, qwen_tok=None):
    return get_format(name, tokenizer=qwen_tok) if name == "chat_template" else get_format(name)


def trainable_texts(segs):
    return [s.text for s in segs if s.trainable]


def upto(conv, k):
    return conv.replace(messages=conv.messages[:k])


# ----------------------------------------------------------------------------------------------
# renders against the real Jinja templates
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("conv", [weather_conv(multi_call=False), chat_conv()] + functionchat_convs(),
                         ids=lambda c: str(c.meta.get("serial_num", len(c.messages))))
def test_llama3_json_equals_meta_template(conv, smollm2_tokenizer):
    tools = [t.to_dict() for t in conv.tools] or None
    # Tool content is passed as an object: Meta's template runs `tojson` on anything iterable, which
    # in Jinja includes strings (it would JSON-quote a string result); see formats.NOTES.
    msgs = template_messages(conv, tool_content_as_object=True)
    ref = smollm2_tokenizer.apply_chat_template(msgs, tools=tools, chat_template=read_template("llama31_instruct.jinja"),
                                                tokenize=False, bos_token="<|begin_of_text|>")
    fmt = get_format("llama3_json")
    assert fmt.text(conv) == ref
    if conv.messages[-1].role == "assistant":
        prefix = upto(conv, len(conv.messages) - 1)
        ref_prompt = smollm2_tokenizer.apply_chat_template(
            msgs[:-1], tools=tools, chat_template=read_template("llama31_instruct.jinja"),
            tokenize=False, add_generation_prompt=True, bos_token="<|begin_of_text|>")
        assert fmt.prompt(prefix) == ref_prompt


@pytest.mark.parametrize("conv", [weather_conv(), weather_conv(multi_call=False)] + functionchat_convs(),
                         ids=lambda c: str(c.meta.get("serial_num", len(c.messages))))
def test_hermes_equals_qwen25_template(conv, qwen_tok):
    # All these conversations start with a system message, where Qwen2.5 and our hermes agree
    # (without one Qwen2.5 inserts its own persona; hermes follows Qwen3 and does not).
    tools = [t.to_dict() for t in conv.tools] or None
    ref = qwen_tok.apply_chat_template(template_messages(conv), tools=tools, tokenize=False)
    assert get_format("hermes").text(conv) == ref
    prefix = upto(conv, len(conv.messages) - 1)
    ref_prompt = qwen_tok.apply_chat_template(template_messages(prefix), tools=tools, tokenize=False,
                                              add_generation_prompt=True)
    assert get_format("hermes").prompt(prefix) == ref_prompt


def test_chat_template_format_splits_qwen_template_exactly(qwen_tok):
    conv = weather_conv()
    segs = get_format("chat_template", tokenizer=qwen_tok).render(conv)
    assert "".join(s.text for s in segs) == get_format("hermes").text(conv)
    assert trainable_texts(segs) == trainable_texts(get_format("hermes").render(conv))


# ----------------------------------------------------------------------------------------------
# hand-written goldens
# ----------------------------------------------------------------------------------------------

FUNCTIONARY_WEATHER = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "You are capable of executing available function(s) if required.\n"
    "Only execute function(s) when absolutely necessary.\n"
    "Ask for the required input to:recipient==all\n"
    "Use JSON for function arguments.\n"
    "Respond in this format:\n"
    ">>>${recipient}\n"
    "${content}\n"
    "Available functions:\n"
    "// Supported function definitions that should be called when necessary.\n"
    "namespace functions {\n"
    "\n"
    "// Get the current weather\n"
    "type get_weather = (_: {\n"
    "// City name.\n"
    "city: string,\n"
    'unit?: "c" | "f",\n'
    "}) => any;\n"
    "\n"
    "} // namespace functions<|eot_id|>"
    "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat's the weather in Paris?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n>>>get_weather\n{\"city\": \"Paris\"}<|eot_id|>"
    "<|start_header_id|>tool<|end_header_id|>\n\n{\"temp_c\": 21}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n>>>all\nIt is 21°C in Paris.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nAnd in Oslo and Rome?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ">>>get_weather\n{\"city\": \"Oslo\"}>>>get_weather\n{\"city\": \"Rome\", \"unit\": \"c\"}<|eot_id|>"
    "<|start_header_id|>tool<|end_header_id|>\n\n{\"temp_c\": 5}<|eot_id|>"
    "<|start_header_id|>tool<|end_header_id|>\n\n{\"temp_c\": 25}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n>>>all\nOslo: 5°C, Rome: 25°C.<|eot_id|>"
)


def test_functionary_golden():
    fmt = get_format("functionary_v3_llama3")
    segs = fmt.render(weather_conv())
    assert "".join(s.text for s in segs) == FUNCTIONARY_WEATHER
    # the first ">>>" is the generation prompt (functionary's assistant prefix), not trained
    assert trainable_texts(segs) == [
        'get_weather\n{"city": "Paris"}<|eot_id|>',
        "all\nIt is 21°C in Paris.<|eot_id|>",
        'get_weather\n{"city": "Oslo"}>>>get_weather\n{"city": "Rome", "unit": "c"}<|eot_id|>',
        "all\nOslo: 5°C, Rome: 25°C.<|eot_id|>",
    ]
    assert fmt.prompt(upto(weather_conv(), 2)).endswith(
        "What's the weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n>>>")


def test_functionary_typescript_schema_golden():
    flight = Tool("book_flight", "Book a flight", {
        "type": "object",
        "properties": {
            "origin": {"type": "string", "description": "IATA code"},
            "passengers": {"type": "integer", "description": "How many", "default": 1, "minimum": 1, "maximum": 9},
            "cabin": {"type": "string", "enum": ["economy", "business"], "default": "economy"},
            "date": {"type": "string", "format": "date"},
            "meals": {"type": "array", "items": {"type": "string", "enum": ["veg", "halal"]}},
            "legs": {"type": "array", "description": "Flight legs",
                     "items": {"type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
                               "required": ["from"]}},
            "contact": {"type": "object", "description": "Who to call",
                        "properties": {"email": {"type": "string"}, "phone": {"type": "string"}},
                        "required": ["email"]},
            "tags": {"type": "array"},
            "scores": {"type": "array", "items": {"type": "number"}},
        },
        "required": ["origin", "legs"],
    })
    ping = Tool("ping", "Say hi", {"type": "object"})
    expected = (
        "// Supported function definitions that should be called when necessary.\n"
        "namespace functions {\n\n"
        "// Book a flight\n"
        "type book_flight = (_: {\n"
        "// IATA code.\n"
        "origin: string,\n"
        "// How many. Default=1. Maximum=9 Minimum=1\n"
        "passengers?: number,\n"
        '// Default="economy".\n'
        'cabin?: "economy" | "business",\n'
        "// Format=date\n"
        "date?: string,\n"
        'meals?: ("veg" | "halal")[],\n'
        "// Flight legs.\n"
        "legs: {\n"
        "    from: string,\n"
        "    to?: string,\n"
        "}[],\n"
        "// Who to call.\n"
        "contact?: {\n"
        "    email: string,\n"
        "    phone?: string,\n"
        "},\n"
        "tags?: [],\n"
        "scores?: number[],\n"
        "}) => any;\n\n"
        "// Say hi\n"
        "type ping = () => any;\n\n"
        "} // namespace functions"
    )
    assert typescript_schema([flight, ping]) == expected


def _bfcl_prompts_module():
    """BFCL's prompt constants, loaded from the installed bfcl_eval files without importing the package."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None:
        pytest.skip("bfcl_eval is not installed (pip install --no-deps bfcl-eval)")
    path = os.path.join(spec.submodule_search_locations[0], "constants", "default_prompts.py")
    mod_spec = importlib.util.spec_from_file_location("_bfcl_default_prompts", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def test_pythonic_system_prompt_is_bfcls_default():
    bp = _bfcl_prompts_module()
    ret_fmt, tag, doc_fmt, prompt_fmt, style = [kv.split("=")[1] for kv in bp.DEFAULT_SYSTEM_PROMPT_FORMAT.split("&")]
    assert (ret_fmt, tag, doc_fmt, prompt_fmt, style) == ("python", "False", "json", "plaintext", "classic")
    s = bp.PROMPT_STYLE_TEMPLATES[style]
    functions = json.dumps([WEATHER_TOOL.spec()], indent=4)
    expected_system = bp.PROMPT_TEMPLATE_MAPPING[prompt_fmt].format(
        persona=s["persona"], task=s["task"],
        tool_call_format=s["tool_call_no_tag"].format(output_format=bp.OUTPUT_FORMAT_MAPPING[ret_fmt],
                                                       param_types=bp.PARAM_TYPE_MAPPING[ret_fmt]),
        multiturn_behavior=s["multiturn_behavior"],
        available_tools=s["available_tools"].format(format=doc_fmt, functions=functions),
    )
    text = get_format("pythonic").text(weather_conv())
    # BFCL appends the dataset's own system prompt after a blank line
    assert text.startswith("<|im_start|>system\n" + expected_system + "\n\nYou are a helpful assistant.<|im_end|>\n")
    assert text.endswith(
        "<|im_start|>user\nAnd in Oslo and Rome?<|im_end|>\n"
        '<|im_start|>assistant\n[get_weather(city="Oslo"), get_weather(city="Rome", unit="c")]<|im_end|>\n'
        '<|im_start|>tool\n{"temp_c": 5}<|im_end|>\n'
        '<|im_start|>tool\n{"temp_c": 25}<|im_end|>\n'
        "<|im_start|>assistant\nOslo: 5°C, Rome: 25°C.<|im_end|>\n")


TOOLS_LINE = ('{"name": "get_weather", "description": "Get the current weather", "parameters": {"type": "object", '
              '"properties": {"city": {"type": "string", "description": "City name"}, "unit": {"type": "string", '
              '"enum": ["c", "f"]}}, "required": ["city"]}}')


def test_react_golden():
    fmt = get_format("react", eos="<|im_end|>")
    expected = (
        "You are a helpful assistant.\n\n"
        "Available tools:\n" + TOOLS_LINE + "\n\n"
        "User: What's the weather in Paris?\n"
        'Action: [get_weather(city="Paris")]<|im_end|>\n'
        'Observation: {"temp_c": 21}\n'
        "Response: It is 21°C in Paris.<|im_end|>\n"
        "User: And in Oslo and Rome?\n"
        'Action: [get_weather(city="Oslo"), get_weather(city="Rome", unit="c")]<|im_end|>\n'
        'Observation: {"temp_c": 5}\n'
        'Observation: {"temp_c": 25}\n'
        "Response: Oslo: 5°C, Rome: 25°C.<|im_end|>\n"
    )
    assert fmt.text(weather_conv()) == expected
    # thoughts: the content of a calling message, meta["thought"] of a text reply
    conv = Conversation(messages=(
        Message("user", "Weather in Paris?"),
        Message("assistant", "I need the weather API.", tool_calls=(ToolCall("get_weather", {"city": "Paris"}),)),
        Message("tool", "21"),
        Message("assistant", "21 degrees.", meta={"thought": "I have the temperature."}),
    ), tools=(WEATHER_TOOL,))
    assert trainable_texts(fmt.render(conv)) == [
        'Thought: I need the weather API.\nAction: [get_weather(city="Paris")]<|im_end|>',
        "Thought: I have the temperature.\nResponse: 21 degrees.<|im_end|>",
    ]
    reply = fmt.parse("Thought: I have the temperature.\nResponse: 21 degrees.<|im_end|>")
    assert reply == Reply("21 degrees.", (), None, thought="I have the temperature.")
    assert reply.to_message().meta == {"thought": "I have the temperature."}


def test_alpaca_golden():
    fmt = get_format("alpaca", eos="</s>")
    single = Conversation(messages=(Message("user", "Name a colour."), Message("assistant", "Blue.")))
    # exactly Stanford Alpaca's prompt_no_input + output + eos
    assert fmt.text(single) == ("Below is an instruction that describes a task. Write a response that appropriately "
                                "completes the request.\n\n### Instruction:\nName a colour.\n\n### Response:Blue.</s>")
    with_input = Conversation(messages=(Message("system", "Translate to French."), Message("user", "cat"),
                                        Message("assistant", "chat")))
    assert fmt.text(with_input) == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate to French.\n\n"
        "### Input:\ncat\n\n### Response:chat</s>")
    assert fmt.text(weather_conv()) == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\n"
        "You are a helpful assistant.\n\nAvailable tools:\n" + TOOLS_LINE + "\n\n"
        "### Input:\nWhat's the weather in Paris?\n\n"
        '### Response:API-Request: [get_weather(city="Paris")]</s>\n\n'
        '### Input:\nAPI-Response: {"temp_c": 21}\n\n'
        "### Response:It is 21°C in Paris.</s>\n\n"
        "### Input:\nAnd in Oslo and Rome?\n\n"
        '### Response:API-Request: [get_weather(city="Oslo"), get_weather(city="Rome", unit="c")]</s>\n\n'
        '### Input:\nAPI-Response: {"temp_c": 5}\nAPI-Response: {"temp_c": 25}\n\n'
        "### Response:Oslo: 5°C, Rome: 25°C.</s>")
    # API-Bank's own level-3 output line parses (single-quoted pythonic)
    r = fmt.parse("API-Request: [ToolSearcher(keywords='healthcare provider appointment availability checker')]")
    assert r.tool_calls == (ToolCall("ToolSearcher", {"keywords": "healthcare provider appointment availability checker"}),)


# ----------------------------------------------------------------------------------------------
# structure shared by all formats
# ----------------------------------------------------------------------------------------------

ALL = FORMAT_NAMES


@pytest.mark.parametrize("name", ALL)
def test_prompt_is_render_prefix_and_trained_text_follows(name, qwen_tok):
    """For every assistant turn k: render(conv) = prompt(conv[:k]) + trained text of turn k + ...,
    i.e. what is trained is exactly what is generated after the inference prompt."""
    fmt = fmt_for(name, qwen_tok)
    conv = weather_conv(multi_call=name != "llama3_json")
    segs = fmt.render(conv)
    text = "".join(s.text for s in segs)
    pos = 0
    for s in segs:
        if s.trainable:
            prompt = fmt.prompt(upto(conv, s.message))
            assert text[:pos] == prompt, f"turn {s.turn}"
        pos += len(s.text)


@pytest.mark.parametrize("name", ALL)
def test_every_assistant_turn_is_trained_once(name, qwen_tok):
    fmt = fmt_for(name, qwen_tok)
    for conv in (weather_conv(multi_call=name != "llama3_json"), chat_conv()):
        segs = fmt.render(conv)
        n_assistant = sum(m.role == "assistant" for m in conv.messages)
        turns = [s.turn for s in segs if s.trainable]
        assert turns == list(range(n_assistant))
        for s in segs:
            assert s.role in ("system", "user", "assistant", "tool", "template")
            assert (s.turn >= 0) == s.trainable
            if s.trainable:
                assert s.role == "assistant" and conv.messages[s.message].role == "assistant"
                assert any(s.text.endswith(stop) for stop in fmt.stop_strings if stop.startswith("<"))


@pytest.mark.parametrize("name", ALL)
def test_tools_and_system_prompt_reach_the_prompt(name, qwen_tok):
    fmt = fmt_for(name, qwen_tok)
    conv = upto(weather_conv(), 2)  # system, user
    prompt = fmt.prompt(conv)
    assert "get_weather" in prompt
    assert "Get the current weather" in prompt
    assert "City name" in prompt
    assert "You are a helpful assistant." in prompt
    assert "What's the weather in Paris?" in prompt
    # and the real Korean FunctionChat tools
    fc = functionchat_convs()[0]
    fc_prompt = fmt.prompt(upto(fc, len(fc.messages) - 1))
    for tool in fc.tools:
        assert tool.name in fc_prompt


@pytest.mark.parametrize("name", ALL)
def test_trained_text_parses_back_to_the_message(name, qwen_tok):
    fmt = fmt_for(name, qwen_tok)
    conv = weather_conv(multi_call=name != "llama3_json")
    bodies = [s for s in fmt.render(conv) if s.trainable]
    for seg in bodies:
        msg = conv.messages[seg.message]
        reply = fmt.parse(seg.text)
        assert reply.error is None
        assert reply.tool_calls == msg.tool_calls
        assert reply.content == msg.content


def test_prompt_refuses_a_conversation_ending_in_an_assistant_turn():
    with pytest.raises(FormatError, match="prompt needs"):
        get_format("hermes").prompt(chat_conv())


# ----------------------------------------------------------------------------------------------
# parsers on hand-written model outputs
# ----------------------------------------------------------------------------------------------

def test_hermes_parse_cases():
    p = get_format("hermes").parse
    r = p('Let me check.\n<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
          '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call><|im_end|>\nGARBAGE')
    assert r == Reply("Let me check.", (ToolCall("a", {"x": 1}), ToolCall("b", {})))
    # a closing tag inside a JSON string does not end the call
    r = p('<tool_call>\n{"name": "say", "arguments": {"text": "</tool_call>"}}\n</tool_call>')
    assert r.tool_calls == (ToolCall("say", {"text": "</tool_call>"}),) and r.error is None
    r = p('<tool_call>\n{"name": "a", "arguments": {"x": 1}')  # cut off mid-call
    assert r.tool_calls == () and isinstance(r.error, ParseError) and r.content.startswith("<tool_call>")
    r = p("<tool_call>\n{\"arguments\": {}}\n</tool_call>")
    assert "name" in r.error.reason
    assert p("plain answer") == Reply("plain answer")
    assert p("") == Reply(None)


def test_llama3_json_parse_cases():
    p = get_format("llama3_json").parse
    assert p('{"name": "f", "parameters": {"a": 1}}<|eot_id|>') == Reply(None, (ToolCall("f", {"a": 1}),))
    assert p('<|python_tag|>{"name": "f", "arguments": {"a": 1}}; {"name": "g", "parameters": {}}<|eom_id|>') \
        == Reply(None, (ToolCall("f", {"a": 1}), ToolCall("g", {})))
    r = p('{"name": "f", "parameters": {"a": ')
    assert r.error is not None and r.tool_calls == ()
    assert p("  Hello there.  <|eot_id|>") == Reply("Hello there.")


def test_functionary_parse_cases():
    p = get_format("functionary_v3_llama3").parse
    assert p('all\nSure, one moment.>>>get_weather\n{"city": "Paris"}<|eot_id|>') == \
        Reply("Sure, one moment.", (ToolCall("get_weather", {"city": "Paris"}),))
    # ">>>" inside a JSON string is not a recipient separator
    assert p('say\n{"text": "a >>> b"}').tool_calls == (ToolCall("say", {"text": "a >>> b"}),)
    r = p("get_weather\n{not json}")
    assert r.error is not None and "get_weather" in r.error.reason
    r = p('get_weather\n["Paris"]')
    assert r.error is not None and "object" in r.error.reason
    assert p("") == Reply(None)


def test_pythonic_parse_cases():
    p = get_format("pythonic").parse
    assert p("[f(a=1, b='x'), g()]<|im_end|>") == Reply(None, (ToolCall("f", {"a": 1, "b": "x"}), ToolCall("g", {})))
    assert p("I will look it up.\n[f(a=1)]") == Reply("I will look it up.", (ToolCall("f", {"a": 1}),))
    r = p("[f(a=__import__('os').system('true'))]")  # never evaluated
    assert r.error is not None and r.tool_calls == ()
    r = p("[f(a=1)")
    assert r.error is not None
    assert p("The answer is 4.") == Reply("The answer is 4.")


def test_react_and_alpaca_parse_errors():
    r = get_format("react").parse("Thought: hmm, no action")
    assert r.error is not None and r.thought == "hmm, no action"
    r = get_format("react").parse("Action: [f(x=]")
    assert r.error is not None
    assert get_format("react").parse("just text").error is not None
    assert get_format("react").parse("Response: hi\nObservation: leaked").content == "hi"
    r = get_format("alpaca").parse("API-Request: [f(")
    assert r.error is not None


# ----------------------------------------------------------------------------------------------
# property tests: round trips and robustness
# ----------------------------------------------------------------------------------------------

def typed(v):
    """A comparison key that tells 1 from 1.0 from True and keeps key order."""
    if v is None or isinstance(v, bool):
        return ("b", v)
    if isinstance(v, int):
        return ("i", v)
    if isinstance(v, float):
        return ("f", repr(v))
    if isinstance(v, str):
        return ("s", v)
    if isinstance(v, list):
        return ("l", [typed(x) for x in v])
    if isinstance(v, dict):
        return ("d", [(k, typed(x)) for k, x in v.items()])
    raise TypeError(type(v))


def typed_calls(calls):
    return [(c.name, typed(dict(c.arguments))) for c in calls]


text_values = st.text(st.characters(exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ['He said "hi"', "back\\slash", "it's", "line\nbreak", "tab\t", "naïve – ü 漢字 🙂", "42", "4.0", "true",
     "null", "", " ", "{}", "[]", "\\u0041"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 63), max_value=2 ** 63)
    | st.floats(allow_nan=False, allow_infinity=False) | text_values,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text_values, children, max_size=3),
    max_leaves=10,
)
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(
    lambda s: s not in {"None", "True", "False", "and", "or", "not", "if", "in", "is", "for", "def", "class",
                        "return", "lambda", "with", "as", "from", "import", "pass", "del", "try", "while",
                        "else", "elif", "raise", "global", "yield", "await", "async", "assert", "break",
                        "continue", "except", "finally", "nonlocal"})
pythonic_calls = st.builds(ToolCall, name=identifiers,
                           arguments=st.dictionaries(identifiers, json_values, max_size=4))
json_calls = st.builds(ToolCall, name=identifiers | st.sampled_from(["get-weather", "Market Trends API", "ns.f"]),
                       arguments=st.dictionaries(text_values, json_values, max_size=4))
# message text that is not part of any format's syntax (no markers, brackets or stop strings)
safe_content = st.text(st.characters(categories=("L", "N", "Zs"), include_characters=".,!?'\"()-/\n"),
                       min_size=1, max_size=30).filter(lambda s: s.strip())

CALL_STRATEGY = {
    "llama3_json": json_calls, "functionary_v3_llama3": json_calls, "hermes": json_calls,
    "chat_template": json_calls, "pythonic": pythonic_calls, "react": json_calls, "alpaca": json_calls,
}
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# chat_template renders through Jinja several times per example: fewer examples keep the suite fast
PROPERTY_JINJA = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _roundtrip(fmt, message, tools=(WEATHER_TOOL,)):
    # A stop string inside an argument would end generation there; tokenization refuses such data
    # (test_tokenize.test_control_tokens_inside_message_text_are_refused), so it cannot round-trip.
    rendered_calls = "".join(c.name + json.dumps(dict(c.arguments), ensure_ascii=False) for c in message.tool_calls)
    assume(not any(s in rendered_calls for s in fmt.stop_strings))
    conv = Conversation(messages=(Message("system", "sys"), Message("user", "go"), message), tools=tools)
    bodies = [s.text for s in fmt.render(conv) if s.trainable]
    assert len(bodies) == 1
    return fmt.parse(bodies[0])


def _calls_round_trip(name, data, qwen_tok):
    fmt = fmt_for(name, qwen_tok)
    calls = data.draw(st.lists(CALL_STRATEGY[name], min_size=1, max_size=3))
    content = None if name == "llama3_json" else data.draw(st.none() | safe_content)
    reply = _roundtrip(fmt, Message("assistant", content, tool_calls=tuple(calls)))
    assert reply.error is None, reply.error
    assert typed_calls(reply.tool_calls) == typed_calls(calls)
    assert reply.content == content


@pytest.mark.parametrize("name", TOOL_FORMATS)
@PROPERTY
@given(data=st.data())
def test_calls_round_trip_exactly(name, data, qwen_tok):
    _calls_round_trip(name, data, qwen_tok)


@PROPERTY_JINJA
@given(data=st.data())
def test_calls_round_trip_exactly_chat_template(data, qwen_tok):
    _calls_round_trip("chat_template", data, qwen_tok)


def _text_round_trip(name, content, qwen_tok):
    fmt = fmt_for(name, qwen_tok)
    reply = _roundtrip(fmt, Message("assistant", content))
    assert reply.error is None and reply.tool_calls == ()
    assert reply.content == (content.strip() if name == "llama3_json" else content)


@pytest.mark.parametrize("name", TOOL_FORMATS)
@PROPERTY
@given(content=safe_content)
def test_text_round_trips(name, content, qwen_tok):
    _text_round_trip(name, content, qwen_tok)


@PROPERTY_JINJA
@given(content=safe_content)
def test_text_round_trips_chat_template(content, qwen_tok):
    _text_round_trip("chat_template", content, qwen_tok)


@pytest.mark.parametrize("name", TOOL_FORMATS)
@settings(max_examples=40, deadline=None)
@given(calls=st.lists(pythonic_calls, min_size=1, max_size=2))
def test_empty_arguments_and_nested_values_survive(name, calls):
    calls = [ToolCall(calls[0].name, {})] + calls  # always one call with empty arguments
    reply = _roundtrip(get_format(name), Message("assistant", None, tool_calls=tuple(calls)))
    assert typed_calls(reply.tool_calls) == typed_calls(calls)


MARKER_TEXT = st.lists(
    st.sampled_from(["<tool_call>", "</tool_call>", "{", "}", "[", "]", "(", ")", '"', "'", ">>>", "all\n", "\n",
                     "Thought:", "Action:", "Response:", "API-Request:", "<|python_tag|>", "<|eot_id|>",
                     "<|im_end|>", "name", ":", ",", "=", "f", "1", "\\", "```", "; "])
    | st.text(max_size=3), max_size=25).map("".join)


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text() | MARKER_TEXT)
def test_parsers_never_raise(name, text, qwen_tok):
    reply = fmt_for(name, qwen_tok).parse(text)
    assert isinstance(reply, Reply)
    assert reply.error is None or isinstance(reply.error, ParseError)


@pytest.mark.parametrize("name", TOOL_FORMATS)
@settings(max_examples=60, deadline=None)
@given(calls=st.lists(json_calls, min_size=1, max_size=2), cut=st.floats(0, 1))
def test_parsers_survive_truncated_output(name, calls, cut):
    fmt = get_format(name)
    if name == "pythonic":
        calls = [ToolCall(c.name if c.name.isidentifier() else "f", {}) for c in calls]
    conv = Conversation(messages=(Message("user", "go"), Message("assistant", None, tool_calls=tuple(calls))))
    body = [s.text for s in fmt.render(conv) if s.trainable][0]
    reply = fmt.parse(body[: int(len(body) * cut)])
    assert isinstance(reply, Reply)


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------

def test_unrepresentable_conversations_raise_format_errors():
    both = Conversation(messages=(Message("user", "x"), Message("assistant", "text", tool_calls=(ToolCall("f", {}),))))
    with pytest.raises(FormatError, match="both text and tool calls"):
        get_format("llama3_json").render(both)
    no_user = Conversation(messages=(Message("assistant", "hello"),), tools=(WEATHER_TOOL,))
    with pytest.raises(FormatError, match="first user message"):
        get_format("llama3_json").render(no_user)
    odd_name = Conversation(messages=(Message("user", "x"), Message("assistant", None, tool_calls=(ToolCall("Market Trends API", {}),))))
    with pytest.raises(FormatError, match="Python call"):
        get_format("pythonic").render(odd_name)
    # react/alpaca fall back to a JSON call list instead
    for name in ("react", "alpaca"):
        fmt = get_format(name)
        body = [s.text for s in fmt.render(odd_name) if s.trainable][0]
        assert fmt.parse(body).tool_calls == (ToolCall("Market Trends API", {}),)
    # "ª" is an identifier, but Python parses it as "a" (NFKC): not expressible as a keyword argument
    nfkc = Conversation(messages=(Message("user", "x"), Message("assistant", None, tool_calls=(ToolCall("f", {"ª": 1}),))))
    with pytest.raises(FormatError, match="Python call"):
        get_format("pythonic").render(nfkc)
    fmt = get_format("react")
    assert fmt.parse([s.text for s in fmt.render(nfkc) if s.trainable][0]).tool_calls == (ToolCall("f", {"ª": 1}),)


def test_chat_template_refuses_templates_that_drop_tool_calls(smollm2_tokenizer):
    # SmolLM2's own template prints only `content`: the call would silently vanish from training
    fmt = get_format("chat_template", tokenizer=smollm2_tokenizer)
    with pytest.raises(FormatError, match="drops tool calls"):
        fmt.render(weather_conv())
    segs = fmt.render(chat_conv())  # plain chat is fine
    assert trainable_texts(segs) == ["ok<|im_end|>"] * 3


def test_chat_template_refuses_templates_that_are_not_prefix_stable(smollm2_tokenizer):
    tok = copy.deepcopy(smollm2_tokenizer)
    # renders the final message differently from earlier ones (like templates that strip history)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if loop.last %}LAST {% endif %}"
                         "{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(FormatError, match="not prefix-stable"):
        get_format("chat_template", tokenizer=tok).render(chat_conv())


def test_get_format_errors(smollm2_tokenizer):
    with pytest.raises(ConfigError, match="did you mean 'hermes'"):
        get_format("hermez")
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        get_format("chat_template")
    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = None
    with pytest.raises(ConfigError, match="no chat template"):
        get_format("chat_template", tokenizer=tok)


def test_plain_formats_take_the_tokenizers_eos(smollm2_tokenizer):
    assert get_format("react", tokenizer=smollm2_tokenizer).eos == "<|im_end|>"
    assert get_format("alpaca").eos == "</s>"
    assert isinstance(Segment("x", "user"), Segment)
