"""API-Bank level-1 / level-2 evaluation: API-call accuracy; ROUGE-1/2/L and BLEU-4 of responses.

API-Bank's own evaluator (DAMO-ConvAI `api-bank/evaluator.py`) *executes* the predicted call against
its Python API implementations and compares the execution record with the gold one, with per-API
rules. jaxtool has no API implementations, so it judges the call statically, following the same
reading of the output:

Extraction  The first `[Name(...)]` on a line of the model output (API-Bank's `get_api_call` pattern
            `\\[(\\w+)\\((.*)\\)\\]`); an `API-Request:` prefix and text around it are ignored. No match
            -> "no API call". Gold answers may also be bracket-less (`parse_gold_request`).
Parsing     The bracketed text is parsed with `jaxtool.data.calls.parse_pythonic` (several calls in
            one bracket are a list). API-Bank also writes unquoted values (`city=New York`,
            `time=2034-01-01 10:00:00`; 100 of the 907 level-3 gold calls); when the literal parse
            fails, each top-level `key=value` is read with `ast.literal_eval` if possible, else as the
            bare text. The same parser reads the gold call, so both sides are read alike.
Matching    Same number of calls; per call the same API name (case-sensitive) and the same argument
            names; values compare as API-Bank's parser sees them, i.e. as text: strings stripped,
            numbers numerically whatever their spelling (`75`, `'75'`, `75.0`), booleans
            case-insensitively, lists element-wise.
ToolSearcher (level 2)  API-Bank scores a `ToolSearcher(keywords=...)` call by the tool it retrieves
            (a MiniLM sentence-embedding search), not by its words. Offline: the call must be
            ToolSearcher, and it is correct when its keywords equal the gold keywords (case- and
            space-folded), or when a TF-IDF search over the API library gives the same tool for the
            predicted keywords as for the gold keywords, or gives the tool the official search
            returned for the gold keywords (recorded in the data as `ToolSearcher(...)->{result}` in
            later items). The library is every tool named in those recorded results.
            Other ToolSearcher arguments (3 level-3 gold calls add `location`) must be the gold's.
            Measured on the 375 distinct (keywords -> retrieved tool) records of the level-3 training
            file (373-tool library): a keyword string credited against another that the official
            search sends to the same tool: 48 of 98 ordered pairs (49%); against one whose official
            tool differs: rejected in 139,908 of 140,152 pairs (99.8%). So the offline rule is strict
            with paraphrased keywords and rarely lenient.
Responses   After removing a leading `AI:` from both texts: ROUGE-1, ROUGE-2 and ROUGE-L F1 as the
            `rouge` package (pltrdy/rouge 1.0.1, which API-Bank's evaluator calls) computes them
            (`rouge.rouge_n_apibank`, `rouge.rouge_l_apibank`; reported as `rouge_1`, `rouge_2`,
            `rouge_l`), plain sentence-level LCS F1 as `rouge_l_lcs`, and corpus BLEU-4 over all
            response items (`jaxtool.eval.bleu.corpus_bleu`, SacreBLEU's defaults, 0-100) as
            `bleu_4` — CALM's Table 3 reports API-Bank response quality with these n-gram metrics.
            Empty output scores 0 (API-Bank's own loop assigns 0 to empty output).

How the ToolSearcher step differs from API-Bank's (summary of the rule above): API-Bank runs
ToolSearcher as a real API — it embeds the keywords with a sentence-transformers MiniLM model and
returns the API whose description embedding is nearest (cosine), and the call is judged by that
*retrieved tool*. jaxtool has no embedding model at evaluation time, so it judges the keywords by
exact (folded) equality with the gold keywords, or by a bag-of-words TF-IDF nearest neighbour over
the tool library, or by the tool the official search recorded for the gold keywords. Paraphrases
the MiniLM search would map to the same tool are credited only when TF-IDF agrees (49% of such
pairs on the level-3 training records, see above).

Scores: `api_accuracy` = correct API items / API items (ToolSearcher items included, as in
API-Bank's level-2 numbers), with the ToolSearcher and other items also reported apart;
`rouge_1`, `rouge_2`, `rouge_l` = means over response items; `bleu_4` = corpus BLEU-4 over them.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import math
import re
from typing import Any, Iterable, Sequence

from jaxtool.data.calls import ParseError, parse_pythonic
from jaxtool.data.schema import ToolCall
from jaxtool.errors import DataError
from jaxtool.eval import textgen
from jaxtool.eval.apibank_data import ApiBankItem
from jaxtool.eval.bleu import corpus_bleu
from jaxtool.eval.rouge import rouge_l, rouge_l_apibank, rouge_n_apibank

CALL_PATTERN = re.compile(r"\[(\w+)\((.*)\)\]")
TOOLSEARCHER = "ToolSearcher"


# --------------------------------------------------------------------------------------------
# reading calls
# --------------------------------------------------------------------------------------------

_BARE_CALL = re.compile(r"API-Request:\s*(\w+\(.*\))\s*$", re.MULTILINE)


def extract_call_text(output: str, require_brackets: bool = True) -> str | None:
    """`Name(...)` (or `A(...), B(...)`) from the first `[Name(...)]` in `output`, else None.
    With `require_brackets=False` a bracket-less `API-Request: Name(...)` line is also read."""
    m = CALL_PATTERN.search(output or "")
    if m:
        return m.group(0)[1:-1]
    if not require_brackets:
        b = _BARE_CALL.search(output or "")
        if b:
            return b.group(1)
    return None


def _split_top_level(s: str, sep: str = ",") -> list[str]:
    parts, depth, quote, cur, i = [], 0, None, [], 0
    while i < len(s):
        c = s[i]
        if quote:
            cur.append(c)
            if c == "\\" and i + 1 < len(s):
                cur.append(s[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif c in "([{":
            depth += 1
            cur.append(c)
        elif c in ")]}":
            depth -= 1
            cur.append(c)
        elif c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _loose_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _loose_calls(text: str) -> list[ToolCall] | ParseError:
    calls = []
    for part in _split_top_level(text):
        m = re.fullmatch(r"([A-Za-z_][\w.]*)\s*\((.*)\)", part, re.DOTALL)
        if not m:
            return ParseError(f"not a call: {part[:60]!r}", text)
        args: dict[str, Any] = {}
        for kv in _split_top_level(m.group(2)):
            key, eq, value = kv.partition("=")
            if not eq or not key.strip().isidentifier():
                return ParseError(f"{m.group(1)}: argument {kv[:40]!r} is not key=value", text)
            args[key.strip()] = _loose_value(value.strip())
        calls.append(ToolCall(m.group(1), args))
    return calls or ParseError("no call", text)


def parse_api_request(output: str, require_brackets: bool = True) -> list[ToolCall] | ParseError:
    """The calls of an `API-Request: [...]` answer (module docstring: extraction and parsing)."""
    body = extract_call_text(output, require_brackets)
    if body is None:
        return ParseError("no API call", output)
    calls = parse_pythonic("[" + body + "]")
    if isinstance(calls, ParseError):
        calls = _loose_calls(body)
    return calls


def parse_gold_request(expected: str) -> list[ToolCall] | ParseError:
    """Gold calls: as `parse_api_request`, but a bracket-less `API-Request: Name(...)` is accepted
    (2 of the 907 level-3 gold answers are written so)."""
    return parse_api_request(expected, require_brackets=False)


# --------------------------------------------------------------------------------------------
# comparing calls
# --------------------------------------------------------------------------------------------

def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            x = float(v.strip())
        except ValueError:
            return None
        return x if math.isfinite(x) else None
    return None


def api_values_equal(pred: Any, gold: Any) -> bool:
    """Values as API-Bank's text-based parser sees them (module docstring: matching)."""
    if isinstance(pred, (list, tuple)) and isinstance(gold, (list, tuple)):
        return len(pred) == len(gold) and all(api_values_equal(p, g) for p, g in zip(pred, gold))
    if isinstance(pred, dict) and isinstance(gold, dict):
        return pred.keys() == gold.keys() and all(api_values_equal(pred[k], gold[k]) for k in gold)
    if isinstance(pred, bool) or isinstance(gold, bool):
        return str(pred).strip().lower() == str(gold).strip().lower()
    np_, ng = _number(pred), _number(gold)
    if np_ is not None and ng is not None:
        return np_ == ng
    if isinstance(pred, (list, tuple, dict)) or isinstance(gold, (list, tuple, dict)):
        return False
    return str(pred).strip() == str(gold).strip()


def api_calls_match(pred: Sequence[ToolCall], gold: Sequence[ToolCall]) -> tuple[bool, str]:
    if len(pred) != len(gold):
        return False, f"{len(pred)} call(s), expected {len(gold)}"
    for p, g in zip(pred, gold):
        if p.name != g.name:
            return False, f"API name {p.name!r} != {g.name!r}"
        if set(p.arguments) != set(g.arguments):
            return False, f"{g.name}: arguments {sorted(p.arguments)} != {sorted(g.arguments)}"
        for k, gv in g.arguments.items():
            if not api_values_equal(p.arguments[k], gv):
                return False, f"{g.name}: {k}={p.arguments[k]!r} != {gv!r}"
    return True, "API call matches"


# --------------------------------------------------------------------------------------------
# ToolSearcher
# --------------------------------------------------------------------------------------------

_RESULT = re.compile(r"ToolSearcher\(keywords=(['\"])(.*?)\1\)\]->(.*)")
_API = re.compile(r"""(['"])name\1:\s*(['"])(.*?)\2,\s*(['"])description\4:\s*(['"])(.*?)\5""")


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", text or "").lower())


def _fold(s: Any) -> str:
    return " ".join(str(s).lower().split())


class ToolLibrary:
    """The API library seen in recorded ToolSearcher results, with a TF-IDF search over
    `<name split at capitals> <description>` (cosine similarity, ties to the alphabetically first)."""

    def __init__(self, apis: dict[str, str], retrieved: dict[str, str] | None = None):
        self.names = sorted(apis)
        self.retrieved = dict(retrieved or {})  # folded keywords -> tool the official search returned
        docs = [_tokens(n) + _tokens(apis[n]) for n in self.names]
        df = collections.Counter(w for d in docs for w in set(d))
        n = len(docs)
        self.idf = {w: math.log((n + 1) / (c + 1)) + 1 for w, c in df.items()}
        self.vectors = [self._vector(d) for d in docs]

    @classmethod
    def from_items(cls, items: Iterable[ApiBankItem]) -> "ToolLibrary":
        apis: dict[str, str] = {}
        retrieved: dict[str, str] = {}
        for it in items:
            for line in it.input.splitlines():
                m = _RESULT.search(line)
                if not m:
                    continue
                found = [(a.group(3), a.group(6)) for a in _API.finditer(m.group(3))]
                for name, desc in found:
                    apis.setdefault(name, desc)
                if found:  # [GetUserToken, X] -> X is the match; GetUserToken rides along
                    retrieved.setdefault(_fold(m.group(2)), found[-1][0])
        return cls(apis, retrieved)

    def _vector(self, tokens: Sequence[str]) -> dict[str, float]:
        tf = collections.Counter(t for t in tokens if t in self.idf)
        v = {t: c * self.idf[t] for t, c in tf.items()}
        norm = math.sqrt(sum(x * x for x in v.values()))
        return {t: x / norm for t, x in v.items()} if norm else {}

    def search(self, keywords: str) -> str | None:
        q = self._vector(_tokens(keywords))
        if not q or not self.names:
            return None
        scores = [sum(q.get(t, 0.0) * x for t, x in v.items()) for v in self.vectors]
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        return self.names[best] if scores[best] > 0 else None


def toolsearcher_matches(pred: Sequence[ToolCall], gold: ToolCall, library: ToolLibrary | None) -> tuple[bool, str]:
    if len(pred) != 1 or pred[0].name != TOOLSEARCHER:
        names = [c.name for c in pred]
        return False, f"expected one ToolSearcher call, got {names}"
    pk, gk = pred[0].arguments.get("keywords"), gold.arguments.get("keywords")
    if pk is None or set(pred[0].arguments) != set(gold.arguments):
        return False, f"ToolSearcher arguments {sorted(pred[0].arguments)} != {sorted(gold.arguments)}"
    if _fold(pk) == _fold(gk):
        return True, "same keywords"
    if library is None or not library.names:
        return False, f"keywords {pk!r} != {gk!r} (no tool library to compare retrievals)"
    hit = library.search(str(pk))
    if hit is not None and hit == library.search(str(gk)):
        return True, f"keywords retrieve the same tool {hit!r}"
    official = library.retrieved.get(_fold(gk))
    if hit is not None and hit == official:
        return True, f"keywords retrieve the gold tool {hit!r}"
    return False, f"keywords {pk!r} retrieve {hit!r}, gold {gk!r} retrieves {official or library.search(str(gk))!r}"


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------

def strip_ai_prefix(text: str) -> str:
    t = (text or "").strip()
    return t[3:].strip() if t.startswith("AI:") else t


def score_api_item(output: str, expected: str, library: ToolLibrary | None = None) -> dict:
    gold = parse_gold_request(expected)
    if isinstance(gold, ParseError):
        raise DataError(f"expected output is not an API request ({gold.reason}): {expected[:120]!r}")
    pred = parse_api_request(output)
    rec: dict[str, Any] = {"toolsearcher": gold[0].name == TOOLSEARCHER,
                           "gold_calls": [{"name": c.name, "arguments": dict(c.arguments)} for c in gold]}
    if isinstance(pred, ParseError):
        rec.update(correct=False, reason=pred.reason, pred_calls=None)
        return rec
    rec["pred_calls"] = [{"name": c.name, "arguments": dict(c.arguments)} for c in pred]
    if rec["toolsearcher"] and len(gold) == 1:
        ok, why = toolsearcher_matches(pred, gold[0], library)
    else:
        ok, why = api_calls_match(pred, gold)
    rec.update(correct=ok, reason=why)
    return rec


def score_response_item(output: str, expected: str) -> dict:
    hyp, ref = strip_ai_prefix(output), strip_ai_prefix(expected)
    return {"rouge_1": rouge_n_apibank(hyp, ref, 1).f1 if hyp else 0.0,
            "rouge_2": rouge_n_apibank(hyp, ref, 2).f1 if hyp else 0.0,
            "rouge_l": rouge_l_apibank(hyp, ref).f1 if hyp else 0.0,
            "rouge_l_lcs": rouge_l(hyp, ref).f1 if hyp else 0.0,
            "hyp_text": hyp, "ref_text": ref}


@dataclasses.dataclass
class ApiBankResult:
    records: list[dict]
    summary: dict

    def table(self) -> str:
        from jaxtool.eval.report import markdown_table

        return markdown_table(*table_rows(self.summary))


def _acc(rs: Sequence[dict]) -> dict:
    c = sum(r["correct"] for r in rs)
    return {"n": len(rs), "correct": c, "accuracy": c / len(rs) if rs else float("nan")}


def summarise(records: Sequence[dict], level: int | None = None) -> dict:
    api = [r for r in records if r["kind"] == "api"]
    resp = [r for r in records if r["kind"] == "response"]
    reasons = collections.Counter(r["reason"].split(":")[0] for r in api if not r["correct"])

    def mean(key: str) -> float:
        return sum(r[key] for r in resp) / len(resp) if resp else float("nan")

    bleu = corpus_bleu([r["hyp_text"] for r in resp], [r["ref_text"] for r in resp]) if resp else float("nan")
    return {
        "level": level,
        "api": _acc(api),
        "api_toolsearcher": _acc([r for r in api if r["toolsearcher"]]),
        "api_other": _acc([r for r in api if not r["toolsearcher"]]),
        "api_accuracy": _acc(api)["accuracy"],
        "response": {"n": len(resp), "rouge_1": mean("rouge_1"), "rouge_2": mean("rouge_2"),
                     "rouge_l": mean("rouge_l"), "rouge_l_lcs": mean("rouge_l_lcs"), "bleu_4": bleu},
        "rouge_l": mean("rouge_l"),
        "api_errors": dict(reasons.most_common()),
    }


def table_rows(summary: dict) -> tuple[list[str], list[list]]:
    rows = [["API-call accuracy", summary["api"]["n"], summary["api"]["accuracy"]],
            ["  ToolSearcher calls", summary["api_toolsearcher"]["n"], summary["api_toolsearcher"]["accuracy"]],
            ["  other API calls", summary["api_other"]["n"], summary["api_other"]["accuracy"]],
            ["response ROUGE-1", summary["response"]["n"], summary["response"]["rouge_1"]],
            ["response ROUGE-2", summary["response"]["n"], summary["response"]["rouge_2"]],
            ["response ROUGE-L (API-Bank)", summary["response"]["n"], summary["response"]["rouge_l"]],
            ["response ROUGE-L (sentence LCS)", summary["response"]["n"], summary["response"]["rouge_l_lcs"]],
            ["response BLEU-4 (corpus, 0-100)", summary["response"]["n"], summary["response"]["bleu_4"]]]
    return ["metric", "items", "score"], rows


def chart_values(summary: dict) -> dict[str, float]:
    vals = {"API-call acc": summary["api"]["accuracy"], "ToolSearcher acc": summary["api_toolsearcher"]["accuracy"],
            "other API acc": summary["api_other"]["accuracy"], "ROUGE-L": summary["response"]["rouge_l"]}
    return {k: v for k, v in vals.items() if not math.isnan(v)}


def item_conversation(item: ApiBankItem):
    """How an item is put to a chat model: the instruction as system message, the input as user message."""
    return textgen.text_conversation(item.input, system=item.instruction)


def evaluate_apibank(items: Sequence[ApiBankItem], backend: Any, fmt: Any, *, level: int | None = None,
                     batch_size: int = 8, max_new_tokens: int = 128, prompt_fn: textgen.PromptFn | None = None,
                     library: ToolLibrary | None = None, progress: bool = False) -> ApiBankResult:
    prompt_fn = prompt_fn or textgen.encode_prompt
    library = library if library is not None else ToolLibrary.from_items(items)
    prompts = [list(prompt_fn(item_conversation(it), fmt, backend.tokenizer)) for it in items]
    outputs = textgen.generate_texts(backend, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                     stop_strings=tuple(getattr(fmt, "stop_strings", ()) or ()),
                                     desc="api-bank items", progress=progress)
    records = []
    for it, out in zip(items, outputs):
        rec = {"row": it.row, "file": it.file, "id": it.id, "kind": it.kind, "output": out, "expected": it.expected}
        if it.kind == "api":
            rec.update(score_api_item(out, it.expected, library))
        else:
            rec.update(score_response_item(out, it.expected))
        records.append(rec)
    return ApiBankResult(records, summarise(records, level))
