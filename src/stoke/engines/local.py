"""The local engine: run pack tasks in a pool of processes on this machine, with a progress bar.

Processes, not threads, because encoding runs Python code per item (Pillow, the user's ``__getitem__``)
that holds the GIL. Workers are forked where the platform allows it, so the source (a user's dataset,
say) is inherited rather than pickled; each worker asks the kernel to kill it if the driver dies, so a
killed pack leaves no orphans writing shards behind a later ``--resume``. One worker, or one task, runs
in this process.

When the driver is interrupted (Ctrl-C, or SIGTERM through the ``stoke`` command) or a task fails, the
workers are stopped at once rather than after the tasks already queued: a shard being written is under a
temporary name until it is whole, so ``--resume`` redoes it (``stoke.lifecycle``). The exception then
goes on up.

Example:
    >>> run_tasks([0, 1], lambda task, advance: task * 10, workers=1, total=0, progress=False)
    [0, 10]
"""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from tqdm import tqdm

from stoke.lifecycle import completed, prepare_worker, stop_processes

T = TypeVar("T")
Task = Callable[[int, Callable[[int], None]], T]

_task: Task | None = None
_counter: Any = None


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
            task_of = {executor.submit(_run_one, task): task for task in tasks}
        seen = 0
        for finished in completed(task_of):
            for future in finished:
                results[task_of[future]] = future.result()
            value = counter.value
            bar.update(value - seen)
            seen = value
    except BaseException:
        _stop_now(executor)
        raise
    else:
        executor.shutdown(wait=True)
    finally:
        _task = _counter = None
    return [results[task] for task in tasks]


def _stop_now(executor: ProcessPoolExecutor) -> None:
    """Stop the workers now, reaped, and the pool's manager thread with them; queued tasks never start.

    ``shutdown(cancel_futures=True)`` alone lets running tasks finish, and it cancels the queued ones
    through a weak reference to the executor: once this function's frame is gone, the pool's manager
    thread runs every queued task anyway, and the process stays busy until the last shard is written.
    Python 3.14's ``terminate_workers`` stops the workers; before it, the pool's own process table does.
    The manager thread then finds the pool broken and ends at once; waiting for it here keeps it from
    closing its wake-up pipe while the interpreter's exit hook writes to it (a traceback at exit).
    """
    stop_processes(list((getattr(executor, "_processes", None) or {}).values()))
    executor.shutdown(wait=True, cancel_futures=True)


def _initialize(work: Task[Any], counter: Any) -> None:
    global _task, _counter
    _task, _counter = work, counter
    prepare_worker()  # dies with the driver; Ctrl-C is the driver's to handle


def _run_one(task: int) -> Any:
    assert _task is not None
    return _task(task, _advance)


def _advance(count: int) -> None:
    with _counter.get_lock():
        _counter.value += count
