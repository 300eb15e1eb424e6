"""The population stability index: the one formula the router's drift gauges, the register step's
reference and the canary's score comparison all use, so their numbers mean the same thing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PSI_EPSILON = 1e-4  # floor for an empty bin's share: PSI stays finite when one side has no rows in a bin


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Population stability index between two histograms over the same bins (counts or shares):
    sum over bins of (a - e) * ln(a / e), shares floored at PSI_EPSILON. 0 when either side is empty."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"histograms over different bins: {e.shape} vs {a.shape}")
    total_e, total_a = e.sum(), a.sum()
    if total_e <= 0 or total_a <= 0:
        return 0.0
    share_e = np.maximum(e / total_e, PSI_EPSILON)
    share_a = np.maximum(a / total_a, PSI_EPSILON)
    return float(np.sum((share_a - share_e) * np.log(share_a / share_e)))
