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

The disk counts too: before a download starts, the free space of the cache's filesystem (``os.statvfs``,
less what the downloads in progress will still write) must hold it, and entries are evicted the same way
to make room there, so a disk smaller than ``max_bytes`` works as a smaller cache (logged once). When even
evicting every unpinned entry would not make room, or a write fails anyway (the disk filled meanwhile, a
quota, a read-only filesystem), the read raises one :class:`CacheWriteError` naming the directory, the bytes
needed and what to do. It is not retried like a network error: the partial temporary file is removed at
once and the reservation released, so no entry exists for a shard that is not whole.

Temporary files are named ``.<key>.tmp-<pid>-<thread>``. A killed process leaves its own behind:
:meth:`ShardCache.adopt` (the start of every run on a directory) removes every file of an earlier run that
is not a verified entry (a live process's download in progress stays), and also the temporaries of dead
processes in the other cache directories beside it (those of other dataset URLs) that no open dataset holds.

Another process reading the same dataset (a copy of a remote store in a worker) never changes the cache:
it reads the verified entries in place, and :func:`fetch_uncached` downloads a shard the cache lacks into
a temporary file of its own, checked the same way, that the caller maps and deletes at once.

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
import errno
import fcntl
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import xxhash

from stoke.errors import ConfigError, StokeError
from stoke.format.atomic import publish
from stoke.storage.retry import DownloadMismatch, Retry

LOCK_NAME = ".lock"
FULL_WAIT_SECONDS = 60.0  # how long a read waits for pinned entries to be released before giving up
LOCK_PATIENCE_SECONDS = 0.25  # another run may hold a directory's lock for an instant while it sweeps it
# What a remote dataset's cache directory and its download temporaries are named (see dataset.py's cache_key:
# an xxh3 digest, then the shard's plain file name); the sweep touches nothing else.
_CACHE_DIRECTORY = re.compile(r"[0-9a-f]{16}")
_TEMPORARY = re.compile(r"\.[0-9a-f]{16}-[^/]+\.tmp-(?P<pid>\d+)-\d+")

logger = logging.getLogger("stoke")


class CacheWriteError(StokeError):
    """The cache directory cannot take a shard: its disk is full, a quota is used up, it is read-only, ...

    ``directory`` is the cache directory, ``needed`` the bytes the shard needs there and ``errno`` the
    operating system's error number (``errno.ENOSPC`` when stoke found the disk too full before writing).
    Not a network error, so never retried, and not a damaged sample: the data is intact where it came from,
    so a Loader's epoch ends with this error rather than quarantining samples (``StokeError.ends_epoch``).
    """

    ends_epoch = True

    def __init__(self, message: str, *, directory: Path, needed: int, errno: int) -> None:
        super().__init__(message)
        self.directory, self.needed, self.errno = directory, needed, errno

    def __reduce__(self) -> tuple[object, ...]:
        return _cache_write_error, (str(self), self.directory, self.needed, self.errno)


def _cache_write_error(message: str, directory: Path, needed: int, number: int) -> CacheWriteError:
    return CacheWriteError(message, directory=directory, needed=needed, errno=number)


class _LocalWriteFailed(StokeError):  # noqa: N818 - an OSError of the local file, carried past the download
    """Raised by :class:`_HashingWriter` so that a failed local write is never taken for a network error
    (a StokeError: the retry policy raises it at once; the cache turns it into a CacheWriteError)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _HashingWriter:
    """A file that hashes what is written to it and counts the bytes.

    ``stream`` is an unbuffered file, so a full disk fails the very write that meets it (a buffered one
    would fail later, in a flush or a close, perhaps while another error is being handled).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.digest = xxhash.xxh3_64()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        self.digest.update(view)
        self.size += total
        try:
            while view:  # a raw write may write less than asked (the disk filled mid-way)
                written = self.stream.write(view)
                if not written:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
        except OSError as error:
            raise _LocalWriteFailed(error) from error
        return total


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
        self._in_flight: dict[str, int] = {}  # key -> bytes reserved
        self._writers: dict[str, _HashingWriter] = {}  # key -> its download's current attempt
        self._reserved = 0
        self._used = 0
        self._condition = threading.Condition()
        self._warned_disk = False
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
        Also removes the temporary files that killed processes left in the other cache directories beside
        this one (see :func:`sweep_stale_temporaries`).
        """
        sweep_stale_temporaries(self.directory.parent, skip=self.directory.name)
        kept: list[tuple[float, str, int]] = []
        with self._condition:
            for entry in os.scandir(self.directory):
                if entry.name == LOCK_NAME:
                    continue
                if entry.is_file(follow_symlinks=False) and expected.get(entry.name) == entry.stat().st_size:
                    kept.append((entry.stat().st_mtime, entry.name, expected[entry.name]))
                elif entry.is_dir(follow_symlinks=False):  # scratch of a killed run (splits)
                    shutil.rmtree(entry.path, ignore_errors=True)
                elif _live_temporary(entry.name):  # a download in progress in a worker that reads a copy
                    continue
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

        To make room (in the budget and on the disk), evicts unpinned entries least-recently-used, those
        ``prefer`` accepts first. Waits while the room is taken by pinned entries or other downloads;
        raises ConfigError when the budget stays full for ``FULL_WAIT_SECONDS``, and CacheWriteError when
        the disk cannot hold the entry (at once if waiting cannot help) or writing it fails.
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
                    short = self._make_room(size, None, prefer)
                    if short is None:
                        self._start(key, size)
                        break
                    if short == "disk" and not self._room_after_waiting(size):
                        raise self._no_room(key, size, what)
                    if not (self._pins or self._in_flight) or time.monotonic() > deadline:
                        raise self._too_small(key, size) if short == "budget" else self._no_room(key, size, what)
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

        Returns False, downloading nothing, when that cannot make room in the budget or on the disk (the
        caller waits for progress); True when the entry is cached (or being downloaded by another thread).
        """
        with self._condition:
            if key in self._entries or key in self._in_flight:
                return True
            if self._make_room(size, evictable, None) is not None:
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
        self._in_flight[key] = size
        self._reserved += size

    def _finish(
        self, key: str, size: int, checksum: str, download: Callable[[BinaryIO], object], pin: bool, what: str | None
    ) -> Path:
        final = self.path(key)
        temporary = self.directory / f".{key}.tmp-{os.getpid()}-{threading.get_ident()}"
        try:
            try:
                self.retry.call(
                    lambda: _download_once(key, temporary, size, checksum, download, self._writers), what or key
                )
                publish(temporary, final)
            except _LocalWriteFailed as failed:
                raise self._write_failed(failed.error, key, size, what) from failed.error
            except OSError as error:  # the rename: a local error, never retried
                raise self._write_failed(error, key, size, what) from error
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)  # at once: a partial file must not hold the disk
            with self._condition:
                self._in_flight.pop(key, None)
                self._writers.pop(key, None)
                self._reserved -= size
                self._condition.notify_all()
            raise
        with self._condition:
            self._in_flight.pop(key, None)
            self._writers.pop(key, None)
            self._reserved -= size
            self._entries[key] = size
            self._used += size
            self.counters["downloads"] += 1
            self.counters["bytes_downloaded"] += size
            if pin:
                self._pins[key] += 1
            self._condition.notify_all()
        return final

    def _make_room(
        self, size: int, evictable: Callable[[str], bool] | None, prefer: Callable[[str], bool] | None
    ) -> str | None:
        """Evict until ``size`` more bytes fit in the budget and on the disk, if enough unpinned (and
        evictable) entries exist. None when they fit; else which is short, ``"budget"`` or ``"disk"``,
        and nothing is evicted."""
        free = self.max_bytes - self._used - self._reserved
        disk = self._disk_room()
        room, block = disk if disk is not None else (0, 1)
        needed = _on_disk(size, block)

        def fits() -> bool:
            return size <= free and (disk is None or needed <= room)

        if fits():
            return None
        candidates = [key for key in self._entries if not self._pins[key] and (evictable is None or evictable(key))]
        if prefer is not None:
            candidates.sort(key=lambda key: not prefer(key))  # stable: LRU order within each group
        if sum(self._entries[key] for key in candidates) < size - free:
            return "budget"
        if disk is not None and sum(_on_disk(self._entries[key], block) for key in candidates) < needed - room:
            return "disk"
        for key in candidates:
            if fits():
                break
            if size <= free and not self._warned_disk:  # the disk, not the budget, makes this eviction
                self._warned_disk = True
                logger.warning(
                    "the disk under the cache %s has room for fewer shards than cache_bytes=%s allows; shards are "
                    "evicted to fit it (pass a smaller cache_bytes= or another cache_dir= to silence this)",
                    self.directory,
                    f"{self.max_bytes:,}",
                )
            free += self._entries[key]
            room += _on_disk(self._entries[key], block)
            self._remove(key)
        return None

    def _disk_room(self) -> tuple[int, int] | None:
        """(bytes the cache's filesystem can still take, its block size), less what the downloads in
        progress will still write; None where the filesystem does not say."""
        disk = _free_space(self.directory)
        if disk is None:
            return None
        free, block = disk
        pending = 0
        for key, reserved in self._in_flight.items():
            writer = self._writers.get(key)
            pending += max(0, _on_disk(reserved, block) - (writer.size if writer is not None else 0))
        return free - pending, block

    def _room_after_waiting(self, size: int) -> bool:
        """Whether the disk could take ``size`` once every pinned entry is released and every download in
        progress has finished (so that waiting for them can help)."""
        disk = self._disk_room()
        if disk is None:
            return True
        room, block = disk
        reclaimable = sum(_on_disk(entry, block) for entry in self._entries.values())
        reclaimable += sum(_on_disk(reserved, block) for reserved in self._in_flight.values())
        return _on_disk(size, block) <= room + reclaimable

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

    def _no_room(self, key: str, size: int, what: str | None) -> CacheWriteError:
        """The disk cannot take ``key``, found before writing a byte of it."""
        disk = self._disk_room()
        free = max(0, disk[0]) if disk is not None else 0
        in_use = sum(self._entries[key] for key in self._pins if key in self._entries) + self._reserved
        return CacheWriteError(
            f"no room for {what or key} ({size:,} bytes) in the cache {self.directory}: its disk has only "
            f"{free:,} bytes free (the cache holds {self._used + self._reserved:,} bytes of shards, {in_use:,} of "
            f"them in use); {self._remedy(errno.ENOSPC)}",
            directory=self.directory,
            needed=size,
            errno=errno.ENOSPC,
        )

    def _write_failed(self, error: OSError, key: str, size: int, what: str | None) -> CacheWriteError:
        """A local write of ``key`` that failed with ``error``, as one sentence saying what to do."""
        disk = self._disk_room() if error.errno == errno.ENOSPC else None
        return _write_failed(error, self.directory, self.max_bytes, disk[0] if disk else None, key, size, what)

    def _remedy(self, number: int) -> str:
        return _remedy(number, self.directory, self.max_bytes)


def fetch_uncached(
    directory: Path,
    key: str,
    size: int,
    checksum: str,
    download: Callable[[BinaryIO], object],
    retry: Retry,
    max_bytes: int,
    what: str | None = None,
) -> Path:
    """Download ``key`` for a process that reads a cache it does not own, never changing that cache.

    The bytes go to a temporary file of this process and thread in ``directory``, retried and checked
    exactly as an entry's (size, then checksum); the path of the verified file is returned, and the
    caller maps it and deletes it at once, so it is never an entry and never counts against the owner's
    budget (its blocks are freed when the mapping goes). A disk without room for it, or a write that
    fails, is a :class:`CacheWriteError` (``max_bytes``, the owner's budget, is named in its advice), and
    nothing is left behind.
    """
    directory.mkdir(parents=True, exist_ok=True)
    disk = _free_space(directory)
    if disk is not None and _on_disk(size, disk[1]) > disk[0]:
        raise CacheWriteError(
            f"no room for {what or key} ({size:,} bytes) in the cache {directory}: its disk has only "
            f"{max(0, disk[0]):,} bytes free; {_remedy(errno.ENOSPC, directory, max_bytes)}",
            directory=directory,
            needed=size,
            errno=errno.ENOSPC,
        )
    temporary = directory / f".{key}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        try:
            retry.call(lambda: _download_once(key, temporary, size, checksum, download, None), what or key)
        except _LocalWriteFailed as failed:
            free = _free_space(directory) if failed.error.errno == errno.ENOSPC else None
            raise _write_failed(
                failed.error, directory, max_bytes, free[0] if free else None, key, size, what
            ) from failed.error
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return temporary


def _download_once(
    key: str,
    temporary: Path,
    size: int,
    checksum: str,
    download: Callable[[BinaryIO], object],
    writers: dict[str, _HashingWriter] | None,
) -> None:
    """One attempt: ``download`` into a fresh ``temporary``, checked, fsynced. An OSError of the local file
    is raised as :class:`_LocalWriteFailed`, so that the retry policy never takes it for the network's.
    ``writers[key]`` (a cache's) gets the attempt's writer, whose size tells the disk check what this
    download still needs."""
    try:
        stream = open(temporary, "wb", buffering=0)  # noqa: SIM115 - closed below, errors told apart
    except OSError as error:
        raise _LocalWriteFailed(error) from error
    with stream:  # closes it on an error (a no-op after the close below)
        writer = _HashingWriter(stream)  # type: ignore[arg-type]
        if writers is not None:
            writers[key] = writer
        download(writer)  # type: ignore[arg-type]
        if writer.size != size:
            raise DownloadMismatch(
                f"{key} arrived with {writer.size:,} bytes, not the {size:,} the manifest lists",
                short=writer.size < size,
            )
        if writer.digest.hexdigest() != checksum:
            raise DownloadMismatch(f"{key} does not match its checksum in the manifest", short=False)
        try:
            os.fsync(stream.fileno())
            stream.close()  # here, not on leaving the block: some filesystems report write errors on close
        except OSError as error:
            raise _LocalWriteFailed(error) from error


def _free_space(directory: Path) -> tuple[int, int] | None:
    """(bytes the filesystem of ``directory`` can still take, its block size); None where it does not say."""
    try:
        usage = os.statvfs(directory)
    except OSError:
        return None
    block = usage.f_frsize or usage.f_bsize or 1
    # Root may use the blocks reserved for it; anyone else only the available ones.
    return (usage.f_bfree if os.geteuid() == 0 else usage.f_bavail) * block, block


def _write_failed(
    error: OSError, directory: Path, max_bytes: int, free: int | None, key: str, size: int, what: str | None
) -> CacheWriteError:
    """A local write of ``key`` into ``directory`` that failed with ``error``, as one sentence saying what to do
    (``free``: the bytes the disk had, when it is full)."""
    number = error.errno or 0
    if number == errno.ENOSPC:
        why = "its disk is full" + (f" ({max(0, free):,} bytes free)" if free is not None else "")
    elif number == errno.EDQUOT:
        why = "your disk quota there is used up"
    elif number == errno.EROFS:
        why = "its filesystem is read-only"
    elif number in (errno.EACCES, errno.EPERM):
        why = "permission denied"
    else:
        why = f"{error.strerror or error} (errno {errno.errorcode.get(number, number)})"
    return CacheWriteError(
        f"writing {what or key} ({size:,} bytes) into the cache {directory} failed: {why}; "
        f"{_remedy(number, directory, max_bytes)}",
        directory=directory,
        needed=size,
        errno=number,
    )


def _remedy(number: int, directory: Path, max_bytes: int) -> str:
    elsewhere = (
        f"a cache_dir= on a disk with room for a few shards, and a cache_bytes= that disk can hold (now {max_bytes:,})"
    )
    if number == errno.ENOSPC:
        return f"free space on that disk, or pass {elsewhere}"
    if number == errno.EDQUOT:
        return f"free space within your quota, or pass {elsewhere}"
    if number in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"pass a cache_dir= you can write to (now {directory.parent})"
    return f"check that disk, or pass {elsewhere}"


def _live_temporary(name: str) -> bool:
    """Whether ``name`` is a download temporary of another process that still runs."""
    match = _TEMPORARY.fullmatch(name)
    return match is not None and int(match.group("pid")) != os.getpid() and _process_runs(int(match.group("pid")))


def sweep_stale_temporaries(root: str | os.PathLike[str], skip: str | None = None) -> list[Path]:
    """Remove the download temporaries that killed processes left in the cache directories under ``root``.

    A directory counts only if it is named and locked like a remote dataset's cache (a 16-digit hex name,
    a ``.lock`` file) and no open dataset holds that lock; a temporary only if it is named like stoke's
    (``.<xxh3>-<file>.tmp-<pid>-<thread>``) and its process no longer runs. ``skip`` names a directory to
    leave alone (the caller's own, which :meth:`ShardCache.adopt` cleans). Returns what was removed.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "944ee3436a874647").mkdir(); (root / "944ee3436a874647" / ".lock").touch()
        >>> killed = root / "944ee3436a874647" / ".de3a8890c38dc1e5-shard-000000.stk.tmp-999999999-1"
        >>> killed.write_bytes(b"half a shard")
        12
        >>> [path.name for path in sweep_stale_temporaries(root)]
        ['.de3a8890c38dc1e5-shard-000000.stk.tmp-999999999-1']
    """
    removed: list[Path] = []
    try:
        directories = [
            entry
            for entry in os.scandir(root)
            if entry.name != skip and _CACHE_DIRECTORY.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
        ]
    except OSError:
        return removed
    for directory in directories:
        try:
            if not os.path.isfile(os.path.join(directory.path, LOCK_NAME)):
                continue
            stale = [
                entry
                for entry in os.scandir(directory.path)
                if (match := _TEMPORARY.fullmatch(entry.name)) is not None
                and entry.is_file(follow_symlinks=False)
                and not _process_runs(int(match.group("pid")))
            ]
            if not stale:
                continue
            # Only while holding its lock, briefly: a run that opens it meanwhile waits (LOCK_PATIENCE_SECONDS).
            with open(os.path.join(directory.path, LOCK_NAME), "rb") as lock:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # an open dataset holds it: its temporaries may be downloads in progress
                for entry in stale:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _process_runs(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    except (OverflowError, ValueError):
        return False  # not a number a process can have
    return True


def _on_disk(size: int, block: int) -> int:
    """The bytes a file of ``size`` takes on a filesystem of ``block``-byte blocks, with a block to spare."""
    return -(-size // block) * block + block


def _lock_directory(directory: Path) -> BinaryIO:
    stream = open(directory / LOCK_NAME, "ab")  # noqa: SIM115 - held for the cache's lifetime
    deadline = time.monotonic() + LOCK_PATIENCE_SECONDS
    while True:
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return stream
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            stream.close()
            raise ConfigError(
                f"the cache directory {directory} is in use by another open dataset or process; close that one, "
                f"or give each its own cache_dir="
            ) from None
