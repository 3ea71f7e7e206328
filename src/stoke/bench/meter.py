"""CPU time and peak memory of this process (and its children: DataLoader workers), sampled in the background.

Example:
    >>> with Meter() as meter:
    ...     _ = sum(range(100_000))
    >>> meter.cpu_seconds >= 0 and meter.peak_rss_mb > 0
    True
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psutil


class Meter:
    """Measures wall time, CPU seconds and peak RSS of the process tree while the ``with`` block runs."""

    def __init__(self, children: bool = True, interval: float = 0.05) -> None:
        self.children = children
        self.interval = interval
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.peak_rss_mb = 0.0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._cpu_seen: dict[int, float] = {}
        self._cpu_start: dict[int, float] = {}

    def __enter__(self) -> Meter:
        self._started = time.perf_counter()
        self._cpu_start = self._cpu_by_process()
        self._cpu_seen = dict(self._cpu_start)
        self._thread = threading.Thread(target=self._sample, name="stoke-meter", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample_once()
        self.seconds = time.perf_counter() - self._started
        self.cpu_seconds = sum(self._cpu_seen[pid] - self._cpu_start.get(pid, 0.0) for pid in self._cpu_seen)

    @property
    def cpu_percent(self) -> float:
        """CPU time over wall time: 200% means two cores busy the whole time."""
        return 100.0 * self.cpu_seconds / self.seconds if self.seconds else 0.0

    def _processes(self) -> list[psutil.Process]:
        if not self.children:
            return [self._process]
        try:
            return [self._process, *self._process.children(recursive=True)]
        except psutil.Error:
            return [self._process]

    def _cpu_by_process(self) -> dict[int, float]:
        seen = {}
        for process in self._processes():
            try:
                times = process.cpu_times()
                seen[process.pid] = times.user + times.system
            except psutil.Error:
                continue
        return seen

    def _sample_once(self) -> None:
        rss = 0
        for process in self._processes():
            try:
                rss += process.memory_info().rss
            except psutil.Error:
                continue
        self.peak_rss_mb = max(self.peak_rss_mb, rss / 1e6)
        self._cpu_seen.update(self._cpu_by_process())

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample_once()
