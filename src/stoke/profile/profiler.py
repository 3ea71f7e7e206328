"""The profiler a Loader carries when asked: it times each step and each stage, and writes the report.

For: ``Loader(profile=...)`` and ``stoke.profile(loader)``; the Loader calls :meth:`Profiler.requested`
when the loop asks for a batch, :meth:`Profiler.handed_out` when it hands one over, and its stages add
their times to :attr:`Profiler.clock`. Not for: judging the numbers (``report.py``) or drawing them
(``plot.py``, ``tensorboard.py``).

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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from stoke.errors import ConfigError
from stoke.extras import require
from stoke.profile.report import Measurements, Report, build_report
from stoke.profile.stages import StageClock
from stoke.profile.timeline import StepTimeline

if TYPE_CHECKING:
    from stoke.loader import Loader

ENV_DIR = "STOKE_PROFILE"  # stoke profile: every Loader of the script profiles itself into this directory
ENV_STEPS = "STOKE_PROFILE_STEPS"
ENV_HEADSPACE = "STOKE_PROFILE_HEADSPACE"
_loaders_in_process = 0


def require_outputs(what: str) -> None:
    """Raise MissingExtra naming ``stoke[profile]`` unless profile.png (matplotlib) and the scalars
    (TensorBoard) can be written: checked before profiling, so a run never ends without its files."""
    require("matplotlib", extra="profile", what=what)
    require("torch.utils.tensorboard", extra="profile", what=what)


class Profiler:
    """Measures one Loader; see the module docstring.

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
        self.clock = StageClock()
        self.timeline = StepTimeline()
        self.slots: dict[Any, int] = {}
        self._loader: weakref.ref[Loader] | None = None  # weak: the Loader holds this profiler
        self._keep: Loader | None = None  # strong until the report is written to ``out`` (at exit at the latest)
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
    def loader(self) -> Loader | None:
        """The Loader this profiler measures (None before ``attach``, or once that Loader was freed)."""
        return self._loader() if self._loader is not None else None

    # ---- attaching ----------------------------------------------------------------------------------
    def attach(self, loader: Loader) -> Profiler:
        """Start measuring ``loader`` (before it is iterated, for process workers to share the counters)."""
        from stoke.pipeline.processes import ProcessPool

        if self._loader is not None:
            raise ConfigError("this Profiler already measures a Loader; make one Profiler per Loader")
        if isinstance(loader._pool, ProcessPool):
            if loader._active is not None and not loader._active.finished:
                raise ConfigError(
                    "attach the profiler before iterating a Loader with workers='process' (its workers are "
                    "already running without it), or pass profile= to the Loader"
                )
            loader.close()  # the workers fork again, with the profiler's shared counters
        self._loader = weakref.ref(loader)
        self._keep = loader if self.out is not None else None
        self._cuda = loader.device is not None and loader.device.type == "cuda" and torch.cuda.is_available()
        clock = self.clock
        reader = loader._reader
        reader.slots = (clock.slot("read"), clock.slot("checksum"))
        for position, stage in enumerate(loader._stages):
            stage.slots = _stage_slots(clock, stage)
            for index, op in enumerate(stage.batch_ops):
                self.slots[("batch_op", position, index)] = clock.slot(f"{stage.name}: {op_label(op)} (batch op)")
        for index, transform in enumerate(loader.batch_transforms):
            self.slots[("batch_transform", index)] = clock.slot(f"batch: {op_label(transform)}")
        self.slots["collate"] = clock.slot("collate")
        self.slots["copy"] = clock.slot("copy to device")
        self.slots["cpu"] = clock.cpu
        self._kinds = _slot_kinds(loader, clock, self.slots)
        clock.claim_main_row()
        for stage in loader._stages:
            stage.clock = clock
        reader.clock = clock
        loader._clock, loader._profiler = clock, self
        if self._cuda:
            from stoke.profile.nvml import GpuSampler

            self._gpu = GpuSampler(loader.device)
            self._gpu.start()
        if self.out is not None:
            atexit.register(self.finish)
        return self

    def detach(self) -> None:
        """Stop measuring: the Loader's hot path is back to a None check (process workers keep adding to the
        shared counters until they are restarted)."""
        loader = self.loader
        if loader is None or loader._profiler is not self:
            return
        loader._profiler = loader._clock = None
        loader._reader.clock = None
        for stage in loader._stages:
            stage.clock = None

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

    @property
    def serving_headspace(self) -> bool:
        return (
            not self.finished
            and self._cached is not None
            and self.steps is not None
            and self._delivered >= self.steps + self.warmup
            and self._served < self.headspace_steps
        )

    def serve_headspace(self) -> dict[str, Any]:
        """The cached batch, timed as a headspace step (the epoch does not advance)."""
        self._served += 1
        self.timeline.handout(time.perf_counter_ns(), 0, self._ready, self._in_flight, True, self._event())
        return dict(self._cached or {})

    def copy_started(self) -> tuple[int, Any]:
        return time.perf_counter_ns(), self._event()

    def copy_ended(self, started: tuple[int, Any]) -> int:
        now = time.perf_counter_ns()
        self.timeline.copied(now - started[0], (started[1], self._event()) if started[1] is not None else None)
        self.clock.add(self.slots["copy"], now - started[0])
        return now

    def handed_out(self, batch: dict[str, Any], waited: float) -> None:
        """The Loader hands ``batch`` to the loop, after ``waited`` seconds of waiting for the workers."""
        if self.finished:
            return
        now = time.perf_counter_ns()
        k = self.timeline.steps
        self.timeline.handout(now, int(waited * 1e9), self._ready, self._in_flight, False, self._event())
        if k == self.warmup - 1:  # the warm-up ends: measure from here
            self._warm_table, self._warm_sums, self._first_ns = self.clock.table(), dict(self.timeline.sums), now
        self._queue_sums[0] += self._ready
        self._queue_sums[1] += self._in_flight
        self._delivered += 1
        if self.steps is not None and self._delivered == self.steps + self.warmup:
            self._end_ns, self._end_table = now, self.clock.table()
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
            self._end_ns, self._end_table = time.perf_counter_ns(), self.clock.table()
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
        from stoke.engines.local import available_cores

        timeline = self.timeline
        if self._cuda:
            timeline.finish_gpu()
        table = self._end_table if self._end_table is not None else self.clock.table()
        if self._warm_table is not None:
            table = table.copy()
            table[: len(self._warm_table)] -= self._warm_table
        warm_sums = self._warm_sums or {key: 0 for key in timeline.sums}
        sums = {key: value - warm_sums[key] for key, value in timeline.sums.items()}
        steps = max(0, self._delivered - self.warmup)
        end = self._end_ns if self._end_ns is not None else time.perf_counter_ns()
        wall = (end - self._first_ns) / 1e9 if self._first_ns is not None else 0.0
        busy = self.clock.busy
        workers = [row for row in range(len(table)) if row != self.clock.main_row and table[row, busy] > 0]
        totals = table.sum(axis=0)
        exclusive = totals.copy()
        for outer, inner in self.clock._contains.items():
            exclusive[outer] = max(0, totals[outer] - totals[list(inner)].sum())
        stages = [
            (name, self._kinds[slot], exclusive[slot] / 1e9)
            for slot, name in enumerate(self.clock.names)
            if slot in self._kinds and exclusive[slot] > 0
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
        images = []
        for stage in loader._stages:
            if hasattr(stage, "size") and hasattr(stage.field, "encoding"):
                stats = loader._reader.field_stats(stage.name) or {}
                images.append(
                    {
                        "name": stage.name,
                        "encoding": stage.field.encoding if loader._reader.packed else "raw",
                        "stored_side": max(stats.get("max_height", 0), stats.get("max_width", 0)) or None,
                        "output_side": max(stage.size),
                        "one_size": bool(stats)
                        and stats.get("min_height") == stats.get("max_height")
                        and stats.get("min_width") == stats.get("max_width"),
                    }
                )
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
            busy_seconds=[float(table[row, busy]) / 1e9 for row in workers],
            worker_cpu_seconds=float(table[workers, self.slots["cpu"]].sum()) / 1e9 if workers else 0.0,
            wall_seconds=wall,
            worker_kind=loader.workers,
            num_workers=loader.num_threads,
            cores=available_cores(),
            images=images,
            cuda=self._cuda,
            verify=getattr(loader._reader, "verify", "never"),
            packed=loader._reader.packed,
            gpu_input_share=gpu_input_share,
            headspace_step_seconds=float(np.median(headspace)) / 1e9 if len(headspace) else None,
            real_step_seconds=float(np.median(real_steps)) / 1e9 if len(real_steps) else None,
            gpu=self._gpu.summary() if self._gpu is not None else None,
            notes=notes,
        )


def op_label(op: Any) -> str:
    """A short name for an op: its class, and for ``Map`` the function's name."""
    function = getattr(op, "function", None)
    if function is not None:
        return f"{type(op).__name__}({getattr(function, '__name__', type(function).__name__)})"
    return type(op).__name__


def _stage_slots(clock: StageClock, stage: Any) -> dict[str, Any]:
    """Register a field stage's worker stages; returns the slots its ``run`` adds to."""
    if hasattr(stage, "pixel_ops"):  # an image stage
        pixel = [clock.slot(f"{stage.name}: {op_label(op)}") for op in stage.pixel_ops]
        return {
            "decode": clock.slot(f"{stage.name}: decode"),
            "render": clock.slot(f"{stage.name}: crop/resize/flip", contains=tuple(pixel)),
            "pixel_ops": pixel,
        }
    return {"decode": clock.slot(f"{stage.name}: decode")}


def _slot_kinds(loader: Loader, clock: StageClock, slots: dict[Any, int]) -> dict[int, str]:
    """What each slot measures, for the report (slots not listed are not stages: busy, cpu)."""
    from stoke.ops.batched import BatchablePixelOp

    reader_read, reader_check = loader._reader.slots
    kinds = {reader_read: "read", reader_check: "checksum", slots["collate"]: "collate", slots["copy"]: "copy"}
    for stage in loader._stages:
        kinds[stage.slots["decode"]] = "decode" if "render" in stage.slots else "value"
        if "render" in stage.slots:
            kinds[stage.slots["render"]] = "render"
            for op, slot in zip(stage.pixel_ops, stage.slots["pixel_ops"]):
                kinds[slot] = "batchable_pixel_op" if isinstance(op, BatchablePixelOp) else "pixel_op"
    for key, slot in slots.items():
        if isinstance(key, tuple):
            kinds[slot] = key[0]
    return kinds


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
