"""One batch in flight: its samples, its buffers, and the chunks of work that fill them.

The Loader creates a :class:`BatchJob` per batch, splits its samples into chunks for the worker pool and
waits on ``done``. Each chunk calls ``produce(job, j)`` for its samples. A sample that raises is kept in
``failures`` with its row and exception (and traceback), and the chunk goes on with the next sample: the
Loader's error policy decides afterwards (``stoke.pipeline.quarantine``). ``error`` is for what is not
one sample's fault (a worker process that died). ``done`` is set when the last chunk returns, so a
failing sample never leaves the Loader waiting.

Example:
    >>> import numpy as np
    >>> job = BatchJob(0, np.arange(3), np.arange(3), buffers=None, params={}, chunk=2)
    >>> seen = []
    >>> for start, stop in job.chunks(): job.run(lambda job, j: seen.append(j), start, stop)
    >>> job.done.is_set(), seen
    (True, [0, 1, 2])
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

MAX_CHUNK = 16  # samples per chunk: fewer, larger tasks measured best (stoke bench, 2 cores)


def chunk_size(batch_size: int, workers: int, fills_rows: bool = False) -> int:
    """Samples per chunk: a batch spread over every worker, at most ``MAX_CHUNK`` a chunk; the whole batch
    where the reader ``fills_rows`` (a chunk in one call: TokenBlocks), and the workers share the batches
    in flight instead (2 threads at 64 blocks a batch: 530 against 300 M tokens/s in chunks of 16).

    >>> chunk_size(256, 8), chunk_size(10, 4), chunk_size(64, 2, fills_rows=True)
    (16, 3, 64)
    """
    if fills_rows:
        return max(1, batch_size)
    return max(1, min(MAX_CHUNK, -(-batch_size // workers)))


class BatchJob:
    """The state of one batch being assembled by the worker pool."""

    def __init__(
        self,
        number: int,
        positions: np.ndarray,
        indices: np.ndarray,
        buffers: Any,
        params: dict[str, Any],
        chunk: int,
        epoch: int = 0,
    ) -> None:
        self.number = number
        self.epoch = epoch
        self.positions = positions
        self.indices = indices
        self.buffers = buffers
        self.params = params
        self.size = len(positions)
        self._chunk = max(1, chunk)
        self._pending = -(-self.size // self._chunk)
        self._lock = threading.Lock()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.error_position: int | None = None
        self.failures: list[tuple[int, BaseException]] = []  # (row, exception) of samples that raised
        self.padding: np.ndarray | None = None  # per row: a duplicate that pads the epoch (distributed)
        self.running: dict[int, int] = {}  # chunk start -> the row it is producing now (to name a stuck one)
        self.cancelled = False
        self.threads = 1  # threads that may share a chunk filled in one call (the inline executor's helpers)
        self._later: Callable[[], None] | None = None  # what finishes a job begun in the background (begin)
        self._begun = False
        if self._pending == 0:
            self.done.set()

    def chunks(self) -> Iterator[tuple[int, int]]:
        for start in range(0, self.size, self._chunk):
            yield start, min(start + self._chunk, self.size)

    def run(self, produce: Callable[[BatchJob, int], None], start: int, stop: int) -> None:
        """Produce samples ``start..stop-1``; never raises (errors are kept on the job). A ``produce`` with
        ``produce_rows(job, start, stop)`` (``stoke.pipeline.produce``) is offered the whole chunk first."""
        error: BaseException | None = None
        position = start
        rows = getattr(produce, "produce_rows", None)  # a SampleProducer that may fill the chunk at once
        try:
            if rows is not None and not self.cancelled and self.error is None:
                self.running[start] = start
                if rows(self, start, stop):
                    return
            for position in range(start, stop):
                if self.cancelled or self.error is not None:
                    break
                self.running[start] = position
                try:
                    produce(self, position)
                except Exception as failure:
                    if getattr(failure, "ends_epoch", False):  # the machine's fault, not the sample's
                        raise
                    self.fail(position, failure)
        except BaseException as raised:  # KeyboardInterrupt and the like: not the sample's fault
            error = raised
        finally:
            self.running.pop(start, None)
            self.finish_chunk(error, position)

    def begin(self, start_rows: Callable[[BatchJob, int, int], Callable[[], None] | None]) -> bool:
        """Start the whole job as one chunk that goes on in the background after this returns:
        ``start_rows(job, 0, size)`` (``SampleProducer.start_rows``) begins it and gives what finishes it,
        which :meth:`complete` runs. False, having done nothing, where the job is more than one chunk or
        ``start_rows`` cannot begin it (gives None); then it is run as usual."""
        if self._chunk < self.size or self.size == 0 or self.cancelled:
            return False
        try:
            finish = start_rows(self, 0, self.size)
        except BaseException as raised:  # as run() keeps what is not a sample's fault
            self.finish_chunk(raised, 0)
            return True
        if finish is None:
            return False
        self._begun = True

        def later() -> None:
            error: BaseException | None = None
            try:
                finish()
            except BaseException as raised:
                error = raised
            finally:
                self.finish_chunk(error, 0)

        self._later = later
        return True

    def complete(self) -> None:
        """Finish a job begun in the background (:meth:`begin`) in this thread, which then waits for any
        other thread finishing it; ``done`` is set on return. Nothing for any other job."""
        with self._lock:
            later, self._later = self._later, None
        if later is not None:
            later()
        elif self._begun:
            self.done.wait()

    def fail(self, position: int, error: BaseException) -> None:
        """Record that the sample in row ``position`` raised ``error``."""
        with self._lock:
            self.failures.append((position, error))

    def finish_chunk(self, error: BaseException | None = None, position: int | None = None) -> None:
        """Record that one chunk has ended (with the error it raised at ``position``, if any)."""
        with self._lock:
            if error is not None and self.error is None:
                self.error, self.error_position = error, position
            self._pending -= 1
            finished = self._pending == 0
        if finished:
            self.done.set()
