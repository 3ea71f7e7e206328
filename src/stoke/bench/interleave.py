"""Median images/s of several loaders measured epoch by epoch in turn, so that drift hits them alike.

The benchmark scripts in ``benchmarks/`` compare Loader settings this way: one warm-up epoch of each,
then ``epochs`` measured epochs, the loaders taking turns within each, in reverse order every other epoch
so that going first or last favours none of them.

Example:
    >>> import numpy as np, stoke
    >>> loaders = {"one": stoke.Loader({"image": np.zeros(8)}, 4, num_threads=1)}
    >>> sorted(median_rates(loaders, epochs=1))
    ['one']
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Hashable, Iterable, Mapping
from typing import Any


def median_rates(loaders: Mapping[Hashable, Iterable[dict[str, Any]]], epochs: int, key: str = "image") -> dict:
    """``{name: median samples/s}``, counting the rows of each batch's ``key`` tensor."""
    rates: dict[Hashable, list[float]] = {name: [] for name in loaders}
    for epoch in range(epochs + 1):
        turns = list(loaders.items())
        for name, loader in turns if epoch % 2 == 0 else reversed(turns):
            started = time.perf_counter()
            count = sum(len(batch[key]) for batch in loader)
            if epoch:
                rates[name].append(count / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}
