"""An append killed with SIGKILL at each step of its publishing leaves version N or version N + 1, never a mix.

The child process appends to a dataset with ``os.replace`` traced: it prints a line before and after each
rename (every file stoke writes goes through one, ``stoke/format/atomic.py``) and, at the step the test
names, stops there until it is killed. So each kill lands exactly where asked: a new shard written but not
renamed, a shard renamed but its result not recorded, the quarantine list written, the old manifest kept
as ``versions/manifest-v1.json`` but the new one not yet published, the new manifest published but the
pack state not yet removed. After each kill:

* the dataset opens, at version 1 with exactly its old samples or at version 2 with exactly old + new;
* ``stoke verify`` passes, and a reader that had version 1 open before the append still reads it all;
* running the same append again publishes version 2 with exactly the expected samples (or, when it had
  been published, adds nothing), with the same shards as an append never interrupted, and leaves no
  temporary file and no pack state behind.

A second test races two appends: one publishes, the other refuses in one sentence.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import stoke
from stoke.format.manifest import MANIFEST_NAME, PACK_STATE_DIR
from stoke.verify import verify

BASE, ADDED, SHARD_ITEMS = 12, 14, 4
CHILD = """
import os, sys, time
import numpy as np
import stoke

out, stop_at, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
base, added, shard_items = (int(value) for value in sys.argv[4:7])
real_replace = os.replace


class Records:
    '''Items start.. of a small dataset; every seventh raises, so the append quarantines some.'''

    def __init__(self, start, size):
        self.start, self.size = start, size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        value = self.start + index
        if index % 7 == 3:
            raise ValueError(f"record {value} is corrupt")
        time.sleep(pause)
        return {"x": np.full(3, value, np.int64), "label": value % 3}


def traced(source, target, *args, **kwargs):
    name = os.path.relpath(target, out)
    for when in ("before", "after"):
        if when == "after":
            real_replace(source, target, *args, **kwargs)
        print(f"{when} {name}", flush=True)
        if f"{when} {name}" == stop_at:
            time.sleep(60)  # killed here


os.replace = traced
stoke.pack(Records(base, added), out, append=True, shard_items=shard_items, workers=1, progress=False,
           max_quarantined=1.0)
print("done", flush=True)
"""
KILL_POINTS = [
    "before .stoke-pack/plan.json",  # nothing of the append yet
    "before shard-000003.stk",  # the first new shard written under its temporary name
    "after shard-000003.stk",  # renamed, its result not yet recorded
    "after .stoke-pack/shard-000001.stk.json",  # two shards done, two to go
    "after versions/quarantine-v2.jsonl",  # every shard done, the quarantine list written
    "before versions/manifest-v1.json",  # about to keep the old manifest
    "after versions/manifest-v1.json",  # kept; the new manifest not yet written
    "before manifest.json",  # the new manifest written under its temporary name
    "after manifest.json",  # published; the pack state not yet removed
]


def expected_x(start: int, size: int) -> list[int]:
    return [start + index for index in range(size) if index % 7 != 3]


def xs(dataset) -> list[int]:
    return [int(dataset[index]["x"][0]) for index in range(len(dataset))]


def append_command(root: Path, stop_at: str = "never", pause: float = 0.0) -> list[str]:
    """The child's command line: append to ``root``, stopping at ``stop_at`` until killed."""
    return [sys.executable, "-c", CHILD, str(root), stop_at, str(pause), str(BASE), str(ADDED), str(SHARD_ITEMS)]


def base_dataset(root: Path) -> Path:
    values = np.arange(BASE)
    stoke.pack(
        {"x": np.repeat(values[:, None], 3, axis=1), "label": values % 3},
        root,
        shard_items=SHARD_ITEMS,
        workers=1,
        progress=False,
    )
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same append, never interrupted."""
    root = base_dataset(tmp_path_factory.mktemp("reference") / "ds")
    done = subprocess.run(append_command(root), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return root


def files_of(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def meaning(root: Path) -> dict:
    """The newest manifest without what differs between two runs of one append: when it was published."""
    document = json.loads((root / MANIFEST_NAME).read_text())
    document.pop("manifest_checksum")
    for entry in document.get("versions", []):
        entry.pop("created")
    return document


@pytest.mark.parametrize("point", KILL_POINTS)
def test_an_append_killed_at_any_step_leaves_one_whole_version_and_a_rerun_finishes_it(tmp_path, reference, point):
    root = base_dataset(tmp_path / "ds")
    before_append = stoke.open(root)  # a reader with version 1 open, whatever happens next
    child = subprocess.Popen(append_command(root, point), stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    deadline = time.monotonic() + 60
    for line in child.stdout:
        if line.strip() == point or time.monotonic() > deadline:
            break
    else:
        pytest.fail(f"the append finished without reaching {point!r}")
    child.send_signal(signal.SIGKILL)
    child.wait()

    old = list(range(BASE))  # the base was packed from arrays: nothing quarantined
    new = old + expected_x(BASE, ADDED)
    dataset = stoke.open(root)
    assert dataset.version in (1, 2)
    assert xs(dataset) == (old if dataset.version == 1 else new), f"a mix of versions after a kill at {point}"
    assert point != "after manifest.json" or dataset.version == 2
    assert verify(root).ok
    assert xs(before_append) == old and before_append.version == 1
    assert xs(stoke.open(root, version=1)) == old

    rerun = subprocess.run(append_command(root), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    grown = stoke.open(root)
    assert grown.version == 2 and xs(grown) == new
    assert [v.num_samples for v in grown.versions] == [len(old), len(new)]
    assert verify(root).ok
    assert not (root / PACK_STATE_DIR).exists()
    assert not [name for name in files_of(root) if ".tmp-" in name]
    assert files_of(root) == files_of(reference)
    assert meaning(root) == meaning(reference)
    for shard in grown.manifest.shards:
        assert (root / shard.file).read_bytes() == (reference / shard.file).read_bytes()
    kept = Path("versions") / "manifest-v1.json"
    assert (root / kept).read_bytes() == (reference / kept).read_bytes()


def test_two_appends_at_once_one_publishes_and_the_other_refuses(tmp_path):
    root = base_dataset(tmp_path / "ds")
    slow = subprocess.Popen(append_command(root, pause=0.05), stdout=subprocess.PIPE, text=True)
    assert slow.stdout is not None
    for line in slow.stdout:  # the first append holds the lock once it has written its plan
        if line.startswith("after .stoke-pack/plan.json"):
            break
    (tmp_path / "more.csv").write_text("x,label\n1,0\n")
    second = subprocess.run(
        [sys.executable, "-m", "stoke", "pack", str(tmp_path / "more.csv"), str(root), "--append"],
        capture_output=True,
        text=True,
    )
    slow.stdout.read()
    assert slow.wait() == 0
    assert second.returncode == 2
    assert second.stderr.count("\n") == 1 and "is being appended to by another process" in second.stderr
    grown = stoke.open(root)
    assert grown.version == 2 and xs(grown) == list(range(BASE)) + expected_x(BASE, ADDED)
    assert verify(root).ok
