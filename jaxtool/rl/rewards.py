"""The reward registry: functions of (task, trajectory, ctx) -> a float (the whole trajectory) or a
list of floats (one per assistant turn: per-turn rewards).

    @register("name")
    def my_reward(task, traj, ctx) -> float | list[float]: ...

`ctx` holds the chat format (`ctx.fmt`) and a counter of verdicts (`ctx.counts`, reason -> count:
what the loop reports as `reward/<reason>`). Built in:

* `outcome`   the gold check of a single-turn task on the first assistant turn
              (`jaxtool.eval.outcome.judge_text`: call equality, BFCL's AST rules for BFCL items);
              1 correct, 0 otherwise; a gold answer that cannot be compared is counted
              "gold unusable" (never raised), a turn cut by the budget "call never closed".
* `format`    1 when every assistant turn ended with the end-of-turn token and parsed with the
              format's own parser, else 0 (an optional shaping term).
* `env_goal`  multi-turn tasks: 1 when every key of the task's `goal` equals the same key of
              `env.state()` at the end of the trajectory, else 0.
* `tool_ok`   per turn: 1 for a turn whose tool calls all ran without error, 0 for one with an
              error result, 0 for a turn without calls (per-turn credit for DiaTool-style weighting).

Combined (`rewards_to_turns`): the weighted sum over the configured functions; a scalar reward is
credited to the trajectory's last turn, so sequence-level reward = sum over turns.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Sequence

from jaxtool.errors import ConfigError

REWARDS: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        REWARDS[name] = fn
        return fn
    return deco


def get(name: str) -> Callable:
    if name not in REWARDS:
        raise ConfigError(f"reward.functions: unknown reward {name!r}; known: {', '.join(sorted(REWARDS))}")
    return REWARDS[name]


@dataclasses.dataclass
class RewardContext:
    fmt: Any
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)


@register("outcome")
def outcome(task, traj, ctx) -> float:
    from jaxtool.eval.outcome import Outcome, judge_text

    if task.example is None:
        ctx.counts["outcome: task has no gold answer"] += 1
        return 0.0
    if not traj.texts:
        v = Outcome(False, "empty response")
    else:
        try:
            v = judge_text(task.example, traj.texts[0], ctx.fmt, finished=traj.finished_turn or traj.num_turns > 1)
        except Exception as e:  # a verdict never ends the run: the gold is unusable
            v = Outcome(False, "gold unusable", f"{type(e).__name__}: {e}")
    ctx.counts[f"outcome: {v.reason}"] += 1
    return v.value


@register("format")
def format_ok(task, traj, ctx) -> float:
    closed = traj.finish in ("answer", "max_turns") or (traj.finish == "env_error" and traj.finished_turn)
    ok = closed and all(r.error is None for r in traj.replies)
    ctx.counts["format: ok" if ok else "format: bad"] += 1
    return 1.0 if ok else 0.0


@register("env_goal")
def env_goal(task, traj, ctx) -> float:
    goal = (task.entry or {}).get("goal")
    if traj.env is None or not isinstance(goal, dict):
        ctx.counts["env_goal: no goal"] += 1
        return 0.0
    state = traj.env.state()
    ok = all(k in state and state[k] == v for k, v in goal.items())
    ctx.counts["env_goal: reached" if ok else "env_goal: missed"] += 1
    return 1.0 if ok else 0.0


@register("tool_ok")
def tool_ok(task, traj, ctx) -> list[float]:
    out = []
    for k in range(traj.num_turns):
        res = traj.results[k] if k < len(traj.results) else None
        out.append(1.0 if res and not any(getattr(r, "error", False) for r in res) else 0.0)
    return out


@register("partial")
def partial_call_credit(task, traj, ctx) -> float:
    """Dense partial credit for single-turn call tasks (a shaping reward of ours, not from a paper):
    each gold call is matched to the best response call — 0.5 for its name, 0.5 x the share of its
    gold arguments given with an equal value (numbers compared as numbers, so 1 == 1.0; strings exactly) — and
    the sum is divided by max(#gold calls, #response calls), so extra calls cost. 0 when the turn
    never closed or does not parse; 1 exactly when names and every gold argument match and there is
    no extra call (an extra, non-gold argument is not penalised here; `outcome` judges it)."""
    import json

    if task.example is None or not traj.replies:
        ctx.counts["partial: no gold or no reply"] += 1
        return 0.0
    reply = traj.replies[0]
    if not traj.finished_turn or reply.error is not None:
        return 0.0
    gold, got = list(task.example.gold.tool_calls), list(reply.tool_calls)
    if not gold:
        return 1.0 if not got else 0.0

    def canon(v):   # numbers as floats (1 == 1.0), bools kept apart from numbers
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, dict):
            return {str(k): canon(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [canon(x) for x in v]
        return str(v)

    def norm(v):
        return json.dumps(canon(v), sort_keys=True)

    def score(g, r):
        if g.name != r.name:
            return 0.0
        ga, ra = dict(g.arguments or {}), dict(r.arguments or {})
        return 0.5 + 0.5 * (sum(k in ra and norm(ra[k]) == norm(v) for k, v in ga.items()) / len(ga) if ga else 1.0)

    total, free = 0.0, list(range(len(got)))
    for g in gold:
        if not free:
            break
        best = max(free, key=lambda j: score(g, got[j]))
        total += score(g, got[best])
        free.remove(best)
    return total / max(len(gold), len(got))


def rewards_to_turns(task, traj, names: Sequence[str], weights: Sequence[float], ctx: RewardContext) -> list[float]:
    """Per-turn rewards of one trajectory: sum_k w_k r_k, scalars credited to the last turn."""
    n = max(traj.num_turns, 1)
    out = [0.0] * n
    for name, w in zip(names, weights):
        r = get(name)(task, traj, ctx)
        if isinstance(r, (list, tuple)):
            for k, v in enumerate(list(r)[:n]):
                out[k] += w * float(v)
        else:
            out[-1] += w * float(r)
    return out


__all__ = ["REWARDS", "register", "get", "RewardContext", "rewards_to_turns"]
