"""Shared prefix cache: a radix tree over token ids whose edges carry their KV blocks.

Inference-time techniques ask for the same prefixes over and over: the n
samples of a prompt, particles and beams forked from one partial answer,
several techniques reading the same problem, and every chat prompt's system
preamble. A request looks up its longest cached prefix here, copies that KV
into its slot, and computes only the rest. Finished sequences are inserted
too, so a later request that continues a partial completion (step-wise
search) finds prompt and completion already computed.

Memory is bounded: when the stored blocks exceed `byte_limit`, least recently
used leaves are evicted (a parent becomes evictable once its children are gone).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


class _Node:
    __slots__ = ("tokens", "kv", "children", "parent", "last_used")

    def __init__(self, tokens: tuple[int, ...], kv: torch.Tensor | None, parent: _Node | None):
        self.tokens = tokens  # the edge from the parent: these tokens, in order
        self.kv = kv  # [layers, 2, kv_heads, len(tokens), head_dim]
        self.children: dict[int, _Node] = {}
        self.parent = parent
        self.last_used = 0

    @property
    def nbytes(self) -> int:
        return 0 if self.kv is None else self.kv.numel() * self.kv.element_size()


@dataclass(frozen=True)
class PrefixMatch:
    """The cached KV of a prompt's longest stored prefix, as consecutive blocks."""

    length: int
    blocks: tuple[torch.Tensor, ...]  # each [layers, 2, kv_heads, n, head_dim]; n's sum to length


class PrefixCache:
    """Radix tree keyed by token ids, with LRU eviction under a byte limit."""

    def __init__(self, byte_limit: int):
        self.byte_limit = byte_limit
        self.root = _Node((), None, None)
        self.nbytes = 0
        self._clock = itertools.count(1)
        self.lookups = 0
        self.hit_tokens = 0
        self.evicted_bytes = 0
        # The engine thread matches and inserts; other threads may clear.
        self._lock = threading.RLock()

    def match(self, tokens: Sequence[int], limit: int | None = None) -> PrefixMatch:
        """Longest stored prefix of `tokens` (at most `limit` tokens); marks it recently used."""
        with self._lock:
            return self._match(tokens, limit)

    def _match(self, tokens: Sequence[int], limit: int | None) -> PrefixMatch:
        limit = len(tokens) if limit is None else min(limit, len(tokens))
        node, depth, blocks = self.root, 0, []
        now = next(self._clock)
        while depth < limit:
            child = node.children.get(tokens[depth])
            if child is None:
                break
            shared = _common_length(child.tokens, tokens, depth, limit)
            child.last_used = now
            blocks.append(child.kv if shared == len(child.tokens) else child.kv[:, :, :, :shared])
            depth += shared
            if shared < len(child.tokens):
                break
            node = child
        self.lookups += 1
        self.hit_tokens += depth
        return PrefixMatch(depth, tuple(blocks))

    def insert(self, tokens: Sequence[int], read_kv: Callable[[int, int], torch.Tensor]) -> int:
        """Store `tokens`; `read_kv(start, end)` supplies KV for positions not stored yet.

        Returns how many tokens were new. Evicts old entries if over the limit.
        """
        with self._lock:
            return self._insert(tokens, read_kv)

    def _insert(self, tokens: Sequence[int], read_kv: Callable[[int, int], torch.Tensor]) -> int:
        if self.byte_limit <= 0 or not tokens:
            return 0
        tokens = tuple(tokens)
        node, depth = self.root, 0
        now = next(self._clock)
        while depth < len(tokens):
            child = node.children.get(tokens[depth])
            if child is None:
                kv = read_kv(depth, len(tokens))
                if kv.numel() * kv.element_size() > self.byte_limit:
                    return 0  # larger than the whole cache: storing it would only evict everything
                leaf = _Node(tokens[depth:], kv, node)
                leaf.last_used = now
                node.children[tokens[depth]] = leaf
                self.nbytes += leaf.nbytes
                added = len(tokens) - depth
                self._evict(keep=leaf)
                return added
            shared = _common_length(child.tokens, tokens, depth, len(tokens))
            if shared < len(child.tokens):
                child = self._split(child, shared)
            child.last_used = now
            node, depth = child, depth + shared
        return 0

    def _split(self, node: _Node, at: int) -> _Node:
        """Cut `node`'s edge after `at` tokens; returns the new upper part."""
        assert node.parent is not None and node.kv is not None
        upper = _Node(node.tokens[:at], node.kv[:, :, :, :at].clone(), node.parent)
        upper.last_used = node.last_used
        node.parent.children[node.tokens[0]] = upper
        node.tokens = node.tokens[at:]
        node.kv = node.kv[:, :, :, at:].clone()  # own storage, so eviction really frees memory
        node.parent = upper
        upper.children[node.tokens[0]] = node
        return upper

    def _evict(self, keep: _Node | None = None) -> None:
        if self.nbytes <= self.byte_limit:
            return
        target = int(self.byte_limit * 0.9)  # evict a little extra, so not every insert scans
        leaves = [(n.last_used, id(n), n) for n in self._nodes() if not n.children and n is not keep]
        heapq.heapify(leaves)
        while leaves and self.nbytes > target:
            _, _, leaf = heapq.heappop(leaves)
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.tokens[0]]
            self.nbytes -= leaf.nbytes
            self.evicted_bytes += leaf.nbytes
            leaf.kv = None
            if parent is not self.root and not parent.children and parent is not keep:
                heapq.heappush(leaves, (parent.last_used, id(parent), parent))

    def _nodes(self):
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            yield node

    def clear(self) -> None:
        with self._lock:
            self.root = _Node((), None, None)
            self.nbytes = 0

    @property
    def stored_tokens(self) -> int:
        return sum(len(n.tokens) for n in self._nodes())


def _common_length(edge: tuple[int, ...], tokens: Sequence[int], start: int, end: int) -> int:
    """How many leading tokens of `edge` equal tokens[start:end]."""
    n = min(len(edge), end - start)
    i = 0
    while i < n and edge[i] == tokens[start + i]:
        i += 1
    return i
