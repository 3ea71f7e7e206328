"""One epoch's batches as the training loop iterates them: a few in flight, handed out in order.

:class:`EpochPlan` is which samples this rank gets in one epoch and how they fall into batches: a pure
function of the epoch's order, the position the job resumes from, the batch size and the ranks
(``stoke.order.partition``). :class:`EpochIterator` walks it. It keeps ``prefetch`` batches in flight,
waits for the oldest, and hands it over. It reaches the Loader only through the :class:`EpochHost` the
Loader gives it, never through the Loader's attributes. Its promises, which the Loader's docstring
states for users:

* **Nothing skipped or repeated.** An iterator dropped unfinished (``next(iter(loader))``, a loop that
  broke out) hands its position back (``__del__``), so the next ``iter()`` continues the epoch. An error
  that ``ends_epoch`` (the machine's fault, such as a full cache disk) hands it back too, so the next
  ``iter()`` retries from the batch that failed, and so does an interrupt (Ctrl-C) raised while the
  loop's own thread made a batch (``workers="inline"``), which is raised as it is. Any other error ends
  the epoch.
* **Copies overlap steps.** With ``finish_ahead`` (batches go to a device), the next batch is finished as
  soon as its samples are in, one ahead of the loop, so that its copy runs during the loop's step. Only a
  batch without failures: settling failures changes the quarantine, which follows the order batches are
  handed out in. It counts as consumed only once handed out, and an error while finishing it is raised
  by the next ``next()``, where it would have been raised without finishing ahead.
* **No empty batch.** A batch whose every sample failed and was skipped is not handed out; an epoch whose
  every sample failed is one error.
* **Never a silent hang.** A batch not done within ``timeout`` seconds is an error naming the samples
  still in work; the workers are abandoned and the epoch ends. Ending an epoch after an error waits for
  the batches in flight at most as long.
* **No reference cycle.** The iterator holds the Loader (through the host's callables); the Loader holds
  it only weakly, so a Loader dropped with its iterator is freed at once, by reference counting.

Not for making a batch (the host's ``start`` and ``finish``: ``stoke.pipeline.executor``,
``stoke.pipeline.finish``) nor for the position across epochs (``Loader.state_dict``).

Example:
    >>> import numpy as np
    >>> plan = EpochPlan.of(np.arange(10), epoch=0, start=4, batch_size=4, rank=0, world_size=1, drop_last=False)
    >>> plan.count, plan.batch(1)[0].tolist(), plan.consumed(1), plan.consumed(2)
    (2, [8, 9], 8, 10)
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from stoke.errors import SampleError, keeps_epoch
from stoke.order import rank_share
from stoke.pipeline.batch import BatchJob
from stoke.pipeline.quarantine import LoadQuarantine

WAIT_SLICE = 0.1  # seconds between checks of the timeout while waiting for a batch


@dataclass(frozen=True)
class EpochPlan:
    """This rank's samples of one epoch (``positions``, in order), from the job's position ``start`` on."""

    epoch: int
    start: int  # samples of the epoch's order the whole job had consumed before this plan
    order_length: int
    batch_size: int
    world_size: int
    positions: np.ndarray
    padding: np.ndarray | None  # per position: a duplicate that pads the epoch to equal shares (or None)

    @classmethod
    def of(
        cls, order: np.ndarray, epoch: int, start: int, batch_size: int, rank: int, world_size: int, drop_last: bool
    ) -> EpochPlan:
        """The plan of rank ``rank`` for an epoch whose order is ``order``, resuming after ``start`` samples."""
        start = min(start, len(order))
        positions, padding = rank_share(order, start, batch_size, rank, world_size, drop_last)
        flagged = padding if world_size > 1 and not drop_last else None
        return cls(epoch, start, len(order), batch_size, world_size, positions, flagged)

    @property
    def count(self) -> int:
        """Batches of this rank."""
        return -(-len(self.positions) // self.batch_size)

    def batch(self, number: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The positions of batch ``number``, and which of them pad the epoch (None without padding)."""
        rows = slice(number * self.batch_size, (number + 1) * self.batch_size)
        return self.positions[rows], self.padding[rows] if self.padding is not None else None

    def consumed(self, handed_out: int) -> int:
        """Samples of the epoch's order the whole job has consumed once every rank has had ``handed_out``
        batches: what ``state_dict`` saves."""
        return min(self.start + handed_out * self.batch_size * self.world_size, self.order_length)


class Jobs(Protocol):
    """What starts an epoch's batch jobs and takes them back (:class:`~stoke.pipeline.line.BatchLine`)."""

    in_flight: int

    def start(self, epoch: int, number: int, positions: np.ndarray) -> BatchJob:
        """Batch ``number``'s job, its buffers taken and its work queued."""
        ...

    def release(self, job: BatchJob) -> None:
        """Give the job's buffers back to the pool."""
        ...

    def abandon(self) -> None:
        """Drop the workers, stuck on a batch."""
        ...


@dataclass(frozen=True)
class EpochHost:
    """What an epoch's iterator is given by the Loader that makes it; it reaches nothing else of the Loader.

    The Loader makes one per iterator and does not keep it: its callables hold the Loader, so keeping it
    would make a cycle (see the module docstring).
    """

    line: Jobs
    """Starts batch jobs (``start``), takes their buffers back (``release``), says how many to keep in
    flight (``in_flight``, which the tuner moves) and drops stuck workers (``abandon``):
    ``stoke.pipeline.line``."""
    finish: Callable[[BatchJob, int], tuple[dict[str, Any], Any]]
    """``finish(job, epoch_size)``: the done job's batch dict and ready event (``stoke.pipeline.finish``);
    raises the job's error or the quarantine's."""
    hand_over: Callable[[dict[str, Any], Any, int, float], Any]
    """``hand_over(batch, ready, samples, waited)``: the value the loop gets for a finished batch (counted,
    its copy awaited on the loop's stream, shaped like the dataset's items)."""
    hand_back: Callable[[EpochIterator], None]
    """Takes back the position of an iterator left unfinished: cancels it, and the next ``iter()`` continues."""
    requested: Callable[[Sequence[BatchJob]], None]
    """The loop asks for a batch, these being in flight (for the profiler)."""
    stand_in: Callable[[], Any]
    """A batch to hand out instead, without advancing the epoch (the profiler's repeated batch), or None."""
    quarantine: LoadQuarantine
    timeout: float | None
    """Seconds the loop may wait for one batch; None waits for ever."""
    finish_ahead: bool
    """Finish the next batch one ahead of the loop (batches go to a device)."""


class EpochIterator:
    """One epoch's batches, with a bounded number in flight; see the module docstring."""

    def __init__(self, plan: EpochPlan, host: EpochHost) -> None:
        self.plan = plan
        self.epoch = plan.epoch
        self._host = host
        self._count = plan.count
        self._next_start = 0  # the next batch to start
        self._next_yield = 0  # the next batch to hand out
        self._delivered = 0  # samples handed out in this epoch on this rank
        self._in_flight: collections.deque[BatchJob] = collections.deque()
        # A batch finished ahead of the loop (batch, ready event, samples, seconds waited), or the error that
        # finishing it raised; see _finish_ahead.
        self._ahead: tuple[dict[str, Any], Any, int, float] | BaseException | None = None

    def __iter__(self) -> EpochIterator:
        return self

    def __len__(self) -> int:
        return self._count - self._next_yield

    @property
    def finished(self) -> bool:
        return self._next_yield >= self._count

    @property
    def consumed(self) -> int:
        """Samples of the epoch's order the whole job has consumed (every rank has had as many batches)."""
        return self.plan.consumed(self._next_yield)

    def __next__(self) -> Any:
        host = self._host
        host.requested(self._in_flight)
        if isinstance(self._ahead, BaseException):  # finishing the batch ahead failed, and ended the epoch
            error, self._ahead = self._ahead, None
            raise error
        if self._next_yield >= self._count:
            raise StopIteration
        stand_in = host.stand_in()
        if stand_in is not None:
            return stand_in
        waited = 0.0
        while True:  # a batch whose every sample failed and was skipped is not handed out: on to the next
            if self._next_yield >= self._count:
                self._end_without_samples()
            if self._ahead is not None:
                (batch, ready, size, waited_now), self._ahead = self._ahead, None
            else:
                self._fill()
                job = self._in_flight.popleft()
                waited_now = self._wait(job)
                batch, ready = self._take(job)
                size = len(batch["index"])
            waited += waited_now
            self._next_yield += 1
            if size:
                break
        self._delivered += size
        self._fill()
        if host.finish_ahead:
            self._finish_ahead()
        return host.hand_over(batch, ready, size, waited)

    def cancel(self) -> None:
        """Stop the batches in flight and give their buffers back; the epoch ends here. A batch still in
        work after ``timeout`` seconds (a stuck read) is given up as :meth:`_stuck` does: the workers are
        abandoned and its buffers stay out of use, so that cancelling never hangs."""
        for job in self._in_flight:
            job.cancelled = True
        timeout = self._host.timeout
        deadline = None if timeout is None else time.perf_counter() + timeout
        while self._in_flight:
            job = self._in_flight[0]
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            job.complete()
            if not job.done.wait(left):
                self._in_flight.clear()  # may still be written: not reused
                self._host.line.abandon()
                break
            self._in_flight.popleft()
            self._host.line.release(job)
        if not isinstance(self._ahead, BaseException):
            self._ahead = None  # a finished batch: its buffers are back in the pool already
        self._next_yield = self._next_start = self._count

    def __del__(self) -> None:
        """Dropped unfinished (``next(iter(loader))``, a loop that broke out): hand the position back."""
        try:
            if not self.finished:
                self._host.hand_back(self)
        except Exception:  # at interpreter shutdown there is nothing useful to do
            pass

    # ---- internals --------------------------------------------------------------------------------
    def _end_without_samples(self) -> None:
        """The epoch ends after batches that all failed: an error if it delivered no sample at all."""
        if self._delivered == 0 and self.plan.positions.size:
            raise self._host.quarantine.all_failed(self.epoch, self.plan.positions.size)
        raise StopIteration

    def _wait(self, job: BatchJob) -> float:
        """Seconds spent waiting for ``job``'s samples (raises if it is stuck past the timeout)."""
        started = time.perf_counter()
        timeout = self._host.timeout
        job.complete()  # a job begun in the background (workers="inline" with helpers): finished here
        while not job.done.wait(WAIT_SLICE):
            if timeout is not None and time.perf_counter() - started > timeout:
                raise self._stuck(job)
        return time.perf_counter() - started

    def _take(self, job: BatchJob) -> tuple[dict[str, Any], Any]:
        """The finished ``job``'s batch and its ready event; its buffers go back to the pool either way."""
        try:
            return self._host.finish(job, len(self.plan.positions))
        except BaseException as error:
            # The machine's fault, or an interrupt (Ctrl-C, the batch made in the loop's thread): the next
            # iter() retries from here, as after an interrupt while waiting for a worker's batch.
            if keeps_epoch(error):
                self._host.hand_back(self)
            else:
                self.cancel()
            raise
        finally:
            self._host.line.release(job)

    def _finish_ahead(self) -> None:
        """Finish the next batch now if its samples are all in and none failed (see the module docstring)."""
        if self._ahead is not None or not self._in_flight or self._next_yield >= self._count:
            return
        job = self._in_flight[0]
        if not job.done.is_set() or job.error is not None or job.failures:
            return
        self._in_flight.popleft()
        try:
            batch, ready = self._take(job)
        except Exception as error:  # raised by the next next()
            self._ahead = error
            return
        self._ahead = (batch, ready, job.size, 0.0)
        self._fill()

    def _fill(self) -> None:
        while self._next_start < self._count and len(self._in_flight) < self._host.line.in_flight:
            number = self._next_start
            positions, padding = self.plan.batch(number)
            job = self._host.line.start(self.epoch, number, positions)
            if padding is not None:
                job.padding = padding
            self._in_flight.append(job)
            self._next_start += 1

    def _stuck(self, job: BatchJob) -> SampleError:
        """Give up on a batch that has not finished in time: name its samples still in work, abandon the
        workers (a stuck thread cannot be stopped; stuck processes are killed) and end the epoch."""
        rows = sorted(job.running.values()) or list(range(job.size))  # processes: the whole batch
        indices = [int(job.indices[row]) for row in rows]
        for pending in [job, *self._in_flight]:
            pending.cancelled = True
        self._in_flight.clear()  # their buffers may still be written: they are not reused
        self._next_yield = self._next_start = self._count
        self._host.line.abandon()
        shown = ", ".join(map(str, indices[:8])) + (", ..." if len(indices) > 8 else "")
        return SampleError(
            f"batch {job.number} of epoch {self.epoch} did not finish in {self._host.timeout:g} s; samples still "
            f"in work: {shown}; a transform or the dataset's read is stuck or far too slow (pass a larger "
            f"timeout= if it is just slow)",
            index=indices[0] if indices else None,
        )
