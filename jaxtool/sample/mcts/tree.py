"""The fixed-capacity search trees [B, M] and the pure array functions of the search: selection
(Eq. 5, PUCT), writing an expansion's children (Eq. 6 rewards) and the backup (Eq. 8–9). No model
here: the environment (see `search.py`) supplies the children's evaluations."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxtool.sample.mcts.config import MCTSConfig

class NodeEval(NamedTuple):
    """Evaluation of one node per query: outcome O, self-evaluation C, terminal flag ([B] each)."""
    O: jax.Array
    C: jax.Array
    terminal: jax.Array


class ChildBatch(NamedTuple):
    """What an expansion returns for `width` children of each query's leaf ([B, W] unless noted)."""
    prior: jax.Array      # p(a|s)
    logprob: jax.Array    # sum of the step's token log-probs
    O: jax.Array
    C: jax.Array
    terminal: jax.Array
    tokens: jax.Array     # [B, W, T] step token ids (-1 past `length`)
    length: jax.Array     # [B, W]


class Tree(NamedTuple):
    """Fixed-capacity trees [B, M] (M = MCTSConfig.capacity); node 0 is the root; slots at or past
    num_nodes are unused. Q is Q(parent, a) of the edge into the node; r is r(parent, a)."""
    parent: jax.Array     # [B, M] int32, -1 for the root / unused
    children: jax.Array   # [B, M, W] int32, -1 = none
    N: jax.Array          # [B, M] float32
    Q: jax.Array
    V: jax.Array
    R: jax.Array
    O: jax.Array
    C: jax.Array
    r: jax.Array
    prior: jax.Array
    logprob: jax.Array
    depth: jax.Array      # int32
    terminal: jax.Array   # bool
    expanded: jax.Array   # bool
    tokens: jax.Array     # [B, M, T] int32
    length: jax.Array     # [B, M] int32 step tokens
    resp_len: jax.Array   # [B, M] int32 response tokens up to and including the node's step
    num_nodes: jax.Array  # [B] int32


def _get(a, node):
    """a[b, node[b]] for every row b (node clipped into range)."""
    return a[jnp.arange(a.shape[0]), jnp.clip(node, 0, a.shape[1] - 1)]


def _set(a, node, value, mask):
    """a[b, node[b]] = value[b] where mask[b] (other rows untouched)."""
    idx = jnp.where(mask, node, a.shape[1])
    return a.at[jnp.arange(a.shape[0]), idx].set(value, mode="drop")


def _init_tree(B: int, mcts: MCTSConfig, T: int, root: NodeEval) -> Tree:
    M, W = mcts.capacity, mcts.width
    f = lambda v=0.0: jnp.full((B, M), v, jnp.float32)  # noqa: E731
    R0 = (root.O + root.C).astype(jnp.float32)
    return Tree(
        parent=jnp.full((B, M), -1, jnp.int32), children=jnp.full((B, M, W), -1, jnp.int32),
        N=f().at[:, 0].set(1.0), Q=f(), V=f(), R=f().at[:, 0].set(R0), O=f().at[:, 0].set(root.O),
        C=f().at[:, 0].set(root.C), r=f(), prior=f().at[:, 0].set(1.0), logprob=f(),
        depth=jnp.zeros((B, M), jnp.int32), terminal=jnp.zeros((B, M), bool).at[:, 0].set(root.terminal),
        expanded=jnp.zeros((B, M), bool), tokens=jnp.full((B, M, T), -1, jnp.int32),
        length=jnp.zeros((B, M), jnp.int32), resp_len=jnp.zeros((B, M), jnp.int32),
        num_nodes=jnp.ones((B,), jnp.int32))


def select(tree: Tree, mcts: MCTSConfig) -> tuple[jax.Array, jax.Array]:
    """Eq. 5 from the root down: (leaf [B], path [B, depth + 1] of node ids, -1 past the leaf)."""
    B = tree.N.shape[0]
    b = jnp.arange(B)[:, None]
    node = jnp.zeros((B,), jnp.int32)
    path = [node]
    for _ in range(mcts.depth):
        go = _get(tree.expanded, node) & ~_get(tree.terminal, node)
        ch = _get(tree.children, node)                                   # [B, W]
        chs = jnp.clip(ch, 0)
        score = tree.Q[b, chs] + mcts.c_puct * tree.prior[b, chs] * jnp.sqrt(_get(tree.N, node))[:, None] / (
            1.0 + tree.N[b, chs])
        score = jnp.where(ch >= 0, score, -jnp.inf)
        best = jnp.take_along_axis(ch, jnp.argmax(score, axis=1)[:, None], axis=1)[:, 0]
        node = jnp.where(go, best, node)
        path.append(jnp.where(go, best, -1))
    return node, jnp.stack(path, axis=1)


def add_children(tree: Tree, leaf: jax.Array, new_ids: jax.Array, ch: ChildBatch, active: jax.Array,
                 mcts: MCTSConfig) -> Tree:
    """Write the expansion's children (Eq. 6 rewards; N = 1, V = 0, Q = r) under `leaf`."""
    B, W = new_ids.shape
    M = tree.N.shape[1]
    ids = jnp.where(active[:, None], new_ids, M)
    b = jnp.broadcast_to(jnp.arange(B)[:, None], (B, W))
    R = (ch.O + ch.C).astype(jnp.float32)
    r = R - _get(tree.R, leaf)[:, None]

    def put(a, v):
        return a.at[b, ids].set(v.astype(a.dtype), mode="drop")

    return tree._replace(
        parent=put(tree.parent, jnp.broadcast_to(leaf[:, None], (B, W))),
        children=_set(tree.children, leaf, new_ids, active),
        N=put(tree.N, jnp.ones((B, W))), V=put(tree.V, jnp.zeros((B, W))), Q=put(tree.Q, r), r=put(tree.r, r),
        R=put(tree.R, R), O=put(tree.O, ch.O), C=put(tree.C, ch.C), prior=put(tree.prior, ch.prior),
        logprob=put(tree.logprob, ch.logprob),
        depth=put(tree.depth, jnp.broadcast_to(_get(tree.depth, leaf)[:, None] + 1, (B, W))),
        terminal=put(tree.terminal, ch.terminal), expanded=_set(tree.expanded, leaf, jnp.ones((B,), bool), active),
        tokens=tree.tokens.at[b, ids].set(ch.tokens.astype(jnp.int32), mode="drop"),
        length=put(tree.length, ch.length),
        resp_len=put(tree.resp_len, _get(tree.resp_len, leaf)[:, None] + ch.length),
        num_nodes=tree.num_nodes + W * active.astype(jnp.int32))


def backup(tree: Tree, path: jax.Array, mcts: MCTSConfig) -> Tree:
    """Eq. 8–9 from the leaf up to the root along `path` [B, depth + 1]."""
    B = path.shape[0]
    b = jnp.arange(B)[:, None]
    N, Q, V = tree.N, tree.Q, tree.V
    for d in reversed(range(path.shape[1])):
        node = path[:, d]
        valid = node >= 0
        ch = _get(tree.children, node)
        okc = (ch >= 0) & _get(tree.expanded, node)[:, None]
        chs = jnp.clip(ch, 0)
        n, q = jnp.where(okc, N[b, chs], 0.0), jnp.where(okc, Q[b, chs], 0.0)
        den = jnp.sum(n, axis=1)
        v = jnp.where(den > 0, jnp.sum(n * q, axis=1) / jnp.where(den > 0, den, 1.0), _get(V, node))
        V = _set(V, node, v, valid)
        Q = _set(Q, node, _get(tree.r, node) + mcts.discount * v, valid)
        N = _set(N, node, _get(N, node) + 1.0, valid)
    return tree._replace(N=N, Q=Q, V=V)

