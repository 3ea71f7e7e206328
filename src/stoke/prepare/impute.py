"""Missing-value policies and the values that fill the gaps, decided once, at pack time.

The default (:data:`DEFAULT_POLICY`, ``"median"``) keeps every row: numbers get their column's median,
and through :func:`check_policy_for` categories get their most frequent value and text an empty string.
A policy is one of ``"drop"`` (the row is quarantined with code ``missing_value``, never silently lost),
``"mean"``, ``"median"``, ``"mode"`` (the most frequent value; the smallest on ties, as scikit-learn's
``SimpleImputer`` picks), ``("constant", value)``, or ``"knn"``: scikit-learn's ``KNNImputer`` over the
numeric columns. Before measuring distances, ``knn`` z-scores every feature column with its own mean
and std (a column in large units would otherwise decide every neighbour alone), and it undoes the
scaling afterwards.

Not for: reading tables (``stoke.sources.table``) or normalising at load time (``stoke.ops.scale``).

Example:
    >>> import numpy as np
    >>> parse_policy("median"), parse_policy(("constant", 0))
    (('median', None), ('constant', 0))
    >>> filled, value = fill_numeric(np.array([1.0, np.nan, 5.0]), parse_policy("mean"))
    >>> filled.tolist(), value
    ([1.0, 3.0, 5.0], 3.0)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from stoke.errors import ConfigError
from stoke.extras import require

Policy = Union[str, tuple[str, Any]]  # noqa: UP007 - a runtime alias; X | Y of a str and a tuple is fine too
POLICIES = ("drop", "mean", "median", "mode", "constant", "knn")
NUMERIC_ONLY = frozenset({"mean", "median", "knn"})
DEFAULT_POLICY = "median"  # robust to outliers, and it keeps every row
DEFAULT_NEIGHBORS = 5
# How an error spells a constant, right from the command line and from Python alike.
CONSTANT_SPELLING = "a constant (constant=VALUE on the command line, ('constant', value) in Python)"


def parse_policy(policy: Any, where: str = "the missing-value policy") -> tuple[str, Any]:
    """``(kind, constant)`` from ``"mean"``, ``("constant", 0)``, ``"constant=0"`` (the CLI's spelling), ..."""
    if isinstance(policy, str) and policy.startswith("constant="):
        text = policy.split("=", 1)[1]
        return "constant", _number_or_text(text)
    if isinstance(policy, (tuple, list)) and len(policy) == 2 and policy[0] == "constant":
        value = policy[1]
        if isinstance(value, bool) or not isinstance(value, (str, numbers.Real)):
            raise ConfigError(f"{where} fills with {value!r}; a constant must be a number or a string")
        if isinstance(value, numbers.Real) and not math.isfinite(value):
            raise ConfigError(f"{where} fills with {value!r}; a constant must be a finite number")
        return "constant", value.item() if isinstance(value, np.generic) else value
    if isinstance(policy, str) and policy in POLICIES and policy != "constant":
        return policy, None
    raise ConfigError(f"{where} is {policy!r}; use drop, mean, median, mode, knn or {CONSTANT_SPELLING}")


def policy_to_json(policy: tuple[str, Any]) -> Any:
    """How the manifest records a policy: ``"mean"`` or ``["constant", 0]``."""
    kind, constant = policy
    return [kind, constant] if kind == "constant" else kind


def fill_numeric(values: np.ndarray, policy: tuple[str, Any]) -> tuple[np.ndarray, float | int]:
    """A copy of ``values`` (float, NaN where missing) with the gaps filled, and the value used.

    ``drop`` and ``knn`` are not single values: :func:`impute_knn` does ``knn``, the caller drops rows.
    """
    kind, constant = policy
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    if kind == "constant":
        if not isinstance(constant, numbers.Real):
            raise ConfigError(f"the constant {constant!r} cannot fill a numeric column; give a number")
        value: float | int = constant
    elif present.size == 0:
        raise ConfigError(f"a column with no values at all cannot be filled with its {kind}; use {CONSTANT_SPELLING}")
    elif kind == "mean":
        value = float(present.mean())
    elif kind == "median":
        value = float(np.median(present))
    elif kind == "mode":
        value = float(most_frequent(present))
    else:
        raise ConfigError(f"fill_numeric does not do {kind!r}; give mean, median, mode or a constant")
    return np.where(np.isnan(values), float(value), values), value


def most_frequent(values: np.ndarray) -> Any:
    """The most frequent of ``values`` (no missing among them); the smallest on ties."""
    distinct, counts = np.unique(values, return_counts=True)
    return distinct[int(np.argmax(counts))].item()


def impute_knn(matrix: np.ndarray, neighbors: int = DEFAULT_NEIGHBORS) -> np.ndarray:
    """``matrix`` (rows x numeric columns, NaN where missing) with every gap filled by KNNImputer.

    Each column is z-scored with its observed mean and std first (std 0 counts as 1) and restored after,
    so distances weigh the columns equally. Every column must have at least one value.
    """
    require("sklearn.impute", extra="tables", what="the knn missing-value policy")
    from sklearn.impute import KNNImputer

    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ConfigError(f"impute_knn takes a 2-D matrix, got shape {matrix.shape}")
    if matrix.size == 0 or not np.isnan(matrix).any():
        return matrix.copy()
    empty = np.flatnonzero(np.isnan(matrix).all(axis=0))
    if empty.size:
        raise ConfigError(
            f"column {int(empty[0])} has no values at all, so no neighbour can fill it; use {CONSTANT_SPELLING}"
        )
    center, scale = column_scaling(matrix)
    scaled = (matrix - center) / scale
    filled = KNNImputer(n_neighbors=min(neighbors, matrix.shape[0])).fit_transform(scaled)
    return np.where(np.isnan(matrix), filled * scale + center, matrix)


def column_scaling(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column NaN-aware mean and std (a std of 0 becomes 1, so constant columns stay finite)."""
    center = np.nanmean(matrix, axis=0)
    scale = np.nanstd(matrix, axis=0)
    return center, np.where(scale > 0, scale, 1.0)


def check_policy_for(kind_of_column: str, policy: tuple[str, Any], column: str, explicit: bool) -> tuple[str, Any]:
    """The policy a column of kind ``numeric``/``categorical``/``text`` really uses, or a ConfigError.

    A numeric-only default (``mean``, ``median``, ``knn``) falls back to ``mode`` for categorical columns;
    text keeps ``""`` for a missing value unless its own policy says ``drop`` or a constant.
    """
    kind, constant = policy
    if kind_of_column == "numeric":
        return policy
    if kind_of_column == "text":
        if explicit and kind == "drop":
            return policy
        if explicit and kind == "constant":
            return "constant", str(constant)
        if explicit:
            raise ConfigError(
                f"column {column!r} holds text; its missing values can be dropped or filled with {CONSTANT_SPELLING}"
            )
        return "constant", ""
    if kind in NUMERIC_ONLY:
        if explicit:
            raise ConfigError(
                f"column {column!r} is categorical, which has no {kind}; use drop, mode or {CONSTANT_SPELLING}"
            )
        return "mode", None
    return (kind, str(constant)) if kind == "constant" else policy


def describe_fill(kind_of_column: str, policy: tuple[str, Any]) -> str:
    """How a summary names what filled a ``numeric``/``categorical``/``text`` column's gaps.

    Example:
        >>> describe_fill("categorical", ("mode", None)), describe_fill("text", ("constant", ""))
        ('the most frequent value', 'empty text')
    """
    kind, constant = policy
    if kind == "constant":
        return "empty text" if constant == "" else f"the constant {constant!r}"
    if kind == "knn":
        return "the nearest neighbours' mean"
    return "the most frequent value" if kind == "mode" else f"the {kind}"


def _number_or_text(text: str) -> Any:
    for parse in (int, float):
        try:
            value = parse(text)
        except ValueError:
            continue
        if math.isfinite(value):
            return value
    return text


__all__: Sequence[str] = [
    "CONSTANT_SPELLING",
    "DEFAULT_NEIGHBORS",
    "DEFAULT_POLICY",
    "POLICIES",
    "Policy",
    "check_policy_for",
    "column_scaling",
    "describe_fill",
    "fill_numeric",
    "impute_knn",
    "most_frequent",
    "parse_policy",
    "policy_to_json",
]
