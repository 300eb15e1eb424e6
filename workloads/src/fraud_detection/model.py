"""The fraud scorer: a small MLP whose input scaling travels inside the module.

Keeping the mean/std as buffers means a registered model takes raw features, so serving needs no
separate preprocessing artifact that could drift from what was trained.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fraud_detection.params import TrainingParams


class FraudMLP(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_features: int, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def set_scaling(self, x: np.ndarray) -> None:
        """Standardise with the training rows' mean and std. A feature constant in training (a terminal risk
        before any label came back) is only centred: divided by its near-zero std, the first non-zero value
        served would reach the network a million times too large."""
        std = x.std(axis=0)
        self.mean.copy_(torch.as_tensor(x.mean(axis=0), dtype=torch.float32))
        self.std.copy_(torch.as_tensor(np.where(std < 1e-6, 1.0, std), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits per row: training uses BCEWithLogits; `Scorer` turns them into probabilities."""
        return self.net((x - self.mean) / self.std).squeeze(-1)


class Scorer(nn.Module):
    """What gets registered and served: raw features in, fraud probability out."""

    def __init__(self, model: FraudMLP) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x))


def build_model(n_features: int, params: TrainingParams) -> FraudMLP:
    return FraudMLP(n_features, hidden=params.hidden, dropout=params.dropout)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, generator: torch.Generator) -> float:
    """One pass over (x, y) in shuffled mini-batches; fraud is rare, so positives are up-weighted."""
    model.train()
    positives = float(y.sum())
    pos_weight = torch.tensor((len(y) - positives) / max(positives, 1.0), device=x.device).clamp(max=50.0)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    order = torch.randperm(len(x), generator=generator).to(x.device)
    total = 0.0
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        optimizer.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
    return total / max(len(x), 1)


@torch.no_grad()
def predict_proba(
    model: nn.Module, x: np.ndarray, device: torch.device | str = "cpu", batch: int = 65536
) -> np.ndarray:
    model.eval()
    out = [torch.sigmoid(model(torch.as_tensor(x[i:i + batch], dtype=torch.float32, device=device))).cpu().numpy()
           for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
