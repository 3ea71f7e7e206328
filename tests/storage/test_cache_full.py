"""A remote dataset's cache on a disk that fills: one clear error instead of retries, nothing partial kept,
a disk smaller than cache_bytes used as a smaller cache, and what a killed download left removed later.

The disk is ``small_disk.SmallDisk``: a filesystem of a few shards' size that fails writes with the
kernel's errors (ENOSPC, EDQUOT, EROFS), so the tests need no mount.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from remote_servers import HttpDatasetServer
from small_disk import BLOCK, SmallDisk

import stoke
from stoke.storage import CacheWriteError, Retry
from stoke.storage.remote_store import cache_key

FAST = Retry(attempts=3, base_delay=0.01, max_delay=0.02)
SAMPLES, PER_SHARD = 24, 3
HERE = Path(__file__).resolve().parent


@pytest.fixture
def served(tmp_path: Path):
    """Two packed datasets (``ds``: 24 samples of 4 KiB in 8 shards; ``other``: 4 samples) served over HTTP."""
    root = tmp_path / "www"
    values = np.arange(SAMPLES * 1024, dtype=np.float32).reshape(SAMPLES, 1024)
    stoke.pack({"x": values, "y": np.arange(SAMPLES) % 3}, root / "ds", shard_items=PER_SHARD, progress=False)
    stoke.pack({"y": np.arange(4)}, root / "other", progress=False)
    server = HttpDatasetServer(root)
    yield server, root / "ds"
    server.stop()


def shard_size(local: Path) -> int:
    return stoke.open(local).manifest.shards[0].file_size


def on_disk(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def open_served(server: HttpDatasetServer, cache_dir: Path, name: str = "ds", **options):
    options.setdefault("retry", FAST)
    return stoke.open(server.url(name), cache_dir=cache_dir, **options)


def shard_requests(server: HttpDatasetServer) -> list[str]:
    return [path for path in server.requests if path.endswith(".stk")]


def temporaries(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if ".tmp-" in name)


def full_disk(tmp_path: Path, local: Path, free: int) -> SmallDisk:
    """A disk of about four shards, filled by something else (a ballast file) but for ``free`` bytes."""
    disk = SmallDisk(tmp_path / "disk", capacity=4 * on_disk(shard_size(local)) + 16 * BLOCK)
    (disk.root / "ballast").write_bytes(b"\0" * (disk.capacity - free))
    return disk


def test_a_full_disk_fails_the_read_at_once_with_one_clear_error(served, tmp_path, monkeypatch):
    server, local = served
    size = shard_size(local)
    disk = full_disk(tmp_path, local, free=size // 2).patch(monkeypatch)
    with open_served(server, disk.root / "cache") as remote:
        server.requests.clear()
        with pytest.raises(CacheWriteError) as raised:
            remote[4]
        message, directory = str(raised.value), remote.cache.directory
        assert f"shard {server.url('ds/shard-000001.stk')} ({size:,} bytes) in the cache {directory}" in message
        assert "free space on that disk" in message and "cache_dir=" in message and "cache_bytes=" in message
        assert raised.value.needed == size and raised.value.errno == errno.ENOSPC
        assert shard_requests(server) == []  # known before downloading a byte, and not retried
        assert os.listdir(directory) == [".lock"] and remote.cache.stats()["used_bytes"] == 0

        (disk.root / "ballast").unlink()  # space freed: the same read now works, nothing stale in the way
        assert remote[4]["y"] == 4 % 3
        assert shard_requests(server) == ["/ds/shard-000001.stk"]


@pytest.mark.parametrize(
    ("number", "after", "why"),
    [
        (errno.ENOSPC, 1, "its disk is full"),  # filled by someone else after the free space was checked
        (errno.EDQUOT, 1, "your disk quota there is used up"),
        (errno.EROFS, 0, "its filesystem is read-only"),
    ],
)
def test_a_write_that_fails_is_not_retried_and_leaves_nothing(served, tmp_path, monkeypatch, number, after, why):
    server, local = served
    size = shard_size(local)
    monkeypatch.setattr("stoke.storage.cache.FULL_WAIT_SECONDS", 1.0)  # a leaked reservation fails fast
    disk = SmallDisk(tmp_path / "disk", capacity=1 << 30, fail_with=(number, after * size // 2)).patch(monkeypatch)
    with open_served(server, disk.root / "cache", cache_bytes=size) as remote:  # room for one shard only
        server.requests.clear()
        with pytest.raises(CacheWriteError, match=why) as raised:
            remote[4]
        directory = remote.cache.directory
        assert f"shard-000001.stk ({size:,} bytes) into the cache {directory} failed" in str(raised.value)
        assert raised.value.errno == number and raised.value.needed == size
        # One attempt (a disk is not a network), none when the temporary file cannot even be created.
        assert shard_requests(server) == (["/ds/shard-000001.stk"] if after else [])
        assert os.listdir(directory) == [".lock"]  # the partial temporary file was removed at once
        assert cache_key(remote.manifest.shards[1]) not in remote.cache and remote.cache.stats()["used_bytes"] == 0

        disk.fail_with = None  # the disk works again: the whole budget is free (the reservation was released)
        assert remote[7]["y"] == 7 % 3 and remote[4]["y"] == 4 % 3
        assert remote.cache.keys() == [cache_key(remote.manifest.shards[1])]


def test_a_disk_smaller_than_cache_bytes_works_as_a_smaller_cache(served, tmp_path, monkeypatch, caplog):
    server, local = served
    size = shard_size(local)
    disk = SmallDisk(tmp_path / "disk", capacity=3 * on_disk(size) + 4 * BLOCK).patch(monkeypatch)  # < 8 shards
    with caplog.at_level(logging.WARNING, logger="stoke"), open_served(server, disk.root / "cache") as remote:
        loader = stoke.Loader(remote, batch_size=4, shuffle=True, seed=1, num_threads=2, on_error="raise")
        seen = np.concatenate([batch["index"].numpy() for batch in loader])
        assert sorted(seen.tolist()) == list(range(SAMPLES)) and not loader.quarantine
        stats = remote.cache.stats()
        # What the disk holds stays: 4 shards exactly, or 3 while a download in flight holds its reservation
        # (which of the two ends the epoch depends on the threads' timing).
        fit = disk.capacity // on_disk(size)
        assert stats["downloads"] >= 8 and stats["evictions"] >= stats["downloads"] - fit
        assert not temporaries(remote.cache.directory)
    warnings = [record.getMessage() for record in caplog.records if "room for fewer shards" in record.getMessage()]
    assert len(warnings) == 1 and str(remote.cache.directory) in warnings[0]  # said once, not per shard


def test_a_loader_on_a_full_disk_stops_with_the_cache_error_and_leaves_no_thread(served, tmp_path, monkeypatch):
    server, local = served
    disk = full_disk(tmp_path, local, free=BLOCK).patch(monkeypatch)
    remote = open_served(server, disk.root / "cache")
    with remote:
        server.requests.clear()
        loader = stoke.Loader(remote, batch_size=4, shuffle=False, num_threads=2)
        started = time.monotonic()
        with pytest.raises(CacheWriteError, match="no room for shard") as raised:
            list(loader)
        assert time.monotonic() - started < 5  # a free-space check, not retries
        assert str(remote.cache.directory) in str(raised.value)
        assert loader.quarantine == []  # the machine's fault: no sample is quarantined as damaged
        assert (loader.state_dict()["epoch"], loader.state_dict()["samples_consumed"]) == (0, 0)  # retried later
        assert shard_requests(server) == [] and os.listdir(remote.cache.directory) == [".lock"]
        loader.close()
    deadline = time.monotonic() + 5
    while any(thread.name == "stoke-prefetch" for thread in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [thread.name for thread in threading.enumerate() if thread.name == "stoke-prefetch"]


def test_stoke_verify_on_a_full_disk_is_one_line_and_exit_2(served, tmp_path):
    server, local = served
    disk = full_disk(tmp_path, local, free=BLOCK)
    runner = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from pathlib import Path
        from small_disk import SmallDisk
        disk = SmallDisk(Path({str(disk.root)!r}), {disk.capacity})
        disk.install()
        from stoke.cli import main
        sys.argv = ["stoke", "verify", {server.url("ds")!r}, "--no-progress"]
        main()
        """
    )
    env = {**os.environ, "STOKE_HOME": str(disk.root / "home")}
    done = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, env=env, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and done.stdout == "" and len(lines) == 1, done.stderr
    assert lines[0].startswith("stoke: error: no room for shard http://127.0.0.1:")
    assert f"in the cache {disk.root / 'home' / 'remote'}/" in lines[0] and "free space on that disk" in lines[0]
    assert shard_requests(server) == []


KILLED_CHILD = """
import sys
import stoke
from stoke.storage import Retry
dataset = stoke.open(sys.argv[1], cache_dir=sys.argv[2], retry=Retry(attempts=1))
dataset[3]  # shard 1: verified and kept
dataset[0]  # shard 0: the server stalls half way, and the process is killed
"""


def test_the_next_run_removes_what_a_killed_download_left_and_nothing_in_use(served, tmp_path):
    server, local = served
    cache_dir = tmp_path / "cache"
    server.faults["shard-000000.stk"] = ["stall"]
    stalled, entry = (cache_key(stoke.open(local).manifest.shards[s]) for s in (0, 1))
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, server.url("ds"), str(cache_dir)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and child.poll() is None:
            # shard 0's temporary (shard 1's, downloaded first, is renamed once verified: not that one)
            partial = [path for path in cache_dir.glob(f"*/.{stalled}.tmp-*") if path.stat().st_size > 0]
            if partial:
                break
            time.sleep(0.02)
        assert partial, "the child never started downloading shard 0"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    directory = partial[0].parent
    assert child.returncode == -signal.SIGKILL and partial[0].name.startswith(".") and partial[0].exists()
    assert sorted(os.listdir(directory)) == sorted([".lock", entry, partial[0].name])

    # The next run on the same cache_dir, even for another dataset, removes the dead process's temporary
    # (and only that: the verified entry stays for the next run of ds).
    with open_served(server, cache_dir, "other") as other:
        assert other[2]["y"] == 2
    assert sorted(os.listdir(directory)) == [".lock", entry]

    # A dataset open in a live process is left alone: its temporaries may be downloads in progress.
    with open_served(server, cache_dir) as remote:
        assert remote.cache.directory == directory and remote.cache.keys() == [entry]  # a warm cache
        mine = directory / f".{entry}.tmp-{os.getpid()}-1"  # named as this live process's download would be
        dead = directory / f".{entry}.tmp-{child.pid}-1"  # the killed child's (its directory is locked now)
        mine.write_bytes(b"in progress")
        dead.write_bytes(b"stale")
        open_served(server, cache_dir, "other").close()
        assert mine.exists() and dead.exists()
    open_served(server, cache_dir, "other").close()  # unlocked: the dead process's file goes, the live one's stays
    assert mine.exists() and not dead.exists()
