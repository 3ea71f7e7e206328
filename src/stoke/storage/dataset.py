"""A packed dataset read from a URL: the same :class:`~stoke.read.Dataset`, with shards from a local cache.

``stoke.open("s3://bucket/ds")`` (or ``gs://``, ``https://``, any fsspec URL) fetches and validates the
manifest exactly like a local one, and nothing else. A shard is fetched the first time a sample of it is
read, into a bounded cache directory (``cache.py``), verified against the manifest's checksum, mapped and
read like a local shard. When the Loader announces an epoch's order (:meth:`RemoteDataset.will_read`), a
background thread fetches the shards in that order, a few ahead (``prefetch.py``), and shards the epoch has
finished with are the first evicted. Splits and attachments come through the same checked path.

A read copies the sample's bytes out of the mapping while its shard is pinned, so an evicted shard's file
and mapping can go at once: no view into it outlives the read. A shard whose remote copy is damaged is
refused (never read), and every later read of it raises the same :class:`~stoke.errors.FormatError`.

Not for: process workers (``workers="process"``) or pickling into DataLoader workers: the cache belongs to
one process (thread workers, the default, share it).

Example (``docs/remote.md`` runs one against a local HTTP server)::

    dataset = stoke.open("https://example.org/photos.stoke", cache_dir="/tmp/cache", cache_bytes=2 << 30)
    loader = stoke.Loader(dataset, batch_size=256)  # fetches shards ahead, in the epoch's order
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from stoke.errors import ConfigError, FormatError, NotADatasetError, SampleError
from stoke.format import strict_json
from stoke.format.checksum import format_digest, sample_checksum
from stoke.format.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, ShardEntry
from stoke.format.shard import ShardReader
from stoke.format.splits import SPLITS_DIR, SPLITS_NAME, Splits, check_name, read_splits
from stoke.home import default_home
from stoke.read import Dataset, DatasetView, with_split
from stoke.storage.cache import ShardCache
from stoke.storage.prefetch import Prefetcher, ReadPlan
from stoke.storage.remote import RemoteStore
from stoke.storage.retry import DownloadMismatch, Retry

DEFAULT_CACHE_BYTES = 8 << 30
DEFAULT_AHEAD = 2
MAX_SPLITS_BYTES = 16 << 20


def open_remote(
    url: str,
    split: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_bytes: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    retry: Retry | None = None,
    ahead: int = DEFAULT_AHEAD,
    max_pixels: int | None = None,
) -> RemoteDataset | DatasetView:
    """Open the packed dataset at ``url`` through fsspec; reads the manifest only.

    ``cache_dir`` (default ``$STOKE_HOME/remote``) holds a directory per dataset URL, of at most
    ``cache_bytes`` (default 8 GiB, and never less than one shard); ``storage_options`` go to fsspec
    (``{"endpoint_url": ...}`` for an S3-compatible server, credentials, ...); ``retry`` sets how transient
    errors are retried; ``ahead`` is how many shards the prefetcher keeps ready; ``max_pixels`` is the
    reader's image limit, as for a local dataset (:func:`stoke.open`).

    The manifest's counts are checked against the shard sizes it lists, as for a local dataset; those
    sizes are believed until a shard is fetched, and each fetch stops one byte past the listed size and
    checks the file's size and checksum before it is read.
    """
    store = RemoteStore(url, storage_options, retry)
    missing = _not_a_dataset(url)
    raw = store.read_small(MANIFEST_NAME, MAX_MANIFEST_BYTES, missing=missing)
    where = store.where(MANIFEST_NAME)
    try:
        document = strict_json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise FormatError(f"{where} is damaged ({error}); restore it or re-pack and re-upload the dataset") from None
    manifest = Manifest.from_json(document, where=where)
    identity = xxhash.xxh3_64(
        f"{store.url}\n{json.dumps(dict(storage_options or {}), sort_keys=True, default=str)}".encode()
    ).hexdigest()
    directory = Path(cache_dir) if cache_dir is not None else default_home() / "remote"
    dataset = RemoteDataset(
        store,
        manifest,
        packing_id=xxhash.xxh3_64(raw).hexdigest(),
        cache=directory / identity,
        cache_bytes=DEFAULT_CACHE_BYTES if cache_bytes is None else cache_bytes,
        ahead=ahead,
        max_pixels=max_pixels,
    )
    return with_split(dataset, split, url)


class _NoSplitsError(FormatError):
    """Raised by ``has_splits`` when the dataset has no ``splits.json``."""


class RemoteDataset(Dataset):
    """A :class:`~stoke.read.Dataset` whose shards are fetched from ``store`` into a :class:`ShardCache`.

    ``root`` is the URL (a string). ``cache.stats()`` counts hits, downloads and evictions.
    """

    def __init__(
        self,
        store: RemoteStore,
        manifest: Manifest,
        *,
        packing_id: str,
        cache: str | os.PathLike[str],
        cache_bytes: int,
        ahead: int = DEFAULT_AHEAD,
        max_pixels: int | None = None,
    ) -> None:
        super().__init__(Path(cache), manifest, max_pixels)
        self.root = store.url  # type: ignore[assignment]  # messages name the URL
        self.url = store.url
        self.store = store
        largest = max((shard.file_size for shard in manifest.shards), default=0)
        if isinstance(cache_bytes, int) and 0 < cache_bytes < largest:
            raise ConfigError(
                f"cache_bytes={cache_bytes:,} is smaller than the largest shard of {self.url} ({largest:,} bytes); "
                f"pass at least {largest:,} (a few shards per loader thread is better)"
            )
        if not isinstance(ahead, int) or ahead < 1:
            raise ConfigError(f"ahead must be a positive integer, got {ahead!r}")
        self._packing_id = packing_id
        self._keys = [cache_key(shard) for shard in manifest.shards]
        self._shard_by_key = {key: number for number, key in enumerate(self._keys)}
        self._starts_array = np.asarray(self._starts, dtype=np.int64)
        self.cache = ShardCache(cache, cache_bytes, store.retry, on_evict=self._unmap)
        self.cache.adopt({key: shard.file_size for key, shard in zip(self._keys, manifest.shards)})
        self._ahead = ahead
        self._plan: ReadPlan | None = None
        self._prefetcher: Prefetcher | None = None
        self._damaged: dict[int, str] = {}
        self._held: set[int] = set()  # shards handed out by shard_reader(): pinned until close()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        schema = ", ".join(f"{name}: {field.type_name}" for name, field in self.fields.items())
        return f"stoke.RemoteDataset({self.url!r}, {len(self):,} samples, {{{schema}}})"

    # ---- reading, with the shard pinned -----------------------------------------------------------
    def read_fields(self, index: int, positions: Sequence[int] | None = None, verify: bool = False) -> list[memoryview]:
        shard, local = self.locate(index)
        reader = self._hold(shard)
        try:
            views = reader.fields_checked(local) if verify else reader.fields(local)
            chosen = views if positions is None else [views[position] for position in positions]
            # Copied while pinned: the shard may be evicted (unmapped, deleted) as soon as it is released.
            copied = [memoryview(bytes(view)) for view in chosen]
            del views, chosen
        except FormatError as error:
            raise self._sample_error(index, str(error).rsplit(": ", 1)[-1]) from error
        finally:
            self._release(shard)
        self._count_read(shard)
        return copied

    def is_intact(self, index: int) -> bool:
        shard, local = self.locate(index)
        try:
            reader = self._hold(shard)
        except (FormatError, OSError):
            return False
        try:
            return reader.is_intact(local)
        finally:
            self._release(shard)

    def _using_shard(self, shard: int, use: Any) -> Any:
        reader = self._hold(shard)
        try:
            return use(reader)
        finally:
            self._release(shard)

    def shard_reader(self, shard: int) -> ShardReader:
        """The reader of shard ``shard``, fetched if need be and kept in the cache until :meth:`close`."""
        return self._reader(shard)

    def _reader(self, shard: int) -> ShardReader:
        with self._lock:
            held = shard in self._held
            self._held.add(shard)
        reader = self._hold(shard)
        if held:
            self._release(shard)  # one pin per held shard
        return reader

    # ---- the epoch's order -----------------------------------------------------------------------
    def will_read(self, indices: np.ndarray) -> None:
        """The dataset indices the coming epoch reads, in order: shards are fetched ahead in that order."""
        plan = ReadPlan(self._starts_array, indices)
        with self._lock:
            self._plan = plan
            if self._prefetcher is None:
                self._prefetcher = Prefetcher(self._prefetch, self._is_cached, self.cache.wait, self._ahead)
        self._prefetcher.follow(plan)

    # ---- splits, attachments ---------------------------------------------------------------------
    @property
    def packing_id(self) -> str:
        return self._packing_id

    def has_splits(self) -> bool:
        """Whether the remote dataset holds ``splits.json`` (fetches that one small file)."""
        try:
            self.store.read_small(SPLITS_NAME, MAX_SPLITS_BYTES, missing=_NoSplitsError())
        except _NoSplitsError:
            return False
        return True

    def splits(self) -> Splits:
        """The stored splits, fetched (``splits.json``, ``splits/*.idx``) and validated like local ones."""
        missing = FormatError(f"{self.url} has no splits; make them with `stoke split` before uploading the dataset")
        raw = self.store.read_small(SPLITS_NAME, MAX_SPLITS_BYTES, missing=missing)
        where = self.store.where(SPLITS_NAME)
        try:
            document = strict_json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise FormatError(f"{where} is not valid JSON ({error}); run `stoke split` again") from None
        entries = document.get("splits") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise FormatError(f"{where} is not a stoke splits file; run `stoke split` again")
        scratch = Path(tempfile.mkdtemp(prefix=".splits-", dir=self.cache.directory))
        try:
            (scratch / SPLITS_DIR).mkdir()
            (scratch / SPLITS_NAME).write_bytes(raw)
            for entry in entries:
                name, count = (entry.get("name"), entry.get("count")) if isinstance(entry, dict) else (None, None)
                try:
                    check_name(name)  # a plain name: the index file cannot be outside splits/
                except ValueError as error:
                    raise FormatError(f"{where}: {error}") from None
                if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= len(self):
                    raise FormatError(f"{where}: split {name!r} has an invalid count {count!r}")
                data = self.store.read_small(f"{SPLITS_DIR}/{name}.idx", 8 * count)
                (scratch / SPLITS_DIR / f"{name}.idx").write_bytes(data)
            return read_splits(scratch, len(self), self.packing_id)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def attachment(self, name: str) -> bytes:
        try:
            entry = self.manifest.attachment(name)
        except KeyError:
            listed = ", ".join(a.file for a in self.manifest.attachments) or "none"
            raise KeyError(f"{self.url} attaches no file {name!r} (it attaches: {listed})") from None
        data = self.store.read_small(entry.file, entry.file_size)
        where = self.store.where(entry.file)
        if len(data) != entry.file_size:
            raise FormatError(
                f"{where} is {len(data):,} bytes but the manifest lists {entry.file_size:,}; restore it or re-pack"
            )
        if format_digest(sample_checksum(data)) != entry.checksum:
            raise FormatError(f"{where} does not match its checksum in the manifest; restore it or re-pack")
        return data

    def tokenizer(self) -> Any:
        from stoke.prepare.tokenize import TOKENIZER_FILE, tokenizer_from_json

        if TOKENIZER_FILE not in [a.file for a in self.manifest.attachments]:
            raise ConfigError(f"{self.url} has no {TOKENIZER_FILE}; only datasets packed from text carry a tokenizer")
        return tokenizer_from_json(self.attachment(TOKENIZER_FILE), self.store.where(TOKENIZER_FILE)).hf

    # ---- life cycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the prefetcher, unmap every shard and unlock the cache directory (its files stay)."""
        prefetcher, self._prefetcher = self._prefetcher, None
        if prefetcher is not None:
            prefetcher.stop()
        with self._lock:
            held, self._held = self._held, set()
        for shard in held:
            self._release(shard)
        super().close()
        self.cache.close()

    def __getstate__(self) -> dict[str, Any]:
        raise ConfigError(
            f"a remote dataset ({self.url}) cannot be pickled into another process; load it with stoke.Loader "
            f"and thread workers, or open it in each process with its own cache_dir="
        )

    # ---- internals -------------------------------------------------------------------------------
    def _confirm_counts(self) -> None:
        """Nothing to stat: the counts fit the listed sizes (``Manifest``), and each fetch checks its size."""

    def _hold(self, shard: int) -> ShardReader:
        """Shard ``shard`` mapped and pinned in the cache, fetched first if need be; release with _release."""
        if os.getpid() != self._pid:
            raise ConfigError(
                f"a remote dataset ({self.url}) is read by the process that opened it; use workers='thread'"
            )
        if shard in self._damaged:
            raise FormatError(self._damaged[shard])
        entry = self.manifest.shards[shard]
        try:
            path = self.cache.acquire(
                self._keys[shard],
                entry.file_size,
                entry.checksum,
                self._downloader(entry),
                prefer=self._finished_key,
                what=f"shard {self.store.where(entry.file)}",
            )
        except DownloadMismatch as error:
            if error.short:
                raise
            message = (
                f"shard {self.store.where(entry.file)} does not match the checksum its manifest lists in "
                f"{self.store.retry.attempts} downloads; the remote copy is damaged or was replaced: restore it, "
                f"or re-pack and re-upload the dataset"
            )
            self._damaged[shard] = message
            raise FormatError(message) from None
        try:
            return self._readers[shard] or self._map_shard(shard, path)
        except BaseException:
            self._release(shard)
            raise

    def _release(self, shard: int) -> None:
        self.cache.release(self._keys[shard])

    def _count_read(self, shard: int) -> None:
        plan = self._plan
        if plan is None:
            return
        with self._lock:
            finished = plan.count_down(shard)
        if finished and self._prefetcher is not None:
            self._prefetcher.poke()

    def _downloader(self, entry: ShardEntry) -> Any:
        return lambda sink: self.store.download(entry.file, sink, entry.file_size)

    def _prefetch(self, shard: int) -> bool:
        entry = self.manifest.shards[shard]
        return self.cache.prefetch(
            self._keys[shard],
            entry.file_size,
            entry.checksum,
            self._downloader(entry),
            evictable=self._finished_key,
            what=f"shard {self.store.where(entry.file)}",
        )

    def _is_cached(self, shard: int) -> bool:
        return self._keys[shard] in self.cache

    def _finished_key(self, key: str) -> bool:
        """Whether the cached shard ``key`` has no more reads in the current epoch (True without a plan)."""
        plan = self._plan
        return plan is None or not plan.needed(self._shard_by_key[key])

    def _unmap(self, key: str) -> None:
        shard = self._shard_by_key.get(key)
        if shard is None:
            return
        with self._lock:
            reader, self._readers[shard] = self._readers[shard], None
        if reader is not None:
            reader.close()

    def _sample_error(self, index: int, reason: str) -> SampleError:
        shard = self.shard_of(index).file
        return SampleError(
            f"sample {index} in {self.store.where(shard)} is damaged: {reason}", index=index, shard=shard
        )


def cache_key(shard: ShardEntry) -> str:
    """The cache file name of a shard: its checksum and its (validated, plain) file name."""
    return f"{shard.checksum}-{shard.file}"


def _not_a_dataset(url: str) -> NotADatasetError:
    return NotADatasetError(f"{url} is not a stoke dataset (it has no {MANIFEST_NAME}); check the URL")
