"""A training job killed with SIGKILL at random points and resumed from its checkpoints sees every sample
exactly once per epoch: the loader state saved with the checkpoint is the whole truth of where it was."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SIZE, BATCH, EPOCHS, EVERY, TRIALS = 600, 8, 3, 5, 20

# The child trains like a real job: it consumes batches, and every EVERY steps writes a checkpoint holding
# the loader state and what it has consumed so far (its "model"), atomically: temporary file, fsync, rename.
CHILD = f"""
import json, os, sys, time
import numpy as np, stoke
checkpoint = sys.argv[1]
state = json.load(open(checkpoint)) if os.path.exists(checkpoint) else None
ledger = state["ledger"] if state else {{}}
loader = stoke.Loader({{"x": np.arange({SIZE})}}, batch_size={BATCH}, shuffle=True, seed=7, num_threads=2, prefetch=4)
if state:
    loader.load_state_dict(state["loader"])

def save():
    with open(checkpoint + ".tmp", "w") as stream:
        json.dump({{"loader": loader.state_dict(), "ledger": ledger}}, stream)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(checkpoint + ".tmp", checkpoint)

steps = 0
while loader.epoch < {EPOCHS}:
    epoch = loader.epoch
    for batch in loader:
        ledger.setdefault(str(epoch), []).extend(batch["index"].tolist())
        time.sleep(0.003)  # the training step
        steps += 1
        if steps % {EVERY} == 0:
            save()
save()
"""


def run_trial(root: Path, seed: int) -> tuple[dict, int]:
    """Start the job, kill it with SIGKILL at a random point (possibly several times), then let it finish."""
    rng = random.Random(seed)
    checkpoint = root / f"trial-{seed}.json"
    kills = 0
    for _ in range(rng.randint(1, 2)):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(checkpoint)])
        deadline = time.monotonic() + 30
        while not checkpoint.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            kills += 1
        child.wait()
    finish = subprocess.run([sys.executable, "-c", CHILD, str(checkpoint)], capture_output=True, text=True, timeout=120)
    assert finish.returncode == 0, finish.stderr
    return json.loads(checkpoint.read_text()), kills


def test_sigkill_and_resume_deliver_every_sample_exactly_once_per_epoch(tmp_path):
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda seed: run_trial(tmp_path, seed), range(TRIALS)))
    assert all(kills >= 1 for _, kills in results)  # every trial was really interrupted
    for final, _ in results:
        assert sorted(final["ledger"]) == [str(epoch) for epoch in range(EPOCHS)]
        for epoch, consumed in final["ledger"].items():
            assert sorted(consumed) == list(range(SIZE)), f"epoch {epoch} lost or repeated samples"
        assert final["loader"]["epoch"] == EPOCHS and final["loader"]["samples_consumed"] == 0
