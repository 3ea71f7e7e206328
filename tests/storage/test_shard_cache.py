"""ShardCache: the byte budget, least-recently-used eviction against a plain model, pins, verified downloads."""

from __future__ import annotations

import collections
import os
import threading
from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from stoke.errors import ConfigError
from stoke.storage import DownloadMismatch, RemoteError, Retry, ShardCache
from stoke.storage.cache import fetch_uncached

FAST = Retry(attempts=2, base_delay=0.0)
SIZES = {f"k{n}": 10 + 7 * n for n in range(6)}  # key -> size; the budget below holds two to four of them


def content(key: str) -> bytes:
    return (key.encode() * 100)[: SIZES[key]]


def digest(data: bytes) -> str:
    return xxhash.xxh3_64(data).hexdigest()


def fetch(cache: ShardCache, key: str, data: bytes | None = None) -> Path:
    data = content(key) if data is None else data
    return cache.acquire(key, SIZES[key], digest(content(key)), lambda sink: sink.write(data))


def disk_bytes(directory: Path) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(directory) if entry.name != ".lock")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(sorted(SIZES)), min_size=1, max_size=30))
def test_eviction_is_least_recently_used_and_the_budget_holds(tmp_path_factory, keys):
    directory = tmp_path_factory.mktemp("cache")
    budget = 60
    cache = ShardCache(directory, budget, FAST)
    model: collections.OrderedDict[str, int] = collections.OrderedDict()  # the slow, obvious LRU
    for key in keys:
        if key in model:
            model.move_to_end(key)
        else:
            while sum(model.values()) + SIZES[key] > budget:
                model.popitem(last=False)
            model[key] = SIZES[key]
        assert fetch(cache, key).read_bytes() == content(key)
        cache.release(key)
        assert cache.keys() == list(model)
        assert cache.used_bytes == sum(model.values()) == disk_bytes(directory) <= budget
    cache.close()


def test_a_pinned_entry_is_never_evicted(tmp_path, monkeypatch):
    cache = ShardCache(tmp_path, SIZES["k0"] + SIZES["k2"], FAST)
    fetch(cache, "k0")  # pinned: not released
    fetch(cache, "k1")
    cache.release("k1")
    fetch(cache, "k1")
    cache.release("k1")
    fetch(cache, "k0")  # the least recently used... but still pinned once
    cache.release("k0")
    fetch(cache, "k2")  # k1 is unpinned: it goes, although k0 was used longer ago
    assert cache.keys() == ["k0", "k2"]
    cache.release("k2")
    monkeypatch.setattr("stoke.storage.cache.FULL_WAIT_SECONDS", 0.0)
    with pytest.raises(ConfigError, match=r"cannot hold k5 \(45 bytes\) beside the 10 bytes of shards in use"):
        fetch(cache, "k5")


def test_a_reader_waits_for_a_pin_to_be_released(tmp_path):
    cache = ShardCache(tmp_path, SIZES["k1"], FAST)
    fetch(cache, "k0")
    threading.Timer(0.1, cache.release, args=("k0",)).start()
    assert fetch(cache, "k1").read_bytes() == content("k1")  # waited, then evicted k0
    assert cache.keys() == ["k1"]


@pytest.mark.parametrize("damage", ["flip", "short", "long"])
def test_a_download_that_does_not_match_is_never_kept(tmp_path, damage):
    cache = ShardCache(tmp_path, 1000, FAST)
    good = content("k2")
    bad = {"flip": bytes([good[0] ^ 1]) + good[1:], "short": good[:-3], "long": good + b"x"}[damage]
    with pytest.raises((DownloadMismatch, RemoteError)):  # short: a cut transfer, retried, then a RemoteError
        fetch(cache, "k2", bad)
    assert "k2" not in cache and cache.used_bytes == 0 and sorted(os.listdir(tmp_path)) == [".lock"]
    assert fetch(cache, "k2").read_bytes() == good  # a good download afterwards is kept


def test_a_failed_attempt_is_retried_from_a_fresh_file(tmp_path):
    cache = ShardCache(tmp_path, 1000, Retry(attempts=3, base_delay=0.0))
    attempts = []

    def flaky(sink):
        attempts.append(1)
        sink.write(content("k1")[:5])
        if len(attempts) < 3:
            raise ConnectionResetError("reset")
        sink.write(content("k1")[5:])

    assert cache.acquire("k1", SIZES["k1"], digest(content("k1")), flaky).read_bytes() == content("k1")
    assert len(attempts) == 3


def test_adopt_keeps_matching_files_and_removes_the_rest(tmp_path):
    cache = ShardCache(tmp_path, 1000, FAST)
    fetch(cache, "k0")
    fetch(cache, "k1")
    cache.close()
    (tmp_path / ".k2.tmp-1-2").write_bytes(b"partial")
    (tmp_path / ".splits-abc").mkdir()
    again = ShardCache(tmp_path, 1000, FAST)
    again.adopt({"k0": SIZES["k0"], "k1": SIZES["k1"] + 1})  # k1's size changed: a stale copy
    assert again.keys() == ["k0"] and sorted(os.listdir(tmp_path)) == [".lock", "k0"]


def test_two_open_caches_cannot_share_a_directory(tmp_path):
    first = ShardCache(tmp_path, 100)
    with pytest.raises(ConfigError, match="in use"):
        ShardCache(tmp_path, 100)
    first.close()
    ShardCache(tmp_path, 100).close()


def test_adopt_keeps_a_download_in_progress_of_a_live_process(tmp_path):
    import subprocess
    import sys

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead = 999_999_999  # above any pid the kernel hands out (pid_max is at most 2**22)
        (tmp_path / f".{'0' * 16}-k1.tmp-{live.pid}-1").write_bytes(b"a copy in a worker, downloading")
        (tmp_path / f".{'0' * 16}-k1.tmp-{dead}-1").write_bytes(b"left by a killed process")
        cache = ShardCache(tmp_path, 1000, FAST)
        cache.adopt({})
        assert sorted(os.listdir(tmp_path)) == [f".{'0' * 16}-k1.tmp-{live.pid}-1", ".lock"]
        cache.close()
    finally:
        live.kill()
        live.wait()


def test_fetch_uncached_verifies_into_a_file_of_its_own_and_leaves_the_cache_alone(tmp_path):
    cache = ShardCache(tmp_path, 1000, FAST)
    fetch(cache, "k0")
    cache.release("k0")
    path = fetch_uncached(
        tmp_path, "k1", SIZES["k1"], digest(content("k1")), lambda sink: sink.write(content("k1")), FAST, 1000
    )
    assert path.read_bytes() == content("k1") and path.name.startswith(f".k1.tmp-{os.getpid()}-")
    assert cache.keys() == ["k0"] and "k1" not in cache and cache.used_bytes == SIZES["k0"]
    path.unlink()
    bad = content("k2")[:-1] + b"!"
    with pytest.raises(DownloadMismatch):
        fetch_uncached(tmp_path, "k2", SIZES["k2"], digest(content("k2")), lambda sink: sink.write(bad), FAST, 1000)
    assert sorted(os.listdir(tmp_path)) == [".lock", "k0"]  # nothing partial left
    cache.close()
