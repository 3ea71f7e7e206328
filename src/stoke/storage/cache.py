"""A bounded local directory of verified shard copies, evicted least-recently-used, never under a reader.

Each entry is one shard file, named ``<xxh3>-<file>`` after the checksum and name the manifest lists, inside
a directory of its own per dataset URL: a re-packed remote dataset has new checksums, so a stale copy can
never be taken for a current one. A download goes to a temporary name in the cache directory while its
xxh3 is computed over the bytes; only when size and checksum match the manifest is it fsynced and renamed
into place, so a partial or corrupt download is never read (a retried download starts afresh).

The byte budget covers the entries plus the downloads in progress (each reserves its size before it starts),
so the directory never holds more than ``max_bytes``. To make room, entries are evicted least-recently-used:
first those the caller says are no longer needed (``prefer``), then the others. A pinned entry (one being
read) is never evicted; the eviction callback lets the dataset unmap a shard before its file goes.

Not for: fetching (``remote.py``), or choosing what to fetch next (``prefetch.py``).

Example:
    >>> import tempfile, io, xxhash
    >>> cache = ShardCache(tempfile.mkdtemp(), max_bytes=10)
    >>> data = b"hello"
    >>> path = cache.acquire("a", len(data), xxhash.xxh3_64(data).hexdigest(), lambda sink: sink.write(data))
    >>> path.read_bytes(), cache.used_bytes
    (b'hello', 5)
    >>> cache.release("a")
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import xxhash

from stoke.errors import ConfigError
from stoke.format.atomic import fsync_directory
from stoke.storage.retry import DownloadMismatch, Retry

LOCK_NAME = ".lock"
FULL_WAIT_SECONDS = 60.0  # how long a read waits for pinned entries to be released before giving up


class _HashingWriter:
    """A file that hashes what is written to it and counts the bytes."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.digest = xxhash.xxh3_64()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.stream.write(data)


class ShardCache:
    """``acquire(key, size, checksum, download)`` → the path of a verified local copy, pinned until ``release``.

    ``download(sink)`` writes the file's bytes into ``sink``; it is retried by ``retry`` from a fresh
    temporary file. ``on_evict(key)`` runs (under the cache's lock) before an entry's file is removed.
    Only one process may use a cache directory at a time (an flock on ``.lock``).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int,
        retry: Retry | None = None,
        on_evict: Callable[[str], None] | None = None,
    ) -> None:
        if not isinstance(max_bytes, int) or max_bytes < 1:
            raise ConfigError(f"cache_bytes must be a positive integer, got {max_bytes!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.retry = retry or Retry()
        self.on_evict = on_evict
        self._lock_file: BinaryIO | None = _lock_directory(self.directory)
        self._entries: collections.OrderedDict[str, int] = collections.OrderedDict()  # LRU first
        self._pins: collections.Counter[str] = collections.Counter()
        self._in_flight: set[str] = set()
        self._reserved = 0
        self._used = 0
        self._condition = threading.Condition()
        self.counters = {"hits": 0, "downloads": 0, "evictions": 0, "bytes_downloaded": 0}

    # ---- what is there ---------------------------------------------------------------------------
    @property
    def used_bytes(self) -> int:
        """Bytes of the verified entries (downloads in progress not included)."""
        return self._used

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def keys(self) -> list[str]:
        """The entries, least recently used first."""
        with self._condition:
            return list(self._entries)

    def path(self, key: str) -> Path:
        return self.directory / key

    def adopt(self, expected: dict[str, int]) -> None:
        """Keep the files of an earlier run whose key and size are ``expected``; remove every other file.

        Only verified downloads are ever renamed to a key, so a kept file is one that matched its checksum;
        each sample is still checked against its own checksum when it is read. Oldest first in LRU order.
        """
        kept: list[tuple[float, str, int]] = []
        with self._condition:
            for entry in os.scandir(self.directory):
                if entry.name == LOCK_NAME:
                    continue
                if entry.is_file(follow_symlinks=False) and expected.get(entry.name) == entry.stat().st_size:
                    kept.append((entry.stat().st_mtime, entry.name, expected[entry.name]))
                elif entry.is_dir(follow_symlinks=False):  # scratch of a killed run (splits)
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:  # a stale shard, a temporary file of a killed download, or anything else
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
            for _, key, size in sorted(kept):
                self._entries[key] = size
                self._used += size
            self._make_room(0, None, None)

    # ---- reading ---------------------------------------------------------------------------------
    def acquire(
        self,
        key: str,
        size: int,
        checksum: str,
        download: Callable[[BinaryIO], object],
        prefer: Callable[[str], bool] | None = None,
        what: str | None = None,
    ) -> Path:
        """The verified local copy of ``key``, downloaded now if it is not cached; pinned until :meth:`release`.

        To make room, evicts unpinned entries least-recently-used, those ``prefer`` accepts first. Waits
        while the budget is taken by pinned entries or other downloads; raises ConfigError when it stays
        full for ``FULL_WAIT_SECONDS``.
        """
        deadline = time.monotonic() + FULL_WAIT_SECONDS
        self.lock()
        with self._condition:
            while True:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    self._pins[key] += 1
                    self.counters["hits"] += 1
                    return self.path(key)
                if key not in self._in_flight:
                    if self._make_room(size, None, prefer):
                        self._start(key, size)
                        break
                    if not (self._pins or self._in_flight) or time.monotonic() > deadline:
                        raise self._too_small(key, size)
                self._condition.wait(timeout=0.5)
        return self._finish(key, size, checksum, download, pin=True, what=what)

    def release(self, key: str) -> None:
        """Unpin ``key`` (one release per acquire)."""
        with self._condition:
            self._pins[key] -= 1
            if self._pins[key] <= 0:
                del self._pins[key]
                self._condition.notify_all()

    def prefetch(
        self,
        key: str,
        size: int,
        checksum: str,
        download: Callable[[BinaryIO], object],
        evictable: Callable[[str], bool],
        what: str | None = None,
    ) -> bool:
        """Download ``key`` ahead of need, evicting only unpinned entries ``evictable`` accepts.

        Returns False, downloading nothing, when that cannot make room (the caller waits for progress);
        True when the entry is cached (or being downloaded by another thread).
        """
        with self._condition:
            if key in self._entries or key in self._in_flight:
                return True
            if not self._make_room(size, evictable, None):
                return False
            self._start(key, size)
        self._finish(key, size, checksum, download, pin=False, what=what)
        return True

    def wait(self, timeout: float) -> None:
        """Sleep until an entry is released, added or evicted, or ``timeout`` seconds pass."""
        with self._condition:
            self._condition.wait(timeout)

    def evict(self, keys: Iterable[str]) -> None:
        """Remove these entries now (unpinned ones; pinned ones stay)."""
        with self._condition:
            for key in list(keys):
                if key in self._entries and not self._pins[key]:
                    self._remove(key)
            self._condition.notify_all()

    def stats(self) -> dict[str, int]:
        """Counters (hits, downloads, evictions, bytes_downloaded) and the bytes in use and allowed."""
        with self._condition:
            return {**self.counters, "used_bytes": self._used, "max_bytes": self.max_bytes}

    def lock(self) -> None:
        """Take the directory's lock again after :meth:`close` (a no-op while it is held)."""
        with self._condition:
            if self._lock_file is None:
                self._lock_file = _lock_directory(self.directory)

    def close(self) -> None:
        """Release the directory's lock; the files stay for the next run."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # ---- internals -------------------------------------------------------------------------------
    def _start(self, key: str, size: int) -> None:
        self._in_flight.add(key)
        self._reserved += size

    def _finish(
        self, key: str, size: int, checksum: str, download: Callable[[BinaryIO], object], pin: bool, what: str | None
    ) -> Path:
        final = self.path(key)
        temporary = self.directory / f".{key}.tmp-{os.getpid()}-{threading.get_ident()}"
        try:
            self.retry.call(lambda: self._download_once(temporary, size, checksum, download), what or key)
            os.replace(temporary, final)
            fsync_directory(self.directory)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            with self._condition:
                self._in_flight.discard(key)
                self._reserved -= size
                self._condition.notify_all()
            raise
        with self._condition:
            self._in_flight.discard(key)
            self._reserved -= size
            self._entries[key] = size
            self._used += size
            self.counters["downloads"] += 1
            self.counters["bytes_downloaded"] += size
            if pin:
                self._pins[key] += 1
            self._condition.notify_all()
        return final

    @staticmethod
    def _download_once(temporary: Path, size: int, checksum: str, download: Callable[[BinaryIO], object]) -> None:
        with open(temporary, "wb") as stream:
            writer = _HashingWriter(stream)
            download(writer)  # type: ignore[arg-type]
            if writer.size != size:
                raise DownloadMismatch(
                    f"{temporary.name[1:].split('.tmp-')[0]} arrived with {writer.size:,} bytes, not the "
                    f"{size:,} the manifest lists",
                    short=writer.size < size,
                )
            if writer.digest.hexdigest() != checksum:
                raise DownloadMismatch(
                    f"{temporary.name[1:].split('.tmp-')[0]} does not match its checksum in the manifest",
                    short=False,
                )
            stream.flush()
            os.fsync(stream.fileno())

    def _make_room(
        self, size: int, evictable: Callable[[str], bool] | None, prefer: Callable[[str], bool] | None
    ) -> bool:
        """Evict until ``size`` more bytes fit, if enough unpinned (and evictable) entries exist."""
        free = self.max_bytes - self._used - self._reserved
        if size <= free:
            return True
        candidates = [key for key in self._entries if not self._pins[key] and (evictable is None or evictable(key))]
        if prefer is not None:
            candidates.sort(key=lambda key: not prefer(key))  # stable: LRU order within each group
        if sum(self._entries[key] for key in candidates) < size - free:
            return False
        for key in candidates:
            if size <= free:
                break
            free += self._entries[key]
            self._remove(key)
        return True

    def _remove(self, key: str) -> None:
        if self.on_evict is not None:
            self.on_evict(key)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(key))
        self._used -= self._entries.pop(key)
        self._pins.pop(key, None)
        self.counters["evictions"] += 1

    def _too_small(self, key: str, size: int) -> ConfigError:
        pinned = sum(self._entries[key] for key in self._pins if key in self._entries)
        return ConfigError(
            f"the cache in {self.directory} ({self.max_bytes:,} bytes) cannot hold {key} ({size:,} bytes) beside "
            f"the {pinned:,} bytes of shards in use; pass a larger cache_bytes= (at least a few shards per thread)"
        )


def _lock_directory(directory: Path) -> BinaryIO:
    stream = open(directory / LOCK_NAME, "ab")  # noqa: SIM115 - held for the cache's lifetime
    try:
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        stream.close()
        raise ConfigError(
            f"the cache directory {directory} is in use by another open dataset or process; close that one, "
            f"or give each its own cache_dir="
        ) from None
    return stream
