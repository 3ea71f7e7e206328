"""The auto-tuner's decisions, on a scripted clock; and batches that do not depend on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stoke
import stoke.pipeline.autotune as autotune
from stoke.pipeline.autotune import AutoTuner


class Script:
    """Drives a tuner with a fake clock: each window delivers ``rate(settings)`` samples per second."""

    def __init__(self, monkeypatch, tuner: AutoTuner, rate, wait_share=0.5, cpu_share=0.5) -> None:
        self.tuner, self.rate, self.wait_share, self.cpu_share = tuner, rate, wait_share, cpu_share
        self.now = 0.0
        self.cpu = 0.0
        monkeypatch.setattr(autotune.time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(autotune, "_cpu_seconds", lambda paths: self.cpu)

    def window(self) -> tuple[int, int] | None:
        """One full window of 1 s: a batch to start it, then one batch that closes it."""
        settings = self.tuner.settings
        self.tuner.after_batch(0, 0.0, [])
        while self.tuner._skip:
            self.tuner.after_batch(0, 0.0, [])
        self.now += 1.0
        self.cpu += self.cpu_share * self.tuner.cpu_budget
        return self.tuner.after_batch(int(self.rate(settings)), self.wait_share, [])


def test_adds_threads_while_they_pay_then_tries_prefetch_then_settles(monkeypatch):
    tuner = AutoTuner(threads=2, prefetch=3, max_threads=8, max_prefetch=8, cpu_budget=2, window=0.5)
    script = Script(monkeypatch, tuner, rate=lambda s: min(s[0], 4) * 100.0)  # more threads help up to 4
    for _ in range(12):
        script.window()
        if tuner.state == "settled":
            break
    assert tuner.state == "settled"
    assert tuner.settings == (4, 3)  # 5 threads gave nothing and was undone; prefetch 4 gave nothing too
    tried = [(w.threads, w.prefetch) for w in tuner.history]
    assert (5, 3) in tried and (4, 4) in tried


def test_no_threads_added_when_the_cpu_budget_is_used(monkeypatch):
    tuner = AutoTuner(threads=2, prefetch=3, max_threads=8, max_prefetch=8, cpu_budget=2, window=0.5)
    script = Script(monkeypatch, tuner, rate=lambda s: s[0] * 100.0 + s[1], cpu_share=0.97)
    for _ in range(10):
        script.window()
    assert all(window.threads == 2 for window in tuner.history)
    assert tuner.state == "settled" and tuner.prefetch == 3  # prefetch moves gained < 3% and were undone


def test_a_loop_that_does_not_wait_is_left_alone(monkeypatch):
    tuner = AutoTuner(threads=2, prefetch=3, max_threads=8, max_prefetch=8, cpu_budget=2, window=0.5)
    script = Script(monkeypatch, tuner, rate=lambda s: s[0] * 100.0, wait_share=0.01)
    assert all(script.window() is None for _ in range(5))
    assert tuner.settings == (2, 3) and tuner.state == "measuring"


def test_limits_are_respected(monkeypatch):
    tuner = AutoTuner(threads=2, prefetch=3, max_threads=3, max_prefetch=4, cpu_budget=2, window=0.5)
    script = Script(monkeypatch, tuner, rate=lambda s: s[0] * 100.0 + s[1] * 100.0)
    for _ in range(10):
        script.window()
    assert tuner.settings == (3, 4) and tuner.state == "settled"


@pytest.mark.parametrize("seed", [0, 1])
def test_batches_do_not_depend_on_tuning(seed):
    data = {"x": np.arange(3000, dtype=np.float32).reshape(1000, 3), "y": np.arange(1000)}
    fixed = stoke.Loader(data, batch_size=16, shuffle=True, seed=seed, num_threads=2, prefetch=3)
    tuned = stoke.Loader(data, batch_size=16, shuffle=True, seed=seed, cpu_budget=1)
    tuned._tuner.window = 0.0  # decide after every batch: settings change many times within the epoch
    for _ in range(2):
        for a, b in zip(fixed, tuned, strict=True):
            assert torch.equal(a["index"], b["index"]) and torch.equal(a["x"], b["x"])
    assert tuned.stats()["autotune"]["windows"], "the tuner measured nothing"
    assert fixed.stats()["autotune"] is None
