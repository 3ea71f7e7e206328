"""Auto-tuning of thread count and prefetch depth by hill-climbing on the measured delivery rate.

The Loader reports every batch it hands over: how long the training loop waited for it. Every
``window`` seconds the tuner computes the delivery rate and the loop's wait share. Only an input-bound
loop (waiting more than ``INPUT_BOUND`` of the time) is worth tuning. Then it tries one move and
measures a window with it:

* one more thread, while the worker threads use less CPU than the budget allows (threads that wait on
  page faults, storage or the GIL leave cores idle; when the cores are busy, a thread only adds
  contention);
* else one more batch in flight, while its buffers fit in the RAM budget.

A move that raises the rate by at least ``GAIN`` is kept and the climb goes on; otherwise it is undone
and that direction is marked as explored. When no move is left the tuner settles. Results never
depend on these settings: randomness comes from sample indices, not threads. The chosen settings, and
every measured window, are in ``Loader.stats()["autotune"]`` and logged on the ``stoke`` logger.

:func:`tuner_for` sets the climb's bounds from the Loader's arguments: threads up to twice the CPU budget
(only for an executor that resizes), prefetch up to what the RAM budget holds (at most ``MAX_PREFETCH``).

Example:
    >>> tuner = AutoTuner(threads=2, prefetch=3, max_threads=4, max_prefetch=8, window=0.0)
    >>> tuner.settings
    (2, 3)
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import psutil

logger = logging.getLogger("stoke")

INPUT_BOUND = 0.05  # wait share above which the loop is input-bound
GAIN = 0.03  # a move must raise the rate by this much to be kept
CPU_HEADROOM = 0.85  # threads may be added while worker CPU use is below this share of the budget
MAX_PREFETCH = 32  # batches in flight the tuner may reach, whatever the RAM budget
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Window:
    """One measured window: the settings in force and what they delivered."""

    threads: int
    prefetch: int
    rate: float
    wait_share: float
    cpu_share: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        """The window as JSON-ready data, rounded for reading."""
        return {
            "threads": self.threads,
            "prefetch": self.prefetch,
            "rate": round(self.rate, 1),
            "wait_share": round(self.wait_share, 3),
            "cpu_share": None if self.cpu_share is None else round(self.cpu_share, 3),
        }


@dataclass
class AutoTuner:
    """The hill-climber; ``after_batch`` returns new (threads, prefetch) when it wants a change."""

    threads: int
    prefetch: int
    max_threads: int
    max_prefetch: int
    cpu_budget: float = 1.0  # cores the workers may use
    window: float = 0.5
    state: str = "measuring"
    history: list[Window] = field(default_factory=list)
    _baseline: Window | None = None
    _trial: tuple[int, int] | None = None
    _explored: set[str] = field(default_factory=set)
    _started: float = 0.0
    _samples: int = 0
    _waited: float = 0.0
    _cpu_start: float | None = None
    _skip: int = 1

    @property
    def settings(self) -> tuple[int, int]:
        return self.threads, self.prefetch

    def after_batch(self, samples: int, waited: float, stat_paths: list[str]) -> tuple[int, int] | None:
        """Account one delivered batch; at the end of a window, maybe move. Returns settings to apply."""
        if self.state == "settled":
            return None
        now = time.perf_counter()
        if self._skip:  # the batches in flight when settings changed were made under the old ones
            self._skip -= 1
            self._start_window(now, stat_paths)
            return None
        self._samples += samples
        self._waited += waited
        elapsed = now - self._started
        if elapsed < self.window or self._samples == 0:
            return None
        cpu = _cpu_seconds(stat_paths)
        cpu_share = None
        if cpu is not None and self._cpu_start is not None:
            cpu_share = (cpu - self._cpu_start) / elapsed / self.cpu_budget
        measured = Window(self.threads, self.prefetch, self._samples / elapsed, self._waited / elapsed, cpu_share)
        self.history.append(measured)
        self._start_window(now, stat_paths)
        return self._decide(measured)

    def _start_window(self, now: float, stat_paths: list[str]) -> None:
        self._started, self._samples, self._waited = now, 0, 0.0
        self._cpu_start = _cpu_seconds(stat_paths)

    def _decide(self, measured: Window) -> tuple[int, int] | None:
        if self._trial is not None:  # judge the move just tried
            baseline = self._baseline
            assert baseline is not None
            if measured.rate >= baseline.rate * (1 + GAIN):
                logger.info("stoke autotune: kept %s threads, prefetch %s (%.0f/s)", *self.settings, measured.rate)
                self._baseline, self._trial = measured, None
                return self._move(measured)
            direction = "threads" if self.threads != baseline.threads else "prefetch"
            self._explored.add(direction)
            self.threads, self.prefetch = baseline.threads, baseline.prefetch
            self._trial = None
            self._skip = 1
            return self.settings
        if measured.wait_share < INPUT_BOUND:
            self._baseline = measured
            return None  # the loop is not waiting for data: nothing to gain
        self._baseline = measured
        return self._move(measured)

    def _move(self, measured: Window) -> tuple[int, int] | None:
        spare_cpu = measured.cpu_share is not None and measured.cpu_share < CPU_HEADROOM
        if "threads" not in self._explored and spare_cpu and self.threads < self.max_threads:
            self._trial = (self.threads + 1, self.prefetch)
        elif "prefetch" not in self._explored and self.prefetch < self.max_prefetch:
            self._trial = (self.threads, self.prefetch + 1)
        else:
            self.state = "settled"
            logger.info("stoke autotune: settled on %s threads, prefetch %s", *self.settings)
            return None
        self.threads, self.prefetch = self._trial
        self._skip = 1
        return self.settings

    def to_dict(self) -> dict[str, object]:
        """The tuner's state and its last 20 windows as JSON-ready data (``Loader.stats()["autotune"]``)."""
        return {
            "state": self.state,
            "threads": self.threads,
            "prefetch": self.prefetch,
            "max_threads": self.max_threads,
            "max_prefetch": self.max_prefetch,
            "windows": [window.to_dict() for window in self.history[-20:]],
        }


def tuner_for(
    asked: tuple[int | str, int | str],
    start: tuple[int, int],
    *,
    resizable: bool,
    cores: int,
    cpu_budget: int | None,
    ram_budget: int | None,
    set_bytes: int,
) -> AutoTuner | None:
    """The tuner for the Loader's ``asked`` (num_threads, prefetch), starting from ``start`` (the counts in
    use), or None when neither was ``"auto"``. Threads are tuned only if asked for and ``resizable`` (the
    executor can change them while it runs), up to twice ``cpu_budget`` (default: ``cores``); prefetch up to
    what ``ram_budget`` (default: a quarter of the available memory) holds of ``set_bytes`` per batch.

    >>> tuner = tuner_for(("auto", 4), (2, 4), resizable=True, cores=2, cpu_budget=None, ram_budget=None, set_bytes=1)
    >>> tuner.max_threads, tuner.max_prefetch
    (4, 4)
    """
    threads, prefetch = start
    if asked[0] != "auto" and asked[1] != "auto":
        return None
    budget = ram_budget if ram_budget is not None else psutil.virtual_memory().available // 4
    fits = budget // max(set_bytes, 1) - 2
    return AutoTuner(
        threads,
        prefetch,
        max_threads=2 * (cpu_budget or cores) if asked[0] == "auto" and resizable else threads,
        max_prefetch=max(prefetch, min(MAX_PREFETCH, fits)) if asked[1] == "auto" else prefetch,
        cpu_budget=float(cpu_budget or cores),
    )


def _cpu_seconds(stat_paths: list[str]) -> float | None:
    """User + system CPU seconds of the threads or processes whose ``/proc`` stat files are given; None
    where there is no ``/proc``."""
    total = 0
    for path in stat_paths:
        try:
            with open(path, "rb") as stream:
                fields = stream.read().rsplit(b")", 1)[1].split()
        except OSError:
            return None
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the stat line)
    return total / _TICKS
