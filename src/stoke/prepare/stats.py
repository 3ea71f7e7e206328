"""Column statistics computed once, at pack time: what the manifest records about a table's columns.

For a numeric column: how many values it has (``count``), how many are missing (``missing``), and the
``mean``, ``std`` (population, ``ddof=0``, as numpy and scikit-learn's scalers use), ``min`` and ``max`` of
the values present. For a categorical column: how many rows hold each category. Everything is vectorised
over numpy arrays, and the results are plain JSON-able numbers, so they can go straight into the manifest.

Not for: normalising at load time (``stoke.ops.Standardize`` and ``MinMaxScale`` fit on the training
split of a packed dataset), or filling missing values (``stoke.prepare.impute``).

Example:
    >>> import numpy as np
    >>> numeric_stats(np.array([1.0, np.nan, 3.0]))
    {'count': 2, 'missing': 1, 'mean': 2.0, 'std': 1.0, 'min': 1.0, 'max': 3.0}
    >>> category_counts(np.array([0, 2, 2, -1]), ["a", "b", "c"])
    {'a': 1, 'b': 0, 'c': 2}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def numeric_stats(values: np.ndarray, missing: np.ndarray | None = None) -> dict[str, Any]:
    """count, missing, mean, std, min, max of a numeric column; missing values are NaN or marked in ``missing``.

    With no value present, ``mean``, ``std``, ``min`` and ``max`` are None (JSON null), never NaN.
    """
    values = np.asarray(values)
    absent = np.isnan(values) if values.dtype.kind == "f" else np.zeros(values.shape, bool)
    if missing is not None:
        absent = absent | np.asarray(missing, dtype=bool)
    present = values[~absent].astype(np.float64)
    stats: dict[str, Any] = {"count": int(present.size), "missing": int(absent.sum())}
    if present.size == 0:
        return {**stats, "mean": None, "std": None, "min": None, "max": None}
    as_number = int if values.dtype.kind in "iub" else float
    return {
        **stats,
        "mean": float(present.mean()),
        "std": float(present.std()),
        "min": as_number(values[~absent].min()),
        "max": as_number(values[~absent].max()),
    }


def category_counts(codes: np.ndarray, vocabulary: Sequence[str]) -> dict[str, int]:
    """Rows per category, in vocabulary order; ``codes`` index ``vocabulary``, negative codes are missing."""
    codes = np.asarray(codes, dtype=np.int64)
    counts = np.bincount(codes[codes >= 0], minlength=len(vocabulary))
    return {name: int(count) for name, count in zip(vocabulary, counts)}
