"""Area under the ROC curve, for reporting how well a reward model ranks steps.

Computed with the rank (Mann-Whitney U) formula rather than by tracing the curve:
AUC is the probability that a random positive scores above a random negative,
ties counting one half. No scikit-learn needed.
"""

from __future__ import annotations

from collections.abc import Sequence


def roc_auc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """P(score of a random positive > score of a random negative), ties counted 1/2.

    Raises ValueError when there is no positive or no negative: AUC is undefined then,
    and a silent 0.5 would read as "no better than chance".
    """
    if len(scores) != len(positives):
        raise ValueError(f"{len(scores)} scores but {len(positives)} labels")
    n_pos = sum(1 for p in positives if p)
    n_neg = len(positives) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes; got {n_pos} positives and {n_neg} negatives")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):  # tied scores share the mean of the ranks they span (1-based)
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    rank_sum = sum(r for r, p in zip(ranks, positives) if p)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
