"""The timing hook: how a Loader's parts say where their time goes, without knowing who listens.

Every part that works per sample or per batch (the worker loop, the reader, each field stage, the
finisher) is given its Loader's :class:`Timing` when it is built. It registers the pieces of its work once,
with ``slot(name, kind)``, and on the hot path brackets each with ``started = timing.start()`` and
``timing.stop(slot, started)``. Unwatched, both do nothing (one call each, nothing to check), so a part
has one code path whether it is watched or not. The cheapest pieces, a field stage's whole run, are timed
by the worker loop (``stoke.pipeline.produce``) around the call, and only when ``connected``: one check
per sample in that one place, because a no-op call per scalar field would cost a table of many columns
about 8% of its loading time. A profiler (``stoke.profile``) ``connect``\\s a counter
table (:class:`Counters`, such as ``stoke.profile.stages.StageClock``): from then on ``start`` is
``time.perf_counter_ns`` and ``stop`` adds the time since ``started`` to the calling worker's row. Process
workers fork with the hook as it is then, so a profiler connects before they start.

Slots are registered when the parts are built, before any worker runs, and never change: the first two
are the workers' ``busy`` and ``cpu`` time, in which every worker slot happens. A slot registered with
``contains=`` times work that includes other slots (the image stage's render runs its pixel ops) and is
reported without them (:meth:`Timing.exclusive`).

Not for: what the times mean (``stoke.profile.report``) or per-step times (``stoke.profile.timeline``).

Example:
    >>> timing = Timing()
    >>> decode = timing.slot("image: decode", "decode")
    >>> timing.stop(decode, timing.start())  # not connected: nothing is measured
    0
    >>> class Table:
    ...     def __init__(self): self.sums = {}
    ...     def add(self, slot, nanoseconds): self.sums[slot] = self.sums.get(slot, 0) + nanoseconds
    >>> table = Table(); timing.connect(table)
    >>> _ = timing.stop(decode, timing.start()); timing.names[decode], decode in table.sums
    ('image: decode', True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from stoke.errors import ConfigError

# What a slot measures, for the report: the worker kinds first (time inside a worker's busy time).
KINDS = (
    "read",  # a sample's bytes looked up (a local shard, a remote cache, a user's __getitem__)
    "checksum",  # a checked read: the lookup and the checksum of the record
    "decode",  # an image's pixels decoded (or a device stage's bytes copied)
    "render",  # an image cropped, resized and flipped (without its pixel ops)
    "pixel_op",  # one per-image op in Python (stoke.ops.Map, a pixel op without a batched form)
    "batchable_pixel_op",  # one per-image op that could run on the batch
    "value",  # a non-image field decoded into its row
    "collate",  # the main thread: rows made into tensors
    "copy",  # tensors moved to the device
    "batch_op",  # one field's op on the whole batch
    "batch_transform",  # one op on the whole batch dict (MixUp, CutMix)
    "busy",  # a worker producing samples: every worker slot happens inside it
    "cpu",  # the CPU time of the workers' threads while producing
)


class Counters(Protocol):
    """Where a connected :class:`Timing` adds its times: one counter per slot per worker."""

    def add(self, slot: int, nanoseconds: int) -> None:
        """Add ``nanoseconds`` to ``slot`` in the calling worker's row (a thread or a forked process)."""
        ...


def _unmeasured() -> int:
    return 0


def _unstopped(slot: int, since: int) -> int:
    return 0


class Timing:
    """The slots of one Loader's parts, and the hook they report to; see the module docstring.

    Attributes:
        start: () -> a start time in nanoseconds (0 while not connected).
        cpu_start: () -> the calling thread's CPU time in nanoseconds (0 while not connected).
        stop: (slot, started) -> now: adds the wall time since ``started`` to ``slot``; returns the
            end, which starts the next lap.
        stop_cpu: (slot, started) -> now: the same for the thread's CPU time.
        names, kinds: per slot, in slot order.
        busy, cpu: the slots of the workers' busy and CPU time.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.kinds: list[str] = []
        self.contains: dict[int, tuple[int, ...]] = {}
        self.counters: Counters | None = None
        self.start: Callable[[], int] = _unmeasured
        self.cpu_start: Callable[[], int] = _unmeasured
        self.stop: Callable[[int, int], int] = _unstopped
        self.stop_cpu: Callable[[int, int], int] = _unstopped
        self.busy = self.slot("busy", "busy")
        self.cpu = self.slot("worker cpu", "cpu")

    def slot(self, name: str, kind: str, contains: Sequence[int] = ()) -> int:
        """The slot of the piece of work ``name`` (one of :data:`KINDS`), registered on first use."""
        if kind not in KINDS:
            raise ConfigError(f"a timing slot's kind is one of {', '.join(KINDS)}, got {kind!r}")
        if name in self.names:
            return self.names.index(name)
        self.names.append(name)
        self.kinds.append(kind)
        if contains:
            self.contains[len(self.names) - 1] = tuple(contains)
        return len(self.names) - 1

    @property
    def connected(self) -> bool:
        """Whether the times go somewhere."""
        return self.counters is not None

    def connect(self, counters: Counters) -> None:
        """Measure from now on, into ``counters`` (which has a column for every slot registered)."""
        add, wall, cpu = counters.add, time.perf_counter_ns, time.thread_time_ns

        def stop(slot: int, since: int) -> int:
            now = wall()
            add(slot, now - since)
            return now

        def stop_cpu(slot: int, since: int) -> int:
            now = cpu()
            add(slot, now - since)
            return now

        self.counters = counters
        self.start, self.cpu_start, self.stop, self.stop_cpu = wall, cpu, stop, stop_cpu

    def disconnect(self) -> None:
        """Stop measuring: every hook is a no-op again (forked workers keep theirs until they restart)."""
        self.counters = None
        self.start, self.cpu_start, self.stop, self.stop_cpu = _unmeasured, _unmeasured, _unstopped, _unstopped

    def exclusive(self, sums: np.ndarray) -> np.ndarray:
        """Per-slot sums (one entry per slot) with each containing slot's inner slots taken out (never
        below 0)."""
        exclusive = np.array(sums, dtype=np.int64, copy=True)
        for outer, inner in self.contains.items():
            exclusive[outer] = max(0, int(sums[outer] - np.asarray(sums)[list(inner)].sum()))
        return exclusive


def op_label(op: object) -> str:
    """A short name for an op in a slot's name: its class, and for ``Map`` the function's name.

    >>> from stoke.ops import Map, Normalize
    >>> op_label(Normalize([0.5], [0.2])), op_label(Map(abs))
    ('Normalize', 'Map(abs)')
    """
    function = getattr(op, "function", None)
    if function is not None:
        return f"{type(op).__name__}({getattr(function, '__name__', type(function).__name__)})"
    return type(op).__name__
