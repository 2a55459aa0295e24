"""Chat formats: how a `Conversation` becomes training text, and how generated text becomes a reply.

Every format does two jobs:

- **render** `conv -> list[Segment]`: the exact text the model sees, cut into segments that carry
  the role they came from and whether they are *trained* (assistant text the loss is taken on,
  including the end-of-turn marker that teaches the model to stop). Template scaffolding — role
  headers, the generation prompt that opens an assistant turn, separators — is never trained.
  Tokenizing segment by segment (`jaxtool.data.tokenize`) makes the loss mask exact by
  construction; no string search over the rendered text is ever needed.
- **parse** `generated text -> Reply(content, tool_calls, error)`: what the model said after the
  generation prompt. Bad model output is data: the parser returns a `ParseError` value in
  `Reply.error`, it never raises, and it never `eval`s anything.

Invariant shared by all formats (tested): for a conversation ending in an assistant message `a`,
`render(conv)` = `prompt(conv[:-1])` + the trainable text of `a` (+ trailing scaffolding), and
`parse(trainable text of a)` gives back `a`'s content and tool calls. So what is trained is
exactly what is generated at inference, and what is generated parses back to the training data.

Formats (`FORMAT_NAMES`):

============================ ===============================================================
`llama3_json`                Llama 3.1 / 3.3 JSON tool calling, as Meta's chat template renders
                             it: tools in the first user message, `{"name", "parameters"}`
                             calls, tool results in the `ipython` role, `<|eot_id|>`.
`functionary_v3_llama3`      MeetKai functionary "v3.llama3" (the template DiaTool-DPO trained
                             with): TypeScript tool schema in the system turn, `>>>recipient`
                             blocks, `>>>all` for text, `tool` role for results.
`hermes`                     Hermes / Qwen2.5 ChatML tool calling: `<tools>` in the system turn,
                             `<tool_call>{json}</tool_call>`, results in `<tool_response>` inside a
                             user turn. Fits SmolLM2 (ChatML) and Qwen-style models.
`pythonic`                   ChatML with BFCL's default system prompt and pythonic calls
                             `[get_weather(city="Paris", days=3)]` (BFCL, iTool, ToolACE).
`react`                      CALM's conversational ReAct text: `User:` / `Thought:` / `Action:` /
                             `Observation:` / `Thought:` / `Response:`.
`alpaca`                     Stanford Alpaca `### Instruction:` / `### Input:` / `### Response:`
                             (CALM-IT's row layout); tool calls as API-Bank `API-Request: [...]`.
`chat_template`              Whatever the tokenizer's own Jinja chat template produces, split into
                             per-message segments by rendering prefixes of the conversation.
============================ ===============================================================

One module per format in this package (`hermes.py`, `pythonic.py`, `llama3_json.py`,
`functionary_v3_llama3.py`, `react.py`, `alpaca.py`, `chat_template.py`) beside the shared pieces:
`base.py` (`ChatFormat`, `Segment`, `Reply`, `FormatError`, helpers), `chatml.py` (ChatML turns),
`plain.py` (plain-text format pieces), `typescript.py` (functionary's schema writer) and
`bfcl_prompt.py` (BFCL's system prompt text); `text.py` is plain documents for continued
pre-training (`PLAIN_TEXT_FORMAT`, not a chat format). `get_format` looks names up in `FORMATS`, a
`jaxtool.registry.Registry` of lazy `"module:Class"` entries; a new format is a module with a
`ChatFormat` subclass (override `from_options` if it reads the tokenizer) plus one
`FORMATS.register(...)` line below, and its cases in tests/test_formats.py.

Details that were inferred rather than read from a source are marked "INFERRED" where they are
implemented; `NOTES` at the bottom collects them.
"""

from __future__ import annotations

from jaxtool.data.formats.base import (
    SEGMENT_ROLES,
    ChatFormat,
    FormatError,
    Reply,
    Segment,
)
from jaxtool.data.formats.bfcl_prompt import bfcl_system_prompt
from jaxtool.data.formats.chatml import IM_END, IM_START
from jaxtool.data.formats.plain import DEFAULT_PLAIN_EOS
from jaxtool.data.formats.typescript import typescript_schema
from jaxtool.errors import ConfigError
from jaxtool.registry import Registry, import_target

FORMATS: Registry = Registry("chat format", ConfigError)
FORMATS.register("llama3_json", "jaxtool.data.formats.llama3_json:Llama3JsonFormat")
FORMATS.register("functionary_v3_llama3", "jaxtool.data.formats.functionary_v3_llama3:FunctionaryV3Llama3Format")
FORMATS.register("hermes", "jaxtool.data.formats.hermes:HermesFormat")
FORMATS.register("pythonic", "jaxtool.data.formats.pythonic:PythonicFormat")
FORMATS.register("react", "jaxtool.data.formats.react:ReactFormat")
FORMATS.register("alpaca", "jaxtool.data.formats.alpaca:AlpacaFormat")
FORMATS.register("chat_template", "jaxtool.data.formats.chat_template:ChatTemplateFormat")

FORMAT_NAMES = FORMATS.names()   # the chat formats
# Not a chat format (no tools, no turns): plain documents for continued pre-training, `get_format("text")`.
PLAIN_TEXT_FORMAT = "text"
FORMATS.register(PLAIN_TEXT_FORMAT, "jaxtool.data.formats.text:TextFormat")

# the format classes, importable from here as before the split (each module is imported on first use)
_CLASSES = {"Llama3JsonFormat": "llama3_json", "FunctionaryV3Llama3Format": "functionary_v3_llama3",
            "HermesFormat": "hermes", "PythonicFormat": "pythonic", "ReactFormat": "react",
            "AlpacaFormat": "alpaca", "ChatTemplateFormat": "chat_template", "TextFormat": "text"}


_ALSO = {"message_to_openai": "chat_template", "KNOWN_END_MARKERS": "chat_template", "BOT": "llama3_json",
         "EOT": "llama3_json", "EOM": "llama3_json", "EOTEXT": "llama3_json", "PYTHON_TAG": "llama3_json"}


def __getattr__(name: str):
    if name in _CLASSES:
        return FORMATS.get(_CLASSES[name])
    if name in _ALSO:
        return import_target(f"jaxtool.data.formats.{_ALSO[name]}:{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_format(name: str, tokenizer=None, **options) -> ChatFormat:
    """The chat format `name` (one of `FORMAT_NAMES`, or `PLAIN_TEXT_FORMAT` for plain documents).

    tokenizer: required for "chat_template"; for the plain-text formats ("react", "alpaca", "text") its
               EOS token becomes the trained end-of-turn marker (default `</s>` without one).
    options  : "llama3_json": `date_string` (default "26 Jul 2024"); "react"/"alpaca": `eos`.
    An unknown name is a ConfigError naming the closest formats.
    """
    return FORMATS.get(name).from_options(tokenizer, **options)


__all__ = ["FORMATS", "FORMAT_NAMES", "PLAIN_TEXT_FORMAT", "SEGMENT_ROLES", "ChatFormat", "FormatError", "Reply", "Segment",
           "IM_START", "IM_END", "DEFAULT_PLAIN_EOS", "bfcl_system_prompt", "typescript_schema", "get_format",
           "NOTES", *_CLASSES]


NOTES = """Format details inferred (or deliberately different from a source), per format:
- llama3_json: several calls in one turn are joined with "; " (vLLM's llama3_json parser convention; Meta's
  template raises); an assistant message with text and calls is refused (Meta's template drops the text);
  the date line uses the template's fallback "26 Jul 2024" (newer copies call strftime_now()); a tool result
  string is written raw, as Meta's prompt-format documentation shows — the HF template pipes any iterable
  (in Jinja that includes strings) through tojson, which would JSON-quote it.
- functionary_v3_llama3: arguments are serialised with json.dumps(ensure_ascii=False) (the template pastes the
  OpenAI arguments string as given); oneOf types keep first-seen order (functionary uses an unordered set);
  parsing keeps the text of a ">>>all" block exactly (functionary strips it).
- hermes: no default persona when tools exist without a system message (Qwen3's rule; Qwen2.5 inserts
  "You are Qwen, ..."); text after the last </tool_call> is kept as content; tool names are JSON-escaped.
- pythonic: text + calls in one message is written text, newline, call list (BFCL asks for calls only);
  tool results are ChatML `tool` turns.
- react: the whole layout — markers, "Available tools:" JSON lines, the EOS after each assistant turn, the
  thought of a text reply taken from meta["thought"], pythonic Action with a JSON-list fallback — CALM-IT's
  own rows were not available to read.
- alpaca: multi-turn continuation blocks, "Available tools:" in the Instruction, API-Bank style
  "API-Request: [...]" calls and "API-Response: ..." results; plain-text formats get the tokenizer's own
  automatic BOS (if it adds one) in front, as Alpaca's training did through tokenizer() defaults.
- chat_template: end of an assistant turn = the last known end-of-turn marker in its rendered text; parse
  guesses the call syntax (hermes, Llama JSON, pythonic).
- all: a stop string or special token inside message text is refused at tokenization (it would become the
  control token itself and end the turn mid-argument).
"""
