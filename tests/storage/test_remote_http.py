"""Remote datasets over HTTP, against Python's own server on loopback: same samples and batches as the
local copy, a bounded cache, verified downloads, retries, an outage mid-epoch, and hostile manifests."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from remote_servers import HttpDatasetServer

import stoke
from helpers import rewrite_manifest
from stoke.errors import ConfigError, FormatError, NotADatasetError, SampleError
from stoke.inspect import summarize
from stoke.prepare.split import make_splits
from stoke.storage import RemoteError, RemoteFiles, Retry
from stoke.storage.remote_store import COPY_SHARDS, cache_key

FAST = Retry(attempts=3, base_delay=0.01, max_delay=0.02)
SAMPLES, PER_SHARD = 24, 3


@pytest.fixture
def served(tmp_path: Path):
    """A packed dataset of 24 samples in 8 shards, served over HTTP; yields (server, local directory)."""
    root = tmp_path / "www"
    values = np.arange(SAMPLES * 4, dtype=np.float32).reshape(SAMPLES, 4)
    stoke.pack({"x": values, "y": np.arange(SAMPLES) % 3}, root / "ds", shard_items=PER_SHARD, progress=False)
    server = HttpDatasetServer(root)
    yield server, root / "ds"
    server.stop()


def shard_size(local: Path) -> int:
    return stoke.open(local).manifest.shards[0].file_size


def open_served(server: HttpDatasetServer, tmp_path: Path, **options):
    options.setdefault("retry", FAST)
    return stoke.open(server.url("ds"), cache_dir=tmp_path / "cache", **options)


def cache_files(dataset) -> list[str]:
    return sorted(os.listdir(dataset.cache.directory))


def test_every_sample_equals_the_local_copy(served, tmp_path):
    server, local_root = served
    local = stoke.open(local_root)
    with open_served(server, tmp_path) as remote:
        assert isinstance(remote, stoke.Dataset) and len(remote) == len(local)
        for index in range(len(local)):
            mine, theirs = remote[index], local[index]
            assert mine["y"] == theirs["y"] and np.array_equal(mine["x"], theirs["x"])
        assert np.array_equal(remote.column("y"), local.column("y"))


def test_a_loader_epoch_gives_the_local_batches(served, tmp_path):
    server, local_root = served
    settings = {"batch_size": 5, "shuffle": True, "seed": 3, "num_threads": 2}
    with open_served(server, tmp_path, cache_bytes=3 * shard_size(local_root)) as remote:
        loader, reference = stoke.Loader(remote, **settings), stoke.Loader(stoke.open(local_root), **settings)
        for _ in range(2):  # the second epoch re-fetches what the small cache evicted
            mine = [batch["x"].numpy() for batch in loader]
            theirs = [batch["x"].numpy() for batch in reference]
            assert len(mine) == len(theirs) == 5 and all(np.array_equal(a, b) for a, b in zip(mine, theirs))
        assert not loader.quarantine and remote.cache.stats()["evictions"] > 0


def test_random_access_fetches_only_the_shard_it_needs(served, tmp_path):
    server, _ = served
    with open_served(server, tmp_path) as remote:
        server.requests.clear()
        assert remote[17]["y"] == 17 % 3
        assert server.requests == ["/ds/shard-000005.stk"]
        assert remote[16]["y"] == 16 % 3  # same shard: from the cache
        assert server.requests == ["/ds/shard-000005.stk"]
        assert cache_files(remote) == [".lock", cache_key(remote.manifest.shards[5])]


def test_the_cache_stays_within_its_budget_and_evicts_least_recently_used(served, tmp_path, monkeypatch):
    server, local_root = served
    size = shard_size(local_root)
    budget = 2 * size
    peaks: list[int] = []
    original = RemoteFiles.download

    def measured(self, name, sink, expected):  # the directory at the end of each download: entries + temporaries
        original(self, name, sink, expected)
        sink.stream.flush()
        peaks.append(sum(entry.stat().st_size for entry in os.scandir(directory) if entry.name != ".lock"))

    monkeypatch.setattr(RemoteFiles, "download", measured)
    with open_served(server, tmp_path, cache_bytes=budget) as remote:
        directory = remote.cache.directory
        loader = stoke.Loader(remote, batch_size=4, shuffle=False, num_threads=2)
        seen = np.concatenate([batch["index"].numpy() for batch in loader])
        assert seen.tolist() == list(range(SAMPLES))
        assert len(peaks) >= 8 and max(peaks) <= budget
        stats = remote.cache.stats()
        assert stats["evictions"] >= 6 and stats["used_bytes"] <= budget
        # Sequential order: the two shards read last are the ones still cached.
        assert remote.cache.keys() == [cache_key(shard) for shard in remote.manifest.shards[-2:]]
        remote[0]  # least recently used goes first: shard 6 is evicted, shard 7 stays
        assert remote.cache.keys() == [cache_key(remote.manifest.shards[7]), cache_key(remote.manifest.shards[0])]


def test_a_cache_smaller_than_a_shard_is_refused(served, tmp_path):
    server, local_root = served
    with pytest.raises(ConfigError, match="smaller than the largest shard"):
        open_served(server, tmp_path, cache_bytes=shard_size(local_root) - 1)


def test_a_transfer_cut_short_is_retried_and_never_read(served, tmp_path):
    server, _ = served
    server.faults["shard-000002.stk"] = ["cut", "error"]
    with open_served(server, tmp_path) as remote:
        server.requests.clear()
        assert remote[7]["y"] == 7 % 3
        assert server.requests.count("/ds/shard-000002.stk") == 3
        assert not [name for name in cache_files(remote) if ".tmp-" in name]


def test_a_damaged_remote_shard_is_refused_with_one_clear_error(served, tmp_path):
    server, local_root = served
    with open_served(server, tmp_path) as remote:
        path = local_root / "shard-000001.stk"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(FormatError, match=r"shard-000001\.stk does not match the checksum .* in 3 downloads"):
            remote[4]
        assert cache_files(remote) == [".lock"]  # nothing kept: no entry, no temporary file
        server.requests.clear()
        with pytest.raises(FormatError, match="damaged or was replaced"):
            remote[5]
        assert server.requests == []  # known damaged: not downloaded again

        # In a Loader the shard's samples are quarantined (on_error="skip") and every other one is delivered.
        loader = stoke.Loader(remote, batch_size=6, shuffle=False, num_threads=1, max_bad_fraction=0.5)
        seen = np.concatenate([batch["index"].numpy() for batch in loader]).tolist()
        assert seen == [index for index in range(SAMPLES) if index // PER_SHARD != 1]
        assert sorted(entry["index"] for entry in loader.quarantine) == [3, 4, 5]
        with pytest.raises(SampleError, match="shard-000001"):
            list(stoke.Loader(remote, batch_size=6, shuffle=False, num_threads=1, on_error="raise"))


def test_an_outage_mid_epoch_is_ridden_out_and_every_sample_arrives_once(served, tmp_path):
    server, local_root = served
    patient = Retry(attempts=40, base_delay=0.02, max_delay=0.1)  # about 2 s of patience in all
    remote = open_served(server, tmp_path, cache_bytes=2 * shard_size(local_root), retry=patient, ahead=1)
    with remote:
        loader = stoke.Loader(remote, batch_size=2, shuffle=True, seed=5, num_threads=2, prefetch=1, on_error="raise")
        seen: list[int] = []
        restart = threading.Timer(0.5, server.start)
        for number, batch in enumerate(loader):
            seen.extend(batch["index"].tolist())
            if number == 0:
                server.stop()
                before = len(server.requests)
                restart.start()
        restart.join()
        assert sorted(seen) == list(range(SAMPLES)) and len(seen) == SAMPLES
        assert len(server.requests) > before  # shards were fetched after the restart
        assert not loader.quarantine


def test_a_server_that_stays_down_is_reported_with_the_url_and_attempts(served, tmp_path):
    server, _ = served
    with open_served(server, tmp_path) as remote:
        server.stop()
        with pytest.raises(RemoteError, match=r"shard http://127\.0\.0\.1:\d+/ds/shard-000000\.stk failed 3 times"):
            remote[0]


def test_a_manifest_naming_a_file_outside_the_dataset_is_refused(served, tmp_path):
    server, local_root = served
    for hostile in ("../secret.stk", "sub/shard.stk", ".hidden", "/etc/passwd"):
        rewrite_manifest(local_root, lambda document, name=hostile: document["shards"][0].update(file=name))
        with pytest.raises(FormatError, match="not a plain file name"):
            open_served(server, tmp_path)


def test_a_url_without_a_dataset_is_not_a_dataset(served, tmp_path):
    server, _ = served
    with pytest.raises(NotADatasetError, match=r"no manifest\.json"):
        stoke.open(server.url("nothing"), cache_dir=tmp_path / "cache", retry=FAST)


def test_a_repacked_remote_dataset_never_reuses_stale_shards(served, tmp_path):
    server, local_root = served
    with open_served(server, tmp_path) as remote:
        remote[0]
        stale = cache_key(remote.manifest.shards[0])
    shutil.rmtree(local_root)
    stoke.pack({"x": np.ones((SAMPLES, 4), np.float32), "y": np.zeros(SAMPLES, np.int64)}, local_root,
               shard_items=PER_SHARD, progress=False)  # fmt: skip
    with open_served(server, tmp_path) as remote:
        assert stale not in cache_files(remote)  # removed when the new manifest was adopted
        assert remote[0]["x"].tolist() == [1.0] * 4


def test_splits_and_attachments_come_through_the_verified_path(served, tmp_path):
    server, local_root = served
    make_splits(stoke.open(local_root), {"train": 0.75, "val": 0.25}, seed=1)
    local_val = stoke.open(local_root, split="val")
    remote_val = stoke.open(server.url("ds"), split="val", cache_dir=tmp_path / "cache", retry=FAST)
    assert isinstance(remote_val, stoke.DatasetView)
    assert remote_val.indices.tolist() == local_val.indices.tolist()
    assert [remote_val[i]["y"] for i in range(len(remote_val))] == [local_val[i]["y"] for i in range(len(local_val))]
    remote_val.close()
    index = local_root / "splits" / "val.idx"
    index.write_bytes(index.read_bytes()[:-8] + (0).to_bytes(8, "little"))
    with pytest.raises(FormatError, match="does not match its checksum"):
        stoke.open(server.url("ds"), split="val", cache_dir=tmp_path / "cache", retry=FAST)


def test_text_attachments_are_checked_against_the_manifest(tmp_path):
    from stoke.sources.text import TextSource

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document number {n}"}) + "\n" for n in range(30)))
    stoke.pack(TextSource(corpus), tmp_path / "www" / "text", shard_items=10, progress=False)
    server = HttpDatasetServer(tmp_path / "www")
    try:
        local = stoke.open(tmp_path / "www" / "text")
        with stoke.open(server.url("text"), cache_dir=tmp_path / "cache", retry=FAST) as remote:
            assert remote.attachment("tokenizer.json") == local.attachment("tokenizer.json")
            assert remote.tokenizer().decode(remote[3]["tokens"].tolist()) == local[3]["text"]
            (tmp_path / "www" / "text" / "tokenizer.json").write_bytes(b"{}")
            with pytest.raises(FormatError, match=r"tokenizer\.json is 2 bytes but the manifest lists"):
                remote.attachment("tokenizer.json")
    finally:
        server.stop()


def test_one_cache_directory_serves_one_open_dataset_at_a_time(served, tmp_path):
    server, _ = served
    with open_served(server, tmp_path), pytest.raises(ConfigError, match="in use by another open dataset"):
        open_served(server, tmp_path)
    open_served(server, tmp_path).close()  # free again once closed


def test_the_example_in_docs_remote_md_runs(capsys):
    import re

    page = Path(__file__).resolve().parents[2] / "docs" / "remote.md"
    code = re.search(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M).group(1)
    exec(compile(code, str(page), "exec"), {"__name__": "docs_remote"})
    assert capsys.readouterr().out.split() == ["1", "20", "4"]


def test_stoke_inspect_and_verify_take_a_url(served, tmp_path):
    server, local_root = served
    env = {**os.environ, "STOKE_HOME": str(tmp_path / "home")}
    before = subprocess.run(
        [sys.executable, "-m", "stoke", "inspect", server.url("ds"), "--json"], capture_output=True, text=True, env=env
    )
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["splits"] is None
    make_splits(stoke.open(local_root), {"train": 0.75, "val": 0.25}, seed=1, stratify="y")
    shown = subprocess.run(
        [sys.executable, "-m", "stoke", "inspect", server.url("ds"), "--json"], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0, shown.stderr
    remote, local = json.loads(shown.stdout), summarize(stoke.open(local_root))
    assert remote["splits"] == json.loads(json.dumps(local["splits"])) and remote["num_samples"] == SAMPLES
    checked = subprocess.run(
        [sys.executable, "-m", "stoke", "verify", server.url("ds"), "--json"], capture_output=True, text=True, env=env
    )
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["ok"] is True and json.loads(checked.stdout)["num_samples"] == SAMPLES


def test_scaling_fits_on_the_train_split_of_a_remote_dataset(served, tmp_path):
    from stoke.ops import Standardize

    server, local_root = served
    make_splits(stoke.open(local_root), {"train": 0.75, "val": 0.25}, seed=1)
    local = Standardize.fit(stoke.open(local_root), "y", split="train")
    with stoke.open(server.url("ds"), cache_dir=tmp_path / "cache", retry=FAST) as remote:
        fitted = Standardize.fit(remote, "y", split="train")
    assert (fitted.mean, fitted.std) == (local.mean, local.std)


def test_a_copy_reads_the_cache_in_place_and_never_changes_it(served, tmp_path):
    server, local_root = served
    local = stoke.open(local_root)
    with open_served(server, tmp_path, cache_bytes=2 * shard_size(local_root)) as remote:
        remote[0], remote[3]  # shards 0 and 1 cached
        cached = remote.cache.keys()
        copy = pickle.loads(pickle.dumps(remote))  # as a spawned DataLoader worker gets it
        assert copy.cache is None and copy.store.mapped_shard(0) is None
        server.requests.clear()
        assert copy[1]["y"] == 1 and server.requests == []  # mapped in place from the cache directory
        remote.cache.evict([cache_key(remote.manifest.shards[0])])  # the owner evicts it: its file goes
        assert not (remote.cache.directory / cached[0]).exists()
        assert np.array_equal(copy[2]["x"], local[2]["x"])  # the copy's mapping outlives the file
        seen = [copy[index]["y"] for index in range(SAMPLES)]
        assert seen == [index % 3 for index in range(SAMPLES)]
        # Shards the cache lacked were downloaded for the copy alone: the owner's cache is as it was.
        assert "/ds/shard-000005.stk" in server.requests and "/ds/shard-000001.stk" not in server.requests
        assert remote.cache.keys() == cached[1:] and cache_files(remote) == [".lock", *cached[1:]]
        mapped = [number for number in range(8) if copy.store.mapped_shard(number) is not None]
        assert len(mapped) <= COPY_SHARDS  # a copy keeps a few shards mapped, not the dataset
        copy.close()


def test_torch_dataloader_spawn_workers_and_process_workers_read_a_remote_dataset(served, tmp_path):
    import torch.utils.data

    server, _ = served
    with open_served(server, tmp_path) as remote:
        loader = torch.utils.data.DataLoader(remote, batch_size=5, num_workers=1, multiprocessing_context="spawn")
        assert torch.cat([batch["y"] for batch in loader]).tolist() == [index % 3 for index in range(SAMPLES)]
        settings = {"batch_size": 4, "shuffle": True, "seed": 2, "num_threads": 2, "on_error": "raise"}
        processes = stoke.Loader(remote, workers="process", **settings)
        seen = np.concatenate([batch["index"].numpy() for batch in processes])
        assert sorted(seen.tolist()) == list(range(SAMPLES)) and not processes.quarantine
        processes.close()
        assert not [name for name in cache_files(remote) if ".tmp-" in name]  # the copies' downloads are gone


def test_verify_checks_a_remote_dataset_larger_than_its_cache(served, tmp_path, monkeypatch):
    from stoke.verify import verify

    server, local_root = served
    monkeypatch.setenv("STOKE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("stoke.storage.remote_store.DEFAULT_CACHE_BYTES", 2 * shard_size(local_root))
    monkeypatch.setattr("stoke.storage.cache.FULL_WAIT_SECONDS", 2.0)  # a shard held to the end fails fast
    report = verify(server.url("ds"), threads=2)  # each shard is let go once checked: 8 shards through 2 slots
    assert report.ok and report.num_samples == SAMPLES
