"""The profiler a Loader carries when asked: it times each step and each stage, and writes the report.

For: ``Loader(profile=...)`` and ``stoke.profile(loader)``. The profiler is the Loader's observer
(``stoke.pipeline.observer``): ``attach`` calls ``loader.watch(profiler)``, after which the Loader calls
:meth:`Profiler.requested` when the loop asks for a batch and :meth:`Profiler.handed_out` when it hands one
over, and its parts add their stage times to the profiler's counters (:attr:`Profiler.counters`, connected
to the Loader's timing hook, ``stoke.pipeline.timing``). It reads nothing of the Loader but its public
members. Not for: judging the numbers (``report.py``) or drawing them (``plot.py``, ``tensorboard.py``).

``steps`` bounds the profiled steps; after them come ``headspace_steps`` steps fed from a copy of the
last batch (the same loop with input for free) and then the profiler writes its report (to ``out``, if
given) and detaches itself, leaving the Loader as fast as an unprofiled one. **Headspace steps repeat one
batch: they belong in profiling runs, never in real training.** They do not advance the epoch:
``state_dict()`` does not count them, and the epoch's real batches follow them unchanged.

Example:
    >>> import numpy as np, stoke
    >>> loader = stoke.Loader({"x": np.arange(32.0)}, batch_size=4, num_threads=1)
    >>> profiler = stoke.profile(loader, steps=4, headspace_steps=2)
    >>> len([batch for batch in loader])  # 8 real batches, and 2 cached ones after the warm-up and 4 steps
    10
    >>> report = profiler.report()
    >>> report.steps, report.headspace is not None, report.classification in ("not input-bound",
    ...     "moderately input-bound", "highly input-bound")
    (4, True, True)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from stoke.errors import ConfigError
from stoke.extras import require
from stoke.pipeline.timing import Timing
from stoke.profile.report import Measurements, Report, build_report
from stoke.profile.stages import StageClock
from stoke.profile.timeline import StepTimeline

ENV_DIR = "STOKE_PROFILE"  # stoke profile: every Loader of the script profiles itself into this directory
ENV_STEPS = "STOKE_PROFILE_STEPS"
ENV_HEADSPACE = "STOKE_PROFILE_HEADSPACE"
_loaders_in_process = 0


def require_outputs(what: str) -> None:
    """Raise MissingExtra naming ``stoke[profile]`` unless profile.png (matplotlib) and the scalars
    (TensorBoard) can be written: checked before profiling, so a run never ends without its files."""
    require("matplotlib", extra="profile", what=what)
    require("torch.utils.tensorboard", extra="profile", what=what)


class Watched(Protocol):
    """What a profiler reads of the Loader it measures (``stoke.Loader`` has all of it)."""

    batch_size: int
    workers: str
    device: torch.device | None
    timing: Timing

    @property
    def num_threads(self) -> int: ...

    def watch(self, observer: Any) -> None: ...

    def unwatch(self, observer: Any) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class Profiler:
    """Measures one Loader; see the module docstring. An :class:`~stoke.pipeline.observer.Observer`.

    Args:
        out: a directory to write ``report.json``, ``profile.png`` and TensorBoard events into once the
            profiled steps end (or at exit); None writes nothing (call :meth:`report` / :meth:`write`).
        steps: steps to profile after the warm-up; None profiles every step (memory stays bounded: the
            first 4096 steps are kept, sums cover all).
        headspace_steps: steps fed from a cached copy of the last batch after ``steps`` (needs ``steps``).
        warmup: first steps left out of the sums (the pipeline filling up).
    """

    def __init__(
        self,
        out: str | os.PathLike[str] | None = None,
        steps: int | None = None,
        headspace_steps: int = 0,
        warmup: int = 1,
    ) -> None:
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ConfigError(f"profile steps must be a positive integer or None, got {steps!r}")
        if not isinstance(headspace_steps, int) or headspace_steps < 0:
            raise ConfigError(f"headspace_steps must be a non-negative integer, got {headspace_steps!r}")
        if headspace_steps and steps is None:
            raise ConfigError("headspace_steps needs steps=: the cached batch is served after the profiled steps")
        if out is not None:
            require_outputs("a profile written to files (out=)")
        self.out = Path(out) if out is not None else None
        self.steps, self.headspace_steps, self.warmup = steps, headspace_steps, warmup
        self.counters: StageClock | None = None  # made when attached: a column per slot of the Loader's timing
        self.timeline = StepTimeline()
        self._timing: Timing | None = None
        self._loader: weakref.ref[Watched] | None = None  # weak: the Loader holds this profiler
        self._keep: Watched | None = None  # strong until the report is written to ``out`` (at exit at the latest)
        self.finished = False
        self._delivered = 0  # real batches handed out
        self._served = 0  # headspace batches handed out
        self._cached: dict[str, Any] | None = None
        self._ready = self._in_flight = 0
        self._queue_sums = [0, 0]
        self._first_ns: int | None = None
        self._end_ns: int | None = None
        self._end_table: np.ndarray | None = None
        self._cuda = False
        self._gpu: Any = None
        self._report: Report | None = None
        self._warm_table: np.ndarray | None = None
        self._warm_sums: dict[str, int] | None = None

    @property
    def loader(self) -> Watched | None:
        """The Loader this profiler measures (None before ``attach``, or once that Loader was freed)."""
        return self._loader() if self._loader is not None else None

    # ---- attaching ----------------------------------------------------------------------------------
    def attach(self, loader: Watched) -> Profiler:
        """Start measuring ``loader`` (before it is iterated, for process workers to share the counters)."""
        if self._loader is not None:
            raise ConfigError("this Profiler already measures a Loader; make one Profiler per Loader")
        timing = self._timing = loader.timing
        self.counters = StageClock(len(timing.names))
        self.counters.claim_main_row(timing.busy)
        loader.watch(self)  # restarts idle process workers, so that they fork with the counters
        self._loader = weakref.ref(loader)
        self._keep = loader if self.out is not None else None
        self._cuda = loader.device is not None and loader.device.type == "cuda" and torch.cuda.is_available()
        if self._cuda:
            from stoke.profile.nvml import GpuSampler

            self._gpu = GpuSampler(loader.device)
            self._gpu.start()
        if self.out is not None:
            atexit.register(self.finish)
        return self

    def detach(self) -> None:
        """Stop measuring: the Loader's hooks are no-ops again (process workers keep adding to the shared
        counters until they are restarted)."""
        loader = self.loader
        if loader is not None:
            loader.unwatch(self)

    # ---- the Loader's hooks ---------------------------------------------------------------------------
    def requested(self, in_flight: Sequence[Any]) -> None:
        """The loop asks for the next batch (its previous step has ended)."""
        now = time.perf_counter_ns()
        if self._first_ns is None:
            self._first_ns = now
        self.timeline.request(now, self._event())
        self._ready = sum(job.done.is_set() for job in in_flight)
        self._in_flight = len(in_flight)
        if (
            self.steps is not None
            and self._delivered >= self.steps + self.warmup
            and self._served >= self.headspace_steps
        ):
            self.finish()

    def stand_in(self) -> dict[str, Any] | None:
        """During the headspace steps the cached batch, timed as a headspace step (the epoch does not
        advance); else None."""
        if (
            self.finished
            or self._cached is None
            or self.steps is None
            or self._delivered < self.steps + self.warmup
            or self._served >= self.headspace_steps
        ):
            return None
        self._served += 1
        self.timeline.handout(time.perf_counter_ns(), 0, self._ready, self._in_flight, True, self._event())
        return dict(self._cached or {})

    def copy_started(self) -> tuple[int, Any]:
        """A batch's copy to the device starts: its time, and a CUDA event on the copy stream."""
        return time.perf_counter_ns(), self._event()

    def copy_ended(self, started: tuple[int, Any]) -> None:
        """The copy is issued: its time on the timeline (and its CUDA events, resolved later)."""
        now = time.perf_counter_ns()
        self.timeline.copied(now - started[0], (started[1], self._event()) if started[1] is not None else None)

    def handed_out(self, batch: dict[str, Any], waited: float) -> None:
        """The Loader hands ``batch`` to the loop, after ``waited`` seconds of waiting for the workers."""
        if self.finished:
            return
        now = time.perf_counter_ns()
        k = self.timeline.steps
        self.timeline.handout(now, int(waited * 1e9), self._ready, self._in_flight, False, self._event())
        if k == self.warmup - 1:  # the warm-up ends: measure from here
            self._warm_table, self._warm_sums, self._first_ns = self._table(), dict(self.timeline.sums), now
        self._queue_sums[0] += self._ready
        self._queue_sums[1] += self._in_flight
        self._delivered += 1
        if self.steps is not None and self._delivered == self.steps + self.warmup:
            self._end_ns, self._end_table = now, self._table()
            if self.headspace_steps:
                self._cached = {
                    key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in batch.items()
                }

    # ---- results -------------------------------------------------------------------------------------
    def report(self) -> Report:
        """The report of what has been measured so far (the final one once the profiled steps ended)."""
        if self._report is not None:
            return self._report
        return build_report(self._measurements())

    def finish(self) -> Report:
        """End profiling: detach, make the report and write it to ``out`` (if given); returns the report."""
        if self._report is not None:
            return self._report
        if self._end_ns is None:
            self._end_ns, self._end_table = time.perf_counter_ns(), self._table()
        self.finished = True
        self.detach()
        if self._gpu is not None:
            self._gpu.stop()
        self._cached = None
        self._report = report = build_report(self._measurements())
        if self.out is not None:
            self.write(self.out)
        self._keep = None
        return report

    def write(self, out: str | os.PathLike[str]) -> Path:
        """Write ``report.json``, ``profile.png`` and TensorBoard scalars into the directory ``out``."""
        require_outputs("writing a profile")  # before report.json: all three files or none
        from stoke.profile.plot import write_png
        from stoke.profile.tensorboard import write_scalars

        directory = Path(out)
        directory.mkdir(parents=True, exist_ok=True)
        report = self.report()
        (directory / "report.json").write_text(report.to_json())
        write_png(report, self.timeline, directory / "profile.png", warmup=self.warmup)
        write_scalars(report, self.timeline, directory / "tensorboard")
        return directory

    def _table(self) -> np.ndarray:
        """The counters now: ``[workers, slots]`` (no rows before ``attach``)."""
        if self.counters is None:
            return np.zeros((0, 2), np.int64)
        return self.counters.table()

    def _event(self) -> Any:
        if not self._cuda:
            return None
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _measurements(self) -> Measurements:
        loader = self.loader
        if loader is None and self._loader is not None:
            raise ConfigError("the Loader this Profiler measured has been freed; call report() or finish() before")
        if loader is None:
            raise ConfigError("this Profiler was never attached to a Loader (stoke.profile(loader) does that)")
        from stoke.machine import available_cores

        timing, clock = self._timing, self.counters
        assert timing is not None and clock is not None  # attached
        described = loader.describe()
        timeline = self.timeline
        if self._cuda:
            timeline.finish_gpu()
        table = self._end_table if self._end_table is not None else self._table()
        if self._warm_table is not None:
            table = table.copy()
            table[: len(self._warm_table)] -= self._warm_table
        warm_sums = self._warm_sums or {key: 0 for key in timeline.sums}
        sums = {key: value - warm_sums[key] for key, value in timeline.sums.items()}
        steps = max(0, self._delivered - self.warmup)
        end = self._end_ns if self._end_ns is not None else time.perf_counter_ns()
        wall = (end - self._first_ns) / 1e9 if self._first_ns is not None else 0.0
        workers = clock.worker_rows(timing.busy, table)
        exclusive = timing.exclusive(table.sum(axis=0))
        stages = [
            (name, kind, exclusive[slot] / 1e9)
            for slot, (name, kind) in enumerate(zip(timing.names, timing.kinds))
            if kind not in ("busy", "cpu") and exclusive[slot] > 0
        ]
        kept = min(timeline.steps, timeline.capacity)
        measured = (np.arange(kept) >= self.warmup) & (timeline.step_ns[:kept] >= 0)
        real = measured & ~timeline.headspace[:kept]
        real_steps = (timeline.input_ns + timeline.step_ns)[:kept][real]
        headspace = timeline.headspace_steps()
        gpu_input_share = None
        gpu_in, gpu_step = timeline.gpu_input_ms[:kept][real], timeline.gpu_step_ms[:kept][real]
        resolved = ~np.isnan(gpu_in) & ~np.isnan(gpu_step)
        if resolved.any():
            gpu_in, gpu_step = gpu_in[resolved], gpu_step[resolved]
            gpu_input_share = float(gpu_in.sum() / max(gpu_in.sum() + gpu_step.sum(), 1e-12))
        notes = []
        if not self._cuda:
            notes.append("no CUDA device in use: GPU utilisation and memory not measured, copy time is CPU time")
        if loader.workers == "process":
            notes.append("stage times of process workers come back through shared memory")
        return Measurements(
            steps=steps,
            batch_size=loader.batch_size,
            input_seconds=sums["input"] / 1e9,
            wait_seconds=sums["wait"] / 1e9,
            step_seconds=sums["step"] / 1e9,
            copy_seconds=sums["copy"] / 1e9,
            starved_steps=sums["starved"],
            mean_ready=self._queue_sums[0] / max(self._delivered, 1),
            mean_in_flight=self._queue_sums[1] / max(self._delivered, 1),
            stages=stages,
            busy_seconds=[float(table[row, timing.busy]) / 1e9 for row in workers],
            worker_cpu_seconds=float(table[workers, timing.cpu].sum()) / 1e9 if workers else 0.0,
            wall_seconds=wall,
            worker_kind=loader.workers,
            num_workers=loader.num_threads,
            cores=available_cores(),
            images=described["images"],
            cuda=self._cuda,
            verify=described["verify"],
            packed=described["stored"],
            gpu_input_share=gpu_input_share,
            headspace_step_seconds=float(np.median(headspace)) / 1e9 if len(headspace) else None,
            real_step_seconds=float(np.median(real_steps)) / 1e9 if len(real_steps) else None,
            gpu=self._gpu.summary() if self._gpu is not None else None,
            notes=notes,
        )


def from_setting(setting: Any) -> Profiler | None:
    """The Profiler for a Loader's ``profile=`` (True, a directory, a Profiler), or for ``$STOKE_PROFILE``."""
    global _loaders_in_process
    if isinstance(setting, Profiler):
        return setting
    if setting is False or setting is None:
        directory = os.environ.get(ENV_DIR)
        if not directory:
            return None
        _loaders_in_process += 1
        steps = _env_int(ENV_STEPS, 200)
        headspace = _env_int(ENV_HEADSPACE, 20)
        out = Path(directory) / f"loader-{os.getpid()}-{_loaders_in_process}"
        return Profiler(out, steps=steps or None, headspace_steps=headspace if steps else 0)
    if setting is True:
        return Profiler()
    if isinstance(setting, (str, os.PathLike)):
        return Profiler(setting)
    raise ConfigError(f"profile must be True, False, a directory or a stoke.profile.Profiler, got {setting!r}")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    with contextlib.suppress(ValueError):
        if int(value) >= 0:
            return int(value)
    raise ConfigError(f"${name} must be a non-negative integer, got {value!r}")
