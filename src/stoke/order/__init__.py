"""Which sample next: one order per file, each a pure function of the epoch."""

from stoke.order.base import Order
from stoke.order.partition import batches_in_share, rank_share
from stoke.order.random import RandomOrder
from stoke.order.sequential import SequentialOrder
from stoke.order.weighted import WeightedOrder, class_balance

__all__ = [
    "Order",
    "RandomOrder",
    "SequentialOrder",
    "WeightedOrder",
    "batches_in_share",
    "class_balance",
    "rank_share",
]
