"""Remote datasets on an S3-compatible server (moto in server mode, on loopback) through s3fs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from remote_servers import S3DatasetServer

import stoke
from stoke.errors import NotADatasetError
from stoke.storage import Retry

FAST = Retry(attempts=3, base_delay=0.01, max_delay=0.02)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """(server, URL of an uploaded dataset of 20 samples in 5 shards, its local directory)."""
    root = tmp_path_factory.mktemp("s3") / "ds"
    values = np.arange(40, dtype=np.int64).reshape(20, 2)
    stoke.pack({"pair": values, "label": np.arange(20) % 2}, root, shard_items=4, progress=False)
    server = S3DatasetServer()
    url = server.upload(root, "datasets/pairs")
    yield server, url, root
    server.stop()


def test_every_sample_and_every_batch_equals_the_local_copy(s3, tmp_path: Path):
    server, url, root = s3
    local = stoke.open(root)
    remote = stoke.open(url, cache_dir=tmp_path, storage_options=server.storage_options, retry=FAST)
    with remote:
        assert [remote[i]["pair"].tolist() for i in range(20)] == [local[i]["pair"].tolist() for i in range(20)]
        settings = {"batch_size": 6, "shuffle": True, "seed": 11, "num_threads": 2}
        mine = [batch["pair"].numpy() for batch in stoke.Loader(remote, **settings)]
        theirs = [batch["pair"].numpy() for batch in stoke.Loader(local, **settings)]
        assert len(mine) == 4 and all(np.array_equal(a, b) for a, b in zip(mine, theirs))
        assert remote.cache.stats()["downloads"] == 5


def test_a_warm_cache_is_reused_by_the_next_open(s3, tmp_path: Path):
    server, url, _ = s3
    options = {"cache_dir": tmp_path, "storage_options": server.storage_options, "retry": FAST}
    with stoke.open(url, **options) as first:
        list(stoke.Loader(first, batch_size=10, shuffle=False, num_threads=1))
    with stoke.open(url, **options) as second:
        list(stoke.Loader(second, batch_size=10, shuffle=False, num_threads=1))
        assert second.cache.stats()["downloads"] == 0  # every shard adopted from the first run's cache


def test_a_missing_prefix_is_not_a_dataset(s3, tmp_path: Path):
    server, _, _ = s3
    with pytest.raises(NotADatasetError, match="s3://data/nothing is not a stoke dataset"):
        stoke.open("s3://data/nothing", cache_dir=tmp_path, storage_options=server.storage_options, retry=FAST)
