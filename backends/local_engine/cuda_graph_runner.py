"""Static-shape decode for GPUs, replayed as CUDA graphs.

Batch-1 decode of a ~100M-parameter model on a GPU is bound by kernel launch
overhead, not by arithmetic: a step is ~400 small kernels, each a few
microseconds of work and a few of launching. A CUDA graph records the whole
step once and replays it with one launch. Graphs need static shapes and fixed
addresses, so:

- the KV pool is allocated once at its static size (`pool_shape`) and does not
  move while the batch fits it; a step over a pool that left its static
  allocation (a context longer than `pool_shape` allows) runs eagerly, and a
  step captured over an allocation that is gone is captured afresh
  (`KVPool.generation`), never replayed;
- the batch is padded up to a bucket (1, 2, 4, 8, ... rows) — padding rows
  write into free slots past the running batch, which nobody reads;
- attention spans a bucketed width (256, 512, 1024, ... positions) with a mask
  built on the device from the positions, so no value is read on the host.

One graph is captured per (batch bucket, width bucket) on first use, all
sharing one memory pool. Every runner owns its graphs, their buffers and that
memory pool: a copy (the `layer_skip` and `sparse` drafts are shallow copies of
the target's runner) starts with none, so a draft never replays the target's
step, or the target the draft's. A runner with an MLP plugin (sparse decode)
runs eagerly: the plugin reads values on the host. Speculative verification
(`forward_tree`) is captured the same way, per (bucket of 1, 2, 4, ... nodes,
width bucket). The prefill stays eager: its shapes vary per call and it runs
once per prompt, not once per token.

`use_graphs=False` runs the same static-shape step eagerly, which is how the
padding and bucketing are tested on machines without a GPU.
"""

from __future__ import annotations

import weakref

import torch

from orchestra.backends.local_engine.config import EngineConfig
from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.llama_runner import LlamaRunner

_WIDTH_STEP = 256
#: The largest draft tree verified at static shapes (larger ones run eagerly).
_MOST_NODES = 64


class CudaGraphRunner(LlamaRunner):
    """`LlamaRunner` whose decode steps run at bucketed static shapes (as CUDA graphs on a GPU)."""

    def __init__(self, model: torch.nn.Module, config: EngineConfig, use_graphs: bool | None = None):
        super().__init__(model)
        self.use_graphs = self.device.type == "cuda" if use_graphs is None else use_graphs
        element = self.embed.weight.element_size()
        bytes_per_token = self.num_layers * 2 * self.kv_heads * self.head_dim * element
        slots = config.max_batch_size
        length = min(self.max_positions, config.kv_cache_bytes // (bytes_per_token * slots))
        length = max(_WIDTH_STEP, length // _WIDTH_STEP * _WIDTH_STEP)
        #: The static KV pool shape (graphs capture its address); longer contexts run eagerly.
        self.pool_shape = (slots, length)
        self._extend_rotary(length)
        self._graphs: dict[tuple[int, int], _CapturedStep] = {}
        self._memory = torch.cuda.graph_pool_handle() if self.use_graphs else None

    def __copy__(self) -> CudaGraphRunner:
        """A shallow copy (same weights) with no captured steps and its own graph memory."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin._graphs = {}
        twin._memory = torch.cuda.graph_pool_handle() if self.use_graphs else None
        return twin

    def buckets(self, rows: int, width: int) -> tuple[int, int]:
        """The static (batch, attention width) a step of `rows` rows up to position `width` runs at."""
        batch = 1
        while batch < rows:
            batch *= 2
        batch = min(batch, self.pool_shape[0])
        span = _WIDTH_STEP
        while span < width:
            span *= 2
        return batch, min(span, self.pool_shape[1])

    def decode(
        self, pool: KVPool, tokens: torch.Tensor, positions: torch.Tensor, want_hidden: bool = False,
        highest: int | None = None,
    ):
        count = tokens.shape[0]
        highest = int(positions.max()) if highest is None else highest  # picks the bucket
        batch, width = self.buckets(count, highest + 1)
        static = pool.fixed and self.mlp_plugin is None
        if not static or batch < count or width <= highest or batch > pool.slots or width > pool.length:
            return super().decode(pool, tokens, positions, want_hidden, highest)
        key = (batch, width)
        step = self._graphs.get(key)
        if step is None or not step.over(pool):
            step = self._graphs[key] = _CapturedStep(self, pool, batch, width)
        logits, hidden = step.run(tokens, positions, self._memory if self.use_graphs else None)
        return logits[:count], (hidden[:count] if want_hidden else None)


    def forward_tree(
        self, pool: KVPool, slot: int, start: int, tokens: torch.Tensor, positions: torch.Tensor, tree_mask: torch.Tensor
    ) -> torch.Tensor:
        """Speculative verification at static shapes: the tree padded to a bucket of nodes
        (1, 2, 4, ... up to `_MOST_NODES`), attention over a bucketed width."""
        count = tokens.shape[0]
        nodes = 1
        while nodes < count:
            nodes *= 2
        _, width = self.buckets(1, start + nodes)
        static = pool.fixed and self.mlp_plugin is None and nodes <= _MOST_NODES
        if not static or width < start + nodes or width > pool.length or slot >= pool.slots:
            return super().forward_tree(pool, slot, start, tokens, positions, tree_mask)
        key = ("tree", nodes, width, slot)
        step = self._graphs.get(key)
        if step is None or not step.over(pool):
            step = self._graphs[key] = _CapturedTree(self, pool, nodes, width, slot)
        return step.run_tree(start, tokens, positions, tree_mask, self._memory if self.use_graphs else None)[:count]


class _CapturedStep:
    """Static input/output buffers for one (batch, width) bucket, and its graph."""

    def __init__(self, runner: CudaGraphRunner, pool: KVPool, batch: int, width: int):
        self.runner, self.batch, self.width = runner, batch, width
        # Held weakly: a released draft's pool must not live on in its runner's steps.
        self._pool, self._generation = weakref.ref(pool), pool.generation
        # The rotary tables as they are now: the runner replaces (never edits) them when it
        # extends them, and a captured graph keeps reading these addresses.
        self.cos, self.sin = runner._cos, runner._sin
        device = runner.device
        self.tokens = torch.zeros(batch, dtype=torch.long, device=device)
        # Padding rows write position 0 of slots past the running batch: free rows, never read.
        self.positions = torch.zeros(batch, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None
        self.hidden: torch.Tensor | None = None

    def over(self, pool: KVPool) -> bool:
        """Whether this step was built over `pool`'s current static allocation."""
        return self._pool() is pool and pool.generation == self._generation and pool.fixed

    def _forward(self):
        cos = self.cos[self.positions[:, None]]
        sin = self.sin[self.positions[:, None]]
        return self.runner.decode_over(self._pool(), self.tokens, self.positions, self.width, cos, sin, True)

    def capture(self, memory) -> None:
        """Record the step. The warm-up runs execute it for real on the inputs already in
        place, which is harmless: they write the same KV the replay writes."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: lazy initialisation must not happen during capture
                self._forward()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=memory):
            self.logits, self.hidden = self._forward()

    def run(self, tokens: torch.Tensor, positions: torch.Tensor, memory=None):
        """The step for these rows; captured on first use when `memory` (a graph pool) is given.

        The inputs go into the static buffers before any capture: a warm-up on stale
        buffers would write KV at stale positions of live slots.
        """
        count = tokens.shape[0]
        self.tokens.zero_()
        self.positions.zero_()
        self.tokens[:count] = tokens
        self.positions[:count] = positions
        if self.graph is None and memory is not None:
            self.capture(memory)
        if self.graph is None:
            return self._forward()
        self.graph.replay()
        return self.logits, self.hidden


class _CapturedTree(_CapturedStep):
    """Static buffers for verifying a draft tree of up to `nodes` nodes in one slot, and its graph.

    Node i's KV goes to position `start + i`; padding nodes (past the tree) write past it,
    where nothing attends until a later step overwrites them, and see only the prefix and
    themselves. The mask is built on the device from `start`, so no value is read on the host.
    """

    def __init__(self, runner: CudaGraphRunner, pool: KVPool, nodes: int, width: int, slot: int):
        super().__init__(runner, pool, nodes, width)
        self.slot = slot
        device = runner.device
        self.start = torch.zeros((), dtype=torch.long, device=device)
        self.tree = torch.zeros((nodes, nodes), dtype=torch.bool, device=device)
        self._alone = torch.eye(nodes, dtype=torch.bool, device=device)  # padding nodes see themselves

    def _forward(self):
        runner, nodes, slot = self.runner, self.batch, self.slot
        pool = self._pool()
        cos, sin = self.cos[self.positions][None], self.sin[self.positions][None]
        columns = torch.arange(self.width, device=self.tokens.device)
        relative = columns - self.start
        in_tree = (relative >= 0) & (relative < nodes)
        seen = (columns < self.start)[None, :] | (in_tree[None, :] & self.tree[:, relative.clamp(0, nodes - 1)])
        mask = seen[None, None]
        written = self.start + torch.arange(nodes, device=self.tokens.device)
        h = runner.embed(self.tokens[None, :])
        for index, layer in enumerate(runner.layers):
            q, k, v = runner._attention_inputs(layer, layer.input_norm(h), cos, sin)
            keys, values = pool.keys(index), pool.values(index)
            keys[slot, :, written] = k[0]
            values[slot, :, written] = v[0]
            out = torch.nn.functional.scaled_dot_product_attention(
                q, keys[slot : slot + 1, :, : self.width], values[slot : slot + 1, :, : self.width],
                attn_mask=mask, scale=runner.scaling, enable_gqa=runner.group > 1,
            )
            attended = out.transpose(1, 2).reshape(1, nodes, runner.heads * runner.head_dim)
            h = runner._mlp(layer, h + torch.nn.functional.linear(attended, layer.o))
        return runner._finish(h[0], False)

    def run_tree(self, start: int, tokens: torch.Tensor, positions: torch.Tensor, tree_mask: torch.Tensor, memory=None):
        """Logits `[nodes, vocab]` (the caller keeps the tree's rows); captured on first use with `memory`."""
        count = tokens.shape[0]
        self.start.fill_(start)
        self.tokens.zero_()
        self.tokens[:count] = tokens
        # Padding nodes sit one past the last real node's position; each sees itself.
        self.positions.fill_(start)
        self.positions[:count] = positions
        self.tree.copy_(self._alone)
        self.tree[:count, :count] = tree_mask
        if self.graph is None and memory is not None:
            self.capture(memory)
        if self.graph is None:
            return self._forward()[0]
        self.graph.replay()
        return self.logits
