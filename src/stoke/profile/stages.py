"""Where the pipeline's time goes: nanoseconds per stage, accumulated per worker thread or process.

For: the counters behind the profiler's stage times, the :class:`~stoke.pipeline.timing.Counters` a
profiler connects to its Loader's timing hook (``stoke.pipeline.timing``, which names the slots and says
what each measures). Not for: per-step times (``timeline.py``) or judging them (``report.py``).

A :class:`StageClock` is a table of int64 counters, one row per worker (thread or forked process) and one
column per slot, in an anonymous shared mapping made before the process workers fork: a worker process
adds to its own row and the parent reads every row, with nothing sent over the pipes. A worker claims its
row the first time it adds (a thread-local row number, reset in a forked child), so adding is one integer
addition; nothing is kept per sample.

Example:
    >>> clock = StageClock(slots=3)
    >>> clock.add(2, 1500); clock.add(2, 500); clock.add(0, 2500)
    >>> int(clock.table()[:, 2].sum()), clock.busy_per_worker(busy=0).tolist()
    (2000, [2500])
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import threading

import numpy as np

MAX_ROWS = 256  # workers over a Loader's life (autotune grows the pool; a replaced thread takes a new row)

_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1  # forget the parent's thread-local rows: this process claims its own


os.register_at_fork(after_in_child=_after_fork_in_child)


class StageClock:
    """Per-worker nanosecond counters, ``slots`` of them per worker; see the module docstring."""

    def __init__(self, slots: int, max_rows: int = MAX_ROWS) -> None:
        self.max_rows, self.slots = max_rows, max(1, slots)
        # Word 0 counts the rows claimed; rows start at word ``slots`` (row 0 of the table is that header).
        self._memory = mmap.mmap(-1, (max_rows + 1) * self.slots * 8)
        self._words = memoryview(self._memory).cast("q")
        self._claim_lock = multiprocessing.get_context("fork").Lock()
        self._local = threading.local()
        self.main_row: int | None = None

    def add(self, slot: int, nanoseconds: int) -> None:
        """Add ``nanoseconds`` to ``slot`` in the calling worker's row."""
        local = self._local
        if getattr(local, "generation", -1) != _fork_generation:
            local.row, local.generation = self._claim(), _fork_generation
        self._words[local.row * self.slots + slot] += nanoseconds

    def claim_main_row(self, slot: int) -> None:
        """Mark the calling thread (the training loop's) as not a worker: its row is left out of utilisation
        (``slot``, any of the table's, is where the claim adds its 0)."""
        self.add(slot, 0)
        self.main_row = self._local.row - 1

    def table(self) -> np.ndarray:
        """int64 ``[rows claimed, slots]``: each worker's nanoseconds per slot (a copy)."""
        claimed = min(self._words[0], self.max_rows)
        words = np.frombuffer(self._memory, np.int64, (claimed + 1) * self.slots)
        return words.reshape(claimed + 1, self.slots)[1:].copy()

    def worker_rows(self, busy: int, table: np.ndarray | None = None) -> list[int]:
        """The rows of ``table`` (default: now) that are workers: not the main row, some ``busy`` time."""
        table = self.table() if table is None else table
        return [row for row in range(len(table)) if row != self.main_row and table[row, busy] > 0]

    def busy_per_worker(self, busy: int) -> np.ndarray:
        """Nanoseconds each worker (thread or process that produced samples) spent producing them, the
        ``busy`` slot."""
        table = self.table()
        return table[self.worker_rows(busy, table), busy]

    def _claim(self) -> int:
        with self._claim_lock:
            claimed = self._words[0]
            if claimed < self.max_rows:
                self._words[0] = claimed + 1
                return claimed + 1
        return self.max_rows  # out of rows: the last one is shared (a racing addition may be lost)
