"""Loaders created, partly iterated, closed or dropped by the dozen leave nothing behind: file descriptors,
threads, /dev/shm entries, child processes and memory return to where they started."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from pathlib import Path

import numpy as np
import psutil

import stoke
from stoke.ops import RandomResizedCrop

ROUNDS = 40


def _open_files() -> dict[str, str]:
    targets = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir itself used
            targets[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return targets


def _snapshot() -> dict[str, object]:
    process = psutil.Process()
    shm = Path("/dev/shm")
    files = _open_files()
    return {
        "fds": len(files),
        "files": files,
        "threads": threading.active_count(),
        "children": {child.pid for child in process.children(recursive=True)},
        "shm": set(os.listdir(shm)) if shm.is_dir() else set(),
        "rss": process.memory_info().rss,
    }


def _settled(before: dict[str, object], slack_fds: int = 0) -> dict[str, object]:
    """The state once workers that were told to stop have stopped (a few seconds at most)."""
    deadline = time.monotonic() + 10
    while True:
        gc.collect()
        now = _snapshot()
        done = (
            now["fds"] <= before["fds"] + slack_fds
            and now["threads"] <= before["threads"]
            and not now["children"] - before["children"]
        )
        if done or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def test_forty_thread_and_forty_process_loaders_leave_nothing_behind(photos):
    transforms = {"image": [RandomResizedCrop(16)]}
    for workers in ("thread", "process"):  # the first use loads libraries and maps the shards: not a leak
        warm = stoke.Loader(photos, batch_size=4, transforms=transforms, workers=workers, num_threads=2)
        list(warm)
        warm.close()
        del warm
    before = _settled(_snapshot())
    for round_number in range(ROUNDS):
        for workers in ("thread", "process"):
            loader = stoke.Loader(
                photos, batch_size=4, shuffle=True, transforms=transforms, workers=workers, num_threads=2
            )
            iterator = iter(loader)
            for _ in range(round_number % 3 + 1):  # partly iterated
                next(iterator)
            if round_number % 2:  # half are closed, half dropped without close()
                loader.close()
            del loader, iterator
    after = _settled(before)
    assert after["threads"] <= before["threads"], "worker threads left behind"
    assert not after["children"] - before["children"], "worker processes left behind"
    opened = {fd: target for fd, target in after["files"].items() if before["files"].get(fd) != target}
    assert after["fds"] <= before["fds"], f"file descriptors left open: {opened}"
    assert after["shm"] <= before["shm"], "/dev/shm entries left behind"
    grown = (after["rss"] - before["rss"]) / 2**20
    assert grown < 64, f"resident memory grew by {grown:.0f} MiB over {2 * ROUNDS} loaders"


def test_loaders_over_a_users_dataset_leave_nothing_behind():
    data = {"x": np.arange(256, dtype=np.float32).reshape(64, 4), "y": np.arange(64)}
    before = _settled(_snapshot())
    for round_number in range(ROUNDS):
        loader = stoke.Loader(data, batch_size=8, num_threads=2, workers="process" if round_number % 2 else "thread")
        next(iter(loader))
        del loader
    after = _settled(before)
    assert after["threads"] <= before["threads"] and not after["children"] - before["children"]
    assert after["fds"] <= before["fds"]
