"""What a worker does for one row of a batch: read the sample, run every field's stage on it.

:class:`SampleProducer` is what the executor's workers call (``produce(job, row)``) and what draws each
batch's random numbers (``draw(epoch, indices)``: a function of seed, epoch and dataset index only, so any
thread or forked process may draw them). It holds the reader and the stages, never the Loader, so a
dropped Loader is freed at once while its workers still run.

A reader that writes whole rows into the batch itself (``fill``, as TokenBlocks' reader has) gets a
chunk of rows in one call (:meth:`SampleProducer.produce_rows`), which :meth:`BatchJob.run` tries first.

Watched (a profiler connected counters to the timing hook, ``stoke.pipeline.timing``), each stage's run
and the worker's busy and CPU time are timed too, into the stage's ``slot`` and the hook's ``busy`` and
``cpu``; unwatched, one check per sample is all the profiler costs. This is the one place that asks:
stages and readers have one code path either way.

Example:
    >>> import numpy as np
    >>> from stoke.pipeline.batch import BatchJob
    >>> from stoke.pipeline.buffers import BufferPool
    >>> from stoke.pipeline.reader import reader_for
    >>> from stoke.pipeline.stage import stage_for
    >>> reader = reader_for({"x": np.arange(5.0) * 10}, None, "never")
    >>> producer = SampleProducer(reader, [stage_for("x", [], reader)], seed=0)
    >>> buffers = BufferPool({"x": ((), np.dtype(np.float32))}, batch_size=2, pin=False).acquire()
    >>> positions = np.array([4, 1])
    >>> job = BatchJob(0, positions, positions, buffers, producer.draw(0, positions), chunk=2)
    >>> producer.produce(job, 0); producer.produce(job, 1); buffers.arrays["x"][:2].tolist()
    [40.0, 10.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from stoke.pipeline.batch import BatchJob
from stoke.pipeline.reader import SampleReader
from stoke.pipeline.stage import FieldStage
from stoke.pipeline.timing import Timing


class SampleProducer:
    """Produces batch rows from ``reader`` through ``stages``; see the module docstring."""

    def __init__(
        self, reader: SampleReader, stages: Sequence[FieldStage], seed: int, timing: Timing | None = None
    ) -> None:
        self.reader, self.stages, self.seed = reader, list(stages), seed
        self.timing = timing if timing is not None else Timing()

    def produce(self, job: BatchJob, j: int) -> None:
        """Row ``j`` of ``job``; a sample's failure raises (the executor records it as the row's)."""
        timing, reader = self.timing, self.reader
        position = int(job.positions[j])
        watched = timing.connected
        if watched:
            started, cpu = timing.start(), timing.cpu_start()
        try:
            values = reader.read(position)  # times itself: a checked read or not
            if watched:
                lap = timing.start()
                for stage, value in zip(self.stages, values):
                    stage.run(value, job.params[stage.name], j, job.buffers)
                    lap = timing.stop(stage.slot, lap)
            else:
                for stage, value in zip(self.stages, values):
                    stage.run(value, job.params[stage.name], j, job.buffers)
        except Exception:
            reader.check_read(position)  # zeros from a shard truncated meanwhile: name it, not what they gave
            raise
        else:
            reader.check_read(position)  # the same after a decode that went through (stoke.format.mapguard)
        finally:
            if watched:
                timing.stop(timing.busy, started)
                timing.stop_cpu(timing.cpu, cpu)

    __call__ = produce  # the executors' ``produce(job, row)``

    def produce_rows(self, job: BatchJob, start: int, stop: int) -> bool:
        """Rows ``start..stop-1`` of ``job`` at once, where the reader writes whole rows into the batch
        itself (a reader with ``fill``: TokenBlocks, ``stoke.pipeline.block_reader``); False, having done
        nothing, where it does not, and the rows are produced one by one. A row that fails is recorded on
        the job, as :meth:`BatchJob.run` records a row's failure; the others are delivered."""
        finish = self.start_rows(job, start, stop, background=False)
        if finish is None:
            return False
        finish()
        return True

    def start_rows(self, job: BatchJob, start: int, stop: int, background: bool = True) -> Callable[[], None] | None:
        """:meth:`produce_rows`, begun: the reader's helpers may still be copying the rows when it returns
        (``start_fill``, with ``job.threads`` threads). The function it returns finishes them and records
        the failed rows on the job; None, having done nothing, where the rows are produced one by one."""
        begin = getattr(self.reader, "start_fill", None)
        if begin is None or job.buffers is None:
            return None
        timing = self.timing
        watched = timing.connected
        if watched:
            started, cpu = timing.start(), timing.cpu_start()
        try:
            rows = np.arange(start, stop)
            finish = begin(job.positions[start:stop], rows, job.buffers.arrays, job.threads, background)
        finally:
            if watched:
                timing.stop(timing.busy, started)
                timing.stop_cpu(timing.cpu, cpu)
        if finish is None:
            return None

        def finished() -> None:
            if watched:
                started, cpu = timing.start(), timing.cpu_start()
            try:
                failures = finish()
            finally:
                if watched:
                    timing.stop(timing.busy, started)
                    timing.stop_cpu(timing.cpu, cpu)
            for row, error in failures:
                job.fail(row, error)

        return finished

    def draw(self, epoch: int, indices: np.ndarray) -> dict[str, Any]:
        """Every stage's random numbers for these samples: a function of (seed, epoch, index) only."""
        return {stage.name: stage.draw(self.seed, epoch, indices) for stage in self.stages}
