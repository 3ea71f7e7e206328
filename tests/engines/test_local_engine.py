"""The local engine: results in task order, and an interrupted or failed run stops its worker processes at once."""

from __future__ import annotations

import _thread
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from helpers import running
from stoke.engines.local import run_tasks


def slow_task(marker: Path):
    def work(task: int, advance) -> int:
        marker.touch()
        time.sleep(0.5)
        advance(1)
        return task * 10

    return work


def new_children(before: set[int]) -> list[psutil.Process]:
    return [child for child in psutil.Process().children(recursive=True) if child.pid not in before]


def test_results_come_in_task_order_from_processes():
    results = run_tasks([3, 0, 2, 1], lambda task, advance: (task, os.getpid()), workers=2, total=0, progress=False)
    assert [task for task, _ in results] == [3, 0, 2, 1]
    assert os.getpid() not in {pid for _, pid in results}  # they ran in the workers


def test_an_interrupt_stops_every_worker_instead_of_finishing_the_queued_tasks(tmp_path):
    marker = tmp_path / "started"
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    workers: list[psutil.Process] = []

    def interrupt_once_working() -> None:  # as Ctrl-C does: KeyboardInterrupt in the main thread
        while not marker.exists():
            time.sleep(0.01)
        workers.extend(new_children(before))
        _thread.interrupt_main()

    threading.Thread(target=interrupt_once_working, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_tasks(list(range(40)), slow_task(marker), workers=2, total=40, progress=False)  # 10 s of work
    assert time.monotonic() - started < 4.0
    assert len(workers) == 2
    assert running(workers) == []  # stopped and reaped before the interrupt went on up


def test_a_failing_task_stops_the_others_too(tmp_path):
    marker = tmp_path / "started"
    before = {child.pid for child in psutil.Process().children(recursive=True)}

    def work(task: int, advance) -> int:
        if task == 3:
            while not marker.exists():  # the other worker is inside a slow task
                time.sleep(0.01)
            raise ValueError("task 3 is broken")
        marker.touch()
        time.sleep(0.5)
        return task

    started = time.monotonic()
    with pytest.raises(ValueError, match="task 3 is broken"):
        run_tasks([3, *range(4, 40)], work, workers=2, total=0, progress=False)
    assert time.monotonic() - started < 4.0
    assert running(new_children(before)) == []
