"""The epoch order a Loader's arguments ask for: in sequence, shuffled, weighted or class-balanced.

``shuffle``, ``weights`` and ``balance_by`` choose one of ``stoke.order``'s orders (each a pure function
of the epoch); this module checks them against the loaded samples and builds it. ``balance_by`` reads
one int field of every sample (a packed dataset's column straight from its shards).

Not for the orders themselves (``stoke.order``: one file per order) nor for each rank's share of an
epoch (``stoke.order.partition``, through ``stoke.pipeline.epoch``).

Example:
    >>> import numpy as np
    >>> from stoke.pipeline.reader import reader_for
    >>> reader = reader_for({"x": np.arange(4.0), "label": np.array([0, 0, 0, 1])}, None, "never", None)
    >>> order = order_for(reader, seed=0, shuffle=False, weights=None, balance_by="label")
    >>> type(order).__name__, order.probabilities.round(3).tolist()
    ('WeightedOrder', [0.167, 0.167, 0.167, 0.5])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stoke.errors import ConfigError
from stoke.order import Order, RandomOrder, SequentialOrder, WeightedOrder, class_balance


def order_for(
    reader: Any,
    seed: int,
    shuffle: bool,
    weights: Sequence[float] | np.ndarray | None,
    balance_by: str | None,
) -> Order:
    """The order of ``reader``'s samples: the one the data brings (a mixture's), else weighted by ``weights``
    or to balance ``balance_by``'s values (with replacement), else shuffled anew each epoch, else in
    sequence."""
    if reader.own_order is not None:  # a mixture: its weights are the proportions
        if weights is not None or balance_by is not None:
            raise ConfigError(
                "a mixture samples its sources in proportion to its own weights (stoke.mix(..., weights=)); "
                "leave out the Loader's weights= and balance_by="
            )
        return reader.own_order
    size = len(reader)
    if weights is not None and balance_by is not None:
        raise ConfigError("give weights= or balance_by=, not both")
    if balance_by is not None:
        weights = class_balance(column(reader, balance_by))
    if weights is not None:
        if len(weights) != size:
            raise ConfigError(f"weights has {len(weights)} values for {size} samples; give one per sample")
        return WeightedOrder(np.asarray(weights, dtype=np.float64), seed)
    return RandomOrder(size, seed) if shuffle else SequentialOrder(size)


def column(reader: Any, name: str) -> np.ndarray:
    """Every sample's value of the int field ``name`` (for ``balance_by``)."""
    field = reader.fields.get(name)
    if field is None or field.type_name != "int":
        raise ConfigError(f"balance_by names {name!r}, which is not an int field of the loaded fields")
    if reader.packed:
        return reader.dataset.column(name)
    position = list(reader.fields).index(name)
    return np.array([int(reader.read(i)[position]) for i in range(len(reader))], dtype=np.int64)
