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

Details that were inferred rather than read from a source are marked "INFERRED" where they are
implemented; `NOTES` at the bottom collects them.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from typing import Any, Mapping, Sequence

from jaxtool.data.calls import (
    STRICT_JSON,
    ParseError,
    call_from_json_obj,
    parse_json_calls,
    parse_pythonic,
    render_pythonic,
)
from jaxtool.data.schema import Conversation, Message, Tool, ToolCall
from jaxtool.errors import ConfigError, DataError, json_error_text

FORMAT_NAMES = (
    "llama3_json",
    "functionary_v3_llama3",
    "hermes",
    "pythonic",
    "react",
    "alpaca",
    "chat_template",
)
# Not a chat format (no tools, no turns): plain documents for continued pre-training, `get_format("text")`.
PLAIN_TEXT_FORMAT = "text"

SEGMENT_ROLES = ("system", "user", "assistant", "tool", "template")


class FormatError(DataError):
    """A conversation this format cannot express. `reason` is short and countable."""

    def __init__(self, fmt: str, reason: str, detail: str = ""):
        self.fmt = fmt
        self.reason = f"{fmt}: {reason}"
        self.detail = detail
        super().__init__(f"{self.reason}" + (f" ({detail})" if detail else ""))


@dataclasses.dataclass(frozen=True)
class Segment:
    """A piece of rendered text.

    text     : exact text (special tokens written literally, e.g. `<|im_end|>`)
    role     : the message role it renders ("system", "user", "assistant", "tool"), or "template"
               for text that belongs to no message (BOS, a format's fixed preamble)
    trainable: True only for assistant text the loss is taken on (incl. its end-of-turn marker)
    turn     : assistant-turn index (0, 1, ...) for trainable segments, -1 otherwise
    message  : index into `conv.messages` of the message it renders (-1 for "template" text and
               for the generation prompt of a turn that does not exist yet)
    """

    text: str
    role: str
    trainable: bool = False
    turn: int = -1
    message: int = -1


@dataclasses.dataclass(frozen=True)
class Reply:
    """What a model generated, parsed.

    content   : text meant for the user (None when there is none)
    tool_calls: the calls it made, in order
    error     : a `ParseError` when the output breaks the format (then `content` holds the raw text
                and `tool_calls` whatever parsed before the break); None when it parsed
    thought   : the ReAct `Thought:` text (`react` format only)
    """

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    error: ParseError | None = None
    thought: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_message(self) -> Message:
        """The reply as an assistant `Message` (thought kept in `meta["thought"]`)."""
        meta = {"thought": self.thought} if self.thought is not None else {}
        return Message("assistant", self.content, tool_calls=tuple(self.tool_calls), meta=meta)


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------

def _nonempty(text: str | None) -> str | None:
    return text if text else None


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


_JSON = STRICT_JSON


def _decode_json_at(text: str, pos: int) -> tuple[Any, int] | ParseError:
    try:
        return _JSON.raw_decode(text, pos)
    except json.JSONDecodeError as e:
        return ParseError(f"not JSON: {json_error_text(e)}", text)
    except RecursionError:
        return ParseError("not JSON: nested too deeply", text)
    except ValueError as e:  # NaN / Infinity, a 5000-digit integer
        return ParseError(f"not JSON: {str(e)[:80]}", text)


def _args_json(call: ToolCall) -> str:
    return json.dumps(dict(call.arguments), ensure_ascii=False)


def _call_list_text(calls: Sequence[ToolCall]) -> str:
    """Pythonic `[f(a=1)]` when every call can be written so; otherwise a JSON list (INFERRED:
    names like "Market Trends API" have no pythonic form, and losing the call is not an option)."""
    try:
        return render_pythonic(calls)
    except ValueError:
        return json.dumps([{"name": c.name, "arguments": dict(c.arguments)} for c in calls], ensure_ascii=False)


def _parse_call_list_text(body: str) -> list[ToolCall] | ParseError:
    s = body.strip()
    if s.startswith("{") or re.match(r"\[\s*\{", s):
        return parse_json_calls(s)
    return parse_pythonic(s)


class ChatFormat:
    """Base class. Subclasses implement `render`, `parse` and `generation_prompt`."""

    name: str = ""
    stop_strings: tuple[str, ...] = ()
    special_tokens: tuple[str, ...] = ()
    # Plain-text formats start a document themselves, so the tokenizer's own automatic prefix
    # (e.g. Llama-2's `<s>`) belongs in front; chat formats write their BOS in the text.
    prepend_bos: bool = False

    def render(self, conv: Conversation) -> list[Segment]:
        raise NotImplementedError

    def generation_prompt(self, conv: Conversation) -> str:
        """Text that opens the next assistant turn after `conv`."""
        raise NotImplementedError

    def parse(self, text: str) -> Reply:
        raise NotImplementedError

    # -- derived -----------------------------------------------------------------------------
    def prompt_segments(self, conv: Conversation) -> list[Segment]:
        """`render(conv)` + the generation prompt of the next assistant turn, as segments."""
        if not conv.messages:
            raise FormatError(self.name, "empty conversation")
        if conv.messages[-1].role == "assistant":
            raise FormatError(self.name, "prompt needs a conversation ending in a user/tool message",
                              "the last message is an assistant turn")
        segs = list(self.render(conv))
        gp = self.generation_prompt(conv)
        if gp:
            segs.append(Segment(gp, "assistant", False, -1, -1))
        return segs

    def prompt(self, conv: Conversation) -> str:
        """The conversation so far + the generation prompt for the next assistant turn."""
        return "".join(s.text for s in self.prompt_segments(conv))

    def text(self, conv: Conversation) -> str:
        return "".join(s.text for s in self.render(conv))

    def cut_at_stop(self, text: str) -> str:
        """Text before the first stop string (the generator may or may not have removed it)."""
        cut = len(text)
        for s in self.stop_strings:
            if s:
                i = text.find(s)
                if 0 <= i < cut:
                    cut = i
        return text[:cut]

    def __repr__(self) -> str:
        return f"<ChatFormat {self.name}>"


def _assistant_segments(out: list[Segment], idx: int, turn: int, header: str, body: str, trailer: str = ""):
    if header:
        out.append(Segment(header, "assistant", False, -1, idx))
    out.append(Segment(body, "assistant", True, turn, idx))
    if trailer:
        out.append(Segment(trailer, "assistant", False, -1, idx))


def _split_leading_system(conv: Conversation) -> tuple[Message | None, list[tuple[int, Message]]]:
    msgs = list(enumerate(conv.messages))
    if msgs and msgs[0][1].role == "system":
        return msgs[0][1], msgs[1:]
    return None, msgs


# ----------------------------------------------------------------------------------------------
# ChatML family: hermes, pythonic
# ----------------------------------------------------------------------------------------------

IM_START, IM_END = "<|im_start|>", "<|im_end|>"


def _chatml_turn(role: str, text: str) -> str:
    return f"{IM_START}{role}\n{text}{IM_END}\n"


class _ChatMLFormat(ChatFormat):
    stop_strings = (IM_END,)
    special_tokens = (IM_START, IM_END)
    _assistant_header = f"{IM_START}assistant\n"

    def generation_prompt(self, conv: Conversation) -> str:
        return self._assistant_header

    def _system_text(self, system: str | None, tools: Sequence[Tool]) -> str | None:
        return system

    def _assistant_body(self, m: Message) -> str:
        raise NotImplementedError

    def _tool_turns(self, out, conv, i, m):
        out.append(Segment(_chatml_turn("tool", m.content or ""), "tool", False, -1, i))

    def render(self, conv: Conversation) -> list[Segment]:
        out: list[Segment] = []
        system, rest = _split_leading_system(conv)
        sys_text = self._system_text(system.content if system else None, conv.tools)
        if sys_text is not None:
            out.append(Segment(_chatml_turn("system", sys_text), "system", False, -1, 0 if system else -1))
        turn = 0
        for i, m in rest:
            if m.role == "assistant":
                _assistant_segments(out, i, turn, self._assistant_header,
                                    self._assistant_body(m) + IM_END, "\n")
                turn += 1
            elif m.role == "tool":
                self._tool_turns(out, conv, i, m)
            else:
                out.append(Segment(_chatml_turn(m.role, m.content or ""), m.role, False, -1, i))
        return out


class HermesFormat(_ChatMLFormat):
    """Hermes-style tool calling as Qwen2.5's chat template writes it.

    System turn (tools present): `<system text>\\n\\n` (only when a system message exists — Qwen3's
    rule; Qwen2.5 would insert its own default persona) + the `# Tools` block listing each tool as
    one JSON line inside `<tools></tools>`. Assistant: `content`, then each call as
    `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` separated by newlines. Tool
    results: consecutive tool messages share one `user` turn, each wrapped in `<tool_response>`.
    """

    name = "hermes"
    TOOLS_HEADER = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
    TOOLS_FOOTER = ("\n</tools>\n\nFor each function call, return a json object with function name and "
                    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                    "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>")

    def _system_text(self, system, tools):
        if not tools:
            return system
        block = self.TOOLS_HEADER + "".join("\n" + json.dumps(t.to_dict(), ensure_ascii=False) for t in tools)
        block += self.TOOLS_FOOTER
        return (system + "\n\n" + block) if system is not None else block

    def _assistant_body(self, m: Message) -> str:
        text = m.content or ""
        for k, c in enumerate(m.tool_calls):
            if text or k > 0:
                text += "\n"
            text += "<tool_call>\n" + json.dumps({"name": c.name, "arguments": dict(c.arguments)},
                                                 ensure_ascii=False) + "\n</tool_call>"
        return text

    def _tool_turns(self, out, conv, i, m):
        msgs = conv.messages
        text = ""
        if i == 0 or msgs[i - 1].role != "tool":
            text += f"{IM_START}user"
        text += "\n<tool_response>\n" + (m.content or "") + "\n</tool_response>"
        if i == len(msgs) - 1 or msgs[i + 1].role != "tool":
            text += f"{IM_END}\n"
        out.append(Segment(text, "tool", False, -1, i))

    def parse(self, text: str) -> Reply:
        text = self.cut_at_stop(text)
        start = text.find("<tool_call>")
        if start < 0:
            return Reply(_nonempty(text))
        content = text[:start]
        if content.endswith("\n"):
            content = content[:-1]
        calls: list[ToolCall] = []
        pos = start
        while True:
            pos = _skip_ws(text, pos)
            if not text.startswith("<tool_call>", pos):
                break
            pos = _skip_ws(text, pos + len("<tool_call>"))
            got = _decode_json_at(text, pos)
            if isinstance(got, ParseError):
                return Reply(text, tuple(calls), ParseError(f"<tool_call> body: {got.reason}", text))
            obj, pos = got
            call = call_from_json_obj(obj)
            if isinstance(call, ParseError):
                return Reply(text, tuple(calls), ParseError(f"<tool_call> body: {call.reason}", text))
            pos = _skip_ws(text, pos)
            if not text.startswith("</tool_call>", pos):
                return Reply(text, tuple(calls), ParseError("<tool_call> without closing </tool_call>", text))
            pos += len("</tool_call>")
            calls.append(call)
        trailing = text[pos:].strip()
        if trailing:  # text after the calls: kept as content rather than dropped
            content = (content + "\n" + trailing) if content else trailing
        return Reply(_nonempty(content), tuple(calls))


# BFCL's default system prompt for prompting models ("classic" style, plaintext, python return
# format, JSON function docs) — bfcl-eval 2026.3.23, bfcl_eval.model_handler.utils.formulate_system_prompt
# with DEFAULT_SYSTEM_PROMPT_FORMAT (constants/default_prompts.py, configuration
# "ret_fmt=python&tool_call_tag=False&func_doc_fmt=json&prompt_fmt=plaintext&style=classic"), assembled
# piece by piece as BFCL's template does — including its missing space after the first sentence and the
# double space left by an empty type note. Its one definition: the `pythonic` format trains on it and
# `jaxtool.eval.bfcl.prompt` evaluates with it.
_BFCL_PERSONA = "You are an expert in composing functions."
_BFCL_TASK = ("You are given a question and a set of possible functions. Based on the question, you will need to "
              "make one or more function/tool calls to achieve the purpose. If none of the functions can be used, "
              "point it out. If the given question lacks the parameters required by the function, also point it out.")
_BFCL_CALL_FORMAT = ("You should only return the function calls in your response.\n\nIf you decide to invoke any of "
                     "the function(s), you MUST put it in the format of [func_name1(params_name1=params_value1, "
                     "params_name2=params_value2...), func_name2(params)].  You SHOULD NOT include any other text "
                     "in the response.")
_BFCL_MULTITURN = ("At each turn, you should try your best to complete the tasks requested by the user within the "
                   "current turn. Continue to output functions to call until you have fulfilled the user's request "
                   "to the best of your ability. Once you have no more functions to call, the system will consider "
                   "the current turn complete and proceed to the next turn or task.")
_BFCL_TOOLS_INTRO = "Here is a list of functions in json format that you can invoke.\n"


def bfcl_system_prompt(functions: Sequence[Tool | Mapping[str, Any]]) -> str:
    """BFCL's default system prompt for pythonic calls, listing `functions` as indented JSON: `Tool`s
    as their JSON-schema spec, function-doc mappings (e.g. BFCL's own docs) exactly as given."""
    docs = [f.spec() if isinstance(f, Tool) else f for f in functions]
    listed = json.dumps(docs, indent=4)  # ASCII-escaped, as BFCL writes it
    return f"{_BFCL_PERSONA}{_BFCL_TASK}\n\n{_BFCL_CALL_FORMAT}\n\n{_BFCL_MULTITURN}\n\n{_BFCL_TOOLS_INTRO}{listed}\n"


class PythonicFormat(_ChatMLFormat):
    """ChatML turns, BFCL's system prompt, calls written as a Python list `[f(a=1), g()]`.

    System: BFCL's prompt (tools present), then `\\n\\n` + the conversation's own system message
    (BFCL appends it the same way). Assistant: the call list; a message with text and calls writes
    the text, a newline, then the list (INFERRED: BFCL asks for calls only). Tool results: a
    ChatML `tool` turn each (BFCL sends them as `role: tool` messages through the model's
    template; ChatML templates such as SmolLM2's write the role name as given).
    """

    name = "pythonic"

    def _system_text(self, system, tools):
        if not tools:
            return system
        prompt = bfcl_system_prompt(tools)
        return prompt + "\n\n" + system if system is not None else prompt

    def _assistant_body(self, m: Message) -> str:
        if not m.tool_calls:
            return m.content or ""
        try:
            calls = render_pythonic(m.tool_calls)
        except ValueError as e:
            raise FormatError(self.name, "call not expressible as a Python call", str(e)) from None
        return (m.content + "\n" + calls) if m.content else calls

    def parse(self, text: str) -> Reply:
        text = self.cut_at_stop(text)
        s = text.strip()
        if not s:
            return Reply(None)
        first_err = None
        if s.startswith(("[", "```")):
            got = parse_pythonic(s)
            if not isinstance(got, ParseError):
                return Reply(None, tuple(got))
            first_err = got
        head, sep, last = text.rpartition("\n")
        if sep and last.strip().startswith("["):
            got = parse_pythonic(last)
            if not isinstance(got, ParseError):
                return Reply(_nonempty(head), tuple(got))
            return Reply(text, (), first_err or got)
        if first_err is not None:
            return Reply(text, (), first_err)
        return Reply(text)


# ----------------------------------------------------------------------------------------------
# Llama 3 family: llama3_json, functionary_v3_llama3
# ----------------------------------------------------------------------------------------------

BOT = "<|begin_of_text|>"
EOT = "<|eot_id|>"
EOM = "<|eom_id|>"
EOTEXT = "<|end_of_text|>"
SH, EH = "<|start_header_id|>", "<|end_header_id|>"
PYTHON_TAG = "<|python_tag|>"


def _header(role: str) -> str:
    return f"{SH}{role}{EH}\n\n"


class Llama3JsonFormat(ChatFormat):
    """Llama 3.1 / 3.3 JSON tool calling, following Meta's `tokenizer_config.json` chat template
    with its defaults (`tools_in_user_message=true`, `date_string="26 Jul 2024"`).

    `<|begin_of_text|>`; a system turn always (`Environment: ipython` when tools exist, the
    knowledge/today dates, the trimmed system message); tools as 4-space-indented JSON in front of
    the first user message with Meta's instruction; an assistant call as
    `{"name": "f", "parameters": {...}}<|eot_id|>`; tool results as `ipython` turns. User,
    system and assistant text is trimmed, as the template does.

    Beyond the official template (INFERRED, which raises instead): several calls in one turn are
    written `; `-separated, the convention vLLM's `llama3_json` parser reads. An assistant message
    with both text and calls is refused (`FormatError`): the official template silently drops the
    text.
    """

    name = "llama3_json"
    stop_strings = (EOT, EOM, EOTEXT)
    special_tokens = (BOT, SH, EH, EOT, EOM, PYTHON_TAG)
    TOOLS_INSTRUCTION = ("Given the following functions, please respond with a JSON for a function call "
                         "with its proper arguments that best answers the given prompt.\n\n"
                         "Respond in the format {\"name\": function name, \"parameters\": dictionary of "
                         "argument name and its value}.Do not use variables.\n\n")

    def __init__(self, date_string: str = "26 Jul 2024"):
        self.date_string = date_string

    def generation_prompt(self, conv: Conversation) -> str:
        return _header("assistant")

    def _call_text(self, m: Message) -> str:
        if m.content and m.content.strip():
            raise FormatError(self.name, "assistant message with both text and tool calls",
                              "Llama 3.1's template would drop the text")
        return "; ".join('{"name": ' + json.dumps(c.name, ensure_ascii=False) + ', "parameters": '
                         + _args_json(c) + "}" for c in m.tool_calls)

    def render(self, conv: Conversation) -> list[Segment]:
        out = [Segment(BOT, "template")]
        system, rest = _split_leading_system(conv)
        head = _header("system")
        if conv.tools:
            head += "Environment: ipython\n"
        head += "Cutting Knowledge Date: December 2023\n" + f"Today Date: {self.date_string}\n\n"
        head += (system.content or "").strip() if system else ""
        out.append(Segment(head + EOT, "system", False, -1, 0 if system else -1))
        if conv.tools:
            if not rest or rest[0][1].role != "user":
                raise FormatError(self.name, "tools need a first user message to carry them",
                                  "the first non-system message is not a user message")
            i, first = rest[0]
            text = _header("user") + self.TOOLS_INSTRUCTION
            text += "".join(json.dumps(t.to_dict(), indent=4, ensure_ascii=False) + "\n\n" for t in conv.tools)
            text += (first.content or "").strip() + EOT
            out.append(Segment(text, "user", False, -1, i))
            rest = rest[1:]
        turn = 0
        for i, m in rest:
            if m.role == "assistant":
                body = self._call_text(m) if m.tool_calls else (m.content or "").strip()
                _assistant_segments(out, i, turn, _header("assistant"), body + EOT)
                turn += 1
            elif m.role == "tool":
                out.append(Segment(_header("ipython") + (m.content or "") + EOT, "tool", False, -1, i))
            else:
                out.append(Segment(_header(m.role) + (m.content or "").strip() + EOT, m.role, False, -1, i))
        return out

    def parse(self, text: str) -> Reply:
        text = self.cut_at_stop(text)
        s = text.strip()
        if s.startswith(PYTHON_TAG):
            s = s[len(PYTHON_TAG):].strip()
        if s.startswith("{") or re.match(r"\[\s*\{", s):
            got = parse_json_calls(s)
            if isinstance(got, ParseError):
                return Reply(s, (), got)
            return Reply(None, tuple(got))
        return Reply(_nonempty(s))


# -- functionary's TypeScript-style tool schema ------------------------------------------------
# Functionary shows tools to the model as TypeScript type declarations (functionary/schema.py,
# `generate_schema_from_functions`). The rules below reproduce its output: one `// description`
# comment and one `type name = (_: {...}) => any;` per function, optional parameters marked `?`,
# integer/float -> number, enums as string-literal unions, nested objects and arrays indented by 4.

def _ts_type(p: Mapping) -> str:
    if "type" in p:
        t = p["type"]
        t = " | ".join(str(x) for x in t) if isinstance(t, list) else str(t)
    elif isinstance(p.get("oneOf"), list):
        seen: list[str] = []  # INFERRED order: functionary de-duplicates through a set (unordered)
        for item in p["oneOf"]:
            if isinstance(item, Mapping) and "type" in item:
                ct = _ts_convert(str(item["type"]))
                if ct not in seen:
                    seen.append(ct)
        t = " | ".join(seen)
    else:
        t = "any"
    return _ts_convert(t)


def _ts_convert(t: str) -> str:
    return "number" if t in ("integer", "float") else t


def _ts_comment(p: Mapping) -> str | None:
    info = []
    if "description" in p:
        desc = str(p["description"])
        info.append(desc if desc.endswith(".") else desc + ".")
    if "default" in p:
        value = p["default"]
        info.append(f"Default={chr(34) + str(value) + chr(34) if p.get('type', 'any') == 'string' else value}.")
    fmt = p.get("format")
    if fmt is None and isinstance(p.get("oneOf"), list):
        fmts = [str(x["format"]) for x in p["oneOf"] if isinstance(x, Mapping) and "format" in x]
        fmt = " or ".join(fmts) if fmts else None
    if fmt is not None:
        info.append(f"Format={fmt}")
    for key, label in (("maximum", "Maximum"), ("minimum", "Minimum"),
                       ("maxLength", "Maximum length"), ("minLength", "Minimum length")):
        if key in p:
            info.append(f"{label}={p[key]}")
    return ("// " + " ".join(info)).replace("\n", " ") if info else None


def _ts_enum_items(values) -> str:
    return " | ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in values)


def _ts_array(name: str | None, p: Mapping, depth: int) -> str:
    pad = "    " * depth
    items = p.get("items")
    items = items if isinstance(items, Mapping) else {}
    if not items:
        return f"{pad}{name}: []" if name is not None else "[]"
    t = _ts_type(items)
    if t == "object":
        lines = [f"{pad}{name}: {{" if name is not None else f"{pad}{{"]
        lines += _ts_params(items.get("properties") or {}, items.get("required", []), depth + 1)
        lines.append(f"{pad}}}[]")
        return "\n".join(lines)
    if t == "array":
        inner = _ts_array(None, items, depth + 1)
        return f"{inner}[]" if name is None else f"{pad}{name}: {inner.strip()}[]"
    if "enum" in items and isinstance(items["enum"], list):
        union = _ts_enum_items(items["enum"])
        return f"({union})[]" if name is None else f"{pad}{name}: ({union})[]"
    return f"{t}[]" if name is None else f"{pad}{name}: {t}[],"


def _ts_params(properties: Mapping, required, depth: int) -> list[str]:
    lines: list[str] = []
    pad = "    " * depth
    for pname, p in properties.items():
        if not isinstance(p, Mapping):
            continue
        comment = _ts_comment(p)
        decl = str(pname)
        if isinstance(required, list) and pname not in required:
            decl += "?"
        t = _ts_type(p)
        if t == "object":
            if comment is not None:
                lines.append(pad + comment)
            lines.append(f"{pad}{decl}: {{")
            lines += _ts_params(p.get("properties") or {}, p.get("required", []), depth + 1)
            lines.append(pad + "},")
        elif t == "array":
            items = p.get("items")
            if not isinstance(items, Mapping) or "type" not in items:
                if comment is not None:
                    lines.append(pad + comment)
                lines.append(f"{pad}{decl}: [],")
            else:
                arr = _ts_array(decl, p, depth)
                if not arr.endswith(","):
                    arr += ","
                if comment is not None:
                    lines.append(pad + comment)
                lines.append(arr)
        else:
            if isinstance(p.get("enum"), list):
                t = " | ".join(f'"{v}"' for v in p["enum"])
            if comment is not None:
                lines.append(pad + comment)
            lines.append(f"{pad}{decl}: {t},")
    return lines


def typescript_schema(tools: Sequence[Tool], namespace: str = "functions") -> str:
    """Functionary's TypeScript rendering of `tools`."""
    out = ["// Supported function definitions that should be called when necessary.\n",
           f"namespace {namespace} {{\n\n"]
    for t in tools:
        out.append(f"// {t.description}\n")
        out.append(f"type {t.name}")
        params = t.parameters if isinstance(t.parameters, Mapping) else {}
        props = params.get("properties")
        if isinstance(props, Mapping):
            lines = _ts_params(props, params.get("required", []), 0)
            out.append(" = (_: {\n" + "\n".join(lines) + "\n}) => any;\n\n")
        else:
            out.append(" = () => any;\n\n")
    out.append(f"}} // namespace {namespace}")
    return "".join(out)


class FunctionaryV3Llama3Format(ChatFormat):
    """MeetKai functionary "v3.llama3" (functionary-small-v3.2 / medium-v3.0), DiaTool-DPO's template.

    `<|begin_of_text|>` + a fixed system turn (functionary's instruction + the TypeScript schema of
    the tools); user/system/tool messages as Llama 3 turns with their own role names; an
    assistant turn as `>>>all\\n<text>` and/or `>>>name\\n<json arguments>` blocks, then
    `<|eot_id|>`. The generation prompt ends with the first `>>>`, exactly as functionary's
    `get_assistant_prefixes` does, so the trained text starts at the first recipient name.
    Arguments are written `json.dumps(..., ensure_ascii=False)` (INFERRED: the template inserts
    the OpenAI `arguments` string as given).
    """

    name = "functionary_v3_llama3"
    stop_strings = (EOT, EOTEXT)
    special_tokens = (BOT, SH, EH, EOT)
    SYSTEM = ("You are capable of executing available function(s) if required.\n"
              "Only execute function(s) when absolutely necessary.\n"
              "Ask for the required input to:recipient==all\n"
              "Use JSON for function arguments.\n"
              "Respond in this format:\n"
              ">>>${recipient}\n${content}\n"
              "Available functions:\n")

    def generation_prompt(self, conv: Conversation) -> str:
        return _header("assistant") + ">>>"

    def render(self, conv: Conversation) -> list[Segment]:
        out = [Segment(BOT + _header("system") + self.SYSTEM + typescript_schema(conv.tools) + EOT, "template")]
        turn = 0
        for i, m in enumerate(conv.messages):
            if m.role == "assistant":
                blocks = []
                if m.content:
                    blocks.append("all\n" + m.content)
                for c in m.tool_calls:
                    if "\n" in c.name or ">>>" in c.name or not c.name.strip():
                        raise FormatError(self.name, "tool name not usable as a >>>recipient", repr(c.name))
                    blocks.append(c.name + "\n" + _args_json(c))
                _assistant_segments(out, i, turn, _header("assistant") + ">>>", ">>>".join(blocks) + EOT)
                turn += 1
            else:
                out.append(Segment(_header(m.role) + (m.content or "") + EOT, m.role, False, -1, i))
        return out

    def parse(self, text: str) -> Reply:
        s = ">>>" + self.cut_at_stop(text)  # the generation prompt ended with ">>>"
        content_parts: list[str] = []
        calls: list[ToolCall] = []

        def fail(reason: str) -> Reply:
            return Reply(text, tuple(calls), ParseError(reason, text))

        pos = 0
        while pos < len(s):
            if not s.startswith(">>>", pos):
                return fail(f"expected '>>>' at char {pos - 3}")
            pos += 3
            nl = s.find("\n", pos)
            name = (s[pos:] if nl < 0 else s[pos:nl]).strip()
            pos = len(s) if nl < 0 else nl + 1
            if name == "all":
                nxt = s.find(">>>", pos)
                end = len(s) if nxt < 0 else nxt
                content_parts.append(s[pos:end])
                pos = end
                continue
            if not name:
                if pos >= len(s) and not calls and not content_parts:
                    return Reply(None)  # nothing generated
                return fail("empty recipient after '>>>'")
            got = _decode_json_at(s, _skip_ws(s, pos))
            if isinstance(got, ParseError):
                return fail(f"arguments of {name}: {got.reason}")
            obj, pos = got
            if not isinstance(obj, Mapping):
                return fail(f"arguments of {name} must be a JSON object, got {type(obj).__name__}")
            calls.append(ToolCall(name=name, arguments=dict(obj)))
            pos = _skip_ws(s, pos)
        content = "".join(content_parts) if content_parts else None
        return Reply(_nonempty(content), tuple(calls))


# ----------------------------------------------------------------------------------------------
# Plain-text formats: react (CALM), alpaca
# ----------------------------------------------------------------------------------------------

DEFAULT_PLAIN_EOS = "</s>"


def _tools_lines(tools: Sequence[Tool]) -> str:
    return "\n".join(json.dumps(t.spec(), ensure_ascii=False) for t in tools)


class ReactFormat(ChatFormat):
    """CALM's conversational ReAct turns as plain text (layout INFERRED from the CALM paper's
    User / Thought / Action / Observation / Thought / Response description; CALM-IT's own rows are
    not available here).

        <system>\\n\\n                                  (when there is a system message)
        Available tools:\\n<one JSON spec per line>\\n\\n (when there are tools)
        User: <text>\\n
        Thought: <text>\\nAction: [f(a=1)]<eos>\\n       (assistant message with tool calls)
        Observation: <tool result>\\n
        Thought: <text>\\nResponse: <text><eos>\\n       (assistant message with text)

    An assistant message that calls tools writes its `content` as the Thought. A text reply writes
    `content` as the Response, preceded by `meta["thought"]` when present (the one place a format
    reads `Message.meta`). Calls are pythonic, or a JSON list when a name/argument has no pythonic
    form. `<eos>` is the tokenizer's EOS (pass `tokenizer=` to `get_format`), default `</s>`;
    it is trained, so the model learns to end its turn.
    """

    name = "react"
    prepend_bos = True

    def __init__(self, eos: str = DEFAULT_PLAIN_EOS):
        self.eos = eos
        self.stop_strings = (eos, "\nObservation:", "\nUser:")
        self.special_tokens = (eos,)

    def generation_prompt(self, conv: Conversation) -> str:
        # after a system/tools preamble with no dialogue yet, the blank line still has to come
        return "\n\n" if conv.messages and conv.messages[-1].role == "system" else ""

    def _body(self, m: Message) -> str:
        if m.tool_calls:
            head = f"Thought: {m.content}\n" if m.content else ""
            return head + "Action: " + _call_list_text(m.tool_calls)
        thought = m.meta.get("thought") if isinstance(m.meta, Mapping) else None
        head = f"Thought: {thought}\n" if isinstance(thought, str) and thought else ""
        return head + "Response: " + (m.content or "")

    def render(self, conv: Conversation) -> list[Segment]:
        # Blank-line separators open the following segment instead of closing the previous one: a
        # segment ending in "\n\n" tokenizes differently on its own than before text (GPT-2 style
        # pre-tokenizers), so boundaries are kept right after non-space characters.
        out: list[Segment] = []
        system, rest = _split_leading_system(conv)
        sep = ""
        if system is not None:
            out.append(Segment(system.content or "", "system", False, -1, 0))
            sep = "\n\n"
        if conv.tools:
            out.append(Segment(sep + "Available tools:\n" + _tools_lines(conv.tools), "template"))
            sep = "\n\n"
        turn = 0
        for i, m in rest:
            if m.role == "assistant":
                _assistant_segments(out, i, turn, sep, self._body(m) + self.eos, "\n")
                turn += 1
            elif m.role == "tool":
                out.append(Segment(f"{sep}Observation: {m.content or ''}\n", "tool", False, -1, i))
            elif m.role == "user":
                out.append(Segment(f"{sep}User: {m.content or ''}\n", "user", False, -1, i))
            else:
                out.append(Segment(f"{sep}{m.content or ''}\n", "system", False, -1, i))
            sep = ""
        return out

    def parse(self, text: str) -> Reply:
        text = self.cut_at_stop(text)
        rest = text.lstrip("\n")
        thought = None
        if rest.startswith("Thought:"):
            ends = [j for j in (rest.find("\nAction:"), rest.find("\nResponse:")) if j >= 0]
            if not ends:
                return Reply(text, (), ParseError("'Thought:' without a following 'Action:' or 'Response:'", text),
                             thought=_strip_one_space(rest[len("Thought:"):]))
            cut = min(ends)
            thought = _strip_one_space(rest[len("Thought:"):cut])
            rest = rest[cut + 1:]
        if rest.startswith("Action:"):
            got = _parse_call_list_text(rest[len("Action:"):])
            if isinstance(got, ParseError):
                return Reply(text, (), ParseError(f"Action: {got.reason}", text), thought=thought)
            return Reply(_nonempty(thought), tuple(got), thought=thought)
        if rest.startswith("Response:"):
            return Reply(_nonempty(_strip_one_space(rest[len("Response:"):])), (), thought=thought)
        if not text.strip():
            return Reply(None)
        return Reply(text, (), ParseError("expected 'Thought:', 'Action:' or 'Response:'", text), thought=thought)


def _strip_one_space(s: str) -> str:
    return s[1:] if s.startswith(" ") else s


class AlpacaFormat(ChatFormat):
    """Stanford Alpaca's prompt (tatsu-lab/stanford_alpaca `PROMPT_DICT`), target = output + EOS.

    Single turn, exactly Alpaca: with a system message (and/or tools) it is the Instruction and the
    user message the Input ("prompt_input"); without, the user message is the Instruction
    ("prompt_no_input"). `### Response:` is followed directly by the output, as in Alpaca.

    INFERRED beyond Alpaca (which is single-turn): every later user/tool stretch becomes another
    `\\n\\n### Input:\\n...` block and every assistant message another `### Response:` block, so
    multi-turn dialogues keep all their turns; tools are listed as JSON lines under
    `Available tools:` in the Instruction; a tool call is written API-Bank style
    `API-Request: [f(a=1)]` (after the text, on its own line, when both) and a tool result as an
    Input line `API-Response: <result>`.
    """

    name = "alpaca"
    prepend_bos = True
    PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                    "context. Write a response that appropriately completes the request.\n\n")
    PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                       "completes the request.\n\n")

    def __init__(self, eos: str = DEFAULT_PLAIN_EOS):
        self.eos = eos
        self.stop_strings = (eos, "\n\n### Input:", "\n\n### Response:", "\n\n### Instruction:")
        self.special_tokens = (eos,)

    def generation_prompt(self, conv: Conversation) -> str:
        return "\n\n### Response:"

    def _output(self, m: Message) -> str:
        if not m.tool_calls:
            return m.content or ""
        calls = "API-Request: " + _call_list_text(m.tool_calls)
        return (m.content + "\n" + calls) if m.content else calls

    def render(self, conv: Conversation) -> list[Segment]:
        # Each block opens with its "\n\n" separator (see ReactFormat.render for why).
        out: list[Segment] = []
        msgs = list(enumerate(conv.messages))
        instr_parts, k = [], 0
        while k < len(msgs) and msgs[k][1].role == "system":
            instr_parts.append(msgs[k][1].content or "")
            k += 1
        if conv.tools:
            instr_parts.append("Available tools:\n" + _tools_lines(conv.tools))
        if instr_parts:
            preamble, instruction = self.PROMPT_INPUT, "\n\n".join(instr_parts)
            role, idx = ("system", 0) if k else ("template", -1)
        elif k < len(msgs) and msgs[k][1].role == "user":
            preamble, instruction = self.PROMPT_NO_INPUT, msgs[k][1].content or ""
            role, idx = "user", msgs[k][0]
            k += 1
        else:
            preamble, instruction, role, idx = self.PROMPT_NO_INPUT, "", "template", -1
        out.append(Segment(preamble + "### Instruction:\n" + instruction, role, False, -1, idx))
        turn, in_input = 0, False
        for i, m in msgs[k:]:
            if m.role == "assistant":
                _assistant_segments(out, i, turn, "\n\n### Response:", self._output(m) + self.eos)
                turn, in_input = turn + 1, False
                continue
            line = f"API-Response: {m.content or ''}" if m.role == "tool" else (m.content or "")
            out.append(Segment(("\n" if in_input else "\n\n### Input:\n") + line, m.role, False, -1, i))
            in_input = True
        return out

    def parse(self, text: str) -> Reply:
        text = self.cut_at_stop(text)
        i = text.find("API-Request:")
        if i < 0:
            return Reply(_nonempty(text))
        content = text[:i]
        if content.endswith("\n"):
            content = content[:-1]
        got = _parse_call_list_text(text[i + len("API-Request:"):])
        if isinstance(got, ParseError):
            return Reply(text, (), ParseError(f"API-Request: {got.reason}", text))
        return Reply(_nonempty(content), tuple(got))


# ----------------------------------------------------------------------------------------------
# text: plain documents for continued pre-training
# ----------------------------------------------------------------------------------------------

class TextFormat(ChatFormat):
    """Plain text for continued pre-training (CPT, e.g. DiaTool-DPO's first stage, §6.1 / App. C):
    each assistant message is a document, written as is and followed by EOS, and every one of its
    tokens is trained; other messages (if any) are written as is, untrained. No template text."""

    name = "text"
    prepend_bos = True

    def __init__(self, eos: str = DEFAULT_PLAIN_EOS):
        self.eos = eos
        self.stop_strings = (eos,)
        self.special_tokens = (eos,)

    def generation_prompt(self, conv: Conversation) -> str:
        return ""

    def render(self, conv: Conversation) -> list[Segment]:
        out: list[Segment] = []
        turn = 0
        for i, m in enumerate(conv.messages):
            if m.role == "assistant":
                out.append(Segment((m.content or "") + self.eos, "assistant", True, turn, i))
                turn += 1
            else:
                out.append(Segment(m.content or "", m.role, False, -1, i))
        return out

    def parse(self, text: str) -> Reply:
        return Reply(_nonempty(self.cut_at_stop(text)))


# ----------------------------------------------------------------------------------------------
# chat_template: the tokenizer's own Jinja template
# ----------------------------------------------------------------------------------------------

# End-of-turn markers of common templates; the ones the tokenizer knows as tokens become stops.
KNOWN_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>",
                     "<|endoftext|>", "<|end_of_text|>", "</s>", "<|END_OF_TURN_TOKEN|>")


def message_to_openai(m: Message) -> dict:
    """A `Message` as the dict HF chat templates expect (arguments as an object, content never None)."""
    d: dict[str, Any] = {"role": m.role, "content": m.content if m.content is not None else ""}
    if m.tool_calls:
        d["tool_calls"] = [{"id": c.id or f"call_{k}", "type": "function",
                            "function": {"name": c.name, "arguments": dict(c.arguments)}}
                           for k, c in enumerate(m.tool_calls)]
    if m.role == "tool":
        if m.name is not None:
            d["name"] = m.name
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
    return d


def _known_token(tokenizer, token: str) -> bool:
    try:
        tid = tokenizer.convert_tokens_to_ids(token)
        return tid is not None and tokenizer.convert_ids_to_tokens(tid) == token
    except (KeyError, TypeError, ValueError, IndexError):
        return False


class ChatTemplateFormat(ChatFormat):
    """Render through `tokenizer.apply_chat_template`, split into per-message segments.

    The text of message k is `render(messages[:k+1])` minus `render(messages[:k])`; an assistant
    message is further split at `render(messages[:k], add_generation_prompt=True)` (its header,
    not trained) and after its last end-of-turn marker (trailing newline etc., not trained). Every
    prefix must extend the previous one; a template that rewrites earlier turns (e.g. one that
    strips reasoning from past assistant turns) is refused with a `FormatError` naming the message,
    because no exact mask exists for it. Masks come from lengths, never from searching the text.

    `parse` cannot know the template's call syntax, so it tries, in order: hermes `<tool_call>`
    blocks, Llama JSON (`{`/`<|python_tag|>`), a pythonic list (`[`); otherwise plain text.
    """

    name = "chat_template"

    def __init__(self, tokenizer):
        if tokenizer is None:
            raise ConfigError("format 'chat_template' needs a tokenizer (pass tokenizer=...)")
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("format 'chat_template': this tokenizer has no chat template; "
                              f"pick one of {[n for n in FORMAT_NAMES if n != 'chat_template']}")
        self.tokenizer = tokenizer
        markers = [m for m in KNOWN_END_MARKERS if _known_token(tokenizer, m)]
        eos = getattr(tokenizer, "eos_token", None)
        if eos and eos not in markers:
            markers.insert(0, eos)
        self.stop_strings = tuple(markers)
        self.special_tokens = ()

    def _apply(self, msgs: list[dict], tools, gen: bool, where: str) -> str:
        try:
            text = self.tokenizer.apply_chat_template(msgs, tools=tools, add_generation_prompt=gen, tokenize=False)
        except Exception as e:  # noqa: BLE001 - jinja raises TemplateError and friends
            raise FormatError(self.name, "chat template failed", f"{where}: {type(e).__name__}: {e}") from None
        if not isinstance(text, str):  # some versions return a list for batched input
            text = text[0]
        return text

    def _tools(self, conv: Conversation):
        return [t.to_dict() for t in conv.tools] or None

    def generation_prompt(self, conv: Conversation) -> str:
        msgs = [message_to_openai(m) for m in conv.messages]
        full = self._apply(msgs, self._tools(conv), False, "whole conversation")
        gp = self._apply(msgs, self._tools(conv), True, "whole conversation + generation prompt")
        if not gp.startswith(full):
            raise FormatError(self.name, "generation prompt does not extend the rendered conversation")
        return gp[len(full):]

    def render(self, conv: Conversation) -> list[Segment]:
        msgs = [message_to_openai(m) for m in conv.messages]
        tools = self._tools(conv)
        out: list[Segment] = []
        done = ""  # text up to the last fixed boundary
        run: list[tuple[int, str | None]] = []  # non-assistant messages since then, with their prefix text
        turn = 0

        def not_prefix(k: int, what: str):
            raise FormatError(self.name, "template is not prefix-stable",
                              f"rendering messages[:{k}]{what} does not start with the text of the earlier "
                              "messages, so no exact per-message mask exists")

        def flush_run(target: str, k: int, what: str) -> int | None:
            """Emit the non-assistant messages before `target` as segments. Their own boundaries are
            best effort (a template may render a message differently once the next one exists, e.g.
            Qwen's grouping of consecutive tool results); only boundaries that `target` confirms are
            used. Returns the first message not emitted (it shares the next segment), or None."""
            nonlocal done
            if not target.startswith(done):
                not_prefix(k, what)
            first = None
            for j, text in run:
                first = j if first is None else first
                if text is not None and len(text) > len(done) and text.startswith(done) and target.startswith(text):
                    out.append(Segment(text[len(done):], conv.messages[first].role, False, -1, first))
                    done, first = text, None
            run.clear()
            return first

        for k, m in enumerate(conv.messages):
            if m.role != "assistant":
                try:
                    run.append((k, self._apply(msgs[:k + 1], tools, False, f"messages[:{k + 1}]")))
                except FormatError:  # e.g. Llama 3.1 with tools cannot render a system-only prefix
                    run.append((k, None))
                continue
            gp = self._apply(msgs[:k], tools, True, f"messages[:{k}] + generation prompt")
            full = self._apply(msgs[:k + 1], tools, False, f"messages[:{k + 1}]")
            leftover = flush_run(gp, k, " with a generation prompt")
            if not full.startswith(gp):
                not_prefix(k + 1, " (ending in an assistant message)")
            header = gp[len(done):]
            body = full[len(gp):]
            end = max((body.rfind(s) + len(s) for s in self.stop_strings if body.rfind(s) >= 0), default=-1)
            if end < 0:
                raise FormatError(self.name, "assistant turn has no end-of-turn marker",
                                  f"message {k}: looked for {list(self.stop_strings)}")
            lost = [c.name for c in m.tool_calls if c.name not in body]
            if lost:  # e.g. SmolLM2's template prints only `content`
                raise FormatError(self.name, "chat template drops tool calls",
                                  f"message {k}: calls to {lost} do not appear in the rendered turn")
            if leftover is not None:  # earlier messages without a usable boundary share the header's segment
                out.append(Segment(header, conv.messages[leftover].role, False, -1, leftover))
                header = ""
            _assistant_segments(out, k, turn, header, body[:end], body[end:])
            turn += 1
            done = full
        if run:
            final = self._apply(msgs, tools, False, "whole conversation")
            leftover = flush_run(final, len(msgs), "")
            if leftover is not None and len(final) > len(done):
                out.append(Segment(final[len(done):], conv.messages[leftover].role, False, -1, leftover))
                done = final
        missing = [t.name for t in conv.tools if t.name not in done]
        if missing:
            raise FormatError(self.name, "chat template does not render the tools",
                              f"tool names {missing} do not appear in the rendered text")
        return [s for s in out if s.text]

    def parse(self, text: str) -> Reply:
        text = self.cut_at_stop(text)
        if "<tool_call>" in text:
            return HermesFormat().parse(text)
        s = text.strip()
        if s.startswith((PYTHON_TAG, "{")) or re.match(r"\[\s*\{", s):
            return Llama3JsonFormat().parse(s)
        if s.startswith("["):
            return PythonicFormat().parse(s)
        return Reply(_nonempty(text))


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------

def get_format(name: str, tokenizer=None, **options) -> ChatFormat:
    """The chat format `name` (one of `FORMAT_NAMES`).

    tokenizer: required for "chat_template"; for the plain-text formats ("react", "alpaca") its
               EOS token becomes the trained end-of-turn marker (default `</s>` without one).
    options  : "llama3_json": `date_string` (default "26 Jul 2024"); "react"/"alpaca": `eos`.
    """
    if name == "llama3_json":
        return Llama3JsonFormat(**options)
    if name == "functionary_v3_llama3":
        return FunctionaryV3Llama3Format(**options)
    if name == "hermes":
        return HermesFormat(**options)
    if name == "pythonic":
        return PythonicFormat(**options)
    if name in ("react", "alpaca", "text"):
        eos = options.pop("eos", None) or (getattr(tokenizer, "eos_token", None) if tokenizer is not None else None)
        cls = {"react": ReactFormat, "alpaca": AlpacaFormat, "text": TextFormat}[name]
        return cls(eos=eos or DEFAULT_PLAIN_EOS, **options)
    if name == "chat_template":
        return ChatTemplateFormat(tokenizer, **options)
    close = difflib.get_close_matches(str(name), FORMAT_NAMES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown chat format {name!r}{hint}; choose one of {list(FORMAT_NAMES)} "
                      f"(or {PLAIN_TEXT_FORMAT!r} for plain documents)")


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
