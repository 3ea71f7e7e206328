"""A small disk for the cache tests, without mounting one: a filesystem of ``capacity`` bytes that holds
whatever lies under ``root``.

``os.statvfs`` of a path under ``root`` reports the space its files leave (in 4 KiB blocks, as a real
filesystem counts them), and a file that ``stoke.storage.cache`` opens for writing there fails the way the
kernel's do when the disk fills: an unbuffered write writes what fits and returns the short count, the
next one raises ``OSError(ENOSPC)``; a buffered one writes what fits and raises. ``fail_with=(errno,
after)`` makes every download temporary (``.tmp-`` in its name) fail with that error after ``after`` bytes
however much is free (a quota: ``EDQUOT``; ``after=0`` with ``EROFS`` fails at open, as a filesystem
remounted read-only does). Something else that fills the disk is a plain file under ``root`` (a "ballast").

``install()`` patches and returns the function that undoes it (for a subprocess); tests use
``monkeypatch`` through ``patch(monkeypatch)``.
"""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path
from typing import Any

BLOCK = 4096


class SmallDisk:
    def __init__(self, root: Path, capacity: int, fail_with: tuple[int, int] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self.fail_with = fail_with
        self._statvfs = os.statvfs

    def _inside(self, path: Any) -> bool:
        try:
            return Path(os.path.abspath(os.fspath(path))).is_relative_to(self.root)
        except TypeError:  # a file descriptor
            return False

    def sizes(self) -> list[int]:
        """The size of every file under ``root`` (one removed meanwhile, by another thread, counts 0)."""
        sizes = []
        for folder, _, files in os.walk(self.root):
            for name in files:
                try:
                    sizes.append(os.lstat(os.path.join(folder, name)).st_size)
                except FileNotFoundError:
                    sizes.append(0)
        return sizes

    def used(self) -> int:
        """Bytes of the files under ``root``, each rounded up to whole blocks."""
        return sum(-(-size // BLOCK) * BLOCK for size in self.sizes())

    def free(self) -> int:
        return max(0, self.capacity - self.used())

    def statvfs(self, path: Any) -> os.statvfs_result:
        if not self._inside(path):
            return self._statvfs(path)
        blocks, free = self.capacity // BLOCK, self.free() // BLOCK
        return os.statvfs_result((BLOCK, BLOCK, blocks, free, free, 10**6, 10**6, 10**6, 0, 255))

    def open(self, file: Any, mode: str = "r", buffering: int = -1, **options: Any) -> Any:
        if not self._inside(file) or not any(flag in mode for flag in "wax+"):
            return builtins.open(file, mode, buffering, **options)
        faulty = self.fail_with is not None and ".tmp-" in os.path.basename(os.fspath(file))
        if faulty and self.fail_with == (errno.EROFS, 0):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(file))
        return _File(self, builtins.open(file, mode, buffering=0), raw=buffering == 0, faulty=faulty)

    def install(self) -> Any:
        import stoke.storage.cache as cache

        os.statvfs = self.statvfs
        cache.open = self.open  # type: ignore[attr-defined]  # shadows the builtin in that module only

        def undo() -> None:
            os.statvfs = self._statvfs
            del cache.open  # type: ignore[attr-defined]

        return undo

    def patch(self, monkeypatch: Any) -> SmallDisk:
        monkeypatch.setattr(os, "statvfs", self.statvfs)
        monkeypatch.setattr("stoke.storage.cache.open", self.open, raising=False)
        return self


class _File:
    """A real file whose writes stop where the small disk is full (or where ``fail_with`` says)."""

    def __init__(self, disk: SmallDisk, stream: Any, raw: bool, faulty: bool) -> None:
        self.disk, self.stream, self.raw, self.faulty = disk, stream, raw, faulty
        self.name = stream.name
        self.written = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        number, allowed = errno.ENOSPC, self.disk.capacity - sum(self.disk.sizes())
        if self.faulty and self.disk.fail_with is not None:
            number, allowed = self.disk.fail_with[0], self.disk.fail_with[1] - self.written
        allowed = max(0, allowed)
        if len(view) <= allowed:
            self.written += self.stream.write(view)
            return len(view)
        if allowed and self.raw:  # the kernel writes what fits and says how much; the next write fails
            self.written += self.stream.write(view[:allowed])
            return allowed
        if allowed:
            self.written += self.stream.write(view[:allowed])
        raise OSError(number, os.strerror(number), self.name)

    def fileno(self) -> int:
        return self.stream.fileno()

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> _File:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
