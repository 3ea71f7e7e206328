"""Worker threads: a pool that runs small tasks in submission order, and the Loader's thread executor on it.

Threads, not processes: the heavy steps (JPEG decoding, resizing, copies, checksums) run in libraries
that release the GIL, so threads share one copy of everything (the mapped dataset, the buffers) with no
pickling. Tasks are chunks of a few samples of one batch, queued in batch order, so the oldest batch
finishes first while later ones are already under way. A task must not raise (the batch job records its
own errors); the pool survives one that does.

:class:`WorkerPool` is the pool alone (any tasks); :class:`ThreadExecutor` is the Loader's executor
(``stoke.pipeline.executor.Executor``) on it: it draws a batch's random numbers here, in the parent, and
queues the batch's chunks. Threads never die of a sample's error, so the executor is never ``broken``;
it resizes while it runs (the tuner adds threads).

Example:
    >>> pool = WorkerPool(2)
    >>> results = []
    >>> pool.submit(results.append, 1); pool.join(); pool.shutdown()
    >>> results
    [1]
"""

from __future__ import annotations

import contextlib
import queue
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from stoke.errors import ConfigError

if TYPE_CHECKING:
    from stoke.pipeline.batch import BatchJob
    from stoke.pipeline.shared import SharedBlock


class WorkerPool:
    """``num_threads`` daemon threads consuming one FIFO queue of ``(function, args)`` tasks."""

    def __init__(self, num_threads: int, name: str = "stoke-worker") -> None:
        if num_threads < 1:
            raise ConfigError(f"a worker pool needs at least one thread, got {num_threads}")
        self.name = name
        self._tasks: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._leaving: list[threading.Thread] = []
        self.resize(num_threads)

    @property
    def num_threads(self) -> int:
        return len(self._threads)

    @property
    def thread_ids(self) -> list[int]:
        """Native ids of the running threads."""
        return [thread.native_id for thread in self._threads if thread.native_id is not None]

    @property
    def cpu_stat_paths(self) -> list[str]:
        """``/proc`` stat files of the running threads (for measuring their CPU time)."""
        return [f"/proc/self/task/{thread_id}/stat" for thread_id in self.thread_ids]

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        self._tasks.put((function, args))

    def resize(self, num_threads: int) -> None:
        """Grow or shrink the pool; a shrinking thread leaves after the tasks queued before it."""
        while len(self._threads) < num_threads:
            thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True)
            thread.start()
            self._threads.append(thread)
        while len(self._threads) > num_threads:
            self._leaving.append(self._threads.pop())
            self._tasks.put(None)

    def join(self) -> None:
        """Wait until every task submitted so far has run."""
        self._tasks.join()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every thread after the tasks already queued, and wait for them to leave."""
        self.resize(0)
        for thread in self._leaving:
            if thread is not threading.current_thread():
                thread.join(timeout)
        self._leaving = [thread for thread in self._leaving if thread.is_alive()]

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            try:
                if task is None:
                    return
                function, args = task
                with contextlib.suppress(BaseException):  # a task's own error handling failed; keep the thread
                    function(*args)
            finally:
                self._tasks.task_done()


class ThreadExecutor(WorkerPool):
    """The Loader's thread workers (``stoke.pipeline.executor.Executor``): ``produce(job, row)`` runs on
    ``num_workers`` threads, chunk by chunk, with the random numbers ``draw(epoch, indices)`` gives."""

    resizable: ClassVar[bool] = True
    shared_buffers: ClassVar[bool] = False
    can_time_out: ClassVar[bool] = True
    in_background: ClassVar[bool] = True
    broken = False  # a thread outlives its task's errors (the job records them): nothing to re-make

    def __init__(
        self,
        num_workers: int,
        produce: Callable[[BatchJob, int], None],
        draw: Callable[[int, np.ndarray], dict[str, Any]],
    ) -> None:
        super().__init__(num_workers)
        self._produce = produce
        self._draw = draw
        self._jobs: weakref.WeakSet[BatchJob] = weakref.WeakSet()  # started, to cancel at shutdown

    @property
    def num_workers(self) -> int:
        return self.num_threads

    def start(self, job: BatchJob) -> None:
        """Draw the job's random numbers here and queue its chunks behind those of earlier batches."""
        job.params = self._draw(job.epoch, job.indices)
        self._jobs.add(job)
        for start, stop in job.chunks():
            self.submit(job.run, self._produce, start, stop)

    def retire(self, block: SharedBlock) -> None:
        """Nothing to do: threads write into the parent's own arrays."""

    def abandon(self) -> None:
        """Give up on stuck work: the jobs are cancelled and the threads leave; a thread stuck in a sample
        cannot be stopped, and leaves once that sample returns."""
        self._cancel()
        self.resize(0)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel the jobs in work (a thread finishes the sample it is in, then skips the rest) and stop
        the threads, waiting up to ``timeout`` seconds for each."""
        self._cancel()
        super().shutdown(timeout)

    def _cancel(self) -> None:
        for job in list(self._jobs):
            job.cancelled = True
