"""Sequential order: 0, 1, 2, ... every epoch (evaluation, or data already shuffled at pack time).

Example:
    >>> SequentialOrder(4).indices(epoch=3).tolist()
    [0, 1, 2, 3]
"""

from __future__ import annotations

import numpy as np

from stoke.order.base import Order


class SequentialOrder(Order):
    """Every position in increasing order, the same in every epoch."""

    def indices(self, epoch: int) -> np.ndarray:
        return np.arange(self.size, dtype=np.int64)
