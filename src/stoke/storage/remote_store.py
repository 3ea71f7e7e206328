"""A dataset at a URL: shards fetched into a bounded, verified local cache, mapped there and pinned while read.

``stoke.open("s3://bucket/ds")`` (or ``gs://``, ``https://``, any fsspec URL) makes a :class:`RemoteStore`,
which fetches and validates the manifest exactly like a local one, and nothing else. A shard is fetched
the first time a sample of it is read, into a bounded cache directory (``cache.py``), verified against the
manifest's checksum, and mapped there. When the Loader announces an epoch's order
(:meth:`RemoteStore.will_read`), a background thread fetches the shards in that order, a few ahead
(``prefetch.py``), and shards the epoch has finished with are the first evicted. Splits and attachments
come through the same checked path (``remote.py`` refuses any name that is not plain).

A shard is pinned in the cache from :meth:`~RemoteStore.open_shard` to :meth:`~RemoteStore.release`, and
the dataset copies a sample's bytes out meanwhile (``evicts``), so an evicted shard's file and mapping can
go at once: no view into it outlives the read. A shard whose remote copy is damaged is refused (never
read), and every later open of it raises the same :class:`~stoke.errors.FormatError`.

**Copies in other processes.** The store pickles as what it needs to re-open (URL, options, cache
directory, manifest), and a forked child has the store without pickling; both read as a *copy* that
re-attaches to the cache directory without owning it. A copy maps in place the verified shards it finds
there (the owner may evict one meanwhile: eviction only deletes the file, so the mapping stays valid),
and downloads a shard the cache lacks itself (:func:`~stoke.storage.cache.fetch_uncached`: verified the
same way, mapped and deleted at once), so the owner's cache, budget and pins never change. A copy keeps at
most :data:`COPY_SHARDS` shards mapped, fetches nothing ahead, and its reads do not advance the owner's
prefetcher: thread workers, which share one cache and its prefetcher, stay the fast way to read a remote
dataset (docs/remote.md).

Not for: verifying, keeping or fetching bytes (``cache.py``, ``remote.py``, ``prefetch.py``), or decoding
samples (``stoke.read``).

Example (``docs/remote.md`` runs one against a local HTTP server)::

    dataset = stoke.open("https://example.org/photos.stoke", cache_dir="/tmp/cache", cache_bytes=2 << 30)
    dataset.store  # a RemoteStore; dataset.cache.stats() counts hits, downloads and evictions
    loader = stoke.Loader(dataset, batch_size=256)  # fetches shards ahead, in the epoch's order
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from stoke.errors import ConfigError, FormatError, NotADatasetError
from stoke.format import strict_json
from stoke.format.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, ShardEntry
from stoke.format.shard import DATA_START, ShardLayout, ShardReader, ShardTable
from stoke.format.splits import SPLITS_DIR, SPLITS_NAME, Splits, check_name, read_splits, splits_extent
from stoke.format.versions import VersionEntry
from stoke.home import default_home
from stoke.storage.cache import ShardCache, fetch_uncached
from stoke.storage.prefetch import Prefetcher, ReadPlan
from stoke.storage.remote import RemoteFiles
from stoke.storage.retry import DownloadMismatch, Retry
from stoke.storage.store import (
    close_readers,
    fork_safe_lock,
    lineage,
    map_shard,
    mapped_once,
    older_version,
    shard_starts,
)

DEFAULT_CACHE_BYTES = 8 << 30
DEFAULT_AHEAD = 2
MAX_SPLITS_BYTES = 16 << 20
COPY_SHARDS = 3  # shards a copy in another process keeps mapped (those it downloaded hold disk blocks)


class RemoteStore:
    """The :class:`~stoke.storage.store.ShardStore` of the dataset at ``url``, through a local cache.

    ``cache_dir`` (default ``$STOKE_HOME/remote``) holds a directory per dataset URL (and storage
    options), of at most ``cache_bytes`` (default 8 GiB, and never less than one shard); only one open
    store may use it at a time. ``storage_options`` go to fsspec (``{"endpoint_url": ...}`` for an
    S3-compatible server, credentials, ...); ``retry`` sets how transient errors are retried; ``ahead``
    is how many shards the prefetcher keeps ready.

    The manifest's counts are checked against the shard sizes it lists, as for a local dataset; those
    sizes are believed until a shard is fetched, and each fetch stops one byte past the listed size and
    checks the file's size and checksum before it is read.

    ``version`` opens an older version of a dataset that grew (``versions/manifest-v<N>.json``, checked
    against the newest manifest's history, as for a local dataset); versions share their shards, and so
    their cache entries.

    ``root`` and ``url`` are the URL (a ``str``), ``cache`` the :class:`~stoke.storage.cache.ShardCache`
    (None in a copy, which does not own it), ``files`` the :class:`~stoke.storage.remote.RemoteFiles`.
    """

    fetches = True
    evicts = True

    def __init__(
        self,
        url: str,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_bytes: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        retry: Retry | None = None,
        ahead: int = DEFAULT_AHEAD,
        version: int | None = None,
    ) -> None:
        files = RemoteFiles(url, storage_options, retry)
        newest, raw = _read_manifest(files, MANIFEST_NAME, _not_a_dataset(url))
        self.versions: list[VersionEntry] = newest.history
        self.manifest = self._newest = newest
        self._files: RemoteFiles | None = files
        packing_id = xxhash.xxh3_64(raw).hexdigest()
        if version is not None and version != newest.version:
            self.manifest, packing_id = older_version(newest, version, files.url, lambda name: _read_kept(files, name))
        self.root = self.url = self.location = files.url
        self._recipe = (files.url, files.storage_options, files.retry)  # what a copy makes its own files from
        largest = max((shard.file_size for shard in self.manifest.shards), default=0)
        cache_bytes = DEFAULT_CACHE_BYTES if cache_bytes is None else cache_bytes
        if isinstance(cache_bytes, int) and 0 < cache_bytes < largest:
            raise ConfigError(
                f"cache_bytes={cache_bytes:,} is smaller than the largest shard of {self.url} ({largest:,} bytes); "
                f"pass at least {largest:,} (a few shards per loader thread is better)"
            )
        if not isinstance(ahead, int) or isinstance(ahead, bool) or ahead < 1:
            raise ConfigError(f"ahead must be a positive integer, got {ahead!r}")
        identity = xxhash.xxh3_64(
            f"{files.url}\n{json.dumps(files.storage_options, sort_keys=True, default=str)}".encode()
        ).hexdigest()
        self.directory = (Path(cache_dir) if cache_dir is not None else default_home() / "remote") / identity
        self.max_bytes = cache_bytes
        self.retry = files.retry
        self._packing_id = packing_id
        self._ahead = ahead
        self._keys = [cache_key(shard) for shard in self.manifest.shards]
        self._shard_by_key = {key: number for number, key in enumerate(self._keys)}
        self._starts = shard_starts(self.manifest)
        self._damaged: dict[int, str] = {}
        self._readers: list[ShardReader | None] = [None] * len(self.manifest.shards)
        self._lock = fork_safe_lock(self)
        self._plan: ReadPlan | None = None
        self._prefetcher: Prefetcher | None = None
        self._pid: int | None = os.getpid()  # the process that owns the cache; None in an unpickled copy
        self._copy: _Copy | None = None
        self._cache: ShardCache | None = ShardCache(self.directory, cache_bytes, self.retry, on_evict=self._unmap)
        self._cache.adopt({key: shard.file_size for key, shard in zip(self._keys, self.manifest.shards)})

    def __repr__(self) -> str:
        return f"stoke.storage.RemoteStore({self.url!r})"

    @property
    def cache(self) -> ShardCache | None:
        """The cache this store owns (``cache.stats()``: hits, downloads, evictions); None in a copy."""
        return self._cache if self._as_copy() is None else None

    @property
    def files(self) -> RemoteFiles:
        """The dataset's files through fsspec (this process's own, in a copy)."""
        copy = self._as_copy()
        if copy is not None:
            return copy.files()
        assert self._files is not None
        return self._files

    @property
    def packing_id(self) -> str:
        return self._packing_id

    def where(self, name: str) -> str:
        return f"{self.url}/{name}"

    def confirm_counts(self) -> None:
        """Nothing to stat: the counts fit the listed sizes (``Manifest``), and each fetch checks its size."""

    # ---- shards ----------------------------------------------------------------------------------
    def open_shard(self, number: int) -> ShardReader:
        """Shard ``number`` mapped and pinned in the cache, fetched first if need be."""
        copy = self._as_copy()
        if copy is not None:
            return copy.open_shard(number)
        if number in self._damaged:
            raise FormatError(self._damaged[number])
        cache = self._cache
        assert cache is not None
        key = self._keys[number]
        entry = self.manifest.shards[number]
        try:
            path = cache.acquire(
                key,
                entry.file_size,
                entry.checksum,
                self._downloader(self._files, entry),
                prefer=self._finished_key,
                what=f"shard {self.where(entry.file)}",
            )
        except DownloadMismatch as error:
            if error.short:
                raise
            raise self._refuse(number) from None
        try:
            return mapped_once(self._readers, self._lock, number, path, self.manifest)
        except BaseException:
            cache.release(key)
            raise

    def shard_table(self, number: int) -> ShardTable | None:
        """Shard ``number``'s offsets table by two range reads (its header and the table), where the shard
        is not in the cache and the protocol reads ranges: what token counts need, without a download.
        None where the shard is cached or damaged, in a copy, over HTTP(S), when a read fails, or when the
        table does not check out: the caller opens the shard, whose download checks it whole."""
        if self._as_copy() is not None or number in self._damaged or self._is_cached(number):
            return None
        assert self._files is not None
        files, entry = self._files, self.manifest.shards[number]
        layout = ShardLayout.derive(entry.num_samples, len(self.manifest.fields), entry.file_size)
        if not files.reads_ranges or layout is None:
            return None
        try:
            header = files.read_range(entry.file, 0, DATA_START)
            table = files.read_range(entry.file, layout.offsets_start, layout.checksums_start - layout.offsets_start)
        except Exception:  # any failure here only means: download the shard as usual
            return None
        return ShardTable.checked(header, table, layout, self.manifest.format_version)

    def release(self, number: int, sample_read: bool = False) -> None:
        copy = self._as_copy()
        if copy is not None:
            copy.release(number)
            return
        assert self._cache is not None
        self._cache.release(self._keys[number])
        plan = self._plan
        if sample_read and plan is not None:
            with self._lock:
                finished = plan.count_down(number)
            if finished and self._prefetcher is not None:
                self._prefetcher.poke()

    def mapped_shard(self, number: int) -> ShardReader | None:
        copy = self._as_copy()
        return copy.readers[number] if copy is not None else self._readers[number]

    def will_read(self, indices: np.ndarray) -> None:
        """The dataset indices the coming epoch reads, in order: shards are fetched ahead in that order
        (by the owner; a copy fetches only what it reads)."""
        if self._as_copy() is not None:
            return
        assert self._cache is not None
        plan = ReadPlan(self._starts, indices)
        with self._lock:
            self._plan = plan
            if self._prefetcher is None:
                self._prefetcher = Prefetcher(self._prefetch, self._is_cached, self._cache.wait, self._ahead)
        self._prefetcher.follow(plan)

    # ---- other files -----------------------------------------------------------------------------
    def read_file(self, name: str, size: int) -> bytes:
        data = self.files.read_small(name, size, listed=True)
        if len(data) != size:
            raise FormatError(
                f"{self.where(name)} is {len(data):,} bytes but the manifest lists {size:,}; restore it or re-pack"
            )
        return data

    def read_version(self, number: int) -> Manifest:
        """The manifest of version ``number`` (fetched and checked, as when it is opened)."""
        if number == self._newest.version:
            return self._newest
        return older_version(self._newest, number, self.url, self._read_version)[0]

    def _read_version(self, name: str) -> bytes:
        return _read_kept(self.files, name)

    def has_splits(self) -> bool:
        """Whether the remote dataset holds ``splits.json`` (fetches that one small file)."""
        try:
            self.files.read_small(SPLITS_NAME, MAX_SPLITS_BYTES, missing=_NoSplitsError())
        except _NoSplitsError:
            return False
        return True

    def read_splits(self) -> Splits:
        """The stored splits, fetched (``splits.json``, ``splits/*.idx``) and validated like local ones."""
        files = self.files
        size = self.manifest.num_samples
        missing = FormatError(f"{self.url} has no splits; make them with `stoke split` before uploading the dataset")
        raw = files.read_small(SPLITS_NAME, MAX_SPLITS_BYTES, missing=missing)
        where = self.where(SPLITS_NAME)
        try:
            document = strict_json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise FormatError(f"{where} is not valid JSON ({error}); run `stoke split` again") from None
        entries = document.get("splits") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise FormatError(f"{where} is not a stoke splits file; run `stoke split` again")
        bound = splits_extent(document, size, self.packing_id, lineage(self), where)[0]  # refuses foreign splits
        self.directory.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".splits-", dir=self.directory))
        try:
            (scratch / SPLITS_DIR).mkdir()
            (scratch / SPLITS_NAME).write_bytes(raw)
            for entry in entries:
                name, count = (entry.get("name"), entry.get("count")) if isinstance(entry, dict) else (None, None)
                try:
                    check_name(name)  # a plain name: the index file cannot be outside splits/
                except ValueError as error:
                    raise FormatError(f"{where}: {error}") from None
                if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= bound:
                    raise FormatError(f"{where}: split {name!r} has an invalid count {count!r}")
                data = files.read_small(f"{SPLITS_DIR}/{name}.idx", 8 * count)
                (scratch / SPLITS_DIR / f"{name}.idx").write_bytes(data)
            return read_splits(scratch, size, self.packing_id, lineage(self))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # ---- life cycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the prefetcher, unmap every shard and unlock the cache directory (its files stay)."""
        copy = self._as_copy()
        if copy is not None:
            copy.close()
            return
        prefetcher, self._prefetcher = self._prefetcher, None
        if prefetcher is not None:
            prefetcher.stop()
        with self._lock:
            readers, self._readers = self._readers, [None] * len(self._readers)
        close_readers(readers)
        if self._cache is not None:
            self._cache.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_lock", "_plan", "_prefetcher", "_copy"):
            state.pop(name, None)
        state.update(
            _files=None,  # a copy makes its own filesystem: fsspec's belong to the process that made them
            _cache=None,  # owned by this process: the copy reads its directory without owning it
            _pid=None,
            _readers=[None] * len(self._readers),
            _damaged=dict(self._damaged),
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = fork_safe_lock(self)
        self._plan = self._prefetcher = self._copy = None

    # ---- internals -------------------------------------------------------------------------------
    def _as_copy(self) -> _Copy | None:
        """None in the process that owns the cache; elsewhere (forked, or unpickled) this process's copy."""
        if self._pid == os.getpid():
            return None
        copy = self._copy
        if copy is None or copy.pid != os.getpid():
            with self._lock:
                copy = self._copy
                if copy is None or copy.pid != os.getpid():
                    copy = self._copy = _Copy(self)
        return copy

    def _refuse(self, number: int) -> FormatError:
        """The error for shard ``number``, whose downloads never matched its checksum: the remote copy is
        damaged, and every later open of the shard raises the same error without downloading it again."""
        entry = self.manifest.shards[number]
        message = (
            f"shard {self.where(entry.file)} does not match the checksum its manifest lists in "
            f"{self.retry.attempts} downloads; the remote copy is damaged or was replaced: restore it, "
            f"or re-pack and re-upload the dataset"
        )
        self._damaged[number] = message
        return FormatError(message)

    @staticmethod
    def _downloader(files: Any, entry: ShardEntry) -> Any:
        return lambda sink: files.download(entry.file, sink, entry.file_size)

    def _prefetch(self, shard: int) -> bool:
        assert self._cache is not None
        entry = self.manifest.shards[shard]
        return self._cache.prefetch(
            self._keys[shard],
            entry.file_size,
            entry.checksum,
            self._downloader(self._files, entry),
            evictable=self._finished_key,
            what=f"shard {self.where(entry.file)}",
        )

    def _is_cached(self, shard: int) -> bool:
        return self._cache is not None and self._keys[shard] in self._cache

    def _finished_key(self, key: str) -> bool:
        """Whether the cached shard ``key`` has no more reads in the current epoch (True without a plan)."""
        plan = self._plan
        return plan is None or not plan.needed(self._shard_by_key[key])

    def _unmap(self, key: str) -> None:
        """The cache evicts ``key`` (unpinned): unmap it before its file goes."""
        shard = self._shard_by_key.get(key)
        if shard is None:
            return
        with self._lock:
            reader, self._readers[shard] = self._readers[shard], None
        if reader is not None:
            reader.close()


class _Copy:
    """How a :class:`RemoteStore` reads in a process that does not own its cache (forked, or unpickled).

    The cache's verified entries are mapped in place; a shard the cache lacks is downloaded for this
    process alone, mapped and deleted (``fetch_uncached``). At most :data:`COPY_SHARDS` shards stay
    mapped: the least recently used one that no read holds is unmapped first.
    """

    def __init__(self, store: RemoteStore) -> None:
        self.store = store
        self.pid = os.getpid()
        self.readers: list[ShardReader | None] = [None] * len(store.manifest.shards)
        self.damaged = dict(store._damaged)
        self._pins: collections.Counter[int] = collections.Counter()
        self._recent: collections.OrderedDict[int, None] = collections.OrderedDict()  # mapped, LRU first
        self._lock = threading.Lock()  # made in this process: never one a parent's thread held at fork
        self._mapping = threading.Lock()  # one shard mapped or downloaded at a time
        self._files: RemoteFiles | None = None

    def files(self) -> RemoteFiles:
        with self._lock:
            if self._files is None:
                self._files = RemoteFiles(*self.store._recipe)
            return self._files

    def open_shard(self, number: int) -> ShardReader:
        reader = self._pinned(number)
        if reader is not None:
            return reader
        if number in self.damaged:
            raise FormatError(self.damaged[number])
        with self._mapping:
            reader = self._pinned(number)  # another thread of this process mapped it meanwhile
            if reader is not None:
                return reader
            reader = self._map(number)
            with self._lock:
                self.readers[number] = reader
                self._pins[number] += 1
                self._recent[number] = None
                self._trim()
        return reader

    def release(self, number: int) -> None:
        with self._lock:
            if self._pins[number] > 0:  # a shard a forked parent held was never pinned here
                self._pins[number] -= 1
                if not self._pins[number]:
                    del self._pins[number]
            self._trim()

    def close(self) -> None:
        with self._lock:
            readers, self.readers = self.readers, [None] * len(self.readers)
            self._pins.clear()
            self._recent.clear()
        close_readers(readers)

    def _pinned(self, number: int) -> ShardReader | None:
        with self._lock:
            reader = self.readers[number]
            if reader is not None:
                self._pins[number] += 1
                self._recent.move_to_end(number)
            return reader

    def _map(self, number: int) -> ShardReader:
        store = self.store
        key, entry = store._keys[number], store.manifest.shards[number]
        try:
            return map_shard(store.directory / key, store.manifest, number)  # verified when it was cached
        except FileNotFoundError:
            pass  # not cached, or evicted meanwhile: fetched for this process alone
        files = self.files()
        try:
            path = fetch_uncached(
                store.directory,
                key,
                entry.file_size,
                entry.checksum,
                store._downloader(files, entry),
                files.retry,
                store.max_bytes,
                what=f"shard {store.where(entry.file)}",
            )
        except DownloadMismatch as error:
            if error.short:
                raise
            refused = store._refuse(number)
            self.damaged[number] = str(refused)
            raise refused from None
        try:
            return map_shard(path, store.manifest, number)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)  # the mapping keeps the bytes (and their disk blocks) until it is closed

    def _trim(self) -> None:
        """Unmap the least recently used shards no read holds, beyond :data:`COPY_SHARDS` (under the lock)."""
        for number in list(self._recent):
            if len(self._recent) <= COPY_SHARDS:
                break
            if self._pins[number]:
                continue
            del self._recent[number]
            reader, self.readers[number] = self.readers[number], None
            if reader is not None:
                reader.close()


def _read_manifest(files: RemoteFiles, name: str, missing: FormatError | NotADatasetError) -> tuple[Manifest, bytes]:
    """The validated manifest in the remote file ``name`` and the bytes it was read from."""
    raw = files.read_small(name, MAX_MANIFEST_BYTES, missing=missing)
    where = files.where(name)
    try:
        document = strict_json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise FormatError(f"{where} is damaged ({error}); restore it or re-pack and re-upload the dataset") from None
    return Manifest.from_dict(document, where=where), raw


def _read_kept(files: RemoteFiles, name: str) -> bytes:
    """The bytes of an older version's manifest, kept in the remote file ``name``."""
    missing = FormatError(f"{files.where(name)} is missing; restore it from a copy of the dataset")
    return files.read_small(name, MAX_MANIFEST_BYTES, missing=missing)


class _NoSplitsError(FormatError):
    """Raised by ``has_splits`` when the dataset has no ``splits.json``."""


def cache_key(shard: ShardEntry) -> str:
    """The cache file name of a shard: its checksum and its (validated, plain) file name."""
    return f"{shard.checksum}-{shard.file}"


def _not_a_dataset(url: str) -> NotADatasetError:
    return NotADatasetError(f"{url} is not a stoke dataset (it has no {MANIFEST_NAME}); check the URL")
