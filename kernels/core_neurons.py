"""Core neurons in the spirit of CoreInfer: which MLP neurons a prompt keeps using.

CoreInfer's observation: the neurons that fire most strongly while a model reads
a prompt are, largely, the ones it keeps using while it answers that prompt. So
after prefill a sequence can decode with MLPs cut down to those neurons — the
weights are sliced once per sequence, and every decode step then runs smaller
*dense* matrix products (no per-token index work, which is what makes it pay
off on CPUs too).

Selection here is two-stage, as in the paper: each prompt token votes for its
`keep` most active neurons (by |silu(gate) * up|, the input of the down
projection); the neurons with the most votes are the sequence's core set, ties
broken by mean activation magnitude.
"""

from __future__ import annotations

import torch


def neurons_kept(width: int, sparsity: float) -> int:
    """How many of `width` neurons survive at `sparsity` (at least one)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return max(1, round(width * (1.0 - sparsity)))


def neuron_votes(activations: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token votes and summed magnitudes for activations [tokens, neurons].

    Returns (votes [neurons], magnitude [neurons]): how many tokens had each neuron
    among their `keep` strongest, and the neuron's summed |activation|. Both add up
    over chunks of a prompt, so long prompts can be counted piecewise.
    """
    magnitude = activations.detach().abs().float()
    votes = torch.zeros(magnitude.shape[-1], dtype=torch.float32, device=magnitude.device)
    if keep < magnitude.shape[-1]:
        top = magnitude.topk(keep, dim=-1).indices
        votes.index_add_(0, top.reshape(-1), torch.ones(top.numel(), device=magnitude.device))
    else:
        votes += magnitude.shape[0]
    return votes, magnitude.sum(dim=0)


def select_core_neurons(votes: torch.Tensor, magnitude: torch.Tensor, keep: int) -> torch.Tensor:
    """The `keep` neurons with the most votes (ties: larger summed magnitude), sorted ascending.

    Sorted indices keep the sliced weights in the model's own neuron order, so slicing
    with every neuron reproduces the original matrices exactly.
    """
    if keep >= votes.shape[0]:
        return torch.arange(votes.shape[0], device=votes.device)
    tie_break = magnitude / (magnitude.max() + 1.0)  # in [0, 1): never outweighs one vote
    return (votes + tie_break).topk(keep).indices.sort().values


def union_of(sets: list[torch.Tensor], width: int) -> torch.Tensor:
    """Sorted union of several neuron index sets (a batch decoding together)."""
    if len(sets) == 1:
        return sets[0]
    member = torch.zeros(width, dtype=torch.bool, device=sets[0].device)
    for indices in sets:
        member[indices] = True
    return member.nonzero().squeeze(1)
