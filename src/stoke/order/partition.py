"""One rank's share of an epoch: disjoint, equal in batches on every rank, resumable at any global batch.

The epoch's order (the same on every rank: a pure function of seed and epoch) is read from ``start``
(samples already consumed by the whole job) and cut into **global batches** of ``batch_size *
world_size`` samples. Rank ``r`` takes rows ``r*b .. (r+1)*b`` of each global batch, where ``b`` is the
global batch's size divided by the world size. So the ranks' batches are disjoint, every rank gets the
same number of batches (collective ops never wait on a rank that ran out), and after ``k`` steps the job
has consumed exactly ``start + k * batch_size * world_size`` samples of the order, whatever the world
size: the state a resumed or resized job needs.

The remainder that does not fill a global batch is handled by ``drop_last``:

* ``drop_last=True``: dropped (fewer than one global batch per epoch);
* ``drop_last=False``: padded up to a multiple of the world size with samples from the start of the
  epoch's order, flagged in the returned mask (the Loader's ``is_padding``) so evaluation can leave them
  out; the last batch of each rank is shorter than ``batch_size`` but the same on every rank.

Example:
    >>> order = np.arange(10)
    >>> [rank_share(order, 0, batch_size=2, rank=r, world_size=3, drop_last=False)[0].tolist() for r in range(3)]
    [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 0, 1]]
    >>> rank_share(order, 0, batch_size=2, rank=2, world_size=3, drop_last=False)[1].tolist()
    [False, False, True, True]
    >>> rank_share(order, 6, batch_size=2, rank=0, world_size=2, drop_last=True)[0].tolist()  # resumed at 6
    [6, 7]
"""

from __future__ import annotations

import numpy as np

from stoke.errors import ConfigError


def rank_share(
    order: np.ndarray, start: int, batch_size: int, rank: int, world_size: int, drop_last: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(positions, is_padding) of ``rank`` for the part of ``order`` from ``start`` on; see the module docstring."""
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in [0, {world_size}), got {rank}")
    if not 0 <= start <= len(order):
        raise ConfigError(f"start must be in [0, {len(order)}], got {start}")
    rest = np.asarray(order[start:], dtype=np.int64)
    global_batch = batch_size * world_size
    padding = np.zeros(len(rest), dtype=bool)
    if drop_last:
        rest = rest[: len(rest) // global_batch * global_batch]
        padding = padding[: len(rest)]
    elif len(rest) % world_size and len(order):
        missing = world_size - len(rest) % world_size
        rest = np.concatenate([rest, np.resize(np.asarray(order, dtype=np.int64), missing)])
        padding = np.concatenate([padding, np.ones(missing, dtype=bool)])
    full = len(rest) // global_batch * global_batch
    tail = len(rest) - full
    share = (tail // world_size) if tail else 0

    def take(values: np.ndarray) -> np.ndarray:
        head = values[:full].reshape(-1, world_size, batch_size)[:, rank, :].reshape(-1)
        return np.concatenate([head, values[full + rank * share : full + (rank + 1) * share]])

    return take(rest), take(padding)


def batches_in_share(size: int, start: int, batch_size: int, world_size: int, drop_last: bool) -> int:
    """How many batches each rank gets from ``size - start`` remaining samples (without building them)."""
    remaining = max(size - start, 0)
    global_batch = batch_size * world_size
    if drop_last:
        return remaining // global_batch
    padded = -(-remaining // world_size) * world_size
    return -(-padded // global_batch)
