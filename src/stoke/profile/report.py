"""The profiler's verdict: how input-bound the loop is, which stage limits it, and what to change.

For: turning measurements (step times, stage times, worker utilisation) into a :class:`Report`, with the
classification, the bottleneck and recommendations ordered by estimated gain, as a terminal table or
JSON. Not for: measuring (``profiler.py``, ``stages.py``, ``timeline.py``).

**Classification** of the input-bound share (the share of step time the loop spent inside ``next()``:
waiting for the workers, collating, copying, batch ops): under 5% not input-bound, 5–20% moderately,
over 20% highly (:func:`classify`).

**Estimates** use one model, stated in ``docs/profiling.md``: a step takes ``T = max(C + L, P)`` where
``C`` is the loop's own work per step, ``L`` the input work done on the loop's thread (collate, copy,
batch ops) and ``P`` the workers' busy time per step divided by the worker count (their period when all
are busy). A change scales one term (2 more threads divide ``P`` by ``(n+2)/n``; raw storage removes most
of the decode share of ``P``; ...) and its estimated gain is ``T / T' - 1``. The model ignores queueing,
so the figures are what to try first, not promises; the headspace (the same loop fed a cached batch)
bounds them all.

Example:
    >>> classify(0.03), classify(0.12), classify(0.5)
    ('not input-bound', 'moderately input-bound', 'highly input-bound')
    >>> report = Report.from_dict(Report(steps=1, input_share=0.5).to_dict())
    >>> report.classification
    'highly input-bound'
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

NOT_INPUT_BOUND = 0.05
HIGHLY_INPUT_BOUND = 0.20
REPORT_FORMAT = "stoke.profile.v1"
WORKER_KINDS = ("read", "checksum", "decode", "render", "pixel_op", "batchable_pixel_op", "value", "other")
LOOP_KINDS = ("collate", "copy", "batch_op", "batch_transform", "loop_other")
MIN_GAIN = 0.01  # recommendations estimated below this are not shown
RAW_COPY_COST = 0.15  # a raw record's copy, as a share of decoding the same image (stoke bench, keep vs raw)


def classify(share: float) -> str:
    """The verdict for an input-bound share in [0, 1]: under 5%, 5–20% (both included), over 20%."""
    if share < NOT_INPUT_BOUND:
        return "not input-bound"
    if share <= HIGHLY_INPUT_BOUND:
        return "moderately input-bound"
    return "highly input-bound"


@dataclass
class Stage:
    """One stage's time: ``where`` is "workers" (summed over all workers) or "loop" (the loop's thread)."""

    name: str
    kind: str
    where: str
    seconds: float
    share: float  # of the workers' busy time, or of the loop's input time


@dataclass
class Recommendation:
    action: str
    why: str
    estimated_gain: float  # throughput gain as a fraction: 0.25 means about 25% more steps per second


@dataclass
class Report:
    """Everything the profiler concluded; JSON round-trips through :meth:`to_dict` / :meth:`from_dict`."""

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
    stages: list[Stage] = field(default_factory=list)
    bottleneck: str | None = None
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
            raise ValueError(f"not a stoke profile report (expected format {REPORT_FORMAT!r})")
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
    cores: int
    images: list[dict[str, Any]] = field(default_factory=list)  # per image field: encoding, stored/output side
    verify: str = "never"
    packed: bool = True
    gpu_input_share: float | None = None
    headspace_step_seconds: float | None = None  # median time of a step fed from the cached batch
    real_step_seconds: float | None = None  # median time of a step fed by the pipeline
    gpu: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    cuda: bool = False  # batches go to a CUDA device: the GPU can take over decoding and cropping


def build_report(m: Measurements) -> Report:
    """Classify, find the bottleneck and estimate the recommendations' gains; see the module docstring."""
    total = m.input_seconds + m.step_seconds
    steps = max(m.steps, 1)
    cpu_share = m.input_seconds / total if total > 0 else 0.0
    share = m.gpu_input_share if m.gpu_input_share is not None else cpu_share
    busy = sum(m.busy_seconds)
    workers = max(m.num_workers, 1)
    utilisation = busy / (workers * m.wall_seconds) if m.wall_seconds > 0 else 0.0
    stages = _stages(m, busy)
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
    loop_work = (m.input_seconds - m.wait_seconds) / steps
    period = busy / workers / steps
    report.bottleneck = _bottleneck(stages, workers)
    if m.headspace_step_seconds and m.real_step_seconds:
        report.headspace = {
            "step_seconds": m.headspace_step_seconds,
            "real_step_seconds": m.real_step_seconds,
            "speedup_if_input_were_free": m.real_step_seconds / m.headspace_step_seconds - 1,
        }
    else:
        report.notes.append("headspace not measured (ask for it with headspace_steps=, or stoke profile)")
    if report.classification != "not input-bound":
        model = _Model(m.step_seconds / steps, loop_work, period)
        report.recommendations = _recommend(m, report, stages, model, utilisation)
    else:
        report.notes.append("input is not what limits this loop: speed up the model or the step itself")
    return report


def _stages(m: Measurements, busy: float) -> list[Stage]:
    worker = [(name, kind, seconds) for name, kind, seconds in m.stages if kind in WORKER_KINDS]
    loop = [(name, kind, seconds) for name, kind, seconds in m.stages if kind in LOOP_KINDS]
    accounted = sum(seconds for _, _, seconds in worker)
    if busy > accounted:
        worker.append(("other (workers)", "other", busy - accounted))
    loop_input = m.input_seconds - m.wait_seconds
    accounted_loop = sum(seconds for _, _, seconds in loop)
    if loop_input > accounted_loop:
        loop.append(("other (loop: starting batches)", "loop_other", loop_input - accounted_loop))
    stages = [Stage(n, k, "workers", s, s / busy if busy > 0 else 0.0) for n, k, s in worker]
    stages += [Stage(n, k, "loop", s, s / loop_input if loop_input > 0 else 0.0) for n, k, s in loop]
    return sorted(stages, key=lambda stage: stage.seconds, reverse=True)


def _bottleneck(stages: list[Stage], workers: int) -> str | None:
    """The stage costing the most time per step: a worker stage's time counts divided by the workers."""
    named = [stage for stage in stages if stage.kind not in ("other", "loop_other")]
    if not named:
        return None
    return max(named, key=lambda stage: stage.seconds / workers if stage.where == "workers" else stage.seconds).name


@dataclass
class _Model:
    step: float  # C: the loop's own work per step
    loop_input: float  # L: input work on the loop's thread per step
    period: float  # P: worker busy time per step / workers

    def gain(self, period_factor: float = 1.0, loop_input_saved: float = 0.0) -> float:
        now = max(self.step + self.loop_input, self.period)
        after = max(self.step + max(0.0, self.loop_input - loop_input_saved), self.period * period_factor)
        return now / after - 1 if after > 0 else 0.0


def _recommend(
    m: Measurements, report: Report, stages: list[Stage], model: _Model, utilisation: float
) -> list[Recommendation]:
    found: list[Recommendation] = []
    share_of = _shares(stages)
    n = max(m.num_workers, 1)
    cpu_share = report.workers["cpu_share_of_busy"]
    if utilisation >= 0.8:
        if cpu_share >= 0.7 and m.cores > n:
            more = m.cores - n
            found.append(
                Recommendation(
                    f"num_threads={m.cores}" if m.worker_kind == "thread" else f"num_threads={m.cores} (processes)",
                    f"the {n} workers are {utilisation:.0%} busy computing and {more} more cores are free",
                    model.gain(n / m.cores),
                )
            )
        elif cpu_share < 0.7:
            action = f"num_threads={2 * n}"
            if m.worker_kind == "thread":
                action += " (or workers='process' if that time is Python code holding the GIL)"
            found.append(
                Recommendation(
                    action,
                    f"the {n} workers are {utilisation:.0%} busy but compute only {cpu_share:.0%} of that time: "
                    f"they wait (the GIL, I/O, sleeps), so more of them overlap more",
                    model.gain(0.5),
                )
            )
    decode = share_of.get("decode", 0.0)
    for image in m.images:
        stored, output = image.get("stored_side"), image.get("output_side")
        if stored and output and stored > 2 * output and decode > 0:
            kept = (2 * output / stored) ** 2
            found.append(
                Recommendation(
                    f"stoke pack --max-side {2 * output} (field {image['name']!r})",
                    f"decode is {decode:.0%} of worker time and stored images reach {stored}px for a "
                    f"{output}px output; decoding scales with stored pixels (about {kept:.0%} left)",
                    model.gain(1 - decode * (1 - kept)),
                )
            )
        if image.get("encoding") != "raw" and decode > 0:
            found.append(
                Recommendation(
                    f"stoke pack --image-mode raw (field {image['name']!r})",
                    f"decode is {decode:.0%} of worker time; a raw record is copied, not decoded (about "
                    f"{RAW_COPY_COST:.0%} of the cost), for several times the disk",
                    model.gain(1 - decode * (1 - RAW_COPY_COST)),
                )
            )
    if m.cuda:
        found.extend(_gpu_recommendations(m, share_of, model))
    batchable = share_of.get("batchable_pixel_op", 0.0)
    loop_batch_ops = sum(s.seconds for s in stages if s.kind == "batch_op") / max(m.steps, 1)
    if batchable > 0 or loop_batch_ops > 0:
        found.append(
            Recommendation(
                "GPU ops: device='cuda' and put the augmentations after ToDevice in transforms",
                f"batchable pixel ops are {batchable:.0%} of worker time and CPU batch ops take "
                f"{loop_batch_ops * 1e3:.1f} ms of the loop per step",
                model.gain(1 - batchable, loop_batch_ops),
            )
        )
    read = share_of.get("read", 0.0)
    if read > 0:
        action = "stoke.pack the dataset (stored decode-ready, read from the page cache)"
        if m.packed:
            action = "keep the dataset on local disk or in RAM (page cache) instead of slow storage"
        found.append(Recommendation(action, f"reading is {read:.0%} of worker time", model.gain(1 - 0.9 * read)))
    checksum = share_of.get("checksum", 0.0)
    if checksum > 0 and m.verify == "always":
        found.append(
            Recommendation(
                "verify='once'",
                f"checksums are {checksum:.0%} of worker time and are checked on every read",
                model.gain(1 - checksum),
            )
        )
    slowest = next((s for s in stages if s.name == report.bottleneck), None)
    if slowest is not None and slowest.kind in ("pixel_op", "value", "batch_transform"):
        where = "worker time" if slowest.where == "workers" else "the loop's input time"
        found.append(
            Recommendation(
                f"make {slowest.name} faster",
                f"it is the bottleneck, {slowest.share:.0%} of {where}; halving it gives this",
                model.gain(1 - slowest.share / 2)
                if slowest.where == "workers"
                else model.gain(loop_input_saved=slowest.seconds / 2 / max(m.steps, 1)),
            )
        )
    found = [item for item in found if item.estimated_gain >= MIN_GAIN]
    return sorted(found, key=lambda item: item.estimated_gain, reverse=True)


def _gpu_recommendations(m: Measurements, share_of: dict[str, float], model: _Model) -> list[Recommendation]:
    """With a CUDA device: let the GPU decode (nvJPEG) or crop and resize (batched), whichever applies."""
    found = []
    decode, render = share_of.get("decode", 0.0), share_of.get("render", 0.0)
    for image in m.images:
        name = image["name"]
        if image.get("encoding") in ("keep", "jpeg") and decode > 0:
            found.append(
                Recommendation(
                    f"Loader(decode='device') (field {name!r}; needs torchvision built with CUDA)",
                    f"decode and crop/resize are {decode + render:.0%} of worker time; nvJPEG decodes on the GPU "
                    f"and the crop, resize and flip then run batched there (docs/device.md)",
                    model.gain(1 - decode - render),
                )
            )
        elif render > 0 and image.get("one_size"):
            found.append(
                Recommendation(
                    f"put the crop and flip after ToDevice in transforms[{name!r}]",
                    f"crop/resize is {render:.0%} of worker time; after ToDevice it runs batched on the GPU, "
                    f"a few kernels per batch (docs/augmentation.md)",
                    model.gain(1 - render),
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


def format_table(report: Report) -> str:
    """The report as a few lines for a terminal."""
    lines = [
        f"{report.classification}: {report.input_share:.1%} of step time is input ({report.timing} timing), "
        f"{report.steps} steps, {report.steps_per_second:.1f} steps/s ({report.samples_per_second:,.0f} samples/s)",
        f"  per step: input {_ms(report.input_seconds, report.steps)} "
        f"(waiting {_ms(report.wait_seconds, report.steps)}), rest of step {_ms(report.step_seconds, report.steps)}, "
        f"copy {_ms(report.copy_seconds, report.steps)}",
    ]
    workers = report.workers
    if workers:
        lines.append(
            f"  workers: {workers['count']} {workers['kind']}s, {workers['utilisation']:.0%} busy "
            f"({workers['cpu_share_of_busy']:.0%} of it on CPU); queue: {report.mean_ready:.1f} of "
            f"{report.mean_in_flight:.1f} batches ready at a request, none ready at {report.starved_share:.0%} of them"
        )
    if report.headspace:
        lines.append(
            f"  headspace: fed from a cached batch a step takes {report.headspace['step_seconds'] * 1e3:.1f} ms "
            f"instead of {report.headspace['real_step_seconds'] * 1e3:.1f} ms "
            f"({report.headspace['speedup_if_input_were_free']:+.0%} if input were free)"
        )
    if report.gpu:
        lines.append("  gpu: " + ", ".join(f"{key} {value}" for key, value in report.gpu.items()))
    lines.append(f"  bottleneck: {report.bottleneck or 'none measured'}")
    lines.append(f"  {'stage':<44} {'where':<8} {'seconds':>9} {'share':>7}")
    for stage in report.stages:
        lines.append(f"  {stage.name[:44]:<44} {stage.where:<8} {stage.seconds:>9.3f} {stage.share:>7.1%}")
    if report.recommendations:
        lines.append("  recommendations (estimated throughput gain):")
        for item in report.recommendations:
            lines.append(f"    {item.estimated_gain:+7.0%}  {item.action}: {item.why}")
    for note in report.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def _ms(seconds: float, steps: int) -> str:
    return f"{seconds / max(steps, 1) * 1e3:.2f} ms"
