"""The profiler's verdicts: a pipeline slowed on purpose is highly input-bound with that op as the
bottleneck; a fast pipeline feeding a slow step is not input-bound; the thresholds; stage accounting."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stoke
from stoke.ops import Map, Normalize, Resize
from stoke.pipeline.timing import Timing
from stoke.profile.report import HIGHLY_INPUT_BOUND, NOT_INPUT_BOUND, Measurements, build_report, classify
from stoke.profile.stages import StageClock


def slow(image: np.ndarray) -> None:
    time.sleep(0.004)  # a transform made slow on purpose


def profiled_epochs(loader: stoke.Loader, epochs: int, step_seconds: float = 0.0) -> stoke.profile.Profiler:
    profiler = stoke.profile(loader)
    for _ in range(epochs):
        for _batch in loader:
            if step_seconds:
                time.sleep(step_seconds)
    return profiler


def test_a_sleeping_transform_is_reported_highly_input_bound_and_the_bottleneck(photos: stoke.Dataset) -> None:
    loader = stoke.Loader(photos, 4, num_threads=2, prefetch=2, transforms={"image": [Resize((16, 16)), Map(slow)]})
    report = profiled_epochs(loader, 2).report()
    loader.close()
    assert report.classification == "highly input-bound"
    assert report.input_share > 0.5
    assert report.bottleneck == "image: Map(slow)"
    assert report.recommendations, "an input-bound loop gets something to change"
    gains = [item.estimated_gain for item in report.recommendations]
    assert gains == sorted(gains, reverse=True)
    # the workers sleep: they neither compute nor hold the GIL, so processes would not help; more threads
    # would, but never more than the cores this process may use
    assert report.workers["cpu_share_of_busy"] < 0.5
    actions = [item.action for item in report.recommendations]
    assert "make image: Map(slow) faster" in actions
    assert not any("process" in action for action in actions)
    assert all(int(n) <= report.workers["cores"] for a in actions for n in re.findall(r"num_threads=(\d+)", a))


def test_a_fast_pipeline_feeding_a_slow_step_is_not_input_bound() -> None:
    loader = stoke.Loader({"x": np.arange(64.0), "y": np.arange(64)}, 8, num_threads=1)
    report = profiled_epochs(loader, 2, step_seconds=0.02).report()
    loader.close()
    assert report.classification == "not input-bound"
    assert report.input_share < NOT_INPUT_BOUND
    assert report.recommendations == []
    assert report.steps == 15  # 16 steps, the first one the warm-up
    assert report.step_seconds >= 15 * 0.02


@pytest.mark.parametrize(("verify", "read"), [("always", "read and checksum"), ("never", "read")])
def test_worker_stages_add_up_to_the_workers_busy_time(photos: stoke.Dataset, verify: str, read: str) -> None:
    loader = stoke.Loader(photos, 4, num_threads=2, transforms={"image": [Resize((16, 16)), Map(slow)]}, verify=verify)
    report = profiled_epochs(loader, 1).report()
    loader.close()
    worker = {stage.name: stage.seconds for stage in report.stages if stage.where == "workers"}
    named = sum(seconds for name, seconds in worker.items() if not name.startswith("other"))
    assert {read, "image: decode", "image: crop/resize/flip", "image: Map(slow)", "label: decode"} <= set(worker)
    assert {"read", "read and checksum"} - {read} - set(worker)  # the other kind of read never happened
    assert 0.9 * report.workers["busy_seconds"] <= named <= report.workers["busy_seconds"] * 1.001
    # crop/resize/flip is reported without the Map that runs inside it
    assert worker["image: crop/resize/flip"] < worker["image: Map(slow)"]


def test_loop_stages_are_timed_on_the_loops_thread(photos: stoke.Dataset) -> None:
    loader = stoke.Loader(
        photos,
        4,
        num_threads=1,
        transforms={"image": [Resize((16, 16)), Normalize((120.0, 120.0, 120.0), (60.0, 60.0, 60.0))]},
    )
    report = profiled_epochs(loader, 1).report()
    loop = {stage.name: stage for stage in report.stages if stage.where == "loop"}
    assert "collate" in loop and "image: Normalize (batch op)" in loop
    assert abs(sum(stage.share for stage in loop.values()) - 1.0) < 1e-6


def test_batches_finished_ahead_for_a_device_are_profiled_once_each(photos: stoke.Dataset) -> None:
    loader = stoke.Loader(
        photos,
        4,
        num_threads=1,
        device="cpu",  # batches go to a device: each is finished one ahead of the loop
        transforms={"image": [Resize((16, 16)), Normalize((120.0, 120.0, 120.0), (60.0, 60.0, 60.0))]},
    )
    report = profiled_epochs(loader, 2).report()
    loader.close()
    assert report.steps == 2 * len(loader) - 1  # every batch once, the first one the warm-up
    loop = {stage.name: stage for stage in report.stages if stage.where == "loop"}
    assert {"collate", "copy to device", "image: Normalize (batch op)"} <= set(loop)


@given(st.floats(0.0, 1.0, allow_nan=False))
def test_classification_follows_the_thresholds(share: float) -> None:
    verdict = classify(share)
    if share < NOT_INPUT_BOUND:
        assert verdict == "not input-bound"
    elif share > HIGHLY_INPUT_BOUND:
        assert verdict == "highly input-bound"
    else:
        assert verdict == "moderately input-bound"


def test_threshold_edges() -> None:
    assert classify(0.0499) == "not input-bound"
    assert classify(0.05) == classify(0.2) == "moderately input-bound"
    assert classify(0.2001) == "highly input-bound"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 10**9)), max_size=60))
def test_stage_clock_sums_match_a_plain_reference(additions: list[tuple[int, int, int]]) -> None:
    timing = Timing()
    slots = [timing.slot(f"stage {k}", "value") for k in range(3)]
    clock = StageClock(len(timing.names), max_rows=8)
    timing.connect(clock)
    by_thread: dict[int, list[tuple[int, int]]] = {}
    for thread, slot, nanoseconds in additions:
        by_thread.setdefault(thread, []).append((slots[slot], nanoseconds))

    def work(items: list[tuple[int, int]]) -> None:
        for slot, nanoseconds in items:
            clock.add(slot, nanoseconds)
        clock.add(timing.busy, sum(n for _, n in items) + 1)

    threads = [threading.Thread(target=work, args=(items,)) for items in by_thread.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    totals = clock.table().sum(axis=0)
    for k in range(3):
        assert totals[slots[k]] == sum(n for _, slot, n in additions if slot == k)
    expected = sorted(sum(n for _, n in v) + 1 for v in by_thread.values())
    assert sorted(clock.busy_per_worker(timing.busy).tolist()) == expected


def test_a_containing_slot_is_reported_without_what_it_contains() -> None:
    timing = Timing()
    inner = timing.slot("inner", "pixel_op")
    outer = timing.slot("outer", "render", contains=(inner,))
    clock = StageClock(len(timing.names))
    clock.add(outer, 100)
    clock.add(inner, 30)
    assert timing.exclusive(clock.table().sum(axis=0))[outer] == 70
    clock.add(inner, 200)  # more inside than around it (clock skew between threads): never negative
    assert timing.exclusive(clock.table().sum(axis=0))[outer] == 0


def test_an_unconnected_timing_measures_nothing_and_a_connected_one_measures_its_slot() -> None:
    timing = Timing()
    slot = timing.slot("read", "read")
    assert timing.stop(slot, timing.start()) == 0 and not timing.connected
    clock = StageClock(len(timing.names))
    timing.connect(clock)
    started = timing.start()
    time.sleep(0.002)
    timing.stop(slot, started)
    assert clock.table()[:, slot].sum() >= 2_000_000
    timing.disconnect()
    timing.stop(slot, timing.start())  # no longer counted
    assert clock.table()[:, slot].sum() < 1_000_000_000


def decode_bound(cuda: bool, encoding: str, one_size: bool) -> Measurements:
    """Measurements of a loop starved by decoding and cropping in 2 busy workers."""
    return Measurements(
        steps=100,
        batch_size=64,
        input_seconds=8.0,
        wait_seconds=7.5,
        step_seconds=2.0,
        copy_seconds=0.1,
        starved_steps=90,
        mean_ready=0.0,
        mean_in_flight=3.0,
        stages=[("image: decode", "decode", 9.0), ("image: crop/resize", "render", 6.0), ("label", "value", 1.0)],
        busy_seconds=[9.8, 9.8],
        worker_cpu_seconds=19.0,
        wall_seconds=10.0,
        worker_kind="thread",
        num_workers=2,
        cores=2,
        images=[{"name": "image", "encoding": encoding, "stored_side": 256, "output_side": 224, "one_size": one_size}],
        cuda=cuda,
    )


def test_with_a_gpu_the_report_offers_decoding_on_it_for_jpeg_and_cropping_on_it_for_one_size_raw() -> None:
    jpeg = build_report(decode_bound(cuda=True, encoding="keep", one_size=False))
    actions = [item.action for item in jpeg.recommendations]
    assert any("decode='device'" in action for action in actions)
    assert not any("after ToDevice" in action for action in actions)
    raw = build_report(decode_bound(cuda=True, encoding="raw", one_size=True))
    actions = [item.action for item in raw.recommendations]
    assert any("after ToDevice in transforms['image']" in action for action in actions)
    assert not any("decode='device'" in action for action in actions)
    # images of many sizes cannot be batched before cropping: no advice to crop on the GPU
    varied = build_report(decode_bound(cuda=True, encoding="raw", one_size=False))
    assert not any("after ToDevice" in item.action for item in varied.recommendations)


def test_without_a_gpu_the_report_does_not_offer_gpu_decoding() -> None:
    report = build_report(decode_bound(cuda=False, encoding="keep", one_size=True))
    assert report.recommendations
    assert not any("decode='device'" in item.action or "ToDevice" in item.action for item in report.recommendations)
