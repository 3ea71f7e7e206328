"""Weighted order: each epoch draws its samples with replacement, in proportion to per-sample weights.

For class imbalance (``balance_by="label"`` gives every class the same expected share) or importance
sampling (``weights=``). Like every order it is a pure function of (seed, epoch), so a weighted epoch
resumes and splits across ranks exactly like a shuffled one: the ranks read disjoint parts of the same
drawn sequence. Sampling is with replacement (a rare class is seen several times per epoch), so
"exactly once" here means each *draw* is delivered once.

Algorithm: numpy's ``Generator.choice`` with probabilities (inverse-CDF sampling: a cumulative sum and a
binary search per draw) from a Philox generator keyed by (seed, epoch); memory is one float64 and one
int64 per sample.

Example:
    >>> order = WeightedOrder(np.array([0.0, 1.0, 3.0]), seed=0)
    >>> drawn = order.indices(0)
    >>> len(drawn), 0 in drawn.tolist(), drawn.tolist() == order.indices(0).tolist()
    (3, False, True)
    >>> class_balance(np.array([0, 0, 0, 1])).round(3).tolist()
    [0.667, 0.667, 0.667, 2.0]
"""

from __future__ import annotations

import numpy as np

from stoke.errors import ConfigError
from stoke.order.base import Order
from stoke.rng import epoch_generator


class WeightedOrder(Order):
    """``num_samples`` draws per epoch (default: the dataset size), with probability proportional to ``weights``."""

    def __init__(self, weights: np.ndarray, seed: int, num_samples: int | None = None) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        super().__init__(len(weights))
        if weights.ndim != 1 or not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
            raise ConfigError("weights must be one finite, non-negative number per sample, not all zero")
        self.probabilities = weights / weights.sum()
        self.seed = seed
        self.num_samples = len(weights) if num_samples is None else int(num_samples)

    @property
    def length(self) -> int:
        return self.num_samples

    def indices(self, epoch: int) -> np.ndarray:
        generator = epoch_generator(self.seed, epoch, stream=1)
        return generator.choice(self.size, size=self.num_samples, p=self.probabilities).astype(np.int64)


def class_balance(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights that give every class the same total weight (mean weight 1)."""
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return len(labels) / (len(counts) * counts[inverse].astype(np.float64))
