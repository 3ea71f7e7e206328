"""Which sample next: one order per file, each a pure function of the epoch."""

from stoke.order.base import Order
from stoke.order.random import RandomOrder
from stoke.order.sequential import SequentialOrder

__all__ = ["Order", "RandomOrder", "SequentialOrder"]
