"""Rollouts: multi-turn tool loop from the cached prefix, environment tokens masked, and the tokens
trained are the tokens sampled (positions and log-probs agree with a fresh full forward)."""

import numpy as np
import pytest

from jaxtool.data.formats import HermesFormat, Reply
from jaxtool.data.schema import Conversation, Message, ToolCall
from jaxtool.envs.toy import KeyValueEnv
from jaxtool.rl.rollout import rollout, tool_suffix_text
from jaxtool.rl.step import policy_logps, trajectory_batch
from jaxtool.sample.generate import Sampling


class AlwaysListFormat(HermesFormat):
    """Hermes rendering; parsing calls `kv_list()` whatever the text (a random tiny model never writes
    a valid call: this drives the multi-turn path deterministically)."""

    def parse(self, text):
        return Reply(content=None, tool_calls=(ToolCall("kv_list", {}),))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from jaxtool.api import load_model

    return load_model(tiny_model_dir)


def _prompt(tok, fmt, q):
    return tok.encode(fmt.prompt(Conversation((Message("user", q),))), add_special_tokens=False)


_CACHE = {}


def _multi_turn(tiny):
    if "trajs" not in _CACHE:
        tok, fmt = tiny.tokenizer, AlwaysListFormat()
        prompts = [_prompt(tok, fmt, "list the keys"), _prompt(tok, fmt, "what is stored? tell me")]
        # a third of the vocabulary ends a turn, so random turns are short and every row takes 3 turns
        stops = list(range(0, len(tok), 3))
        _CACHE["trajs"] = rollout(tiny.params, tiny.config, prompts, fmt=fmt, tokenizer=tok, group_size=2,
                                  make_env=lambda p: _env(), sampling=Sampling(temperature=1.0), stop_ids=stops,
                                  max_turn_tokens=16, max_response_tokens=400, max_turns=3, seed=1, run=tiny.run,
                                  length_multiple=64)
    return _CACHE["trajs"]


def test_multi_turn_rollout_masks_env_tokens_and_trains_sampled_tokens(tiny):
    tok, fmt = tiny.tokenizer, AlwaysListFormat()
    trajs = _multi_turn(tiny)
    assert len(trajs) == 4 and [t.prompt_index for t in trajs] == [0, 0, 1, 1]
    suffix = tok.encode(tool_suffix_text(fmt, fmt.parse(""), [_env().step([ToolCall("kv_list", {})])[0]]),
                        add_special_tokens=False)
    for t in trajs:
        assert t.finish == "max_turns" and t.num_turns == 3, (t.finish, t.num_turns)
        assert len(t.results) == 2
        # the environment tokens are exactly the rendered tool message, between the turns, unmasked
        ids, s = np.array(t.ids), np.array(t.sampled)
        env_runs = _runs(s == 0)
        assert len(env_runs) == 2
        for a, b in env_runs:
            assert ids[a:b].tolist() == suffix
            assert set(np.array(t.turn_ids)[a:b]) == {-1}
        text = tok.decode(ids[env_runs[0][0]:env_runs[0][1]])
        assert "<tool_response>" in text and '["a", "b"]' in text and text.endswith("<|im_start|>assistant\n")
        assert sorted(set(t.turn_ids) - {-1}) == [0, 1, 2]
    batch = trajectory_batch(trajs, pad_id=tok.pad_token_id)
    m = np.asarray(batch.loss_mask) > 0
    for b, t in enumerate(trajs):
        # trained targets are the sampled ids, in order, and nothing else
        sampled = [i for i, s in zip(t.ids, t.sampled) if s]
        assert np.asarray(batch.targets)[b][m[b]].tolist() == sampled
    # the sampler's log-probs (decoded from the cache across tool feeds) equal a fresh full forward of
    # the trained rows: the cache continuation is exact and the trained tokens are the sampled ones
    lp = np.asarray(policy_logps(tiny.params, None, batch, cfg=tiny.config, run=tiny.run, use_lora=False))
    for b, t in enumerate(trajs):
        want = [x for x, s in zip(t.logps, t.sampled) if s]
        np.testing.assert_allclose(lp[b][m[b]], want, atol=2e-4)


def test_retokenised_text_would_differ(tiny):
    """Why the ids are kept: decoding the sampled ids and encoding the text again does not give them
    back (the bug this design avoids), while the batch keeps exactly the sampled ids."""
    tok, trajs = tiny.tokenizer, _multi_turn(tiny)
    differs = sum(tok.encode(tok.decode(t.ids), add_special_tokens=False) != t.ids for t in trajs)
    assert differs >= 1
    batch = trajectory_batch(trajs, pad_id=tok.pad_token_id)
    for b, t in enumerate(trajs):
        row = np.asarray(batch.inputs)[b].tolist()
        assert row[:len(t.prompt_ids) + len(t.ids) - 1] == (t.prompt_ids + t.ids)[:-1]


def _env():
    e = KeyValueEnv()
    e.reset({"initial": {"a": "1", "b": "2"}})
    return e


def _runs(flags):
    out, start = [], None
    for i, f in enumerate(list(flags) + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append((start, i))
            start = None
    return out


class BrokenEnv(KeyValueEnv):
    def step(self, calls):
        raise RuntimeError("simulator crashed")


def test_environment_error_ends_the_trajectory_and_is_recorded(tiny):
    tok, fmt = tiny.tokenizer, AlwaysListFormat()
    prompts = [_prompt(tok, fmt, "list the keys"), _prompt(tok, fmt, "what is stored? tell me")]
    stops = list(range(0, len(tok), 3))
    trajs = rollout(tiny.params, tiny.config, prompts, fmt=fmt, tokenizer=tok, group_size=2,
                    make_env=lambda p: BrokenEnv(), sampling=Sampling(temperature=1.0), stop_ids=stops,
                    max_turn_tokens=16, max_response_tokens=400, max_turns=3, seed=1, run=tiny.run,
                    length_multiple=64)
    for t in trajs:
        if t.finished_turn:
            assert t.finish == "env_error" and "simulator crashed" in t.error and t.num_turns == 1
        else:
            assert t.finish == "length"
        assert all(s == 1 for s in t.sampled)   # nothing was appended after the failure
    assert any(t.finish == "env_error" for t in trajs)
