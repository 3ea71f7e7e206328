"""torchrun, two ranks over gloo on loopback: disjoint shares, and exactly-once resume after one rank is
killed with SIGKILL and torchrun restarts them all (examples/torchrun_train.py), reading one dataset over
HTTP from a server on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stoke
from storage.remote_servers import HttpDatasetServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "torchrun_train.py"
SIZE, EPOCHS = 50, 2


def torchrun(dataset: str, checkpoints: Path, *options: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--standalone", "--nproc-per-node", "2", "--max-restarts", "2",
        str(EXAMPLE), dataset, str(checkpoints), "--epochs", str(EPOCHS), *options,
    ]  # fmt: skip
    # torchrun in a session of its own, so a timeout can stop it and every rank it started.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("torchrun")
    stoke.pack({"x": np.arange(SIZE) * 10}, root / "ds", shard_items=8, progress=False)
    return root / "ds"


def ledgers(checkpoints: Path) -> list[dict[str, list[int]]]:
    return [json.loads((checkpoints / f"rank-{rank}-final.json").read_text())["ledger"] for rank in (0, 1)]


@pytest.mark.parametrize(("where", "die_at"), [("local", None), ("http", 5)])
def test_ranks_share_each_epoch_exactly_once_also_after_a_rank_is_killed(packed, tmp_path, where, die_at):
    options = ("--die-at", str(die_at)) if die_at else ()
    server = HttpDatasetServer(packed.parent) if where == "http" else None
    try:
        dataset = server.url(packed.name) if server else str(packed)
        done = torchrun(dataset, tmp_path / "checkpoints", *options)
    finally:
        if server:
            server.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    if die_at:
        assert "(exitcode: -9) local_rank: 1" in done.stderr, done.stderr[-3000:]  # torchrun saw rank 1 die
        assert json.loads((tmp_path / "checkpoints" / "committed.json").read_text())["step"] >= 3
    rank0, rank1 = ledgers(tmp_path / "checkpoints")
    for epoch in map(str, range(EPOCHS)):
        assert not set(rank0[epoch]) & set(rank1[epoch]), "the ranks' shares overlap"
        assert sorted(rank0[epoch] + rank1[epoch]) == list(range(SIZE)), f"epoch {epoch} lost or repeated samples"
