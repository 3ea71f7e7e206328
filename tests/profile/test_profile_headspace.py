"""Headspace steps (fed from one cached batch) are timed, and never counted as the epoch's progress;
process workers bring their stage times back through shared memory."""

from __future__ import annotations

import time

import numpy as np

import stoke
from stoke.ops import Map, Resize


def test_headspace_repeats_one_batch_and_state_dict_ignores_it() -> None:
    loader = stoke.Loader({"x": np.arange(40.0)}, 4, shuffle=False, num_threads=1)
    profiler = stoke.profile(loader, steps=3, headspace_steps=3)
    seen, states = [], []
    for batch in loader:
        seen.append(batch["index"].tolist())
        states.append(loader.state_dict()["samples_consumed"])
        time.sleep(0.005)
    real = [[4 * k + i for i in range(4)] for k in range(10)]
    # the warm-up and 3 profiled steps, then the 4th batch 3 more times, then the epoch goes on unchanged
    assert seen == real[:4] + [real[3]] * 3 + real[4:]
    assert states == [4, 8, 12, 16, 16, 16, 16, 20, 24, 28, 32, 36, 0]  # 0: the epoch is over, the next is due
    report = profiler.report()
    assert profiler.finished and loader.observer is None  # detached after the headspace
    assert report.steps == 3
    assert report.headspace is not None
    assert report.headspace["step_seconds"] > 0.004
    assert report.headspace["real_step_seconds"] >= report.headspace["step_seconds"] * 0.5


def test_headspace_shows_the_speed_of_a_loop_with_free_input(photos: stoke.Dataset) -> None:
    def slow(image: np.ndarray) -> None:
        time.sleep(0.003)

    loader = stoke.Loader(photos, 4, num_threads=1, prefetch=1, transforms={"image": [Resize((8, 8)), Map(slow)]})
    profiler = stoke.profile(loader, steps=3, headspace_steps=3)
    for _ in range(2):
        for _batch in loader:
            pass
    loader.close()
    headspace = profiler.report().headspace
    assert headspace is not None
    # 4 images x 3 ms per real step, against a cached batch handed over at once
    assert headspace["real_step_seconds"] > 0.010 > headspace["step_seconds"]
    assert headspace["speedup_if_input_were_free"] > 1.0


def nap(image: np.ndarray) -> None:
    time.sleep(0.004)


def test_process_workers_report_their_stage_times(photos: stoke.Dataset) -> None:
    loader = stoke.Loader(
        photos, 4, workers="process", num_threads=2, transforms={"image": [Resize((16, 16)), Map(nap)]}
    )
    profiler = stoke.profile(loader)
    for _ in range(2):
        for _batch in loader:
            pass
    report = profiler.report()
    loader.close()
    worker = {stage.name: stage.seconds for stage in report.stages if stage.where == "workers"}
    assert report.workers["kind"] == "process"
    assert len(report.workers["per_worker_utilisation"]) == 2  # one row per worker process
    assert worker["image: Map(nap)"] > 0.004 * 21  # an epoch's naps at least, measured in the workers
    assert worker["image: decode"] > 0
    assert report.bottleneck == "image: Map(nap)"
    assert report.classification == "highly input-bound"


def test_profiling_a_running_process_loader_is_refused(photos: stoke.Dataset) -> None:
    import pytest

    from stoke.errors import ConfigError

    loader = stoke.Loader(photos, 4, workers="process", num_threads=1, transforms={"image": [Resize((8, 8))]})
    iterator = iter(loader)
    next(iterator)
    with pytest.raises(ConfigError, match="before iterating"):
        stoke.profile(loader)
    loader.close()
