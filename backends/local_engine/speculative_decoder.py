"""Speculative decoding for a lone sequence: draft several tokens, verify them in one forward.

On a CPU a decode step of a small model is bound by reading the weights, so a
forward over a handful of tokens costs little more than over one. When exactly
one sequence runs (batch 1: an interactive request, a long answer), the engine
hands its decode step here: a drafter proposes a tree of guesses, the target
scores every node in one `forward_tree` pass, and the accepted path becomes
part of the sequence — several tokens for one target forward.

Lossless by construction:
- deterministic drafts (prompt lookup, Token Recycling, a greedy draft model) are
  accepted by *matching*: at each node the target picks its own token — argmax,
  or a sample drawn with the very uniform plain decoding would have drawn for
  that token — and the walk continues only into the child that drafted it. The
  output is plain decoding's output, seed for seed;
- sampled drafts (a draft model under `acceptance: rejection`) are verified by
  rejection sampling: the output follows the target's distribution exactly,
  but a given seed yields a different sample than plain decoding.

With several sequences running the engine's batched step is used unchanged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.llama_runner import LlamaRunner
from orchestra.backends.local_engine.sampling import SamplingParams, choose_tokens
from orchestra.backends.local_engine.sequence import Sequence
from orchestra.kernels.draft_model import DraftModelDrafter
from orchestra.kernels.draft_tree import DraftTree, ancestor_mask
from orchestra.kernels.drafter import DraftSampling, Drafter
from orchestra.kernels.prompt_lookup import PromptLookupDrafter
from orchestra.kernels.rejection_sampling import processed_probs, speculative_chain
from orchestra.kernels.token_recycling import DEFAULT_WIDTHS, TokenRecyclingDrafter
from orchestra.kernels.verification import Verdict, accept_matching, compact_path

METHODS = ("prompt_lookup", "draft_model", "token_recycling")


@dataclass(frozen=True)
class SpeculativeConfig:
    """Which drafter, and its knobs (the recipe's `speculative:` block, validated there)."""

    method: str = "prompt_lookup"
    #: Most tokens one chain draft proposes (prompt lookup, draft model).
    draft_tokens: int = 8
    min_ngram: int = 1
    max_ngram: int = 3
    #: Draft model: the cheaper forward (`layer_skip`, `model`, or a registered one) and its options.
    draft: str = "layer_skip"
    draft_options: dict[str, Any] = field(default_factory=dict)
    adaptive: bool = True
    initial_draft_tokens: int = 4
    confidence: float = 0.0
    #: Token Recycling: top-k kept per token, and the static tree's shape.
    top_k: int = 8
    tree_widths: tuple[int, ...] = DEFAULT_WIDTHS
    tree_expand: int = 2
    #: `match` (seed-for-seed identical to plain decoding) or `rejection` (draft model samples its drafts).
    acceptance: str = "match"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"speculative method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.acceptance not in ("match", "rejection"):
            raise ValueError(f"acceptance must be 'match' or 'rejection', got {self.acceptance!r}")


def build_drafter(config: SpeculativeConfig, runner: LlamaRunner) -> Drafter:
    if config.method == "prompt_lookup":
        return PromptLookupDrafter(config.max_ngram, config.min_ngram, config.draft_tokens)
    if config.method == "token_recycling":
        vocab = runner.lm_head.weight.shape[0]
        return TokenRecyclingDrafter(vocab, config.top_k, config.tree_widths, config.tree_expand)
    from orchestra.backends.local_engine.draft_forwards import RunnerForward, build_draft_forward

    forward = RunnerForward(build_draft_forward(config.draft, runner, dict(config.draft_options)))
    return DraftModelDrafter(
        forward,
        max_draft_tokens=config.draft_tokens,
        initial_draft_tokens=min(config.initial_draft_tokens, config.draft_tokens),
        adaptive=config.adaptive,
        confidence=config.confidence,
        sample=config.acceptance == "rejection",
    )


@dataclass
class SpeculativeStats:
    rounds: int = 0
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    emitted_tokens: int = 0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per target forward (1.0 is plain decoding)."""
        return self.emitted_tokens / self.rounds if self.rounds else 0.0


class _Fixed:
    """A stand-in random stream that returns one given uniform (a node's draw)."""

    def __init__(self, value: float):
        self.value = value

    def random(self) -> float:
        return self.value


class SpeculativeDecoder:
    """Draft, verify, keep the accepted path: one round per engine step of a lone sequence."""

    def __init__(self, config: SpeculativeConfig, runner: LlamaRunner, drafter: Drafter | None = None):
        self.config = config
        self.runner = runner
        self.drafter = drafter or build_drafter(config, runner)
        self.stats = SpeculativeStats()

    @staticmethod
    def handles(params: SamplingParams) -> bool:
        """Requests that want per-position extras (top logprobs, hidden states) decode plainly."""
        return not params.top_logprobs and not params.hidden_states

    @property
    def max_nodes(self) -> int:
        """Most nodes a draft tree has: the KV positions a round writes past the sequence's end."""
        return self.drafter.max_nodes

    def advance(
        self, sequence: Sequence, pool: KVPool, eos_ids: frozenset[int], context_length: int
    ) -> tuple[list[int], list[float]]:
        """Tokens (and raw log-probabilities) that follow `sequence`, at least one. The pool must
        hold `max_nodes` positions past the sequence's KV (the scheduler reserves them). The
        sequence is not modified: the scheduler appends the tokens and checks stops."""
        params = sequence.params
        context = sequence.context
        start = sequence.kv_length  # the root (last token) goes here
        rejection = self.drafter.samples and params.temperature > 0 and self.config.acceptance == "rejection"
        sampling = DraftSampling(params.temperature, params.top_k, params.top_p) if rejection else None
        tree = self.drafter.propose(context, sampling, sequence.stream)
        room = min(sequence.limit - len(sequence.tokens), context_length - start) - 1
        tree = _limit_depth(tree, max(room, 0))
        device = self.runner.device
        depths = tree.depths()
        logits = self.runner.forward_tree(
            pool,
            sequence.slot,
            start,
            torch.tensor(tree.tokens, device=device),
            torch.tensor(depths, device=device) + start,
            ancestor_mask(tree.parents, device),
        )
        early = [i for i, depth in enumerate(depths) if len(sequence.tokens) + depth < params.min_tokens]
        if early:
            eos = torch.tensor(sorted(eos_ids), device=logits.device)
            logits[torch.tensor(early, device=logits.device)[:, None], eos[None, :]] = float("-inf")
        if rejection and tree.draft_probs is not None and len(tree) > 1:
            verdict = self._verify_by_rejection(tree, logits, params, sequence.stream)
        else:
            verdict = self._verify_by_matching(tree, depths, logits, params, sequence.stream)
        compact_path(pool.storage, sequence.slot, start, verdict.path)
        self.drafter.observe(tree, logits, verdict)
        rows = torch.tensor(verdict.path, device=logits.device)
        chosen = torch.tensor(verdict.tokens, device=logits.device)
        picked = logits[rows]
        logprobs = (picked.gather(1, chosen[:, None]).squeeze(1) - torch.logsumexp(picked, dim=-1)).tolist()
        self.stats.rounds += 1
        self.stats.drafted_tokens += len(tree) - 1
        self.stats.accepted_tokens += verdict.accepted
        self.stats.emitted_tokens += len(verdict.tokens)
        return list(verdict.tokens), logprobs

    def _verify_by_matching(
        self, tree: DraftTree, depths: list[int], logits: torch.Tensor, params: SamplingParams, stream: random.Random
    ) -> Verdict:
        if params.temperature > 0:
            # The uniforms plain decoding would draw for the next tokens, one per depth; the stream
            # is then advanced by exactly the tokens emitted, as if they had been decoded one by one.
            state = stream.getstate()
            draws = [stream.random() for _ in range(max(depths) + 1)]
            streams = [_Fixed(draws[depth]) for depth in depths]
        else:
            streams = [_Fixed(0.0)] * len(depths)
        picks, _ = choose_tokens(logits.clone(), [params] * len(depths), streams)
        verdict = accept_matching(tree, picks)
        if params.temperature > 0:
            stream.setstate(state)
            for _ in verdict.tokens:
                stream.random()
        return verdict

    def _verify_by_rejection(
        self, tree: DraftTree, logits: torch.Tensor, params: SamplingParams, stream: random.Random
    ) -> Verdict:
        k = len(tree) - 1
        target = processed_probs(logits, params.temperature, params.top_k, params.top_p)
        drafted = torch.tensor(tree.tokens[1:], device=logits.device)
        accept_uniforms = torch.tensor([stream.random() for _ in range(k)])
        residual_uniforms = torch.tensor([stream.random() for _ in range(k + 1)])
        kept, emitted = speculative_chain(target, tree.draft_probs.to(target.device), drafted, accept_uniforms, residual_uniforms)
        return Verdict(tuple(range(kept + 1)), tuple(emitted))

    def finish(self) -> None:
        self.drafter.finish()


def _limit_depth(tree: DraftTree, depth: int) -> DraftTree:
    """Drop nodes deeper than `depth` (the sequence's remaining room), keeping parents first."""
    depths = tree.depths()
    if max(depths) <= depth:
        return tree
    keep = [i for i, d in enumerate(depths) if d <= depth]
    index = {old: new for new, old in enumerate(keep)}
    parents = tuple(-1 if tree.parents[i] < 0 else index[tree.parents[i]] for i in keep)
    probs = tree.draft_probs[: depth] if tree.draft_probs is not None and tree.is_chain else None
    return DraftTree(tuple(tree.tokens[i] for i in keep), parents, probs)
