"""The order protocol: which positions an epoch visits, and in what sequence.

An order is a pure function of the epoch number: ``order.indices(epoch)`` returns the positions an epoch
visits (every position exactly once, except for a weighted order, which draws with replacement), so an
epoch can be recomputed (to resume it, or to split it across ranks) without remembering anything but
the epoch number.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from stoke.errors import ConfigError


class Order(ABC):
    """Base of every order: ``indices(epoch)`` → int64 positions, each exactly once."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ConfigError(f"an order needs a non-negative size, got {size}")
        self.size = size

    @property
    def length(self) -> int:
        """How many positions each epoch visits."""
        return self.size

    @abstractmethod
    def indices(self, epoch: int) -> np.ndarray:
        """The positions visited in ``epoch``, in order."""

    def epoch_state(self, epoch: int) -> dict[str, Any] | None:
        """What a saved state must hold, beyond the epoch number, to recompute ``epoch`` exactly (JSON), or
        None when the epoch number is all (every order but a mixture, whose draws carry over epochs)."""
        return None

    def resume(self, epoch: int, saved: Mapping[str, Any] | None, consumed: int = 0) -> None:
        """Recompute ``epoch`` as ``saved`` (what :meth:`epoch_state` gave) describes it, ``consumed`` of its
        samples already used; nothing to do for an order that is a function of the epoch number alone."""
        return None
