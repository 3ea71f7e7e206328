"""The observer protocol and the timing hook (stoke.pipeline.observer, stoke.pipeline.timing): a Loader tells
its observer every request, copy and hand-over, its parts time their work into the observer's counters in
thread and process workers alike, and an unwatched Loader measures nothing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import stoke
from stoke.errors import ConfigError
from stoke.ops import Normalize, Resize
from stoke.pipeline.observer import Unobserved
from stoke.profile.stages import StageClock


class Recorder(Unobserved):
    """Counts each moment, and times the workers' stages into a counter table of its own."""

    def __init__(self, loader: stoke.Loader) -> None:
        self.counters = StageClock(len(loader.timing.names))
        self.moments: dict[str, int] = {"requested": 0, "copy_started": 0, "copy_ended": 0, "handed_out": 0}

    def requested(self, in_flight: Any) -> None:
        self.moments["requested"] += 1

    def copy_started(self) -> Any:
        self.moments["copy_started"] += 1
        return "token"

    def copy_ended(self, started: Any) -> None:
        assert started == "token"
        self.moments["copy_ended"] += 1

    def handed_out(self, batch: dict[str, Any], waited: float) -> None:
        self.moments["handed_out"] += 1

    def seconds(self, loader: stoke.Loader) -> dict[str, float]:
        sums = loader.timing.exclusive(self.counters.table().sum(axis=0))
        return {name: sums[slot] / 1e9 for slot, name in enumerate(loader.timing.names)}


@pytest.mark.parametrize("workers", ["thread", "process"])
def test_an_observer_sees_every_step_and_every_stage(photos: stoke.Dataset, workers: str) -> None:
    transforms = {"image": [Resize((8, 8)), Normalize((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))]}
    loader = stoke.Loader(photos, 4, num_threads=2, workers=workers, transforms=transforms, device="cpu")
    recorder = Recorder(loader)
    loader.watch(recorder)
    assert loader.observer is recorder
    batches = len(list(loader))
    loader.close()
    # requested once per batch and once more to learn that the epoch is over; a copy per field per batch
    copies = batches * len(photos.fields)
    assert recorder.moments == {"requested": batches + 1, "copy_started": copies, "copy_ended": copies,
                                "handed_out": batches}  # fmt: skip
    seconds = recorder.seconds(loader)
    for name in ["read and checksum", "image: decode", "image: crop/resize/flip", "label: decode", "collate",
                 "copy to device", "image: Normalize (batch op)", "busy", "worker cpu"]:  # fmt: skip
        assert seconds[name] > 0, name
    assert seconds["read"] == 0  # verify="once", one epoch: every read was a checked one


def test_an_unwatched_loader_measures_nothing(photos: stoke.Dataset) -> None:
    loader = stoke.Loader(photos, 4, num_threads=2, transforms={"image": [Resize((8, 8))]})
    recorder = Recorder(loader)
    loader.watch(recorder)
    next(iter(loader))
    loader.unwatch(recorder)
    assert loader.observer is None and not loader.timing.connected
    handed, table = recorder.moments["handed_out"], recorder.counters.table()
    list(loader)  # the rest of the epoch, unwatched
    loader.close()
    assert recorder.moments["handed_out"] == handed
    after = recorder.counters.table()
    assert np.array_equal(after[: len(table)], table) and not after[len(table) :].any()


def test_one_observer_at_a_time_and_process_workers_are_watched_before_they_fork(photos: stoke.Dataset) -> None:
    loader = stoke.Loader(photos, 4, num_threads=1, workers="process", transforms={"image": [Resize((8, 8))]})
    first = Recorder(loader)
    loader.watch(first)
    with pytest.raises(ConfigError, match="already watched"):
        loader.watch(Recorder(loader))
    loader.unwatch(first)
    iterator = iter(loader)
    next(iterator)  # the workers have forked without counters
    with pytest.raises(ConfigError, match="before iterating"):
        loader.watch(Recorder(loader))
    loader.watch(Unobserved())  # an observer without counters needs no fork: it only hears the steps
    rest = [batch["index"].tolist() for batch in iterator]
    loader.close()
    assert len(rest) == len(loader) - 1
