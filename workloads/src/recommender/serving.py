"""What the recommender registers and serves: one exported module from a user id to their top items.

`RecommenderScorer` carries everything a recommendation needs as tensors (the user and item vocabularies,
each known user's rated items, the items' popularity) beside the trained autoencoder, so the registered
model is one `torch.export` program loaded without unpickling, and serving does no lookup of its own: a
batch of user ids in, each user's `MAX_K` best items with their scores out, in one vectorised pass over the
whole catalogue. A user the model does not know gets the most popular items, flagged as the fallback.

Scores are probabilities: the softmax of the autoencoder's logits over the catalogue (the chance that the
user's next rating is the item), or an unknown user's popularity share. Each returned item also comes with its
popularity percentile (1.0: the most rated item), which serving records per answer so the canary can compare
how popular the two versions' recommendations are (`RecommenderWorkload.answers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

MAX_K = 100
EXCLUDED = -1.0  # the score of an item left out as already rated: below every probability


class RecommenderScorer(nn.Module):
    user_ids: torch.Tensor
    rated: torch.Tensor
    item_ids: torch.Tensor
    popular: torch.Tensor
    percentile: torch.Tensor

    def __init__(self, model: nn.Module, user_ids: np.ndarray, rated: np.ndarray, item_ids: np.ndarray) -> None:
        super().__init__()
        self.model = model.eval()
        order = np.argsort(user_ids)
        self.register_buffer("user_ids", torch.as_tensor(np.asarray(user_ids)[order], dtype=torch.int64))
        self.register_buffer("rated", torch.as_tensor(np.asarray(rated)[order], dtype=torch.float32))
        self.register_buffer("item_ids", torch.as_tensor(item_ids, dtype=torch.int64))
        counts = self.rated.sum(dim=0)
        self.register_buffer("popular", counts / counts.sum().clamp(min=1.0))
        self.register_buffer("percentile", popularity_percentile(counts.numpy()))
        self.k = min(MAX_K, len(item_ids))

    def forward(self, user_id: torch.Tensor, exclude_seen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 torch.Tensor, torch.Tensor]:
        """(items, scores, known, popularity): each user's `k` best item ids and scores, best first, whether the
        user is known (False: the items are the popularity fallback) and each item's popularity percentile. An
        item excluded as seen scores -1 and sorts last: a user who rated nearly everything gets fewer than `k`
        items once those are dropped."""
        row = torch.searchsorted(self.user_ids, user_id).clamp(max=self.user_ids.shape[0] - 1)
        known = self.user_ids[row] == user_id
        rated = self.rated[row] * known.unsqueeze(1)
        personal = torch.softmax(self.model(rated), dim=1)
        scores = torch.where(known.unsqueeze(1), personal, self.popular.expand_as(personal))
        seen = exclude_seen.unsqueeze(1) & (rated > 0)
        top = torch.topk(scores.masked_fill(seen, EXCLUDED), self.k, dim=1)
        return self.item_ids[top.indices], top.values, known, self.percentile[top.indices]


def popularity_percentile(counts: np.ndarray) -> torch.Tensor:
    """Each item's share of items rated less often than it (ties share their lowest rank): 0 for the least rated,
    (n-1)/n for the most."""
    order = np.sort(counts)
    return torch.as_tensor(np.searchsorted(order, counts, side="left") / max(len(counts), 1), dtype=torch.float32)


def build_scorer(model: nn.Module, prepared: Mapping[str, Any]) -> RecommenderScorer:
    """The scorer over every rating the data step saw (`prepared["history"]`): what each user has rated."""
    return RecommenderScorer(model, prepared["user_ids"], prepared["history"], prepared["item_ids"])


def export(scorer: RecommenderScorer) -> Any:
    """The scorer as a `torch.export` program whose batch size is free (what the registry would hold)."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    example = (scorer.user_ids[:2].clone(), torch.ones(2, dtype=torch.bool))
    return torch.export.export(scorer, example, dynamic_shapes=({0: batch}, {0: batch}))
