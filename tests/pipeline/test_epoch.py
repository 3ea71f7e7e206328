"""The epoch iterator on its own, against a stand-in host: the promises of stoke.pipeline.epoch without a
Loader, workers or data (the Loader's own tests check them end to end)."""

from __future__ import annotations

import time
import weakref
from typing import Any

import numpy as np
import pytest
import torch

from stoke.errors import ErrorBudgetExceeded, SampleError
from stoke.pipeline.batch import BatchJob
from stoke.pipeline.buffers import BufferSet
from stoke.pipeline.epoch import EpochHost, EpochIterator, EpochPlan
from stoke.pipeline.quarantine import LoadQuarantine


class Line:
    """Jobs that are done at once (or never, for the positions in ``stuck``), with their buffers counted."""

    def __init__(self, in_flight: int = 2, stuck: tuple[int, ...] = ()) -> None:
        self.in_flight = in_flight
        self.stuck = set(stuck)
        self.started: list[int] = []
        self.out = 0  # buffer sets taken and not given back
        self.most_out = 0
        self.abandoned = False

    def start(self, epoch: int, number: int, positions: np.ndarray) -> BatchJob:
        self.out += 1
        self.most_out = max(self.most_out, self.out)
        self.started.append(number)
        job = BatchJob(number, positions, positions.copy(), BufferSet({}), {}, chunk=len(positions), epoch=epoch)
        if not self.stuck & set(positions.tolist()):
            job.finish_chunk()
        return job

    def release(self, job: BatchJob) -> None:
        self.out -= 1

    def abandon(self) -> None:
        self.abandoned = True


class Host:
    """An EpochHost whose finish gives the job's positions as the batch, and which records what it is told."""

    def __init__(self, line: Line, *, fail: dict[int, BaseException] | None = None, finish_ahead: bool = False):
        self.line = line
        self.fail = fail or {}  # batch number -> what finishing it raises
        self.empty: set[int] = set()  # batch numbers whose every sample failed and was skipped
        self.finished: list[int] = []
        self.handed_back: list[EpochIterator] = []
        self.quarantine = LoadQuarantine("skip")
        self.finish_ahead = finish_ahead

    def make(self, timeout: float | None = None) -> EpochHost:
        return EpochHost(
            line=self.line,
            finish=self.finish,
            hand_over=lambda batch, ready, samples, waited: batch["index"].tolist(),
            hand_back=self.handed_back.append,
            requested=lambda in_flight: None,
            stand_in=lambda: None,
            quarantine=self.quarantine,
            timeout=timeout,
            finish_ahead=self.finish_ahead,
        )

    def finish(self, job: BatchJob, epoch_size: int) -> tuple[dict[str, Any], Any]:
        self.finished.append(job.number)
        if job.number in self.fail:
            raise self.fail[job.number]
        if job.number in self.empty:
            return {"index": torch.empty(0, dtype=torch.int64)}, None
        return {"index": torch.from_numpy(job.indices)}, None


class DiskFullError(Exception):
    ends_epoch = True


def plan(size: int = 10, batch_size: int = 3, start: int = 0, world_size: int = 1, rank: int = 0) -> EpochPlan:
    return EpochPlan.of(np.arange(size), 0, start, batch_size, rank, world_size, drop_last=False)


def test_the_plan_gives_each_rank_its_batches_and_counts_what_the_job_consumed():
    first, second = plan(11, 2, world_size=2, rank=0), plan(11, 2, world_size=2, rank=1)
    assert first.count == second.count == 3
    assert [first.batch(n)[0].tolist() for n in range(3)] == [[0, 1], [4, 5], [8, 9]]
    assert [second.batch(n)[0].tolist() for n in range(3)] == [[2, 3], [6, 7], [10, 0]]
    assert second.batch(2)[1].tolist() == [False, True]  # sample 0 pads the epoch to equal shares
    assert [first.consumed(n) for n in range(4)] == [0, 4, 8, 11]
    assert plan(10, 3, start=7).batch(0)[0].tolist() == [7, 8, 9]


def test_batches_come_in_order_with_a_bounded_number_in_flight():
    line = Line(in_flight=2)
    iterator = EpochIterator(plan(10, 3), Host(line).make())
    assert list(iterator) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert line.started == [0, 1, 2, 3] and line.most_out <= 2 + 1  # in flight, and the one being handed over
    assert line.out == 0 and iterator.finished and iterator.consumed == 10


def test_the_tuner_moving_in_flight_is_seen_at_the_next_refill():
    line = Line(in_flight=1)
    iterator = EpochIterator(plan(30, 3), Host(line).make())
    next(iterator)
    line.in_flight = 4
    next(iterator)
    assert line.started == [0, 1, 2, 3, 4, 5]


def test_an_iterator_dropped_unfinished_hands_its_position_back_and_a_finished_one_does_not():
    host = Host(Line())
    iterator = EpochIterator(plan(10, 3), host.make())
    next(iterator)
    consumed = iterator.consumed
    handed = weakref.ref(iterator)
    del iterator
    assert len(host.handed_back) == 1 and host.handed_back[0] is handed() and host.handed_back[0].consumed == consumed
    done = Host(Line())
    finished = EpochIterator(plan(4, 2), done.make())
    list(finished)
    del finished
    assert done.handed_back == []


def test_an_error_that_ends_the_epoch_keeps_the_position_and_any_other_ends_the_epoch():
    host = Host(Line(), fail={1: DiskFullError("the cache disk is full")})
    iterator = EpochIterator(plan(12, 3), host.make())
    assert next(iterator) == [0, 1, 2]
    with pytest.raises(DiskFullError):
        next(iterator)
    assert host.handed_back == [iterator] and iterator.consumed == 3  # the next iter() retries batch 1

    other = Host(Line(), fail={1: SampleError("sample 4 failed", index=4)})
    iterator = EpochIterator(plan(12, 3), other.make())
    next(iterator)
    with pytest.raises(SampleError):
        next(iterator)
    assert other.handed_back == [] and other.line.out == 0  # cancelled: every buffer set given back
    with pytest.raises(StopIteration):
        next(iterator)


def test_a_batch_whose_samples_all_failed_is_skipped_and_an_epoch_of_them_is_one_error():
    host = Host(Line())
    host.empty = {1}
    assert list(EpochIterator(plan(9, 3), host.make())) == [[0, 1, 2], [6, 7, 8]]
    nothing = Host(Line())
    nothing.empty = {0, 1, 2}
    with pytest.raises(ErrorBudgetExceeded, match=r"every one of the 9 samples of epoch 0 failed"):
        next(EpochIterator(plan(9, 3), nothing.make()))


def test_a_stuck_batch_is_reported_naming_its_samples_and_the_workers_are_abandoned():
    line = Line(stuck=(4,))
    iterator = EpochIterator(plan(9, 3), Host(line).make(timeout=0.3))
    next(iterator)
    started = time.monotonic()
    with pytest.raises(
        SampleError, match=r"batch 1 of epoch 0 did not finish in 0.3 s; samples still in work: 3, 4, 5"
    ):
        next(iterator)
    assert time.monotonic() - started < 5 and line.abandoned and iterator.finished


def test_an_error_with_a_stuck_batch_in_flight_is_raised_within_the_timeout_not_a_hang():
    line = Line(stuck=(4,))  # batch 1 never finishes, and finishing batch 0 fails
    host = Host(line, fail={0: SampleError("sample 0 failed", index=0)})
    iterator = EpochIterator(plan(9, 3), host.make(timeout=0.3))
    started = time.monotonic()
    with pytest.raises(SampleError, match="sample 0 failed"):
        next(iterator)  # cancelling the epoch waits for batch 1 at most the timeout, then gives it up
    assert time.monotonic() - started < 5 and line.abandoned and iterator.finished
    assert line.out == 1  # the stuck batch's buffers stay out of use: a stuck worker may still write them


def test_the_next_batch_is_finished_ahead_and_its_error_raised_where_it_belongs():
    host = Host(Line(in_flight=3), fail={2: RuntimeError("a batch op failed on batch 2")}, finish_ahead=True)
    iterator = EpochIterator(plan(12, 3), host.make())
    assert next(iterator) == [0, 1, 2]
    assert host.finished == [0, 1]  # batch 1 finished while the loop holds batch 0
    assert iterator.consumed == 3  # but not consumed before it is handed out
    assert next(iterator) == [3, 4, 5]  # delivered, although finishing batch 2 ahead failed
    with pytest.raises(RuntimeError, match="batch 2"):
        next(iterator)
    with pytest.raises(StopIteration):
        next(iterator)
