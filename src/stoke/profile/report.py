"""The profiler's verdict: how input-bound the loop is, which stage limits it, and what to change.

For: turning measurements (step times, stage times, worker utilisation) into a :class:`Report`, with the
classification, the bottleneck and recommendations ordered by estimated gain, as a terminal table or
JSON. Not for: measuring (``profiler.py``, ``stages.py``, ``timeline.py``).

**Classification** of the input-bound share (the share of step time the loop spent inside ``next()``:
waiting for the workers, collating, copying, batch ops): under 5% not input-bound, 5–20% moderately,
over 20% highly (:func:`classify`).

**Stages** are ranked by what they cost per step, in milliseconds: a worker stage's time divided by the
worker count (the workers run it in parallel), a loop stage's time as it is. The first one is the
**bottleneck** only when the loop is input-bound; otherwise the report names no bottleneck and keeps
the first as ``slowest_stage``, for information. The table, the JSON and the PNG show this one ranking.

**Estimates** use one model, stated in ``docs/profiling.md``: a step takes ``T = max(C + L, P)`` where
``C`` is the loop's own work per step, ``L`` the input work done on the loop's thread (collate, copy,
batch ops) and ``P`` the workers' busy time per step divided by the worker count (their period when all
are busy). A change scales one term and its estimated gain is ``T / T' - 1``, then bounded by what the
measurements allow: a change to the workers can at most remove the time the loop waited for them, a
change on the loop's thread that wait and the time it saves there, and no change more than input for
free gives (``share / (1 - share)``, and the headspace's measured speed-up when there is one). Gains
under 1% are dropped. Only what this machine can do is recommended: nothing needing a GPU unless the
batches go to a CUDA device, never more workers than the cores this process may use.

Example:
    >>> classify(0.03), classify(0.12), classify(0.5)
    ('not input-bound', 'moderately input-bound', 'highly input-bound')
    >>> report = Report.from_dict(Report(steps=1, input_share=0.5).to_dict())
    >>> report.classification
    'highly input-bound'
    >>> round(free_input_speedup(0.5), 3), format_gain(0.333), format_gain(1.5), format_gain(250.0)
    (1.0, '+33%', '2.5×', 'over 100×')
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from stoke.errors import FormatError

NOT_INPUT_BOUND = 0.05
HIGHLY_INPUT_BOUND = 0.20
REPORT_FORMAT = "stoke.profile.v1"
WORKER_KINDS = ("read", "checksum", "decode", "render", "pixel_op", "batchable_pixel_op", "value", "other")
LOOP_KINDS = ("collate", "copy", "batch_op", "batch_transform", "loop_other")
MIN_GAIN = 0.01  # recommendations estimated below this are not shown
RAW_COPY_COST = 0.15  # a raw record's copy, as a share of decoding the same image (stoke bench, keep vs raw)
BUSY = 0.8  # workers busier than this are a reason to change their number or kind
COMPUTING = 0.7  # workers whose CPU time is at least this share of their busy time compute (else they wait)
GIL_BUSY = 0.5  # waiting thread workers using at least this many cores of CPU may be waiting for the GIL
SHOWN_UP_TO = 100.0  # speed-ups beyond this many times are printed as "over 100×": the model is not that precise


def classify(share: float) -> str:
    """The verdict for an input-bound share in [0, 1]: under 5%, 5–20% (both included), over 20%."""
    if share < NOT_INPUT_BOUND:
        return "not input-bound"
    if share <= HIGHLY_INPUT_BOUND:
        return "moderately input-bound"
    return "highly input-bound"


def free_input_speedup(share: float) -> float:
    """The throughput gain if input cost nothing, for an input-bound ``share`` of step time: ``share / (1 -
    share)`` (``inf`` for a loop that does nothing but wait). No change to the input can give more."""
    if share <= 0:
        return 0.0
    return share / (1 - share) if share < 1 else float("inf")


def format_gain(gain: float) -> str:
    """A throughput gain as people read it: ``+33%`` below doubling, then ``2.5×``, ``13×``, ``over 100×``."""
    if gain < 0.995:
        return f"+{max(gain, 0.0):.0%}"
    speed = 1 + gain
    if speed > SHOWN_UP_TO:
        return f"over {SHOWN_UP_TO:.0f}×"
    return f"{speed:.1f}×" if speed < 9.95 else f"{speed:.0f}×"


@dataclass
class Stage:
    """One stage's time: ``where`` is "workers" (summed over all workers) or "loop" (the loop's thread).

    ``ms_per_step`` is what it costs a step, the quantity stages are ranked by: a worker stage's time divided
    by the worker count and the steps (the workers share it), a loop stage's time divided by the steps.
    """

    name: str
    kind: str
    where: str
    seconds: float
    share: float  # of the workers' busy time, or of the loop's input time
    ms_per_step: float = 0.0


@dataclass
class Recommendation:
    action: str
    why: str
    estimated_gain: float  # throughput gain as a fraction: 0.25 means about 25% more steps per second


@dataclass
class Report:
    """Everything the profiler concluded; JSON round-trips through :meth:`to_dict` / :meth:`from_dict`.

    ``bottleneck`` is the stage costing most per step when the loop is input-bound, else None;
    ``slowest_stage`` is that stage whatever the verdict (information). ``gain_bound`` is the most any
    change to the input can give (see the module docstring); every estimated gain lies in
    ``[MIN_GAIN, gain_bound]``.
    """

    steps: int = 0
    batch_size: int = 0
    seconds: float = 0.0  # real (not headspace) steps' total time
    input_seconds: float = 0.0
    wait_seconds: float = 0.0
    step_seconds: float = 0.0
    copy_seconds: float = 0.0
    input_share: float = 0.0
    timing: str = "cpu"  # "cuda events" when the GPU's own idle gaps gave the input share
    steps_per_second: float = 0.0
    samples_per_second: float = 0.0
    starved_share: float = 0.0  # steps whose request found no finished batch waiting
    mean_ready: float = 0.0
    mean_in_flight: float = 0.0
    workers: dict[str, Any] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)  # most costly per step first
    bottleneck: str | None = None
    slowest_stage: str | None = None
    gain_bound: float | None = None  # None: unbounded (a loop that does nothing but wait) or nothing measured
    recommendations: list[Recommendation] = field(default_factory=list)
    headspace: dict[str, Any] | None = None
    gpu: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def classification(self) -> str:
        return classify(self.input_share)

    def to_dict(self) -> dict[str, Any]:
        return {"format": REPORT_FORMAT, "classification": self.classification, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        if data.get("format") != REPORT_FORMAT:
            raise FormatError(
                f"this is not a stoke profile report (expected format {REPORT_FORMAT!r}); pass a report.json "
                f"that stoke profile wrote"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in names}
        values["stages"] = [Stage(**stage) for stage in values.get("stages", [])]
        values["recommendations"] = [Recommendation(**item) for item in values.get("recommendations", [])]
        return cls(**values)


@dataclass
class Measurements:
    """What the profiler measured, in plain numbers (seconds), for :func:`build_report`."""

    steps: int
    batch_size: int
    input_seconds: float
    wait_seconds: float
    step_seconds: float
    copy_seconds: float
    starved_steps: int
    mean_ready: float
    mean_in_flight: float
    stages: list[tuple[str, str, float]]  # (name, kind, seconds)
    busy_seconds: list[float]  # per worker
    worker_cpu_seconds: float
    wall_seconds: float
    worker_kind: str
    num_workers: int
    cores: int  # cores this process may run on: no recommendation asks for more workers than these
    images: list[dict[str, Any]] = field(default_factory=list)  # per image field: encoding, stored/output side
    verify: str = "never"
    packed: bool = True
    gpu_input_share: float | None = None
    headspace_step_seconds: float | None = None  # median time of a step fed from the cached batch
    real_step_seconds: float | None = None  # median time of a step fed by the pipeline
    gpu: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    cuda: bool = False  # batches go to a CUDA device torch can use: only then is GPU advice given


def build_report(m: Measurements) -> Report:
    """Classify, rank the stages, bound and estimate the recommendations; see the module docstring."""
    total = m.input_seconds + m.step_seconds
    steps = max(m.steps, 1)
    cpu_share = m.input_seconds / total if total > 0 else 0.0
    share = m.gpu_input_share if m.gpu_input_share is not None else cpu_share
    busy = sum(m.busy_seconds)
    workers = max(m.num_workers, 1)
    utilisation = busy / (workers * m.wall_seconds) if m.wall_seconds > 0 else 0.0
    stages = _stages(m, busy, steps, workers)
    report = Report(
        steps=m.steps,
        batch_size=m.batch_size,
        seconds=total,
        input_seconds=m.input_seconds,
        wait_seconds=m.wait_seconds,
        step_seconds=m.step_seconds,
        copy_seconds=m.copy_seconds,
        input_share=share,
        timing="cuda events" if m.gpu_input_share is not None else "cpu",
        steps_per_second=m.steps / total if total > 0 else 0.0,
        samples_per_second=m.steps * m.batch_size / total if total > 0 else 0.0,
        starved_share=m.starved_steps / steps,
        mean_ready=m.mean_ready,
        mean_in_flight=m.mean_in_flight,
        workers={
            "kind": m.worker_kind,
            "count": m.num_workers,
            "cores": m.cores,
            "busy_seconds": busy,
            "utilisation": utilisation,
            "per_worker_utilisation": [b / m.wall_seconds if m.wall_seconds > 0 else 0.0 for b in m.busy_seconds],
            "cpu_share_of_busy": min(1.0, m.worker_cpu_seconds / busy) if busy > 0 else 0.0,
        },
        stages=stages,
        gpu=m.gpu,
        notes=list(m.notes),
    )
    input_bound = report.classification != "not input-bound"
    report.slowest_stage = stages[0].name if stages else None
    report.bottleneck = report.slowest_stage if input_bound else None
    bound = free_input_speedup(share)
    if m.headspace_step_seconds and m.real_step_seconds:
        # A cached batch no faster than a real one (noise, or input costing nothing) is no speed-up, not a loss.
        speedup = round(max(0.0, m.real_step_seconds / m.headspace_step_seconds - 1), 3)
        report.headspace = {
            "step_seconds": m.headspace_step_seconds,
            "real_step_seconds": m.real_step_seconds,
            "speedup_if_input_were_free": speedup,
        }
        bound = min(bound, speedup)
    else:
        report.notes.append("headspace not measured (ask for it with headspace_steps=, or stoke profile)")
    report.gain_bound = round(bound, 3) if bound != float("inf") else None
    if input_bound:
        model = _Model(m.step_seconds / steps, (m.input_seconds - m.wait_seconds) / steps, busy / workers / steps)
        limit = _Limit(share, m.input_seconds, m.wait_seconds, steps, bound)
        report.recommendations = _recommend(m, report, stages, model, limit, utilisation)
        if not report.recommendations:
            report.notes.append(
                f"no change is estimated to gain {MIN_GAIN:.0%} or more"
                + (" (the headspace shows input for free is no faster)" if bound == 0 else "")
            )
    elif stages:
        report.notes.append(
            f"the input pipeline has headspace: input is {share:.1%} of step time, so no stage limits this loop "
            f"(the slowest, {stages[0].name}, takes {_milliseconds(stages[0].ms_per_step)} ms per step); speed up "
            f"the model or the step itself"
        )
    else:
        report.notes.append("input is not what limits this loop: speed up the model or the step itself")
    return report


def _stages(m: Measurements, busy: float, steps: int, workers: int) -> list[Stage]:
    worker = [(name, kind, seconds) for name, kind, seconds in m.stages if kind in WORKER_KINDS]
    loop = [(name, kind, seconds) for name, kind, seconds in m.stages if kind in LOOP_KINDS]
    accounted = sum(seconds for _, _, seconds in worker)
    if busy > accounted:
        worker.append(("other (workers)", "other", busy - accounted))
    loop_input = m.input_seconds - m.wait_seconds
    accounted_loop = sum(seconds for _, _, seconds in loop)
    if loop_input > accounted_loop:
        loop.append(("other (loop: starting batches)", "loop_other", loop_input - accounted_loop))
    stages = [Stage(n, k, "workers", s, s / busy if busy > 0 else 0.0, s / workers / steps * 1e3) for n, k, s in worker]
    stages += [Stage(n, k, "loop", s, s / loop_input if loop_input > 0 else 0.0, s / steps * 1e3) for n, k, s in loop]
    return sorted(stages, key=lambda stage: (-stage.ms_per_step, stage.name))


@dataclass
class _Model:
    step: float  # C: the loop's own work per step
    loop_input: float  # L: input work on the loop's thread per step
    period: float  # P: worker busy time per step / workers

    def gain(self, period_factor: float = 1.0, loop_input_saved: float = 0.0) -> float:
        now = max(self.step + self.loop_input, self.period)
        after = max(self.step + max(0.0, self.loop_input - loop_input_saved), self.period * period_factor)
        return now / after - 1 if after > 0 else 0.0


@dataclass
class _Limit:
    """What the measurements allow a change to gain: see the module docstring."""

    share: float  # input-bound share of step time
    input_seconds: float
    wait_seconds: float
    steps: int
    bound: float  # input for free: share / (1 - share), and the headspace's speed-up

    def reach(self, loop_input_saved: float = 0.0) -> float:
        """The most a change can give that removes the wait for the workers and ``loop_input_saved`` seconds
        per step of the loop's own input work."""
        if self.input_seconds <= 0:
            return 0.0
        removed = min(self.input_seconds, self.wait_seconds + loop_input_saved * self.steps)
        return min(self.bound, free_input_speedup(self.share * removed / self.input_seconds))


def _recommend(
    m: Measurements, report: Report, stages: list[Stage], model: _Model, limit: _Limit, utilisation: float
) -> list[Recommendation]:
    found: list[Recommendation] = []

    def offer(action: str, why: str, period_factor: float = 1.0, loop_input_saved: float = 0.0) -> None:
        gain = min(model.gain(period_factor, loop_input_saved), limit.reach(loop_input_saved))
        if gain >= MIN_GAIN:
            found.append(Recommendation(action, why, round(gain, 3)))

    share_of = _shares(stages)
    n = max(m.num_workers, 1)
    cores = max(m.cores, 1)
    cpu_share = report.workers["cpu_share_of_busy"]
    suffix = "" if m.worker_kind == "thread" else ", workers='process'"
    if utilisation >= BUSY:
        # Never more workers than cores: past them, workers only take turns on the same cores.
        python = share_of.get("pixel_op", 0.0) + (0.0 if m.packed else share_of.get("read", 0.0))
        # Waiting threads wait for the GIL only if someone holds it: their own CPU time must fill a good part
        # of the one core the GIL allows; threads that sleep or wait for I/O use almost none.
        gil_held = m.worker_cpu_seconds / m.wall_seconds if m.wall_seconds > 0 else 0.0
        if cpu_share < COMPUTING and m.worker_kind == "thread" and python > 0 and gil_held >= GIL_BUSY:
            factor = cpu_share * n / cores  # their CPU time spread over the cores, without waiting for the GIL
            offer(
                "workers='process'" + (f", num_threads={cores}" if cores != n else ""),
                f"the {_count(n, 'thread worker')} are {utilisation:.0%} busy but compute only {cpu_share:.0%} of "
                f"that time while holding {gil_held:.1f} cores' worth of CPU: they wait for the GIL (Python code is "
                f"{python:.0%} of their time), which processes do not share",
                period_factor=factor,
            )
        elif cores > n:
            what = "compute" if cpu_share >= COMPUTING else "wait part of the time (I/O, sleeps), so more overlap more"
            offer(
                f"num_threads={cores}{suffix}",
                f"the {_count(n, 'worker')} are {utilisation:.0%} busy and {what}; this process may use {cores} cores",
                period_factor=n / cores,
            )
    decode = share_of.get("decode", 0.0)
    for image in m.images:
        stored, output = image.get("stored_side"), image.get("output_side")
        if stored and output and stored > 2 * output and decode > 0:
            kept = (2 * output / stored) ** 2
            offer(
                f"stoke pack --max-side {2 * output} (field {image['name']!r})",
                f"decode is {decode:.0%} of worker time and stored images reach {stored}px for a "
                f"{output}px output; decoding scales with stored pixels (about {kept:.0%} left)",
                period_factor=1 - decode * (1 - kept),
            )
        if image.get("encoding") != "raw" and decode > 0:
            offer(
                f"stoke pack --image-mode raw (field {image['name']!r})",
                f"decode is {decode:.0%} of worker time; a raw record is copied, not decoded (about "
                f"{RAW_COPY_COST:.0%} of the cost), for several times the disk",
                period_factor=1 - decode * (1 - RAW_COPY_COST),
            )
    if m.cuda:  # batches already go to a CUDA device: the GPU can take work off the workers
        for action, why, factor in _gpu_recommendations(m, share_of):
            offer(action, why, period_factor=factor)
    read = share_of.get("read", 0.0)
    if read > 0:
        action = "stoke.pack the dataset (stored decode-ready, read from the page cache)"
        if m.packed:
            action = "keep the dataset on local disk or in RAM (page cache) instead of slow storage"
        offer(action, f"reading is {read:.0%} of worker time", period_factor=1 - 0.9 * read)
    checksum = share_of.get("checksum", 0.0)
    if checksum > 0 and m.verify == "always":
        offer(
            "verify='once'",
            f"checksums are {checksum:.0%} of worker time and are checked on every read",
            period_factor=1 - checksum,
        )
    slowest = stages[0] if stages else None
    if slowest is not None and slowest.kind in ("pixel_op", "value", "batch_op", "batch_transform"):
        if slowest.where == "workers":
            offer(
                f"make {slowest.name} faster",
                f"it is the bottleneck, {slowest.share:.0%} of worker time ({_milliseconds(slowest.ms_per_step)} ms "
                f"per step); halving it gives this",
                period_factor=1 - slowest.share / 2,
            )
        else:
            offer(
                f"make {slowest.name} faster",
                f"it is the bottleneck, {_milliseconds(slowest.ms_per_step)} ms per step on the loop's thread, between "
                f"steps; halving it gives this",
                loop_input_saved=slowest.ms_per_step / 2e3,
            )
    return sorted(found, key=lambda item: item.estimated_gain, reverse=True)


def _gpu_recommendations(m: Measurements, share_of: dict[str, float]) -> list[tuple[str, str, float]]:
    """With batches on a CUDA device: let the GPU decode (nvJPEG), crop and resize, or augment (batched)."""
    found = []
    decode, render = share_of.get("decode", 0.0), share_of.get("render", 0.0)
    for image in m.images:
        name = image["name"]
        if image.get("encoding") in ("keep", "jpeg") and decode > 0:
            found.append(
                (
                    f"Loader(decode='device') (field {name!r}; needs torchvision built with CUDA)",
                    f"decode and crop/resize are {decode + render:.0%} of worker time; nvJPEG decodes on the GPU "
                    f"and the crop, resize and flip then run batched there (docs/device.md)",
                    1 - decode - render,
                )
            )
        elif render > 0 and image.get("one_size"):
            found.append(
                (
                    f"put the crop and flip after ToDevice in transforms[{name!r}]",
                    f"crop/resize is {render:.0%} of worker time; after ToDevice it runs batched on the GPU, "
                    f"a few kernels per batch (docs/augmentation.md)",
                    1 - render,
                )
            )
    batchable = share_of.get("batchable_pixel_op", 0.0)
    if batchable > 0:
        found.append(
            (
                "put the batchable augmentations after ToDevice in transforms (they run batched on the GPU)",
                f"batchable pixel ops are {batchable:.0%} of worker time (stoke.ops.batched; docs/augmentation.md)",
                1 - batchable,
            )
        )
    return found


def _shares(stages: list[Stage]) -> dict[str, float]:
    """Share of worker time per worker stage kind."""
    shares: dict[str, float] = {}
    for stage in stages:
        if stage.where == "workers":
            shares[stage.kind] = shares.get(stage.kind, 0.0) + stage.share
    return shares


# ---- the words: the table, the PNG and the CLI all use these ----------------------------------------------


def verdict_text(report: Report) -> str:
    """``highly input-bound: 87.0% of step time is input``: the table's first words and the PNG's title."""
    return f"{report.classification}: {report.input_share:.1%} of step time is input"


def bottleneck_text(report: Report, separator: str = " ") -> str:
    """The bottleneck line of the table and title of the PNG's stage chart (none when not input-bound);
    ``separator`` goes between the verdict and its detail (a newline in the PNG)."""
    if report.bottleneck is not None:
        stage = next(s for s in report.stages if s.name == report.bottleneck)
        side = "of worker time" if stage.where == "workers" else "of the loop's input time"
        cost = f"{_milliseconds(stage.ms_per_step)} ms per step, {stage.share:.0%} {side}"
        return f"bottleneck: {stage.name}{separator}({cost})"
    if report.slowest_stage is not None and report.classification == "not input-bound":
        stage = next(s for s in report.stages if s.name == report.slowest_stage)
        return (
            f"bottleneck: none, not input-bound{separator}(the input pipeline has headspace; its slowest stage, "
            f"for information: {stage.name}, {_milliseconds(stage.ms_per_step)} ms per step)"
        )
    return "bottleneck: none measured"


def headspace_text(report: Report) -> str | None:
    """What the headspace steps showed, or None when they were not measured."""
    if not report.headspace:
        return None
    return (
        f"headspace: fed from a cached batch a step takes {_duration(report.headspace['step_seconds'])} instead "
        f"of {_duration(report.headspace['real_step_seconds'])} "
        f"({format_gain(report.headspace['speedup_if_input_were_free'])} if input were free)"
    )


def recommendation_text(item: Recommendation) -> str:
    """One recommendation as ``+30%  action``: the same words in the table and the PNG."""
    return f"{format_gain(item.estimated_gain)}  {item.action}"


def recommendations_heading(report: Report) -> str:
    bound = "unbounded" if report.gain_bound is None else format_gain(report.gain_bound)
    return f"recommendations (estimated throughput gain, each at most {bound}, what input for free gives):"


def format_table(report: Report) -> str:
    """The report as a few lines for a terminal (the same numbers as the JSON and the PNG)."""
    lines = [
        f"{verdict_text(report)} ({report.timing} timing), {report.steps} steps, "
        f"{report.steps_per_second:.1f} steps/s ({report.samples_per_second:,.0f} samples/s)",
        f"  per step: input {_ms(report.input_seconds, report.steps)} "
        f"(waiting {_ms(report.wait_seconds, report.steps)}), rest of step {_ms(report.step_seconds, report.steps)}, "
        f"copy {_ms(report.copy_seconds, report.steps)}",
    ]
    workers = report.workers
    if workers:
        lines.append(
            f"  workers: {_count(workers['count'], workers['kind'] + ' worker')} "
            f"on {_count(workers['cores'], 'core')}, "
            f"{workers['utilisation']:.0%} busy ({workers['cpu_share_of_busy']:.0%} of it on CPU); queue: "
            f"{report.mean_ready:.1f} of {report.mean_in_flight:.1f} batches ready at a request, none ready at "
            f"{report.starved_share:.0%} of them"
        )
    headspace = headspace_text(report)
    if headspace is not None:
        lines.append(f"  {headspace}")
    if report.gpu:
        lines.append("  gpu: " + ", ".join(f"{key} {value}" for key, value in report.gpu.items()))
    lines.append(f"  {bottleneck_text(report)}")
    lines.append(f"  {'stage (most costly per step first)':<44} {'where':<8} {'ms/step':>9} {'share':>7}")
    for stage in report.stages:
        lines.append(
            f"  {stage.name[:44]:<44} {stage.where:<8} {_milliseconds(stage.ms_per_step):>9} {stage.share:>7.1%}"
        )
    lines.append("  (ms/step: a worker stage's time divided by the workers; share: of worker or loop input time)")
    if report.recommendations:
        lines.append(f"  {recommendations_heading(report)}")
        for item in report.recommendations:
            lines.append(f"    {format_gain(item.estimated_gain):>9}  {item.action}: {item.why}")
    for note in report.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def _ms(seconds: float, steps: int) -> str:
    return _duration(seconds / max(steps, 1))


def _duration(seconds: float) -> str:
    """``12 µs``, ``3.40 ms``, ``1.25 s``: enough digits to tell a cached batch's step from zero."""
    if seconds < 1e-4:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _milliseconds(value: float) -> str:
    """Milliseconds with the digits that matter: ``25.3``, ``1.25``, ``0.012``."""
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"
