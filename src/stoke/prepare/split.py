"""Deterministic train/validation/test splits of sample indices, stratified by label when asked.

Algorithm: with ``labels``, each class's indices are shuffled by a Philox generator keyed by (seed,
class) and cut at the cumulative fractions, with the largest-remainder rule deciding rounding so that
the split sizes add up; without labels the whole index range is cut the same way. The result depends
only on (labels, fractions, seed): not on the order classes are met in, nor on the platform.

Example:
    >>> import numpy as np
    >>> parts = split_indices(10, {"train": 0.8, "val": 0.2}, seed=0, labels=np.array([0, 1] * 5))
    >>> {name: len(part) for name, part in parts.items()}
    {'train': 8, 'val': 2}
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from stoke.rng import epoch_generator


def split_indices(
    size: int, fractions: Mapping[str, float], seed: int = 0, labels: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Disjoint, sorted index arrays covering ``range(size)``, one per named fraction (which must sum to 1)."""
    names = list(fractions)
    shares = np.array([float(fractions[name]) for name in names])
    if not names or np.any(shares < 0) or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {dict(fractions)}")
    groups: list[np.ndarray]
    if labels is None:
        groups = [np.arange(size, dtype=np.int64)]
    else:
        labels = np.asarray(labels)
        if labels.shape != (size,):
            raise ValueError(f"labels must have shape ({size},), got {labels.shape}")
        groups = [np.flatnonzero(labels == value) for value in np.unique(labels)]
    parts: dict[str, list[np.ndarray]] = {name: [np.empty(0, np.int64)] for name in names}
    for number, group in enumerate(groups):
        shuffled = epoch_generator(seed, number, stream=0x5B17).permutation(group)
        for name, chunk in zip(names, np.split(shuffled, np.cumsum(_counts(len(group), shares))[:-1])):
            parts[name].append(chunk)
    return {name: np.sort(np.concatenate(chunks)).astype(np.int64) for name, chunks in parts.items()}


def _counts(total: int, shares: np.ndarray) -> np.ndarray:
    """Integer counts proportional to ``shares`` that add up to ``total`` (largest remainder)."""
    exact = shares * total
    counts = np.floor(exact).astype(np.int64)
    remainder = total - counts.sum()
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1
    return counts
