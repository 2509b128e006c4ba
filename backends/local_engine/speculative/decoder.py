"""The speculative decoding loop: draft, verify in one forward, keep the accepted path.

One round per engine step of a lone sequence (the scheduler reserved KV room
for the largest draft tree behind it):

1. the drafter proposes a tree of guesses rooted at the sequence's last token;
2. the target scores every node in one `forward_tree` pass (each node sees the
   prefix and its own ancestors);
3. the verdict — by matching the target's own picks, or by rejection sampling
   for sampled drafts — names the accepted path; its KV is moved into place,
   the drafter learns from the logits, and the path's tokens go back to the
   engine: several tokens for one target forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.options import SpeculativeOptions
from orchestra.backends.local_engine.sampling import SamplingParams
from orchestra.backends.local_engine.sequence import Sequence
from orchestra.backends.local_engine.speculative.draft_forwards import DraftTarget, RunnerForward, build_draft_forward
from orchestra.backends.local_engine.speculative.draft_model import DraftModelDrafter
from orchestra.backends.local_engine.speculative.draft_tree import DraftTree, ancestor_mask, depth_positions
from orchestra.backends.local_engine.speculative.drafter import DraftSampling, Drafter
from orchestra.backends.local_engine.speculative.prompt_lookup import PromptLookupDrafter
from orchestra.backends.local_engine.speculative.token_recycling import TokenRecyclingDrafter
from orchestra.backends.local_engine.speculative.verification import compact_path, verify_by_matching, verify_by_rejection

def build_drafter(options: SpeculativeOptions, target: DraftTarget) -> Drafter:
    """The drafter `options.method` names, with its knobs."""
    if options.method == "prompt_lookup":
        return PromptLookupDrafter(options.max_ngram, options.min_ngram, options.draft_tokens)
    if options.method == "token_recycling":
        vocab = target.runner.lm_head.weight.shape[0]
        return TokenRecyclingDrafter(vocab, options.top_k, options.tree_widths, options.tree_expand)
    forward = RunnerForward(build_draft_forward(options.draft, target, options.draft_options))
    return DraftModelDrafter(
        forward,
        max_draft_tokens=options.draft_tokens,
        initial_draft_tokens=min(options.initial_draft_tokens, options.draft_tokens),
        adaptive=options.adaptive,
        confidence=options.confidence,
        sample=options.acceptance == "rejection",
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


class SpeculativeDecoder:
    """Draft, verify, keep the accepted path: one round per engine step of a lone sequence."""

    def __init__(self, options: SpeculativeOptions, target: DraftTarget, drafter: Drafter | None = None):
        self.options = options
        self.runner = target.runner
        self.drafter = drafter or build_drafter(options, target)
        self.stats = SpeculativeStats()

    @staticmethod
    def handles(params: SamplingParams) -> bool:
        """Requests that want per-position extras (top logprobs, hidden states, a confidence
        stop) or a thinking budget (it replaces tokens one at a time) decode plainly."""
        return (
            not params.top_logprobs and not params.hidden_states and params.confidence_stop is None
            and params.thinking is None
        )

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
        rejection = self.drafter.samples and params.temperature > 0 and self.options.acceptance == "rejection"
        sampling = DraftSampling(params.temperature, params.top_k, params.top_p) if rejection else None
        tree = self.drafter.propose(context, sampling, sequence.stream)
        room = min(sequence.limit - len(sequence.tokens), context_length - start) - 1
        tree = _limit_depth(tree, max(room, 0))
        device = self.runner.device
        logits = self.runner.forward_tree(
            pool,
            sequence.slot,
            start,
            torch.tensor(tree.tokens, device=device),
            depth_positions(tree, start, device),
            ancestor_mask(tree.parents, device),
        )
        early = [i for i, depth in enumerate(tree.depths()) if len(sequence.tokens) + depth < params.min_tokens]
        if early:
            eos = torch.tensor(sorted(eos_ids), device=logits.device)
            logits[torch.tensor(early, device=logits.device)[:, None], eos[None, :]] = float("-inf")
        if rejection and tree.draft_probs is not None and len(tree) > 1:
            verdict = verify_by_rejection(tree, logits, params, sequence.stream)
        else:
            verdict = verify_by_matching(tree, logits, params, sequence.stream)
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
