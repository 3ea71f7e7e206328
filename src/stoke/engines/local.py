"""The local engine: run pack tasks in a pool of processes on this machine, with a progress bar.

Processes, not threads, because encoding runs Python code per item (Pillow, the user's ``__getitem__``)
that holds the GIL. Workers are forked where the platform allows it, so the source (a user's dataset,
say) is inherited rather than pickled; each worker asks the kernel to kill it if the driver dies, so a
killed pack leaves no orphans writing shards behind a later ``--resume``. One worker, or one task, runs
in this process.

Example:
    >>> run_tasks([0, 1], lambda task, advance: task * 10, workers=1, total=0, progress=False)
    [0, 10]
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
Task = Callable[[int, Callable[[int], None]], T]

_task: Task | None = None
_counter: Any = None


def available_cores() -> int:
    """Cores this process may run on (the affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_tasks(
    tasks: Sequence[int],
    work: Task[T],
    workers: int,
    total: int,
    progress: bool,
    description: str = "packing",
) -> list[T]:
    """Run ``work(task, advance)`` for every task; results in task order. ``total`` sizes the progress bar."""
    bar = tqdm(total=total, desc=description, unit="item", disable=not progress or None, dynamic_ncols=True)
    try:
        if workers <= 1 or len(tasks) <= 1:
            return [work(task, bar.update) for task in tasks]
        return _run_in_processes(tasks, work, min(workers, len(tasks)), bar)
    finally:
        bar.close()


def _run_in_processes(tasks: Sequence[int], work: Task[T], workers: int, bar: tqdm) -> list[T]:
    global _task, _counter
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    counter = context.Value("q", 0)
    _task, _counter = work, counter
    results: dict[int, T] = {}
    executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_initialize, initargs=(work, counter))
    try:
        # The pool forks its workers as tasks are submitted. Python 3.12+ warns about forking a process
        # that has threads (numeric libraries start their own): a lock held by another thread at that
        # moment stays held in the child. torch's DataLoader makes the same trade, for the same reason:
        # forking lets a user's dataset be inherited instead of pickled.
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*fork\(\) may lead to deadlocks.*", category=DeprecationWarning
            )
            pending = {executor.submit(_run_one, task): task for task in tasks}
        seen = 0
        while pending:
            finished, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            for future in finished:
                results[pending.pop(future)] = future.result()
            value = counter.value
            bar.update(value - seen)
            seen = value
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        executor.shutdown(wait=True)
    finally:
        _task = _counter = None
    return [results[task] for task in tasks]


def _initialize(work: Task[Any], counter: Any) -> None:
    global _task, _counter
    _task, _counter = work, counter
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and stops the pool


def _run_one(task: int) -> Any:
    assert _task is not None
    return _task(task, _advance)


def _advance(count: int) -> None:
    with _counter.get_lock():
        _counter.value += count


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the driver process dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the driver died before prctl took effect
        os._exit(1)
