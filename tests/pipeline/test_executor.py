"""The executor protocol: one suite run against every kind in EXECUTORS (threads, processes, inline), as
torchdata runs one save/resume helper against every node; and the Loader never asks which kind it has. What
only workers beside the loop can do (stop while a sample is stuck) runs against the kinds ``in_background``;
the inline kind's own promise (the job done when ``start`` returns, in the caller's thread) has its test."""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil
import pytest

import stoke.loader
from stoke.errors import ConfigError
from stoke.pipeline.batch import BatchJob
from stoke.pipeline.buffers import BufferPool
from stoke.pipeline.executor import EXECUTORS, Executor, executor_kind, make_executor
from stoke.pipeline.inline import _helper_ids

KINDS = sorted(EXECUTORS)
BACKGROUND = [kind for kind in KINDS if EXECUTORS[kind].in_background]


class MachineError(Exception):
    """Not a sample's fault (a full disk): it ends the job instead of being one row's failure."""

    ends_epoch = True


def draw(epoch: int, indices: np.ndarray) -> dict[str, Any]:
    return {"x": (indices % 7 + epoch).astype(np.float64)}


def expected(indices: np.ndarray, epoch: int) -> list[float]:
    return (indices * 10.0 + indices % 7 + epoch).tolist()


def writes(job: BatchJob, row: int) -> None:
    """A sample's work: a value that depends on its dataset index and on the numbers drawn for it."""
    job.buffers.arrays["x"][row] = job.indices[row] * 10.0 + job.params["x"][row]


class Harness:
    """An executor of one kind, with buffers of the kind it needs, and jobs over them."""

    def __init__(self, kind: str, produce: Callable[[BatchJob, int], None], workers: int = 2) -> None:
        self.pool = BufferPool(
            {"index": ((), np.dtype(np.int64)), "x": ((), np.dtype(np.float64))},
            batch_size=16,
            pin=False,
            max_sets=8,
            shared=EXECUTORS[kind].shared_buffers,
        )
        self.executor: Executor = make_executor(kind, workers, produce, draw)

    def job(self, indices: np.ndarray, epoch: int = 0, chunk: int = 3) -> BatchJob:
        buffers = self.pool.acquire()
        buffers.arrays["index"][: len(indices)] = indices
        return BatchJob(0, np.arange(len(indices)), indices, buffers, {}, chunk, epoch)

    def run(self, indices: np.ndarray, epoch: int = 0, chunk: int = 3) -> BatchJob:
        job = self.job(indices, epoch, chunk)
        self.executor.start(job)
        assert job.done.wait(20), "the job never finished"
        return job


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=BACKGROUND)
def background(request: pytest.FixtureRequest) -> str:
    return request.param


def settled(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_every_sample_is_produced_with_the_numbers_drawn_for_it(kind):
    harness = Harness(kind, writes)
    try:
        indices = np.array([12, 3, 40, 7, 7, 21, 0, 5, 9, 11], dtype=np.int64)
        job = harness.run(indices, epoch=2)
        assert job.error is None and job.failures == []
        assert job.buffers.arrays["x"][: len(indices)].tolist() == expected(indices, 2)
    finally:
        harness.executor.shutdown()


def test_a_failing_sample_fails_its_row_only(kind):
    def produce(job: BatchJob, row: int) -> None:
        if job.indices[row] == 4:
            raise ValueError("sample 4 is undecodable")
        writes(job, row)

    harness = Harness(kind, produce)
    try:
        indices = np.arange(8, dtype=np.int64)
        job = harness.run(indices)
        assert job.error is None
        assert [(row, type(error).__name__, str(error)) for row, error in job.failures] == [
            (4, "ValueError", "sample 4 is undecodable")
        ]
        produced = [row for row in range(8) if row != 4]
        assert job.buffers.arrays["x"][produced].tolist() == expected(indices[produced], 0)
    finally:
        harness.executor.shutdown()


def test_an_error_that_ends_the_epoch_is_the_jobs_error(kind):
    def produce(job: BatchJob, row: int) -> None:
        if job.indices[row] == 5:
            raise MachineError("the cache disk is full")
        writes(job, row)

    harness = Harness(kind, produce)
    try:
        job = harness.run(np.arange(8, dtype=np.int64))
        assert isinstance(job.error, MachineError) and job.error_position == 5
        assert job.failures == []
    finally:
        harness.executor.shutdown()


def test_a_worker_that_dies_fails_its_job_instead_of_hanging(kind):
    parent = os.getpid()

    def produce(job: BatchJob, row: int) -> None:
        if job.indices[row] == 100:
            if os.getpid() != parent:
                os._exit(3)  # a process worker dies (as under the OOM killer)
            raise SystemExit(3)  # the most a thread's task can do: it does not take the thread with it
        writes(job, row)

    harness = Harness(kind, produce)
    try:
        job = harness.run(np.array([1, 2, 100, 3], dtype=np.int64), chunk=4)
        assert job.error is not None
        assert harness.executor.broken == (kind == "process")
        if not harness.executor.broken:  # an executor that is not broken goes on working
            again = harness.run(np.arange(6, dtype=np.int64))
            assert again.error is None and again.buffers.arrays["x"][:6].tolist() == expected(np.arange(6), 0)
        else:
            assert "worker process" in str(job.error) and "exited with code 3" in str(job.error)
    finally:
        harness.executor.shutdown()


def test_resize_changes_the_workers_or_refuses_clearly(kind):
    harness = Harness(kind, writes, workers=2)
    executor = harness.executor
    try:
        executor.resize(executor.num_workers)  # its own count: always accepted
        if executor.resizable:
            executor.resize(3)
            assert executor.num_workers == 3
            executor.resize(1)
            assert executor.num_workers == 1
        else:
            workers = executor.num_workers
            refused = r"keeps the (2 workers it was forked with|threads it was made with \(2: .*\)), so it cannot run 3"
            with pytest.raises(ConfigError, match=refused):
                executor.resize(3)
            assert executor.num_workers == workers
        job = harness.run(np.arange(9, dtype=np.int64))
        assert job.error is None and job.buffers.arrays["x"][:9].tolist() == expected(np.arange(9), 0)
    finally:
        executor.shutdown()


def test_shutdown_stops_every_worker_now_and_ends_the_jobs_in_work(background):
    kind = background
    threads_before = threading.active_count()
    children_before = {child.pid for child in psutil.Process().children()}

    def produce(job: BatchJob, row: int) -> None:
        time.sleep(0.2)
        writes(job, row)

    harness = Harness(kind, produce)
    jobs = [harness.job(np.arange(16, dtype=np.int64), chunk=1) for _ in range(2)]  # 6.4 s of work
    for job in jobs:
        harness.executor.start(job)
    time.sleep(0.3)
    started = time.monotonic()
    harness.executor.shutdown()
    assert time.monotonic() - started < 3.0  # the work left is dropped, not waited for
    for job in jobs:
        assert job.done.wait(3), "a job in work never ended"
        assert job.cancelled or job.error is not None  # ended, not finished
    assert harness.executor.cpu_stat_paths == []
    assert settled(lambda: threading.active_count() <= threads_before)
    assert settled(lambda: not {child.pid for child in psutil.Process().children()} - children_before)


def test_abandon_returns_at_once_while_a_sample_is_stuck(background):
    kind = background
    release = threading.Event()  # set in this process only: a forked copy waits until it is stopped

    def produce(job: BatchJob, row: int) -> None:
        release.wait(30)
        writes(job, row)

    threads_before = threading.active_count()
    children_before = {child.pid for child in psutil.Process().children()}
    harness = Harness(kind, produce)
    job = harness.job(np.arange(4, dtype=np.int64), chunk=2)
    harness.executor.start(job)
    time.sleep(0.2)
    started = time.monotonic()
    harness.executor.abandon()
    assert time.monotonic() - started < 3.0
    release.set()  # a stuck thread leaves once its sample returns; stuck processes were stopped
    assert settled(lambda: threading.active_count() <= threads_before)
    assert settled(lambda: not {child.pid for child in psutil.Process().children()} - children_before)


def test_cpu_stat_paths_name_each_running_worker(kind):
    harness = Harness(kind, writes, workers=2)
    try:
        harness.run(np.arange(4, dtype=np.int64))
        paths = harness.executor.cpu_stat_paths
        assert harness.executor.num_workers == 2
        if EXECUTORS[kind].in_background:
            assert len(paths) == 2
        else:  # the loop's thread, and the gather's helpers where batches of token blocks started them
            assert 1 <= len(paths) == 1 + len(_helper_ids())
        for path in paths:
            with open(path, "rb") as stream:
                assert stream.read().count(b" ") > 20  # a /proc stat line
    finally:
        harness.executor.shutdown()


def test_retiring_a_buffer_leaves_the_workers_working_on_new_ones(kind):
    harness = Harness(kind, writes)
    try:
        first = harness.run(np.arange(4, dtype=np.int64))
        for block in first.buffers.blocks.values():
            harness.executor.retire(block)  # process workers unmap it; threads have nothing to do
            block.close()
        harness.pool = BufferPool(harness.pool.specs, 16, pin=False, shared=harness.pool.shared)
        second = harness.run(np.arange(10, 16, dtype=np.int64))
        assert second.error is None and second.buffers.arrays["x"][:6].tolist() == expected(np.arange(10, 16), 0)
    finally:
        harness.executor.shutdown()


def test_every_kind_declares_its_capabilities_and_an_unknown_kind_is_named():
    for cls in EXECUTORS.values():
        assert isinstance(cls.resizable, bool) and isinstance(cls.shared_buffers, bool)
    with pytest.raises(ConfigError, match=r"workers must be 'thread' or 'process' or 'inline', got 'fibers'"):
        executor_kind("fibers")
    with pytest.raises(ConfigError, match=r"got \['thread'\]"):
        executor_kind(["thread"])


def test_inline_work_is_done_when_start_returns_in_the_callers_thread():
    threads: set[int] = set()

    def produce(job: BatchJob, row: int) -> None:
        threads.add(threading.get_ident())
        writes(job, row)

    harness = Harness("inline", produce)
    indices = np.arange(7, dtype=np.int64)
    job = harness.job(indices, epoch=1)
    harness.executor.start(job)
    assert job.done.is_set() and threads == {threading.get_ident()}
    assert job.buffers.arrays["x"][:7].tolist() == expected(indices, 1)
    assert not EXECUTORS["inline"].can_time_out and all(EXECUTORS[kind].can_time_out for kind in BACKGROUND)


def test_the_loader_never_asks_which_executor_it_has():
    source = inspect.getsource(stoke.loader)
    for name in ("ProcessPool", "WorkerPool", "ThreadExecutor", 'workers == "process"', "workers == 'process'"):
        assert name not in source, name
