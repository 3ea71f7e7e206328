"""Where the pipeline's time goes: nanoseconds per stage, accumulated per worker thread or process.

For: the profiler's stage times (read, checksum, decode, crop/resize/flip, each pixel op, collate, each
batch op, the copy to the device) and the workers' busy time. Not for: per-step times (``timeline.py``)
or judging them (``report.py``).

A :class:`StageClock` is a table of int64 counters, one row per worker (thread or forked process) and one
column per stage, in an anonymous shared mapping made before the process workers fork: a worker process
adds to its own row and the parent reads every row, with nothing sent over the pipes. A worker claims its
row the first time it adds (a thread-local row number, reset in a forked child), so adding is a pair of
``perf_counter_ns`` calls and one integer addition; nothing is kept per sample.

Stages nest in one place: the image stage's crop/resize/flip call runs the pixel ops inside it. Such a
stage is registered with ``contains=`` the slots timed inside it, and :meth:`StageClock.totals` reports
it exclusive of them.

Example:
    >>> clock = StageClock()
    >>> decode = clock.slot("image: decode")
    >>> clock.add(decode, 1500); clock.add(decode, 500); clock.add(clock.busy, 2500)
    >>> clock.totals()["image: decode"], clock.busy_per_worker().tolist()
    (2000, [2500])
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import threading
import time

import numpy as np

MAX_ROWS = 256  # workers over a Loader's life (autotune grows the pool; a replaced thread takes a new row)
MAX_SLOTS = 64
BUSY = "busy"  # time a worker spent producing samples: every worker stage happens inside it
CPU = "worker cpu"  # CPU time of the workers' threads while producing (less than busy: GIL, I/O, sleeps)

_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1  # forget the parent's thread-local rows: this process claims its own


os.register_at_fork(after_in_child=_after_fork_in_child)


class StageClock:
    """Per-worker nanosecond counters per stage; see the module docstring."""

    def __init__(self, max_rows: int = MAX_ROWS, max_slots: int = MAX_SLOTS) -> None:
        self.max_rows, self.max_slots = max_rows, max_slots
        # Word 0 counts the rows claimed; rows start at word max_slots (row 0 of the table is that header).
        self._memory = mmap.mmap(-1, (max_rows + 1) * max_slots * 8)
        self._words = memoryview(self._memory).cast("q")
        self._claim_lock = multiprocessing.get_context("fork").Lock()
        self._local = threading.local()
        self.names: list[str] = []
        self._contains: dict[int, tuple[int, ...]] = {}
        self.main_row: int | None = None
        self.busy = self.slot(BUSY)
        self.cpu = self.slot(CPU)

    def slot(self, name: str, contains: tuple[int, ...] = ()) -> int:
        """The column of stage ``name`` (registered on first use, before the workers start)."""
        if name in self.names:
            return self.names.index(name)
        if len(self.names) >= self.max_slots:
            raise ValueError(f"a stage clock holds at most {self.max_slots} stages")
        self.names.append(name)
        if contains:
            self._contains[len(self.names) - 1] = tuple(contains)
        return len(self.names) - 1

    def add(self, slot: int, nanoseconds: int) -> None:
        """Add ``nanoseconds`` to stage ``slot`` in the calling worker's row."""
        local = self._local
        if getattr(local, "generation", -1) != _fork_generation:
            local.row, local.generation = self._claim(), _fork_generation
        self._words[local.row * self.max_slots + slot] += nanoseconds

    def lap(self, slot: int, since: int) -> int:
        """Add the time from ``since`` (perf_counter_ns) to now to ``slot``; returns now, the next lap's start."""
        now = time.perf_counter_ns()
        self.add(slot, now - since)
        return now

    def claim_main_row(self) -> None:
        """Mark the calling thread (the training loop's) as not a worker: its row is left out of utilisation."""
        self.add(self.busy, 0)
        self.main_row = self._local.row - 1

    def table(self) -> np.ndarray:
        """int64 ``[rows claimed, stages]``: each worker's nanoseconds per stage (a copy)."""
        claimed = min(self._words[0], self.max_rows)
        words = np.frombuffer(self._memory, np.int64, (claimed + 1) * self.max_slots)
        return words.reshape(claimed + 1, self.max_slots)[1:, : len(self.names)].copy()

    def busy_per_worker(self) -> np.ndarray:
        """Nanoseconds each worker (thread or process that produced samples) spent producing them."""
        table = self.table()
        rows = [row for row in range(len(table)) if row != self.main_row and table[row, self.busy] > 0]
        return table[rows, self.busy]

    def totals(self) -> dict[str, int]:
        """Nanoseconds per stage over every row; a stage that contains others is reported without them."""
        sums = self.table().sum(axis=0)
        exclusive = sums.copy()
        for outer, inner in self._contains.items():
            exclusive[outer] = max(0, int(sums[outer] - sums[list(inner)].sum()))
        return {name: int(exclusive[position]) for position, name in enumerate(self.names)}

    def _claim(self) -> int:
        with self._claim_lock:
            claimed = self._words[0]
            if claimed < self.max_rows:
                self._words[0] = claimed + 1
                return claimed + 1
        return self.max_rows  # out of rows: the last one is shared (a racing addition may be lost)
