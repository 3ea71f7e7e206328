"""`fit` killed with SIGKILL at random points and resumed from its checkpoints trains on every sample of each
epoch exactly once, in the uninterrupted order: the model itself records what it was fed, so the record is
saved in the same atomic checkpoint as the loader state."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import stoke
from stoke.train import load_checkpoint

SIZE, BATCH, EPOCHS, EVERY, TRIALS, SEED = 160, 8, 3, 4, 3, 7  # EVERY divides an epoch's 20 steps

# Each image is its sample's index; the "model" writes the indices it trains on into a buffer, in order.
CHILD = f"""
import sys, time
import numpy as np, torch, stoke
from stoke.train import fit

class Ledger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(1, 2)
        self.register_buffer("seen", torch.full(({EPOCHS * SIZE},), -1, dtype=torch.int64))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def forward(self, images):
        if self.training:
            start = int(self.count)
            self.seen[start : start + len(images)] = images[:, 0].round().long()
            self.count += len(images)
            time.sleep(0.004)  # the training step
        return self.linear(images * 0.001)

data = {{"image": np.arange({SIZE}, dtype=np.float32)[:, None], "label": np.arange({SIZE}) % 2}}
loader = stoke.Loader(data, batch_size={BATCH}, shuffle=True, seed={SEED}, num_threads=2, prefetch=3)
fit(Ledger(), loader, epochs={EPOCHS}, device="cpu", checkpoint_dir=sys.argv[1], checkpoint_every={EVERY}, resume=True,
    log=lambda line: None)
"""


def run_trial(root: Path, seed: int) -> tuple[dict, int]:
    """Start the job, kill it with SIGKILL at a random point (possibly twice), then let it finish."""
    rng = random.Random(seed)
    directory = root / f"trial-{seed}"
    kills = 0
    for _ in range(rng.randint(1, 2)):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory)])
        deadline = time.monotonic() + 60
        while not (directory / "last.pt").exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            kills += 1
        child.wait()
    finish = subprocess.run([sys.executable, "-c", CHILD, str(directory)], capture_output=True, text=True, timeout=120)
    assert finish.returncode == 0, finish.stderr
    return load_checkpoint(directory / "last.pt"), kills


def test_sigkill_and_resume_train_on_every_sample_exactly_once_per_epoch(tmp_path):
    with ThreadPoolExecutor(TRIALS) as pool:
        results = list(pool.map(lambda seed: run_trial(tmp_path, seed), range(TRIALS)))
    assert all(kills >= 1 for _, kills in results)  # every trial was really interrupted
    order = stoke.Loader({"x": np.arange(SIZE)}, batch_size=BATCH, shuffle=True, seed=SEED).order
    uninterrupted = np.concatenate([order.indices(epoch) for epoch in range(EPOCHS)])
    for final, _ in results:
        seen = final["model"]["seen"].numpy()
        assert int(final["model"]["count"]) == EPOCHS * SIZE
        for epoch in range(EPOCHS):
            part = seen[epoch * SIZE : (epoch + 1) * SIZE]
            assert sorted(part.tolist()) == list(range(SIZE)), f"epoch {epoch} lost or repeated samples"
        assert np.array_equal(seen, uninterrupted)
        assert final["step"] == EPOCHS * SIZE // BATCH and len(final["history"]) == EPOCHS
        assert final["loader"]["epoch"] == EPOCHS and final["loader"]["samples_consumed"] == 0
