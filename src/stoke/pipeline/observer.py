"""The observer protocol: what a Loader tells the one watching it, step by step.

A Loader calls its observer at four moments of every step: when the loop asks for a batch
(``requested``), around the copy of a batch to the device (``copy_started``/``copy_ended``), and when it
hands a batch over (``handed_out``); and before waiting for the next batch it asks ``stand_in`` whether the
observer has one to hand out instead (the profiler's headspace steps: a repeated batch that does not
advance the epoch). Unwatched, the observer is :data:`UNOBSERVED`, whose calls do nothing, so the Loader
has one code path. The per-sample times of the workers go through the timing hook instead
(``stoke.pipeline.timing``), which the observer connects when it starts watching.

``stoke.profile.Profiler`` is the observer stoke ships; ``Loader.watch(observer)`` attaches one. Not for:
what the measurements mean (``stoke.profile.report``).

Example:
    >>> import numpy as np, stoke
    >>> class Steps(Unobserved):
    ...     def __init__(self): self.handed = 0
    ...     def handed_out(self, batch, waited): self.handed += 1
    >>> loader = stoke.Loader({"x": np.arange(8.0)}, batch_size=4, num_threads=1)
    >>> steps = Steps(); loader.watch(steps)
    >>> _ = list(loader); steps.handed
    2
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from stoke.pipeline.timing import Counters


class Observer(Protocol):
    """Watches one Loader's steps; see the module docstring.

    Attributes:
        counters: where the workers' stage times go while watched (``Timing.connect``), or None for an
            observer that only watches steps.
    """

    counters: Counters | None

    def requested(self, in_flight: Sequence[Any]) -> None:
        """The loop asks for the next batch (its previous step ended); ``in_flight`` the jobs in work
        (each with a ``done`` event)."""
        ...

    def stand_in(self) -> dict[str, Any] | None:
        """A batch to hand out instead of the epoch's next one, which the epoch does not count; or None."""
        ...

    def copy_started(self) -> Any:
        """A batch's copy to the device starts; returns what ``copy_ended`` gets back."""
        ...

    def copy_ended(self, started: Any) -> None:
        """That copy is issued (on CUDA it runs on; an event marks its end)."""
        ...

    def handed_out(self, batch: dict[str, Any], waited: float) -> None:
        """The Loader hands ``batch`` to the loop after ``waited`` seconds of waiting for the workers."""
        ...


class Unobserved:
    """The observer of a Loader nobody watches: every call does nothing. Subclass it to watch a few moments."""

    counters: Counters | None = None

    def requested(self, in_flight: Sequence[Any]) -> None:
        """Nothing to record."""

    def stand_in(self) -> dict[str, Any] | None:
        """No batch of its own: the epoch's next one goes out."""
        return None

    def copy_started(self) -> Any:
        """Nothing to record."""
        return None

    def copy_ended(self, started: Any) -> None:
        """Nothing to record."""

    def handed_out(self, batch: dict[str, Any], waited: float) -> None:
        """Nothing to record."""


UNOBSERVED = Unobserved()
