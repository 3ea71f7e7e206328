"""The Loader's state: the job's position, saved as a small JSON dict, and the checks before resuming.

An epoch is a pure function of its number, so the position is two integers: the epoch, and how many
samples of its order the whole job has consumed (every rank the same number of batches). While an epoch
is under way its iterator knows how far it got; :class:`Position` keeps the unfinished epoch's iterator
(weakly) and the position to start from otherwise. The saved dict also holds what the position is only
valid for (the seed, the order's kind and length) and, for the reader, the batch size and world size it
was saved with, which resuming does not need: a position is valid under any world size
(docs/guarantees.md).

Not for walking an epoch (``stoke.pipeline.epoch``) nor for other parts' state.

Example:
    >>> from stoke.order import SequentialOrder
    >>> state = loader_state(2, 64, seed=0, order=SequentialOrder(100), batch_size=32, world_size=1)
    >>> resume_point(state, seed=0, order=SequentialOrder(100))
    (2, 64)
    >>> resume_point(state, seed=1, order=SequentialOrder(100))
    Traceback (most recent call last):
    ...
    stoke.errors.ConfigError: cannot resume from this loader state: it was saved with seed 0, this Loader has seed 1
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from typing import Any

from stoke.errors import ConfigError
from stoke.order import Order

STATE_FORMAT = "stoke.loader.v1"


class Position:
    """Where the job is: the epoch ``iter()`` starts next and the samples of it already consumed, or the
    unfinished epoch's iterator, which knows how far it got.

    The iterator is held weakly: it holds the Loader, and a reference back would make a cycle that keeps
    both, and the workers, alive until the cyclic garbage collector runs, possibly in a forked worker. An
    iterator dropped unfinished hands its position back first (``EpochIterator.__del__``, :meth:`keep`).

    >>> position = Position()
    >>> position.load(3, 40); position.now()
    (3, 40)
    """

    def __init__(self) -> None:
        self.epoch = 0  # the epoch iter() starts next
        self.start = 0  # samples of ``epoch`` the job had consumed (a loaded state, an epoch handed back)
        self._active: weakref.ref[Any] | None = None
        self._pid = os.getpid()

    @property
    def forked(self) -> bool:
        """Whether this is a copy inherited by a forked process, which must never touch the Loader's batches."""
        return os.getpid() != self._pid

    @property
    def active(self) -> Any:
        """The unfinished epoch's iterator, or None."""
        iterator = self._active() if self._active is not None else None
        return iterator if iterator is not None and not iterator.finished else None

    def now(self) -> tuple[int, int]:
        """(epoch, samples consumed): the unfinished epoch's, else where the next epoch starts."""
        active = self.active
        return (active.epoch, active.consumed) if active is not None else (self.epoch, self.start)

    def begin(self, iterator: Any) -> None:
        """``iterator`` walks epoch ``epoch`` from ``start``: the next epoch after it is the next one."""
        self._active = weakref.ref(iterator)
        self.epoch, self.start = self.epoch + 1, 0

    def load(self, epoch: int, consumed: int) -> None:
        """Start from (``epoch``, ``consumed``) next; an unfinished epoch is abandoned."""
        if self.active is not None:
            self.active.cancel()
        self._active = None
        self.epoch, self.start = epoch, consumed

    def keep(self, iterator: Any) -> None:
        """Stop ``iterator``'s batches in flight and keep its position, so the next ``iter()`` continues
        there: only the unfinished epoch's, and only in the process that made it."""
        if self.forked or iterator is not self.active:
            return
        epoch, consumed = iterator.epoch, iterator.consumed
        iterator.cancel()
        self.epoch, self.start = epoch, consumed


def loader_state(
    epoch: int, consumed: int, *, seed: int, order: Order, batch_size: int, world_size: int
) -> dict[str, Any]:
    """The JSON-serialisable state of a job at ``consumed`` samples into ``epoch``."""
    return {
        "format": STATE_FORMAT,
        "epoch": epoch,
        "samples_consumed": consumed,
        "seed": seed,
        "epoch_length": order.length,
        "order": type(order).__name__,
        "batch_size": batch_size,
        "world_size": world_size,
        **({"order_state": extra} if (extra := order.epoch_state(epoch)) is not None else {}),
    }


def resume_point(state: Mapping[str, Any], *, seed: int, order: Order) -> tuple[int, int]:
    """(epoch, samples consumed) to resume from ``state``; a ConfigError says why it cannot resume here."""
    problem = _problem(state, seed, order)
    if problem:
        raise ConfigError(f"cannot resume from this loader state: {problem}")
    order.resume(int(state["epoch"]), state.get("order_state"), int(state["samples_consumed"]))
    return int(state["epoch"]), int(state["samples_consumed"])


def _problem(state: Mapping[str, Any], seed: int, order: Order) -> str | None:
    """Why ``state`` cannot resume a Loader with ``seed`` and ``order``, or None."""
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        return f"it is not a stoke loader state (expected format {STATE_FORMAT!r})"
    for key in ("epoch", "samples_consumed", "seed", "epoch_length"):
        if not isinstance(state.get(key), int) or isinstance(state.get(key), bool) or state[key] < 0:
            return f"{key!r} must be a non-negative integer, got {state.get(key)!r}"
    if not isinstance(state.get("order"), str):
        return f"'order' must name the order it was saved with (such as 'RandomOrder'), got {state.get('order')!r}"
    if state["seed"] != seed:
        return f"it was saved with seed {state['seed']}, this Loader has seed {seed}"
    if state["order"] != type(order).__name__ or state["epoch_length"] != order.length:
        return (
            f"it was saved for a {state['order']} of {state['epoch_length']} samples per epoch, this Loader "
            f"has a {type(order).__name__} of {order.length} (a different dataset, view or sampling; if the dataset "
            f"grew since, stoke pack --append, open the version the state was saved on, stoke.open(path, "
            f"version=N), to finish the epoch)"
        )
    if state["samples_consumed"] > state["epoch_length"]:
        return f"samples_consumed {state['samples_consumed']} exceeds the epoch's {state['epoch_length']} samples"
    return None
