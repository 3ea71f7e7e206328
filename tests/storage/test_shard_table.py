"""A remote shard's offsets table read alone, by range (``RemoteStore.shard_table``): what token counts need,
without downloading the shard; trusted only when its header and offsets checksum check out, else the
caller downloads the shard as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import stoke
from stoke.errors import FormatError
from stoke.format.shard import DATA_START, ShardLayout, ShardReader, ShardTable
from stoke.storage import LocalStore, RemoteError, RemoteStore, Retry

fsspec = pytest.importorskip("fsspec", reason="remote datasets need the 'remote' extra")
FAST = Retry(attempts=2, base_delay=0.01, max_delay=0.02)


def documents() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 60_000, n, dtype=np.uint16) for n in rng.integers(0, 90, 40)]


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, str]:
    """The documents packed in 5 shards (ids, then a label), and the same files in fsspec's memory store."""
    fields = {"tokens": stoke.NDArrayField("uint16", (None,)), "label": stoke.IntField()}
    samples = [{"tokens": ids, "label": n} for n, ids in enumerate(documents())]
    stoke.pack(samples, tmp_path / "ds", fields=fields, shard_items=8, workers=1, progress=False)
    memory = fsspec.filesystem("memory")
    for path in (tmp_path / "ds").rglob("*"):
        if path.is_file():
            memory.pipe(f"/tables-{tmp_path.name}/{path.relative_to(tmp_path / 'ds')}", path.read_bytes())
    return tmp_path / "ds", f"memory://tables-{tmp_path.name}"


def remote_file(url: str, name: str) -> str:
    return f"/{url.removeprefix('memory://')}/{name}"


def test_the_table_is_read_by_range_and_gives_the_shards_spans_without_a_download(served, tmp_path):
    root, url = served
    store = RemoteStore(url, cache_dir=tmp_path / "cache", retry=FAST)
    local = LocalStore(root)
    try:
        assert local.shard_table(0) is None  # a local shard is mapped at no cost
        for number in range(len(store.manifest.shards)):
            table = store.shard_table(number)
            assert table is not None
            reader = local.open_shard(number)
            for position in (0, 1):
                for got, want in zip(table.field_spans(position), reader.field_spans(position)):
                    assert np.array_equal(got, want)
            chosen = np.array([reader.num_samples - 1, 0])
            assert all(
                np.array_equal(a, b) for a, b in zip(table.field_spans(0, chosen), reader.field_spans(0, chosen))
            )
            local.release(number)
        assert store.cache.stats()["downloads"] == 0
        store.open_shard(2)
        store.release(2)
        assert store.shard_table(2) is None  # now in the cache: open it, no range reads
    finally:
        store.close()
        local.close()


@pytest.mark.parametrize("where", ["offsets", "header"])
def test_a_damaged_table_or_header_is_not_trusted_and_the_download_refuses_the_shard(served, tmp_path, where):
    root, url = served
    entry = stoke.open(root).manifest.shards[1]
    layout = ShardLayout.derive(entry.num_samples, 2, entry.file_size)
    memory = fsspec.filesystem("memory")
    data = bytearray(memory.cat_file(remote_file(url, entry.file)))
    data[layout.offsets_start + 8 if where == "offsets" else 20] ^= 0x01  # same size, one bit
    memory.pipe(remote_file(url, entry.file), bytes(data))
    store = RemoteStore(url, cache_dir=tmp_path / "cache", retry=FAST)
    try:
        assert store.shard_table(1) is None
        assert store.shard_table(0) is not None
    finally:
        store.close()
    with pytest.raises(FormatError, match=r"shard-000001\.stk does not match the checksum"):
        stoke.TokenBlocks(stoke.open(url, cache_dir=tmp_path / "again", retry=FAST), block_size=16)


def test_a_missing_shard_gives_no_table_and_is_named_when_opened(served, tmp_path):
    _, url = served
    fsspec.filesystem("memory").rm(remote_file(url, "shard-000003.stk"))
    store = RemoteStore(url, cache_dir=tmp_path / "cache", retry=FAST)
    try:
        assert store.shard_table(3) is None
        with pytest.raises((FormatError, RemoteError), match=r"shard-000003\.stk"):
            store.open_shard(3)
    finally:
        store.close()


def test_token_blocks_of_a_remote_dataset_download_nothing_until_read(served, tmp_path):
    root, url = served
    remote = stoke.open(url, cache_dir=tmp_path / "cache", retry=FAST)
    blocks = stoke.TokenBlocks(remote, block_size=16, eos_id=1)
    assert remote.store.cache.stats()["downloads"] == 0
    local = stoke.TokenBlocks(stoke.open(root), block_size=16, eos_id=1)
    assert np.array_equal(blocks.counts, local.counts) and np.array_equal(blocks._payload, local._payload)
    got = [batch["tokens"] for batch in stoke.Loader(blocks, batch_size=4, shuffle=True, seed=5)]
    want = [batch["tokens"] for batch in stoke.Loader(local, batch_size=4, shuffle=True, seed=5)]
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert remote.store.cache.stats()["downloads"] == len(remote.manifest.shards)  # each once, by the epoch
    remote.close()


def test_only_a_version_2_table_that_checks_out_is_trusted(tmp_path):
    stoke.pack([np.arange(5, dtype=np.uint16)], tmp_path / "ds", names=["tokens"], workers=1, progress=False,
               fields={"tokens": stoke.NDArrayField("uint16", (None,))})  # fmt: skip
    entry = stoke.open(tmp_path / "ds").manifest.shards[0]
    data = (tmp_path / "ds" / entry.file).read_bytes()
    layout = ShardLayout.derive(entry.num_samples, 1, entry.file_size)
    header, table = data[:DATA_START], data[layout.offsets_start : layout.checksums_start]
    assert ShardTable.checked(header, table, layout) is not None
    assert ShardTable.checked(header, table, layout, version=1) is None  # no offsets checksum to trust
    assert ShardTable.checked(header, table[:-8], layout) is None
    assert ShardTable.checked(header[:-1] + bytes([header[-1] ^ 1]), table, layout) is None
    reader = ShardReader(tmp_path / "ds" / entry.file, 1, entry.num_samples, entry.file_size)
    assert ShardTable.checked(header, table, layout).field_spans(0)[1].tolist() == reader.field_spans(0)[1].tolist()
