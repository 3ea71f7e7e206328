"""The inline executor: every batch made in the loop's own thread, when it is started, with no worker at all.

For work that costs less than handing it to a worker: a batch of TokenBlocks is one call of the C
gather (``pipeline/_tokens.c``), 12-20 µs for 16 blocks of 2,048 tokens on the development machine,
while waking a worker thread, passing it the job, and waking the loop again costs more than that on a
small machine (each handoff is a futex wake and a GIL handover). Made inline, the same Loader delivered
583 against 260 M tokens/s at 16 blocks a batch (``benchmarks/tokens.py``, 2 cores, medians of 3 runs).
Everything else is the Loader's as with threads: the order, the buffers, the checks (``verify``), the
quarantine, the state and resume. DataLoader's ``num_workers=0`` is the same idea.

A batch filled in one call (TokenBlocks) is shared with ``num_threads - 1`` helpers
that the gather itself keeps (``pipeline/_tokens.c``): native threads that never take the GIL, so the
loop's thread is still the only Python thread, while a second core copies half the blocks (each
shuffled block is a cache miss, and a core has only so many in flight). Such a batch is begun in the
background: ``start`` returns while the helpers copy it, and the loop finishes it when it asks for it.
With prefetch ``"auto"`` two batches are begun ahead (``arguments.INLINE_DEPTH``), and the helpers serve
them oldest first, so they copy the next batch while the loop's thread runs the Python of handing this
one over and starting the one after: 1.3x the batches a second at 16 blocks, whose Python would
otherwise leave the helpers idle. The profiler's CPU figure counts the loop's thread and the helpers.

What it gives up, and so the Loader asks for it explicitly: a read that hangs (a stalled network disk)
hangs the loop, since the loop is the thread that reads; no timeout can stop it, so
``workers="inline"`` takes ``timeout=None`` (``can_time_out`` is False), and the work does not overlap
the training step (for token blocks, tens of microseconds a batch against a step of milliseconds).

Example:
    >>> import numpy as np
    >>> from stoke.pipeline.batch import BatchJob
    >>> from stoke.pipeline.buffers import BufferSet
    >>> out = np.zeros(3)
    >>> def produce(job, row): out[row] = job.indices[row] * job.params["scale"]
    >>> executor = InlineExecutor(1, produce, lambda epoch, indices: {"scale": 2.0})
    >>> job = BatchJob(0, np.arange(3), np.arange(3), BufferSet({}), {}, chunk=3)
    >>> executor.start(job); job.done.is_set(), out.tolist()
    (True, [0.0, 2.0, 4.0])
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from stoke.errors import ConfigError

try:  # the token gather's helper threads (pipeline/_tokens.c), whose CPU time the profiler counts
    from stoke.pipeline._tokens import helper_ids as _helper_ids
except ImportError:  # pragma: no cover - no compiler: no helpers

    def _helper_ids() -> list[int]:
        return []


if TYPE_CHECKING:
    from stoke.pipeline.batch import BatchJob
    from stoke.pipeline.shared import SharedBlock


class InlineExecutor:
    """Runs each job's samples in the thread that starts it (``stoke.pipeline.executor.Executor``). Its
    ``num_workers`` threads are that thread and the helpers it may share a batch filled in one call with
    (``BatchJob.threads``): a reader's own native threads, as TokenBlocks' gather has; samples made one by
    one are made by that thread alone."""

    resizable: ClassVar[bool] = False
    shared_buffers: ClassVar[bool] = False
    can_time_out: ClassVar[bool] = False
    in_background: ClassVar[bool] = False
    broken = False  # a sample's error is its job's; nothing here can die

    def __init__(
        self,
        num_workers: int,
        produce: Callable[[BatchJob, int], None],
        draw: Callable[[int, np.ndarray], dict[str, Any]],
    ) -> None:
        if num_workers < 1:
            raise ConfigError(f"workers='inline' needs at least one thread, got {num_workers}")
        self._produce = produce
        self._draw = draw
        self._threads = num_workers
        self._thread = threading.get_native_id()  # the thread that made it: the Loader's, which starts jobs
        self._begun: weakref.WeakSet[BatchJob] = weakref.WeakSet()  # jobs the helpers may still be copying

    @property
    def num_workers(self) -> int:
        return self._threads

    @property
    def cpu_stat_paths(self) -> list[str]:
        """The ``/proc`` stat files of the thread that made it (the one that runs the work) and, with more
        than one thread, of the gather's helpers (one pool a process, which every inline Loader shares)."""
        helpers = _helper_ids() if self._threads > 1 else []
        return [f"/proc/self/task/{thread}/stat" for thread in (self._thread, *helpers)]

    def start(self, job: BatchJob) -> None:
        """Draw the job's random numbers and produce every sample now: ``job.done`` is set on return. With
        helpers, a batch filled in one call is begun instead: the helpers copy its rows while the loop goes
        on, and the loop finishes it (``job.complete()``) when it wants the batch."""
        job.params = self._draw(job.epoch, job.indices)
        job.threads = self._threads
        start_rows = getattr(self._produce, "start_rows", None)
        if self._threads > 1 and start_rows is not None and job.begin(start_rows):
            self._begun.add(job)
            return
        for start, stop in job.chunks():
            job.run(self._produce, start, stop)

    def resize(self, num_workers: int) -> None:
        """The threads are fixed when the Loader is made: any other count is refused."""
        if num_workers != self._threads:
            raise ConfigError(
                f"workers='inline' keeps the threads it was made with ({self._threads}: the loop's own thread and "
                f"helpers sharing a batch filled in one call), so it cannot run {num_workers}; use "
                f"workers='thread' to resize"
            )

    def retire(self, block: SharedBlock) -> None:
        """Nothing to do: the work writes into the Loader's own arrays."""

    def abandon(self) -> None:
        """Finish the jobs begun in the background: their copies end by themselves (no read can hang in a
        copy from memory), and no buffer is given back while a helper may write it."""
        for job in list(self._begun):
            job.complete()

    def shutdown(self, timeout: float = 10.0) -> None:
        """As :meth:`abandon`: nothing else runs between calls."""
        self.abandon()
