"""The batch line: batch jobs started on an executor, in buffers from the pool, at the pace the tuner sets.

:class:`BatchLine` owns the Loader's executor (``stoke.pipeline.executor``) and its buffer pool
(``stoke.pipeline.buffers``). ``start`` takes a buffer set, writes the batch's dataset indices, and hands
the job to the executor; ``release`` takes the buffers back. The executor is made when an epoch begins
(``ready``), so that process workers fork with what is set up by then (a profiler's counters), and made
afresh after one of its workers died. The line's two settings, ``num_workers`` and ``in_flight`` (the
batches an epoch keeps in flight), are what the tuner (``stoke.pipeline.autotune``) tunes: ``delivered``
counts each batch handed to the loop and applies the tuner's moves to the executor and the pool.

Not for what happens to a finished job (``stoke.pipeline.finish``) nor for which batches are in flight
(``stoke.pipeline.epoch``).

Example:
    >>> import numpy as np
    >>> from stoke.pipeline.buffers import BufferPool
    >>> def produce(job, row): job.buffers.arrays["x"][row] = 2.0 * job.indices[row]
    >>> buffers = BufferPool({"index": ((), np.dtype("int64")), "x": ((), np.dtype("float64"))}, 4, pin=False)
    >>> line = BatchLine("thread", 2, 3, produce, lambda epoch, indices: {}, buffers, lambda p: p + 10, chunk=2)
    >>> line.ready(); job = line.start(0, 0, np.arange(3)); job.done.wait(5)
    True
    >>> job.buffers.arrays["x"][:3].tolist(); line.release(job); line.shutdown()
    [20.0, 22.0, 24.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from stoke.pipeline.autotune import AutoTuner
from stoke.pipeline.batch import BatchJob
from stoke.pipeline.buffers import BufferPool
from stoke.pipeline.executor import Draw, Executor, Produce, make_executor, weak_method
from stoke.pipeline.shared import SharedBlock


class BatchLine:
    """Starts batch jobs; see the module docstring.

    Args:
        workers: the executor's kind (``stoke.pipeline.executor.EXECUTORS``).
        num_workers: how many workers it runs.
        in_flight: how many batches an epoch keeps in flight.
        produce, draw: what the workers call (without a strong reference to the Loader).
        buffers: the pool the batches are assembled in.
        dataset_index: the dataset indices of an array of positions (the reader's).
        chunk: samples per chunk of work.
        tuner: what moves ``num_workers`` and ``in_flight`` as batches are delivered, or None.
    """

    def __init__(
        self,
        workers: str,
        num_workers: int,
        in_flight: int,
        produce: Produce,
        draw: Draw,
        buffers: BufferPool,
        dataset_index: Callable[[np.ndarray], np.ndarray],
        chunk: int,
        tuner: AutoTuner | None = None,
    ) -> None:
        self.workers = workers
        self.num_workers = num_workers
        self.in_flight = in_flight
        self.buffers = buffers
        self.chunk = chunk
        self.tuner = tuner
        self.counts: dict[str, Any] = {"batches": 0, "samples": 0, "wait_seconds": 0.0}
        self.executor: Executor | None = None
        buffers.on_retire = weak_method(self.retire)  # (weak: the line holds the pool)
        self._produce = produce
        self._draw = draw
        self._dataset_index = dataset_index

    def ready(self) -> None:
        """Make sure a working executor runs: made now if there is none, made afresh if a worker died."""
        if self.executor is not None and self.executor.broken:
            self.shutdown()
        if self.executor is None:
            self.executor = make_executor(self.workers, self.num_workers, self._produce, self._draw)

    def start(self, epoch: int, number: int, positions: np.ndarray) -> BatchJob:
        """Batch ``number`` of ``epoch`` over ``positions``, started: buffers taken, indices written, queued."""
        assert self.executor is not None, "ready() makes the executor before an epoch starts"
        buffers = self.buffers.acquire()
        indices = self._dataset_index(positions)
        buffers.arrays["index"][: len(indices)] = indices
        job = BatchJob(number, positions, indices, buffers, {}, self.chunk, epoch)
        self.executor.start(job)
        return job

    def release(self, job: BatchJob) -> None:
        """Give ``job``'s buffers back, once its batch is handed over or dropped."""
        self.buffers.release(job.buffers)

    def delivered(self, samples: int, waited: float) -> None:
        """Count a batch handed to the loop after ``waited`` seconds, and apply the tuner's move, if any."""
        self.counts["batches"] += 1
        self.counts["samples"] += samples
        self.counts["wait_seconds"] += waited
        if self.tuner is None or self.executor is None:
            return
        change = self.tuner.after_batch(samples, waited, self.executor.cpu_stat_paths)
        if change is not None:
            self.num_workers, self.in_flight = change
            self.executor.resize(self.num_workers)
            self.buffers.make_room(self.in_flight)

    def stats(self) -> dict[str, Any]:
        """The settings in use, the buffers allocated, the tuner's state and the delivery counts."""
        return {
            "num_threads": self.num_workers,
            "prefetch": self.in_flight,
            "chunk": self.chunk,
            "buffer_sets": self.buffers.sets,
            "buffer_allocations": self.buffers.allocations,
            "autotune": self.tuner.to_dict() if self.tuner is not None else None,
            **self.counts,
        }

    def retire(self, block: SharedBlock) -> None:
        """The pool replaced ``block``: workers that mapped it unmap it."""
        if self.executor is not None:
            self.executor.retire(block)

    def abandon(self) -> None:
        """Drop an executor with stuck work (``Executor.abandon``); the next ``ready`` makes a new one."""
        executor, self.executor = self.executor, None
        if executor is not None:
            executor.abandon()

    def shutdown(self) -> None:
        """Stop the executor now: jobs still in work end cancelled or failed (``Executor.shutdown``)."""
        executor, self.executor = self.executor, None
        if executor is not None:
            executor.shutdown()
