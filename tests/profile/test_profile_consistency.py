"""The profiler does not contradict itself: it recommends only what this machine can do (no GPU advice for a
loop on the CPU, never more workers than cores), names no bottleneck when the loop is not input-bound,
bounds every estimated gain by what free input could give, and draws the same numbers the text states
(the longest stage bar is the bottleneck the title names; headspace steps are hatched)."""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import stoke
from stoke.ops import BatchOp, Resize
from stoke.profile.plot import draw
from stoke.profile.report import (
    MIN_GAIN,
    Measurements,
    Report,
    build_report,
    format_gain,
    format_table,
    free_input_speedup,
)
from stoke.profile.timeline import StepTimeline

GPU_WORDS = ("cuda", "gpu", "todevice", "device='", "nvjpeg")


class SlowBatchOp(BatchOp):
    """A batch op that takes 4 ms on the loop's thread (a stand-in for a costly CPU Normalize)."""

    def apply(self, batch: torch.Tensor, context: Any) -> torch.Tensor:
        time.sleep(0.004)
        return batch


def measurements(**changes: Any) -> Measurements:
    """A loop whose thread spends its input time in a batch op while 2 busy workers decode, 100 steps."""
    values: dict[str, Any] = dict(
        steps=100,
        batch_size=16,
        input_seconds=6.0,
        wait_seconds=1.0,
        step_seconds=2.0,
        copy_seconds=0.0,
        starved_steps=20,
        mean_ready=1.0,
        mean_in_flight=3.0,
        stages=[
            ("image: decode", "decode", 6.0),
            ("image: crop/resize/flip", "render", 1.0),
            ("image: ColorJitter", "batchable_pixel_op", 1.5),
            ("image: Normalize (batch op)", "batch_op", 4.5),
            ("collate", "collate", 0.3),
        ],
        busy_seconds=[4.4, 4.4],
        worker_cpu_seconds=8.0,
        wall_seconds=8.0,
        worker_kind="thread",
        num_workers=2,
        cores=2,
        images=[{"name": "image", "encoding": "keep", "stored_side": 500, "output_side": 224, "one_size": False}],
    )
    values.update(changes)
    return Measurements(**values)


def gpu_advice(report: Report) -> list[str]:
    return [item.action for item in report.recommendations if any(w in item.action.lower() for w in GPU_WORDS)]


def thread_counts(report: Report) -> list[int]:
    return [int(n) for item in report.recommendations for n in re.findall(r"num_threads=(\d+)", item.action)]


# ---- (a) only what this machine can do ------------------------------------------------------------------


def test_a_loop_on_the_cpu_gets_no_gpu_advice() -> None:
    report = build_report(measurements(cuda=False))
    assert report.classification == "highly input-bound"
    assert report.recommendations, "an input-bound loop still gets what the CPU can do"
    assert gpu_advice(report) == []
    table = format_table(report).lower()
    assert "device='cuda'" not in table and "todevice" not in table


def test_a_loop_on_a_cuda_device_may_get_gpu_advice() -> None:
    # the 2 workers are 95% busy and the loop waits for them: the GPU can take over decoding
    worker_bound = dict(input_seconds=7.0, wait_seconds=6.5, busy_seconds=[7.6, 7.6], worker_cpu_seconds=15.0)
    assert gpu_advice(build_report(measurements(cuda=True, **worker_bound)))
    assert gpu_advice(build_report(measurements(cuda=False, **worker_bound))) == []


@pytest.mark.parametrize("workers", ["thread", "process"])
@pytest.mark.parametrize("cuda_visible", [False, True])
def test_a_measured_cpu_loop_gets_no_gpu_advice(
    photos: stoke.Dataset, monkeypatch: pytest.MonkeyPatch, workers: str, cuda_visible: bool
) -> None:
    # Whether torch sees a GPU or not, a loop whose batches stay on the CPU gets no GPU advice.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_visible)
    loader = stoke.Loader(
        photos, 4, num_threads=1, workers=workers, device="cpu", transforms={"image": [Resize((16, 16)), SlowBatchOp()]}
    )
    profiler = stoke.profile(loader)
    for _ in range(2):
        for _batch in loader:
            pass
    loader.close()
    report = profiler.report()
    assert report.classification == "highly input-bound"  # the loop does nothing but wait for the batch op
    assert report.bottleneck == "image: SlowBatchOp (batch op)"
    assert gpu_advice(report) == []
    assert report.recommendations, "the bottleneck op itself is still worth making faster"


def test_waiting_workers_are_never_told_to_outnumber_the_cores() -> None:
    # 2 thread workers, 90% busy but 40% on CPU (the GIL, sleeps), on 2 cores: no num_threads=4.
    waiting = measurements(
        busy_seconds=[7.2, 7.2],
        worker_cpu_seconds=5.8,
        stages=[("image: decode", "decode", 4.0), ("image: Map(slow)", "pixel_op", 10.0)],
        input_seconds=7.0,
        wait_seconds=6.5,
    )
    report = build_report(waiting)
    assert all(n <= waiting.cores for n in thread_counts(report)), report.recommendations
    assert any("workers='process'" in item.action for item in report.recommendations)


@pytest.mark.parametrize(("workers", "cores", "expected"), [(1, 4, [4]), (4, 2, []), (2, 2, [])])
def test_computing_workers_are_offered_the_free_cores_only(workers: int, cores: int, expected: list[int]) -> None:
    busy = 9.0 * 2 / workers
    report = build_report(
        measurements(
            num_workers=workers,
            cores=cores,
            busy_seconds=[busy] * workers,
            worker_cpu_seconds=0.95 * busy * workers,
            stages=[("image: decode", "decode", 18.0)],
            input_seconds=7.0,
            wait_seconds=6.5,
        )
    )
    assert thread_counts(report) == expected


# ---- (b) no bottleneck when not input-bound -------------------------------------------------------------


def test_a_loop_that_is_not_input_bound_names_no_bottleneck(photos: stoke.Dataset) -> None:
    loader = stoke.Loader(photos, 4, num_threads=1, transforms={"image": [Resize((16, 16))]})
    profiler = stoke.profile(loader, steps=5, headspace_steps=2)
    for _ in range(2):
        for _batch in loader:
            time.sleep(0.03)
    loader.close()
    report = profiler.report()
    assert report.classification == "not input-bound"
    assert report.bottleneck is None
    assert report.slowest_stage == report.stages[0].name  # kept, as information only
    assert report.recommendations == []
    table = format_table(report)
    assert "bottleneck: none" in table and f"bottleneck: {report.slowest_stage}" not in table
    assert "headspace" in table
    figure = draw(report, profiler.timeline)
    stages_title = axes(figure, "stages").get_title()
    assert "bottleneck: none" in stages_title and f"bottleneck: {report.slowest_stage}" not in stages_title


# ---- (c) gains are bounded ------------------------------------------------------------------------------


def test_gains_never_exceed_what_free_input_gives() -> None:
    # Workers' busy time overstates their period (the GIL): the model alone would promise +109% for more
    # threads, but the loop spends only 10% of its time on input, so nothing can give more than +11%.
    report = build_report(
        measurements(
            input_seconds=1.0,
            wait_seconds=0.9,
            step_seconds=9.0,
            busy_seconds=[19.0, 19.0],
            worker_cpu_seconds=36.0,
            wall_seconds=10.0,
            cores=8,
            stages=[("image: decode", "decode", 38.0)],
        )
    )
    assert report.gain_bound == pytest.approx(0.1 / 0.9, abs=1e-3)
    assert report.recommendations
    assert all(0 < item.estimated_gain <= report.gain_bound for item in report.recommendations)


def test_headspace_bounds_the_gains_and_is_never_negative() -> None:
    slower = build_report(measurements(real_step_seconds=0.100, headspace_step_seconds=0.103))
    assert slower.headspace is not None and slower.headspace["speedup_if_input_were_free"] == 0.0
    assert slower.gain_bound == 0.0 and slower.recommendations == []
    assert "-" not in format_table(slower).split("headspace:")[1].splitlines()[0]
    small = build_report(measurements(real_step_seconds=0.100, headspace_step_seconds=0.095))
    assert small.gain_bound == pytest.approx(0.100 / 0.095 - 1, abs=1e-3)
    assert all(item.estimated_gain <= small.gain_bound for item in small.recommendations)


@settings(max_examples=200, deadline=None)
@given(
    input_seconds=st.floats(0.01, 10.0),
    wait_fraction=st.floats(0.0, 1.0),
    step_seconds=st.floats(0.001, 10.0),
    busy=st.floats(0.0, 40.0),
    cpu_fraction=st.floats(0.0, 1.0),
    workers=st.integers(1, 8),
    cores=st.integers(1, 8),
    batch_op=st.floats(0.0, 1.0),
    headspace=st.none() | st.floats(0.3, 3.0),
    cuda=st.booleans(),
)
def test_every_gain_lies_between_zero_and_its_bound(
    input_seconds: float,
    wait_fraction: float,
    step_seconds: float,
    busy: float,
    cpu_fraction: float,
    workers: int,
    cores: int,
    batch_op: float,
    headspace: float | None,
    cuda: bool,
) -> None:
    wait = input_seconds * wait_fraction
    loop_input = input_seconds - wait
    report = build_report(
        measurements(
            input_seconds=input_seconds,
            wait_seconds=wait,
            step_seconds=step_seconds,
            busy_seconds=[busy / workers] * workers,
            worker_cpu_seconds=busy * cpu_fraction,
            wall_seconds=10.0,
            num_workers=workers,
            cores=cores,
            stages=[
                ("image: decode", "decode", busy * 0.5),
                ("image: Map(f)", "pixel_op", busy * 0.3),
                ("image: ColorJitter", "batchable_pixel_op", busy * 0.1),
                ("image: Normalize (batch op)", "batch_op", loop_input * batch_op),
            ],
            real_step_seconds=0.01 if headspace else None,
            headspace_step_seconds=0.01 * headspace if headspace else None,
            cuda=cuda,
        )
    )
    share = report.input_share
    bound = free_input_speedup(share)
    if report.headspace is not None:
        assert report.headspace["speedup_if_input_were_free"] >= 0
        bound = min(bound, report.headspace["speedup_if_input_were_free"])
    assert report.gain_bound == pytest.approx(bound, abs=1e-3)
    for item in report.recommendations:
        assert MIN_GAIN <= item.estimated_gain <= report.gain_bound + 1e-9
    assert all(n <= cores for n in thread_counts(report))
    if not cuda:
        assert gpu_advice(report) == []
    if report.classification == "not input-bound":
        assert report.bottleneck is None and report.recommendations == []
    else:
        assert report.bottleneck == report.stages[0].name


def test_gains_are_printed_rounded() -> None:
    assert [format_gain(g) for g in (0.0123, 0.333, 0.996, 1.5, 12.4, 101.08, 8326.3)] == [
        "+1%",
        "+33%",
        "2.0×",
        "2.5×",
        "13×",
        "over 100×",
        "over 100×",
    ]
    # a loop doing nothing but wait: the cached batch makes a step 1000 times shorter
    report = build_report(measurements(real_step_seconds=0.0196, headspace_step_seconds=0.00002))
    table = format_table(report)
    assert "over 100×" in table
    assert all(int(p) < 100 for p in re.findall(r"\+(\d+)%", table)), table


# ---- (d) the picture says what the text says ------------------------------------------------------------


def axes(figure: Any, label: str) -> Any:
    (found,) = [ax for ax in figure.axes if ax.get_label() == label]
    return found


def timeline_with_headspace(real: int, headspace: int) -> StepTimeline:
    timeline = StepTimeline(capacity=64)
    now = 0
    for k in range(real + headspace):
        cached = k >= real
        timeline.request(now)
        now += 20_000 if cached else 3_000_000
        timeline.handout(now, 0 if cached else 2_000_000, ready=0, in_flight=2, headspace=cached)
        now += 1_000_000
    timeline.request(now)
    return timeline


def test_the_longest_bar_is_the_bottleneck_the_title_names() -> None:
    # 4 workers share 8 s of decoding (20 ms per step each) while the loop's thread spends 30 ms per
    # step in a batch op: the batch op is the bottleneck, and its bar is the longest.
    report = build_report(
        measurements(
            num_workers=4,
            cores=4,
            busy_seconds=[2.0] * 4,
            stages=[("image: decode", "decode", 8.0), ("image: Normalize (batch op)", "batch_op", 3.0)],
            input_seconds=4.0,
            wait_seconds=0.5,
        )
    )
    assert report.bottleneck == "image: Normalize (batch op)"
    figure = draw(report, timeline_with_headspace(6, 3))
    stages = axes(figure, "stages")
    bars = [patch for patch in stages.patches if patch.get_gid()]
    longest = max(bars, key=lambda patch: patch.get_width())
    assert longest.get_gid() == report.bottleneck
    assert f"bottleneck: {report.bottleneck}" in stages.get_title()
    # the bars are the report's numbers, in the report's order
    drawn = sorted(bars, key=lambda patch: -patch.get_y())
    assert [patch.get_gid() for patch in drawn] == [stage.name for stage in report.stages]
    assert [patch.get_width() for patch in drawn] == pytest.approx([s.ms_per_step for s in report.stages])
    assert axes(figure, "timeline").get_title().startswith(report.classification + ":")


def test_headspace_steps_are_hatched_and_only_they() -> None:
    report = build_report(measurements(real_step_seconds=0.004, headspace_step_seconds=0.001))
    timeline = timeline_with_headspace(6, 3)
    top = axes(draw(report, timeline), "timeline")
    bars = [patch for patch in top.patches if (patch.get_gid() or "").startswith("step ")]
    steps = {int(patch.get_gid().split()[1]) for patch in bars}
    hatched = {int(patch.get_gid().split()[1]) for patch in bars if patch.get_hatch()}
    assert steps == set(range(9)) and hatched == {6, 7, 8}
    assert all(patch.get_height() > 0 for patch in bars if patch.get_hatch())  # a hatch that shows
    legend = {text.get_text(): handle for text, handle in zip(top.get_legend().texts, top.get_legend().legend_handles)}
    (key,) = [text for text in legend if "hatched" in text]
    assert legend[key].get_hatch()


def test_the_picture_and_the_table_state_the_same_recommendations() -> None:
    report = build_report(measurements())
    figure = draw(report, timeline_with_headspace(6, 0))
    summary = "\n".join(text.get_text() for text in axes(figure, "summary").texts)
    table = format_table(report)
    assert report.recommendations
    for item in report.recommendations[:3]:
        assert f"{format_gain(item.estimated_gain)}  {item.action}" in summary
        assert f"{format_gain(item.estimated_gain)}  {item.action}" in table
    again = Report.from_dict(report.to_dict())
    assert (again.bottleneck, again.slowest_stage, again.gain_bound) == (
        report.bottleneck,
        report.slowest_stage,
        report.gain_bound,
    )


def test_a_measured_profile_draws_what_it_reports(photos: stoke.Dataset) -> None:
    def nap(image: np.ndarray) -> None:
        time.sleep(0.002)

    from stoke.ops import Map

    loader = stoke.Loader(photos, 4, num_threads=2, transforms={"image": [Resize((16, 16)), Map(nap)]})
    profiler = stoke.profile(loader, steps=3, headspace_steps=2)
    for _ in range(2):
        for _batch in loader:
            pass
    loader.close()
    report = profiler.report()
    figure = draw(report, profiler.timeline)
    bars = [patch for patch in axes(figure, "stages").patches if patch.get_gid()]
    assert max(bars, key=lambda patch: patch.get_width()).get_gid() == report.bottleneck == "image: Map(nap)"
    top = axes(figure, "timeline")
    hatched = [p for p in top.patches if (p.get_gid() or "").startswith("step ") and p.get_hatch()]
    assert {int(p.get_gid().split()[1]) for p in hatched} == {4, 5}  # after the warm-up and 3 profiled steps
    assert all(p.get_height() > 0 for p in hatched)
