"""The recommender model: an autoencoder over a user's rated items, trained with a multinomial likelihood.

A user is what they rated: the encoder maps their (L2-normalised) row of rated items to a dense vector, the
decoder scores every item from it (Mult-DAE, Liang et al. 2018, with one tanh layer). Unlike a per-user
embedding table, the model recommends for a user whose history is newer than the model (ratings since
training count at once) and for a user it never saw, from what they rated. Training and serving score the
whole catalogue in one matrix product; the loss is the softmax cross-entropy of a user's items against all
items, which with a catalogue of a few thousand items is cheaper than sampling negatives and ranks better
than a pairwise (BPR) loss. Input dropout is the denoising.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recommender.params import TrainingParams


class ItemAutoencoder(nn.Module):
    def __init__(self, n_items: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.encode = nn.Linear(n_items, dim)
        self.decode = nn.Linear(dim, n_items)
        self.drop = nn.Dropout(dropout)

    def forward(self, rated: torch.Tensor) -> torch.Tensor:
        """Scores (logits) of every item for each row of rated items (1.0 where rated): (batch, n_items)."""
        rated = nn.functional.normalize(rated, dim=1)
        return self.decode(torch.tanh(self.encode(self.drop(rated))))


def build_model(n_items: int, params: TrainingParams) -> ItemAutoencoder:
    return ItemAutoencoder(n_items, params.dim, params.dropout)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, rated: torch.Tensor, batch_size: int,
                generator: torch.Generator) -> float:
    """One pass over the users' rows in shuffled batches; returns the mean loss per user."""
    model.train()
    order = torch.randperm(len(rated), generator=generator).to(rated.device)
    total = 0.0
    for start in range(0, len(rated), batch_size):
        rows = rated[order[start:start + batch_size]]
        loss = -(torch.log_softmax(model(rows), dim=1) * rows).sum(dim=1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(rows)
    return total / max(len(rated), 1)


@torch.no_grad()
def score_rows(model: nn.Module, rated: np.ndarray, device: torch.device | str = "cpu",
               batch: int = 4096) -> np.ndarray:
    """Scores of every item for each row of rated items, float32 (users x items)."""
    model.eval()
    parts = [model(torch.as_tensor(rated[i:i + batch], dtype=torch.float32, device=device)).float().cpu().numpy()
             for i in range(0, len(rated), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, rated.shape[1]), dtype=np.float32)
