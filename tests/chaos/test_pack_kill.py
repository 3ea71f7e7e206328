"""A pack killed with SIGKILL at a random point, then resumed, equals an uninterrupted pack."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import stoke
from helpers import SlowRecords
from stoke.format.manifest import MANIFEST_NAME, PACK_STATE_DIR

ITEMS, SHARD_ITEMS = 60, 4
CHILD = """
import sys
sys.path.insert(0, {tests!r})
import stoke
from helpers import SlowRecords
stoke.pack(SlowRecords({items}, delay=0.01), {out!r}, shard_items={shard_items}, workers={workers}, progress=False,
           max_quarantined=1.0)
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "ds"
    stoke.pack(SlowRecords(ITEMS), out, shard_items=SHARD_ITEMS, workers=1, progress=False, max_quarantined=1.0)
    return out


def finished_results(out: Path) -> list[Path]:
    return sorted((out / PACK_STATE_DIR).glob("shard-*.json")) if (out / PACK_STATE_DIR).is_dir() else []


def processes_mentioning(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("trial", range(4))
def test_killed_pack_resumes_to_the_same_dataset(tmp_path, reference, trial):
    rng = random.Random(trial)
    out = tmp_path / f"killed-{trial}"
    workers = 1 + trial % 2
    script = CHILD.format(
        tests=str(Path(__file__).parents[1]), items=ITEMS, out=str(out), shard_items=SHARD_ITEMS, workers=workers
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    wanted = rng.randint(1, 8)
    deadline = time.monotonic() + 30
    while len(finished_results(out)) < wanted and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (out / MANIFEST_NAME).exists(), "the pack finished before it could be killed; slow it down"

    time.sleep(0.2)
    assert processes_mentioning(str(out)) == [], "pack workers outlived their killed driver"
    with pytest.raises(stoke.errors.NotADatasetError, match=r"unfinished pack"):
        stoke.open(out)

    done_before = {path.name: path.stat().st_mtime_ns for path in finished_results(out)}
    shards_before = {
        name: (out / name).stat().st_ino
        for name in (json.loads((out / PACK_STATE_DIR / result).read_text())["file"] for result in done_before)
        if name is not None
    }
    result = stoke.pack(
        SlowRecords(ITEMS), out, shard_items=SHARD_ITEMS, workers=2, resume=True, progress=False, max_quarantined=1.0
    )
    assert result.reused_shards >= len(done_before) > 0

    for name, inode in shards_before.items():  # finished shards were kept, not rewritten
        assert (out / name).stat().st_ino == inode
    assert (out / MANIFEST_NAME).read_bytes() == (reference / MANIFEST_NAME).read_bytes()
    assert (out / "quarantine.jsonl").read_bytes() == (reference / "quarantine.jsonl").read_bytes()
    for shard in stoke.open(reference).manifest.shards:
        assert (out / shard.file).read_bytes() == (reference / shard.file).read_bytes()
    assert sorted(os.listdir(out)) == sorted(os.listdir(reference))


def test_resume_refuses_a_changed_source(tmp_path):
    out = tmp_path / "ds"
    (out / PACK_STATE_DIR).mkdir(parents=True)
    stoke.pack(SlowRecords(8), tmp_path / "scratch", shard_items=2, progress=False, max_quarantined=1.0)
    from stoke.pack.plan import PackPlan

    PackPlan(num_items=8, shard_items=2, fingerprint="from another source").write(out / PACK_STATE_DIR)
    with pytest.raises(stoke.errors.PackError, match=r"different source or different settings"):
        stoke.pack(SlowRecords(8), out, shard_items=2, resume=True, progress=False)
