"""The search loop over any environment (mctx-style: the environment is passed in).

An environment has `step_tokens` (int) and two jittable methods:
    env.init(key) -> (env_state, NodeEval[B])                        the root's O, C, terminal
    env.expand(env_state, tree, leaf[B], new_ids[B, W], active[B], key) -> (env_state, ChildBatch)
`DecodeEnv` (env.py) is the policy decoding steps; the tests run the loop on a scripted one; a tool
environment (steps that call tools) can plug in here with the same signature."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtool.sample.mcts.config import MCTSConfig
from jaxtool.sample.mcts.tree import ChildBatch, _get, _init_tree, add_children, backup, select

def search_core(env, mcts: MCTSConfig, batch: int, key: jax.Array):
    """The search loop over any environment (see the module docstring); returns (tree, env_state).

    Jittable; `iterations` rounds of select → expand → evaluate → backup in `lax.while_loop`."""
    W, T = mcts.width, int(env.step_tokens)
    k_init, k_loop = jax.random.split(key)
    env_state, root = env.init(k_init)
    tree = _init_tree(batch, mcts, T, root)

    def skip(env_state, tree, leaf, new_ids, active, k):
        z = jnp.zeros((batch, W), jnp.float32)
        return env_state, ChildBatch(z, z, z, z, jnp.zeros((batch, W), bool),
                                     jnp.full((batch, W, T), -1, jnp.int32), jnp.zeros((batch, W), jnp.int32))

    def body(carry):
        i, tree, env_state, key = carry
        key, k = jax.random.split(key)
        leaf, path = select(tree, mcts)
        active = ~_get(tree.expanded, leaf) & ~_get(tree.terminal, leaf) & (_get(tree.depth, leaf) < mcts.depth)
        new_ids = tree.num_nodes[:, None] + jnp.arange(W, dtype=jnp.int32)[None, :]
        env_state, ch = jax.lax.cond(jnp.any(active), env.expand, skip, env_state, tree, leaf, new_ids, active, k)
        ch = ch._replace(prior=ch.prior.astype(jnp.float32), logprob=ch.logprob.astype(jnp.float32),
                         O=ch.O.astype(jnp.float32), C=ch.C.astype(jnp.float32), terminal=ch.terminal.astype(bool),
                         tokens=ch.tokens.astype(jnp.int32), length=ch.length.astype(jnp.int32))
        tree = add_children(tree, leaf, new_ids, ch, active, mcts)
        tree = backup(tree, path, mcts)
        return i + 1, tree, env_state, key

    _, tree, env_state, _ = jax.lax.while_loop(lambda c: c[0] < mcts.iterations, body,
                                               (jnp.int32(0), tree, env_state, k_loop))
    return tree, env_state

