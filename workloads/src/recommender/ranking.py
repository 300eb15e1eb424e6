"""Top-k ranking metrics over a users x items score matrix: recall@k, NDCG@k and catalogue coverage.

Items a user has already rated (`seen`) are never recommended to them, as serving's `exclude_seen` does.
Only users with at least one relevant item count; recall@k divides by min(relevant, k) so a perfect list
scores 1 whatever the user's number of relevant items (the normalisation RecBole and most papers use).
"""

from __future__ import annotations

import numpy as np

K = 10


def top_k(scores: np.ndarray, seen: np.ndarray | None, k: int) -> np.ndarray:
    """Item columns of each row's k best scores, best first (ties broken by column, so deterministic)."""
    masked = np.where(seen > 0, -np.inf, scores) if seen is not None else scores
    k = min(k, masked.shape[1])
    part = np.argpartition(-masked, k - 1, axis=1)[:, :k]
    order = np.lexsort((part, -np.take_along_axis(masked, part, 1)), axis=1)
    return np.take_along_axis(part, order, 1)


def ranking_metrics(scores: np.ndarray, seen: np.ndarray | None, relevant: np.ndarray, k: int = K) -> dict[str, float]:
    """`recall_at_10`, `ndcg_at_10` (mean over users with a relevant item) and `coverage_at_10` (share of the
    catalogue recommended to anyone), for k=10; other k name themselves."""
    users = np.flatnonzero(relevant.sum(axis=1) > 0)
    if len(users) == 0:
        raise ValueError("no user has a relevant item: the evaluation period is empty")
    top = top_k(scores[users], None if seen is None else seen[users], k)
    hits = np.take_along_axis(relevant[users], top, 1) > 0
    n_relevant = (relevant[users] > 0).sum(axis=1)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)[np.minimum(n_relevant, k) - 1]
    return {f"recall_at_{k}": float((hits.sum(axis=1) / np.minimum(n_relevant, k)).mean()),
            f"ndcg_at_{k}": float(((hits * discount).sum(axis=1) / ideal).mean()),
            f"coverage_at_{k}": float(len(np.unique(top)) / scores.shape[1])}


def popularity(fit: np.ndarray) -> np.ndarray:
    """Each item's number of fit-period ratings: the baseline, and serving's answer for an unknown user."""
    return fit.sum(axis=0).astype(np.float32)
