"""Speculative decoding without a model: tree layout, verification, rejection sampling, drafters."""

from __future__ import annotations

import math
import random

import pytest
import torch

from orchestra.backends.local_engine.speculative.draft_model import DraftModelDrafter
from orchestra.backends.local_engine.speculative.draft_tree import DraftTree, ancestor_mask, depth_positions
from orchestra.backends.local_engine.speculative.drafter import DraftSampling
from orchestra.backends.local_engine.speculative.prompt_lookup import PromptLookupDrafter
from orchestra.backends.local_engine.speculative.token_recycling import TokenRecyclingDrafter, tree_template
from orchestra.backends.local_engine.speculative.verification import Verdict, accept_matching, compact_path
from orchestra.kernels.rejection_sampling import inverse_cdf, processed_probs, speculative_chain, verify_rows

# A tree:      0
#            /   \
#           1     2
#          / \     \
#         3   4     5
#         |
#         6
TREE = DraftTree(tokens=(10, 11, 12, 13, 14, 15, 16), parents=(-1, 0, 0, 1, 1, 2, 3))


def test_tree_structure_mask_and_positions():
    assert TREE.depths() == [0, 1, 1, 2, 2, 2, 3]
    assert TREE.path_to(6) == [0, 1, 3, 6]
    assert not TREE.is_chain and DraftTree.chain(1, [2, 3]).is_chain
    mask = ancestor_mask(TREE.parents)
    for node in range(len(TREE)):
        assert set(mask[node].nonzero().flatten().tolist()) == set(TREE.path_to(node))
    assert depth_positions(TREE, 100).tolist() == [100, 101, 101, 102, 102, 102, 103]


def test_tree_rejects_bad_parents():
    with pytest.raises(ValueError):
        DraftTree((1, 2), (-1, 1))
    with pytest.raises(ValueError):
        DraftTree((1, 2), (0, 0))


def test_accept_matching_walks_the_targets_own_picks():
    # Target picks 11 after the root, 13 after node 1, 99 after node 3: path 0-1-3, then a correction.
    picks = [11, 13, 0, 99, 0, 0, 0]
    verdict = accept_matching(TREE, picks)
    assert verdict == Verdict(path=(0, 1, 3), tokens=(11, 13, 99)) and verdict.accepted == 2
    # Full branch accepted: the bonus token after the leaf comes out too.
    verdict = accept_matching(TREE, [11, 13, 0, 16, 0, 0, 42])
    assert verdict.path == (0, 1, 3, 6) and verdict.tokens == (11, 13, 16, 42)
    # Nothing matches: one token, the target's own.
    assert accept_matching(TREE, [7, 0, 0, 0, 0, 0, 0]).tokens == (7,)


def test_compact_path_moves_accepted_kv_into_place():
    storage = torch.arange(2 * 2 * 3 * 1 * 12 * 1, dtype=torch.float32).reshape(2, 2, 3, 1, 12, 1)
    before = storage.clone()
    compact_path(storage, slot=1, start=4, path=(0, 2, 5))
    assert torch.equal(storage[:, :, 1, :, 4:7], before[:, :, 1, :, [4, 6, 9]])
    assert torch.equal(storage[:, :, 1, :, :4], before[:, :, 1, :, :4])
    assert torch.equal(storage[:, :, [0, 2]], before[:, :, [0, 2]])
    compact_path(storage, slot=1, start=4, path=(0, 1))  # a chain prefix: nothing moves
    assert torch.equal(storage[:, :, 1, :, 4:6], before[:, :, 1, :, [4, 6]])


def _chi_square_limit(df: int, z: float = 3.719) -> float:
    """Upper 1e-4 quantile of chi-square(df), Wilson-Hilferty approximation."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rejection_sampler_output_follows_the_target(seed):
    """100k independent trials per seed, random p and q: the kept-or-resampled token is distributed as p,
    and a draft survives with probability 1 - TV(p, q)."""
    generator = torch.Generator().manual_seed(seed)
    vocab, trials = 12, 100_000
    p = torch.softmax(torch.randn(vocab, generator=generator) * 1.5, dim=-1)
    q = torch.softmax(torch.randn(vocab, generator=generator) * 1.5, dim=-1)
    q[seed % vocab] = 0.0  # a token the draft never proposes must still come out at rate p
    q = q / q.sum()
    drafted = inverse_cdf(q.expand(trials, vocab), torch.rand(trials, generator=generator))
    accepted, replacement = verify_rows(
        p.expand(trials, vocab), q.expand(trials, vocab), drafted,
        torch.rand(trials, generator=generator), torch.rand(trials, generator=generator),
    )
    output = torch.where(accepted, drafted, replacement)
    observed = torch.bincount(output, minlength=vocab).double()
    expected = p.double() * trials
    chi_square = float(((observed - expected) ** 2 / expected).sum())
    assert chi_square < _chi_square_limit(vocab - 1), chi_square
    rate = float(accepted.double().mean())
    overlap = float(torch.minimum(p, q).sum())  # = 1 - TV(p, q)
    assert abs(rate - overlap) < 4 * math.sqrt(overlap * (1 - overlap) / trials)
    # And the test can fail: plain draft tokens (no correction) are distributed as q, not p.
    wrong = torch.bincount(drafted, minlength=vocab).double()
    assert float(((wrong - expected) ** 2 / expected).sum()) > _chi_square_limit(vocab - 1)


def test_speculative_chain_first_token_follows_the_target():
    generator = torch.Generator().manual_seed(5)
    vocab, k, trials = 6, 3, 4000
    p = torch.softmax(torch.randn(k + 1, vocab, generator=generator), dim=-1)
    q = torch.softmax(torch.randn(k, vocab, generator=generator), dim=-1)
    counts = torch.zeros(vocab)
    lengths = []
    for _ in range(trials):
        drafted = inverse_cdf(q, torch.rand(k, generator=generator))
        kept, emitted = speculative_chain(p, q, drafted, torch.rand(k, generator=generator), torch.rand(k + 1, generator=generator))
        assert len(emitted) == kept + 1 and emitted[:kept] == drafted[:kept].tolist()
        counts[emitted[0]] += 1
        lengths.append(kept)
    expected = p[0].double() * trials
    assert float(((counts.double() - expected) ** 2 / expected).sum()) < _chi_square_limit(vocab - 1)
    assert 0 < sum(lengths) < k * trials


def test_identical_distributions_accept_everything():
    p = torch.softmax(torch.randn(4, 50), dim=-1)
    drafted = inverse_cdf(p, torch.rand(4))
    accepted, _ = verify_rows(p, p, drafted, torch.rand(4) * 0.999, torch.rand(4))
    assert bool(accepted.all())


def test_processed_probs_cut_to_top_k_and_top_p():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    assert processed_probs(logits, 1.0, top_k=2)[0, 2:].sum() == 0
    nucleus = processed_probs(logits, 1.0, top_p=0.8)
    assert nucleus[0, :2].sum() > 0.99 and nucleus[0, 3:].sum() == 0  # 0.66 + 0.24 >= 0.8 after two tokens
    assert torch.allclose(processed_probs(logits, 0.5), torch.softmax(logits / 0.5, dim=-1))


def test_prompt_lookup_copies_after_the_longest_latest_match():
    drafter = PromptLookupDrafter(max_ngram=3, min_ngram=1, draft_tokens=3)
    context = [1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 1, 2, 3]
    # "1 2 3" occurred at the start, followed by 4 5 9; the shorter "2 3" also occurs later (7 8) but loses.
    assert drafter.lookup(context) == [4, 5, 9]
    assert drafter.lookup([5, 6, 7]) == []  # nothing repeats
    tree = drafter.propose(context, None, random.Random(0))
    assert tree.tokens == (3, 4, 5, 9) and tree.is_chain
    with pytest.raises(ValueError):
        PromptLookupDrafter(max_ngram=1, min_ngram=2)


def test_token_recycling_learns_and_drafts_a_pruned_tree():
    template = tree_template((3, 2, 1), expand=2)
    assert len(template) == 3 + 2 * 2 + 2 * 1 and template[0] == (0, 0)
    drafter = TokenRecyclingDrafter(vocab_size=20, top_k=3, widths=(3, 2, 1), expand=2)
    assert len(drafter.propose([4], None, random.Random(0))) == 1  # nothing known yet: no guesses
    logits = torch.full((1, 20), -5.0)
    logits[0, [7, 8, 9]] = torch.tensor([3.0, 2.0, 1.0])
    drafter.observe(DraftTree.chain(4, []), logits, Verdict((0,), (7,)))
    tree = drafter.propose([1, 4], None, random.Random(0))
    assert tree.tokens == (4, 7, 8, 9) and tree.parents == (-1, 0, 0, 0)  # 7, 8, 9 not known yet: pruned below


class _ScriptedForward:
    """An incremental forward whose next-token logits favour `(last token + 1) % vocab`."""

    def __init__(self, vocab: int = 10):
        self.vocab, self.fed = vocab, []

    def extend(self, tokens, start):
        self.fed.append((list(tokens), start))
        logits = torch.zeros(self.vocab)
        logits[(tokens[-1] + 1) % self.vocab] = 4.0
        return logits

    def release(self):
        self.fed.clear()


def test_draft_model_drafts_catches_up_and_adapts_its_length():
    forward = _ScriptedForward()
    drafter = DraftModelDrafter(forward, max_draft_tokens=6, initial_draft_tokens=2, sample=False)
    tree = drafter.propose([3, 4], None, random.Random(0))
    assert tree.tokens == (4, 5, 6) and forward.fed == [([3, 4], 0), ([5], 2)]
    drafter.observe(tree, torch.zeros(3, 10), Verdict((0, 1, 2), (5, 6, 7)))
    assert drafter.draft_tokens == 4  # everything kept: +2
    forward.fed.clear()
    tree = drafter.propose([3, 4, 5, 6, 7], None, random.Random(0))
    assert forward.fed[0] == ([6, 7], 3)  # only what the target accepted since, from the common prefix
    drafter.observe(tree, torch.zeros(5, 10), Verdict((0,), (1,)))
    assert drafter.draft_tokens == 3  # a rejection: -1
    drafter.finish()
    assert drafter.draft_tokens == 2


def test_draft_model_confidence_stop_and_sampled_drafts():
    drafter = DraftModelDrafter(_ScriptedForward(), max_draft_tokens=5, initial_draft_tokens=5, confidence=0.9, sample=True)
    # softmax of one 4.0 among nine zeros gives the favourite ~0.86 < 0.9: stop after the first token.
    assert len(drafter.propose([1], None, random.Random(0))) == 2
    drafter = DraftModelDrafter(_ScriptedForward(), max_draft_tokens=3, initial_draft_tokens=3, sample=True)
    tree = drafter.propose([1], DraftSampling(temperature=1.0), random.Random(0))
    assert tree.draft_probs is not None and tree.draft_probs.shape == (3, 10)
    assert torch.allclose(tree.draft_probs.sum(dim=-1), torch.ones(3))
