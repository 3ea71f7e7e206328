"""The shard-store protocol (``stoke.storage.store.ShardStore``), one suite run against every kind of store:
a ``LocalStore`` over a dataset directory and a ``RemoteStore`` over the same directory served by Python's
HTTP server on loopback. Each test asserts what a ``Dataset`` relies on: a shard opens and its samples
read as they were packed, an attachment is read whole and checked, ``will_read`` is safe to call (and a
remote store fetches ahead), damage (a missing or replaced shard) is named, counts are confirmed, and a
store pickled into a spawned process, or inherited by a forked one, re-opens itself and reads the same
samples."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from remote_servers import HttpDatasetServer

import stoke
from helpers import rewrite_manifest
from stoke.errors import FormatError, SampleError
from stoke.read import Dataset
from stoke.storage import LocalStore, RemoteError, RemoteStore, Retry, ShardStore
from stoke.storage.remote_store import cache_key

FAST = Retry(attempts=2, base_delay=0.01, max_delay=0.02)
DOCUMENTS, PER_SHARD = 12, 3
KINDS = ["local", "remote"]


def document(number: int) -> dict[str, Any]:
    return {"text": f"document {number}: " + "word " * number, "label": number % 3}


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 text documents (text, byte-level tokens, label) in 4 shards, with a tokenizer.json attached."""
    from stoke.sources.text import TextSource

    root = tmp_path_factory.mktemp("protocol")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(document(n)) + "\n" for n in range(DOCUMENTS)))
    stoke.pack(TextSource(corpus), root / "ds", shard_items=PER_SHARD, workers=1, progress=False)
    return root / "ds"


@pytest.fixture
def site(packed: Path, tmp_path: Path):
    """A fresh copy of the dataset (tests damage it), served over HTTP: (its directory, the server)."""
    directory = tmp_path / "www" / "ds"
    shutil.copytree(packed, directory)
    server = HttpDatasetServer(directory.parent)
    yield directory, server
    server.stop()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def make_store(kind: str, site: tuple[Path, HttpDatasetServer], cache_dir: Path) -> ShardStore:
    directory, server = site
    if kind == "local":
        return LocalStore(directory)
    return RemoteStore(server.url("ds"), cache_dir=cache_dir, retry=FAST)


@pytest.fixture
def store(kind: str, site, tmp_path: Path):
    opened = make_store(kind, site, tmp_path / "cache")
    yield opened
    opened.close()


def expected_fields(store: ShardStore, index: int) -> dict[str, Any]:
    """What document ``index`` was packed as, field by field (tokens: its UTF-8 bytes, byte-level)."""
    text = document(index)["text"]
    values = {"text": text, "tokens": list(text.encode()), "label": document(index)["label"]}
    return {entry.name: values[entry.name] for entry in store.manifest.fields}


def decoded(store: ShardStore, views: list[memoryview]) -> dict[str, Any]:
    values = {entry.name: entry.field.decode(view) for entry, view in zip(store.manifest.fields, views)}
    if "tokens" in values:
        values["tokens"] = values["tokens"].tolist()
    return values


def sample_values(dataset: Any, index: int) -> dict[str, Any]:
    sample = dataset[index]
    return {**sample, "tokens": sample["tokens"].tolist()}


def test_it_is_a_shard_store_that_names_where_its_files_are(store, kind, site):
    directory, server = site
    assert isinstance(store, ShardStore)
    assert store.location == str(store.root) and store.manifest.num_samples == DOCUMENTS
    named = store.where("shard-000001.stk")
    if kind == "local":
        assert store.root == directory and named == str(directory / "shard-000001.stk")
    else:
        assert store.root == server.url("ds") and named == server.url("ds/shard-000001.stk")
    assert len(store.packing_id) == 16 and store.packing_id == stoke.open(directory).packing_id


def test_a_shard_opens_and_its_samples_read_as_they_were_packed(store):
    first = 0
    for number, entry in enumerate(store.manifest.shards):
        reader = store.open_shard(number)
        try:
            assert store.mapped_shard(number) is reader and reader.num_samples == entry.num_samples
            for local in range(entry.num_samples):
                assert decoded(store, reader.fields_checked(local)) == expected_fields(store, first + local)
        finally:
            store.release(number, sample_read=True)
        first += entry.num_samples
    dataset = Dataset(store)
    assert [sample_values(dataset, index) for index in range(DOCUMENTS)] == [
        expected_fields(store, index) for index in range(DOCUMENTS)
    ]


def test_fields_read_stay_valid_after_the_store_lets_the_shard_go(store):
    dataset = Dataset(store)
    views = dataset.read_fields(7, verify=True)
    store.close()  # unmaps every shard (a remote one may evict it the moment it is released)
    assert store.mapped_shard(2) is None
    assert decoded(store, views) == expected_fields(store, 7)
    assert sample_values(dataset, 8) == expected_fields(store, 8)  # and it opens again when used


def test_an_attachment_is_read_whole_and_checked(store, site):
    directory, _ = site
    entry = store.manifest.attachment("tokenizer.json")
    data = (directory / "tokenizer.json").read_bytes()
    assert store.read_file("tokenizer.json", entry.file_size) == data
    dataset = Dataset(store)
    assert dataset.tokenizer().decode(dataset[5]["tokens"].tolist()) == document(5)["text"]
    (directory / "tokenizer.json").write_bytes(data[:-1])
    with pytest.raises(FormatError, match=f"tokenizer.json is {len(data) - 1:,} bytes but the manifest lists"):
        store.read_file("tokenizer.json", entry.file_size)
    (directory / "tokenizer.json").write_bytes(data + b" ")
    with pytest.raises(FormatError, match=r"tokenizer\.json is .*bytes.* the manifest lists.*; restore it or re-pack"):
        store.read_file("tokenizer.json", entry.file_size)
    (directory / "tokenizer.json").write_bytes(data.replace(b"<|endoftext|>", b"<|endoftexT|>"))
    with pytest.raises(FormatError, match=r"tokenizer\.json does not match its checksum in the manifest"):
        dataset.attachment("tokenizer.json")


def test_will_read_announces_the_epoch_and_a_remote_store_fetches_ahead(store, kind):
    order = np.array([10, 4, 11, 5, 9, 3], dtype=np.int64)  # shards 3 and 1, in that order of need
    store.will_read(order)
    if kind == "remote":
        keys = {cache_key(store.manifest.shards[number]) for number in (3, 1)}
        deadline = time.monotonic() + 10
        while not keys <= set(store.cache.keys()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert set(store.cache.keys()) == keys  # fetched before any read, and nothing else
    else:
        assert all(store.mapped_shard(number) is None for number in range(4))  # a local store maps on reads only
    dataset = Dataset(store)
    assert [sample_values(dataset, int(index)) for index in order] == [expected_fields(store, i) for i in order]


def test_a_missing_shard_is_named_and_the_others_still_read(kind, site, tmp_path):
    directory, _ = site
    (directory / "shard-000002.stk").unlink()
    store = make_store(kind, site, tmp_path / "cache")
    try:
        store.confirm_counts()  # 3 of 12 samples lost: damage that verify lists, not a refusal
        dataset = Dataset(store)
        assert sample_values(dataset, 5) == expected_fields(store, 5)
        with pytest.raises((FormatError, RemoteError), match=r"shard-000002\.stk"):
            store.open_shard(2)
        with pytest.raises((FormatError, RemoteError), match=r"shard-000002\.stk"):
            dataset[7]
        assert dataset.is_intact(9)
        if kind == "local":
            assert not dataset.is_intact(7)  # a remote read that cannot succeed raises its RemoteError instead
    finally:
        store.close()


def test_a_replaced_shard_is_refused_or_its_samples_fail_their_checksums(kind, site, tmp_path):
    directory, server = site
    path = directory / "shard-000001.stk"
    data = bytearray(path.read_bytes())
    data[64 + 3] ^= 0xFF  # same size, another byte in sample 3's record
    path.write_bytes(bytes(data))
    store = make_store(kind, site, tmp_path / "cache")
    try:
        dataset = Dataset(store)
        if kind == "local":  # the file is mapped where it lies: only that sample's checksum fails
            with pytest.raises(SampleError, match=r"sample 3 in .*shard-000001\.stk is damaged"):
                dataset[3]
            assert sample_values(dataset, 4) == expected_fields(store, 4)
        else:  # the download does not match the manifest: refused whole, never read, not fetched again
            with pytest.raises(FormatError, match=r"shard-000001\.stk does not match the checksum .* damaged"):
                dataset[4]
            server.requests.clear()
            with pytest.raises(FormatError, match="damaged or was replaced"):
                store.open_shard(1)
            assert server.requests == []
        assert sample_values(dataset, 6) == expected_fields(store, 6)
    finally:
        store.close()


def test_counts_the_files_do_not_back_are_refused_or_checked_when_fetched(kind, site, tmp_path):
    directory, _ = site
    lost = 2**20 + 10  # more than the other shards confirm by over MAX_UNCONFIRMED_SAMPLES

    def claim(manifest: dict) -> None:
        fields = len(manifest["fields"])
        record = 24  # the smallest record of (text, tokens, label): 8 bytes each
        manifest["shards"][0].update(num_samples=lost, bytes=64 + 8 * (lost * fields + 1) + 8 * lost + record * lost)
        manifest["num_samples"] = lost + DOCUMENTS - PER_SHARD

    rewrite_manifest(directory, claim)
    if kind == "local":  # one stat per shard: the listed size is not the file's
        with pytest.raises(
            FormatError, match=r"differ in size from what it lists \(shard-000000\.stk is [\d,]+ bytes, not"
        ):
            make_store(kind, site, tmp_path / "cache").confirm_counts()
        with pytest.raises(FormatError, match="does not describe these files"):
            stoke.open(directory)
        return
    store = make_store(kind, site, tmp_path / "cache")
    try:  # the listed sizes are believed until a fetch checks them
        store.confirm_counts()
        with pytest.raises(RemoteError, match=r"shard-000000\.stk"):  # the download stops short of the listed size
            store.open_shard(0)
        assert store.cache.keys() == []
    finally:
        store.close()


# ---- other processes: forked (inherited) and spawned (pickled) -----------------------------------------------
def read_some(dataset: Any, connection: Any) -> None:
    """In a child: every sample's values, and the process's pid, sent back; or the error as text."""
    try:
        connection.send((os.getpid(), [sample_values(dataset, index) for index in range(DOCUMENTS)]))
    except BaseException as error:  # reported to the parent, which fails the test with it
        connection.send((os.getpid(), f"{type(error).__name__}: {error}"))
    finally:
        dataset.close()
        connection.close()


def read_pickled(pickled: bytes, connection: Any) -> None:
    read_some(pickle.loads(pickled), connection)


def run_child(method: str, dataset: Any) -> tuple[int, Any]:
    context = multiprocessing.get_context(method)
    parent, child = context.Pipe()
    if method == "fork":  # inherited as it is, locks and mappings included, without pickling
        process = context.Process(target=read_some, args=(dataset, child))
    else:
        process = context.Process(target=read_pickled, args=(pickle.dumps(dataset), child))
    process.start()
    child.close()
    try:
        assert parent.poll(60), "the child sent nothing"
        return parent.recv()
    finally:
        process.join(30)
        assert process.exitcode == 0


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_copy_in_another_process_reopens_the_store_and_reads_the_same_samples(kind, site, tmp_path, method):
    store = make_store(kind, site, tmp_path / "cache")
    dataset = Dataset(store)
    try:
        assert sample_values(dataset, 1) == expected_fields(store, 1)  # shard 0 mapped (cached) here
        with store._lock, dataset._lock:  # held, as by another thread at the fork: the child gets fresh ones
            pid, samples = run_child(method, dataset)
        assert pid != os.getpid()
        assert samples == [expected_fields(store, index) for index in range(DOCUMENTS)], samples
        assert len(pickle.dumps(dataset)) < 20_000  # no mapping, no cache, no thread travels
        if kind == "remote":  # the copy read the cache without owning it: nothing changed there
            assert store.cache.keys() == [cache_key(store.manifest.shards[0])]
            assert sorted(os.listdir(store.cache.directory)) == [".lock", cache_key(store.manifest.shards[0])]
        assert sample_values(dataset, 11) == expected_fields(store, 11)  # and this process reads on
    finally:
        dataset.close()


def test_storage_never_imports_the_dataset_that_reads_through_it():
    """``stoke.read`` depends on ``stoke.storage``, never the other way, not even inside a function (the
    cycle RemoteDataset made); typing-only imports under ``TYPE_CHECKING`` do not count."""
    import ast

    storage = Path(stoke.__file__).parent / "storage"
    found = []
    for path in sorted(storage.glob("*.py")):
        tree = ast.parse(path.read_text())
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for statement in node.body
            for inner in ast.walk(statement)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(f"{node.module}.{alias.name}" for alias in node.names)]
            found += [f"{path.name}:{node.lineno} {name}" for name in names if name in ("stoke.read", "stoke")]
    assert found == []


def open_store(kind: str, site: tuple[Path, HttpDatasetServer], cache_dir: Path, version: int | None) -> ShardStore:
    directory, server = site
    if kind == "local":
        return LocalStore(directory, version=version)
    return RemoteStore(server.url("ds"), cache_dir=cache_dir, retry=FAST, version=version)


def test_every_version_of_a_grown_dataset_opens_through_the_store(kind, site, tmp_path):
    """An append served as it lies on disk: the newest version and version 1 read, with their splits."""
    from stoke.errors import ConfigError
    from stoke.prepare.split import make_splits
    from stoke.sources.text import TextSource

    directory, _ = site
    more = tmp_path / "more.jsonl"
    more.write_text("".join(json.dumps(document(n)) + "\n" for n in range(DOCUMENTS, DOCUMENTS + 5)))
    stoke.pack(TextSource(more), directory, append=True, shard_items=PER_SHARD, workers=1, progress=False)
    make_splits(stoke.open(directory), {"train": 0.5, "val": 0.5}, seed=3)
    local_splits = stoke.open(directory).splits().parts
    newest = Dataset(open_store(kind, site, tmp_path / "newest", None))
    older = Dataset(open_store(kind, site, tmp_path / "older", 1))
    try:
        assert (newest.version, len(newest), older.version, len(older)) == (2, DOCUMENTS + 5, 1, DOCUMENTS)
        assert [v.num_samples for v in older.versions] == [v.num_samples for v in newest.versions] == [12, 17]
        assert older.packing_id == stoke.open(directory, version=1).packing_id != newest.packing_id
        assert older.manifest.shards == newest.manifest.shards[: len(older.manifest.shards)]
        for index in (0, DOCUMENTS - 1):
            assert sample_values(older, index) == sample_values(newest, index) == expected_fields(older.store, index)
        assert sample_values(newest, DOCUMENTS + 4) == expected_fields(newest.store, DOCUMENTS + 4)
        assert {n: p.tolist() for n, p in newest.splits().parts.items()} == {
            n: p.tolist() for n, p in local_splits.items()
        }
        assert {n: p.tolist() for n, p in older.splits().parts.items()} == {
            n: p[p < DOCUMENTS].tolist() for n, p in local_splits.items()
        }
        assert newest.store.read_version(1).num_samples == DOCUMENTS
    finally:
        newest.close()
        older.close()
    with pytest.raises(ConfigError, match=r"has versions 1 to 2, so there is no version 3"):
        open_store(kind, site, tmp_path / "none", 3)
    kept = directory / "versions" / "manifest-v1.json"
    kept.write_bytes(kept.read_bytes().replace(b'"num_samples": 12', b'"num_samples": 11'))
    with pytest.raises(FormatError, match=r"manifest-v1.json does not match the checksum version 2 lists"):
        open_store(kind, site, tmp_path / "damaged", 1)
