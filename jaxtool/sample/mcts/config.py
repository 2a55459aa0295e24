"""Search settings and inputs of iTool's MCTS: Table 5's settings (`MCTSConfig`), where a step ends
(`StepRules`), the self-evaluation prompt of Eq. 7 (`EvalPrompt`) and the jittable outcome proxy."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jaxtool.errors import ConfigError

PRIORS = ("mean", "sum")
# "simulation" of Table 5 (see MCTSConfig.simulation_mode)
SIMULATION_MODES = ("steps", "rollouts")

@dataclasses.dataclass(frozen=True)
class MCTSConfig:
    """Search settings; the defaults are the paper's Table 5 (plus token budgets of our own).

    depth            : max tree depth (steps below the root); a node at this depth is not expanded.
    width            : children sampled per expansion.
    simulations      : Table 5's "simulation". simulation_mode="steps" (the paper's text above Table 5:
                       "the maximum number of simulation steps in the Expand phase"): one rollout per
                       new non-terminal node, of at most this many further steps; O is the outcome of
                       the response it reaches when that response is complete (terminal), else 0.
                       simulation_mode="rollouts" (this code's earlier reading): this many rollouts to
                       a terminal state per new node, their outcomes averaged for O.
    iterations       : select → expand → evaluate → backup rounds per query.
    c_puct           : c of Eq. 5.
    temperature      : sampling temperature of steps and rollouts (0 = greedy, for tests).
    discount         : γ of Eq. 8, Q(s, a) = r(s, a) + γ·V(s′). Eq. 8 has the γ; the paper does not
                       print its value. We choose γ = 1.0 (no discounting: with depth 3 a discount
                       would only shrink the deeper steps' share of Q).
    max_step_tokens  : a step also ends after this many tokens.
    max_total_tokens : a response of this many tokens is terminal (the "max length").
    eval_samples     : option letters drawn per self-evaluation (Eq. 7); 0 = exact expectation.
    eval_weights     : weights of options A/B/C/D (Eq. 7).
    eval_normalize   : option probabilities renormalised over the four options (True) or the
                       model's full-vocabulary probabilities of the four tokens (False).
    prior            : "mean" (exp of the mean token log-prob of the step) or "sum" (exp of the sum).
    simulation_mode  : "steps" (the paper, default) or "rollouts" (see `simulations`).
    seed             : PRNG seed of the search.
    """

    depth: int = 3
    width: int = 3
    simulations: int = 2
    iterations: int = 5
    c_puct: float = 1.0
    temperature: float = 1.5
    discount: float = 1.0
    max_step_tokens: int = 64
    max_total_tokens: int = 256
    eval_samples: int = 4
    eval_weights: tuple = (1.0, 0.1, -1.0, -2.0)
    eval_normalize: bool = True
    prior: str = "mean"
    simulation_mode: str = "steps"
    seed: int = 42

    def __post_init__(self):
        for name in ("depth", "width", "iterations", "max_step_tokens", "max_total_tokens"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"mcts.{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("simulations", "eval_samples"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"mcts.{name} must be >= 0, got {getattr(self, name)!r}")
        if len(tuple(self.eval_weights)) != 4:
            raise ConfigError(f"mcts.eval_weights needs 4 weights (options A/B/C/D), got {self.eval_weights!r}")
        if self.prior not in PRIORS:
            raise ConfigError(f"mcts.prior must be one of {PRIORS}, got {self.prior!r}")
        if self.simulation_mode not in SIMULATION_MODES:
            raise ConfigError(f"mcts.simulation_mode must be one of {SIMULATION_MODES}, got {self.simulation_mode!r}")
        if self.temperature < 0 or self.c_puct < 0 or not 0 <= self.discount <= 1:
            raise ConfigError(f"mcts: temperature and c_puct must be >= 0 and discount in [0, 1] ({self})")
        object.__setattr__(self, "eval_weights", tuple(float(w) for w in self.eval_weights))

    @property
    def capacity(self) -> int:
        """Node slots per query: the root plus `width` per iteration."""
        return 1 + self.iterations * self.width


@dataclasses.dataclass(frozen=True)
class StepRules:
    """Where a step ends (besides `max_step_tokens`): after a token of `step_end_ids` (sentence
    ends, newlines, the end of a tool call), after a multi-token sequence of `step_end_seqs`
    (e.g. the ids of "</tool_call>" when the tokenizer splits it), or at an `eos_ids` token, which
    also ends the response (terminal).

    `arg_table` keeps a step boundary out of a call's arguments (§3.2: a step is a sentence or a
    whole tool call, so "St. Louis" or 3.5 inside `f(city="St. Louis", x=3.5)` never ends one): a
    `step_end_ids` token ends a step only where, after it, the response is outside every bracket
    and string. The state is (quote q: 0 none, 1 in "…", 2 in '…'; inside = bracket depth > 0) and
    each entry (token id, q_out × 6, depth change × 6) gives a token's effect from each of the six
    start states s = 2·q + inside (`arg_transitions`); tokens without brackets or quotes leave it
    unchanged and are not listed. Empty: no guard (every `step_end_ids` token ends a step)."""

    eos_ids: tuple = ()
    step_end_ids: tuple = ()
    step_end_seqs: tuple = ()
    arg_table: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "arg_table", tuple(tuple(int(v) for v in e) for e in self.arg_table))
        if any(len(e) != 13 for e in self.arg_table):
            raise ConfigError("StepRules.arg_table: entries are (token id, 6 quote states, 6 depth changes)")
        object.__setattr__(self, "eos_ids", tuple(sorted({int(t) for t in self.eos_ids})))
        object.__setattr__(self, "step_end_ids", tuple(sorted({int(t) for t in self.step_end_ids})))
        object.__setattr__(self, "step_end_seqs", tuple(tuple(int(t) for t in s) for s in self.step_end_seqs if len(s)))
        if not self.eos_ids:
            raise ConfigError("StepRules.eos_ids: give at least one end-of-turn token id")


@dataclasses.dataclass(frozen=True)
class EvalPrompt:
    """The self-evaluation prompt (Eq. 7): token ids appended after (prompt, partial response) —
    one list for every query, or one per query (e.g. with the gold answer in it) — ending where the
    answer letter comes, and the token ids of the four options A, B, C, D."""

    suffix_ids: tuple
    option_ids: tuple

    def __post_init__(self):
        s = self.suffix_ids
        per_query = len(s) > 0 and not isinstance(s[0], (int, np.integer))
        rows = tuple(tuple(int(t) for t in r) for r in s) if per_query else (tuple(int(t) for t in s),)
        if not rows or any(len(r) == 0 for r in rows):
            raise ConfigError("EvalPrompt.suffix_ids: the evaluation suffix is empty")
        object.__setattr__(self, "suffix_ids", rows if per_query else rows[0])
        if len(self.option_ids) != 4 or len(set(self.option_ids)) != 4:
            raise ConfigError(f"EvalPrompt.option_ids: need 4 distinct token ids (A/B/C/D), got {self.option_ids!r}")
        object.__setattr__(self, "option_ids", tuple(int(t) for t in self.option_ids))

    @property
    def per_query(self) -> bool:
        return isinstance(self.suffix_ids[0], tuple)

    def rows(self, batch: int) -> list[tuple[int, ...]]:
        if not self.per_query:
            return [self.suffix_ids] * batch
        if len(self.suffix_ids) != batch:
            raise ConfigError(f"EvalPrompt.suffix_ids has {len(self.suffix_ids)} per-query suffixes for "
                              f"{batch} prompts")
        return list(self.suffix_ids)


@dataclasses.dataclass(frozen=True)
class ExactMatch:
    """Jittable outcome proxy: O = 1.0 when the response (without a final end-of-turn token) equals
    `gold_ids[q]` token for token, else 0.0. A gold answer longer than max_total_tokens − 1 can
    never match."""

    gold_ids: tuple

    def __post_init__(self):
        object.__setattr__(self, "gold_ids", tuple(tuple(int(t) for t in g) for g in self.gold_ids))


# default evaluation question (our wording of the Table 7 idea: grade the partial tool-use response
# against the request and the offered tools, four graded options)
DEFAULT_EVAL_QUESTION = (
    "Judge the assistant's last response above (it may be unfinished) to the user's request, given the "
    "tools offered. Check the function names, the number, names and values of the arguments, and whether "
    "a call was needed at all. Choose one option:\n"
    "(A) Excellent: correct so far.\n"
    "(B) Acceptable: minor discrepancies.\n"
    "(C) Fair: significant issues.\n"
    "(D) Poor: wrong or irrelevant.\n"
    "Answer with the letter only.")


# Eq. 7 with Table 7's Eval Prompt: the partial response is judged *relative to the ground-truth
# response*, a correct fragment of it counting as excellent (our wording of that prompt); the ground
# truth follows the question as "Ground Truth Response: ..." (`gold_eval_text`)
GOLD_EVAL_QUESTION = (
    "Judge the assistant's last response above (it may be unfinished) relative to the ground truth response "
    "given below. A response that is a correct fragment of the ground truth (its beginning, or part of its "
    "calls) is also excellent. Check the function names, the number, names and values of the arguments, and "
    "whether a call was needed at all. Choose one option:\n"
    "(A) Excellent: matches the ground truth so far.\n"
    "(B) Acceptable: minor discrepancies.\n"
    "(C) Fair: significant issues.\n"
    "(D) Poor: wrong or irrelevant.\n"
    "Answer with the letter only.")


def gold_eval_text(question: str, gold: str) -> str:
    """The user turn of the Eval Prompt with the ground truth (Table 7): the question, then
    `Ground Truth Response: {gold}`."""
    return f"{question}\n\nGround Truth Response: {gold}"


def eval_prompt_for(tokenizer, question: str = DEFAULT_EVAL_QUESTION, answer_prefix: str = "(",
                    options: Sequence[str] = ("A", "B", "C", "D")) -> EvalPrompt:
    """An `EvalPrompt` for a chat tokenizer: close the assistant turn, ask `question` as a user turn,
    open the assistant turn and write `answer_prefix`; the options must be single tokens there."""
    marker = "\u2063MCTS_PARTIAL\u2063"
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker},
            {"role": "user", "content": question}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if marker not in text:
        raise ConfigError("eval_prompt_for: the tokenizer's chat template dropped the assistant turn")
    suffix = text.split(marker, 1)[1] + answer_prefix
    ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    opt = []
    for o in options:
        t = tokenizer(answer_prefix + o, add_special_tokens=False)["input_ids"]
        base = tokenizer(answer_prefix, add_special_tokens=False)["input_ids"]
        if t[:len(base)] != base or len(t) != len(base) + 1:
            raise ConfigError(f"eval_prompt_for: option {o!r} is not one token after {answer_prefix!r}")
        opt.append(t[-1])
    return EvalPrompt(tuple(ids), tuple(opt))


def arg_transitions(text: str) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The effect of one token's text on the (quote, inside-brackets) state, from each of the six start
    states s = 2·q + inside: (q after, bracket-depth change) per state; None when the text has no
    bracket or quote (no effect). Read character by character: inside a string only its closing quote
    (not escaped by a backslash) counts; outside strings ( [ { open and ) ] } close a bracket, and a
    quote opens a string only inside brackets (an apostrophe in prose is not a string)."""
    if not any(ch in text for ch in "()[]{}\"'"):
        return None
    q_out, dd = [], []
    for s in range(6):
        q, inside = s // 2, s % 2
        # `depth` decides whether a quote opens a string (a start "inside" counts as depth 1); the
        # change is counted unclipped when the start is inside (its true depth may be > 1)
        depth, change, esc = inside, 0, False
        for ch in text:
            if q:
                if esc:
                    esc = False
                elif ch == "\\":
                    esc = True
                elif ch == ('"' if q == 1 else "'"):
                    q = 0
            elif ch in "([{":
                depth, change = depth + 1, change + 1
            elif ch in ")]}":
                depth, change = max(depth - 1, 0), change - 1
            elif depth > 0 and ch in "\"'":
                q = 1 if ch == '"' else 2
        q_out.append(q)
        dd.append(change if inside else depth)
    return tuple(q_out), tuple(dd)


def step_rules_for(tokenizer, *, eos_ids: Sequence[int], sentence_ends: Sequence[str] = (".", "!", "?"),
                   newline: bool = True, call_ends: Sequence[str] = (")]", "</tool_call>", "}]"),
                   guard_arguments: bool = True) -> StepRules:
    """Step boundaries from a tokenizer's vocabulary: every token whose text ends with a sentence
    end, contains a newline (`newline`), or ends with a call end; call ends the tokenizer splits
    into several tokens become `step_end_seqs` (as the string encodes on its own).
    guard_arguments: no boundary inside a call's brackets or strings (`StepRules.arg_table`)."""
    vocab = tokenizer.get_vocab()
    ends, seqs, table = set(), [], []
    for tok_str, tid in vocab.items():
        text = tokenizer.convert_tokens_to_string([tok_str])
        t = text.rstrip(" ")
        if (t and t[-1] in "".join(sentence_ends)) or (newline and "\n" in text) or any(
                c and t.endswith(c) for c in call_ends):
            ends.add(int(tid))
        if guard_arguments:
            tr = arg_transitions(text)
            if tr is not None:
                table.append((int(tid), *tr[0], *tr[1]))
    for c in call_ends:
        ids = tokenizer(c, add_special_tokens=False)["input_ids"]
        if len(ids) > 1:
            seqs.append(tuple(ids))
    return StepRules(eos_ids=tuple(eos_ids), step_end_ids=tuple(sorted(ends - set(eos_ids))), step_end_seqs=tuple(seqs),
                     arg_table=tuple(sorted(table)))

