"""A job training on a mixture, killed with SIGKILL at random points and resumed from its checkpoints,
sees each epoch exactly as an uninterrupted job does: the same rows, each once, with the same content (a
mixture's state carries each source's draws, so the sources' permutations go on where they were). Twice:
over packed datasets, and over token blocks of two corpora (every token once per epoch)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import stoke

EPOCHS, TRIALS = 3, 6

CHILD = """
import json, os, sys, time
import stoke
root, checkpoint, kind = sys.argv[1], sys.argv[2], sys.argv[3]
state = json.load(open(checkpoint)) if os.path.exists(checkpoint) else None
ledger = state["ledger"] if state else {}
if kind == "blocks":  # token blocks of two corpora, filled a batch at a time by the gather
    sources = {name: stoke.TokenBlocks(stoke.open(root + "/" + name + "-tokens"), block_size=16, eos_id=0)
               for name in ("big", "small")}
else:
    sources = {"big": root + "/big", "small": root + "/small"}
mixture = stoke.mix(sources, weights={"big": 2, "small": 1}, seed=3, epoch_samples=240)
loader = stoke.Loader(mixture, batch_size=8, num_threads=2, prefetch=4)
if state:
    loader.load_state_dict(state["loader"])

def save():
    with open(checkpoint + ".tmp", "w") as stream:
        json.dump({"loader": loader.state_dict(), "ledger": ledger}, stream)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(checkpoint + ".tmp", checkpoint)

steps = 0
while loader.epoch < EPOCHS:
    epoch = loader.epoch
    for batch in loader:
        content = batch["tokens"].sum(1).tolist() if kind == "blocks" else batch["x"].tolist()
        ledger.setdefault(str(epoch), []).extend(
            f"{s}:{i}:{c}" for s, i, c in zip(batch["source"], batch["index"].tolist(), content)
        )
        time.sleep(0.003)
        steps += 1
        if steps % 4 == 0:
            save()
save()
""".replace("EPOCHS", str(EPOCHS))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mixture-kill")
    stoke.pack({"x": np.arange(300.0)}, root / "big", progress=False, workers=1)
    stoke.pack({"x": np.arange(50.0)}, root / "small", progress=False, workers=1)  # cycles within an epoch
    rng = np.random.default_rng(0)
    for name, documents in (("big", 400), ("small", 60)):  # about 300 and 45 blocks of 16 tokens
        docs = [{"tokens": rng.integers(1, 1000, rng.integers(1, 22), dtype=np.uint16)} for _ in range(documents)]
        field = stoke.NDArrayField("uint16", (None,))
        stoke.pack(docs, root / f"{name}-tokens", fields={"tokens": field}, shard_items=50, progress=False, workers=1)
    return root


def run(root: Path, checkpoint: Path, seed: int | None, kind: str) -> dict:
    """The job, killed once or twice at random points when ``seed`` is given, then run to its end."""
    if seed is not None:
        rng = random.Random(seed)
        for _ in range(rng.randint(1, 2)):
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(checkpoint), kind])
            deadline = time.monotonic() + 30
            while not checkpoint.exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4))
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
            child.wait()
    finish = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(checkpoint), kind], capture_output=True, text=True, timeout=120
    )
    assert finish.returncode == 0, finish.stderr
    return json.loads(checkpoint.read_text())


@pytest.mark.parametrize("kind", ["packed", "blocks"])
def test_a_killed_mixture_job_sees_each_epoch_as_an_uninterrupted_one(root: Path, tmp_path: Path, kind: str) -> None:
    reference = run(root, tmp_path / "reference.json", None, kind)["ledger"]
    with ThreadPoolExecutor(4) as pool:
        finals = list(pool.map(lambda seed: run(root, tmp_path / f"trial-{seed}.json", seed, kind), range(TRIALS)))
    for epoch in map(str, range(EPOCHS)):
        expected = Counter(reference[epoch])
        assert sum(expected.values()) == 240 and Counter(row.split(":")[0] for row in reference[epoch]) == {
            "big": 160,
            "small": 80,
        }
        for final in finals:
            assert Counter(final["ledger"][epoch]) == expected, f"epoch {epoch} lost or repeated rows"
    for final in finals:
        assert final["loader"]["epoch"] == EPOCHS and final["loader"]["samples_consumed"] == 0
