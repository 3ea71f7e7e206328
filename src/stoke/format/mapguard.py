"""A shard truncated while it is memory-mapped becomes an error naming it, never a process killed by SIGBUS.

When a mapped file shrinks (``rsync --inplace`` or ``cp`` over it, a change on an NFS server), the kernel
sends SIGBUS to whatever touches a page past the new end, and the touching code is a decoder reading the
mapping directly (libjpeg-turbo, OpenCV, numpy, xxhash, stoke's resize kernel): Python cannot turn that
signal into an exception. Two ways to avoid it, chosen once per process:

* **the guard** (``_mapguard.c``, compiled at install where a C compiler is present): each mapping is
  registered; a SIGBUS at an address inside one makes the handler map a zero page there, mark the
  mapping and return, so the decoder finishes on zeros. Readers call :meth:`MappingGuard.check` before
  a sample is read (later samples of the shard fail fast) and after it has been used (decoded into its
  batch row): a marked mapping raises :class:`~stoke.errors.FormatError` naming the shard, so the
  zeros never reach a caller. Any other SIGBUS goes to the handler that was there before (faulthandler's,
  or the default action): real crashes still crash.
* **the fallback** (no extension, ``STOKE_MAPGUARD=off``, or the table of 65,536 mappings full):
  :meth:`MappingGuard.check` compares the file's size (``fstat`` of the mapping's descriptor) with the
  manifest's before each sample is read. That catches every truncation that happened before the read,
  but not one that races the read itself: a shard cut while a decoder is inside it still ends the
  process.

A mapping of a file that was replaced by rename keeps the old inode: no fault, the old bytes. A file
changed in place without shrinking is the checksums' business (``verify="always"`` checks every read).

Not for: remote downloads (``stoke.storage`` verifies whole shards) or any memory stoke did not map.

Example:
    >>> import mmap, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "shard.stk")
    >>> with open(path, "wb") as stream:
    ...     _ = stream.write(bytes(8192))
    >>> with open(path, "rb") as stream:
    ...     mapping = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    >>> guard = MappingGuard(mapping, "shard.stk", 8192)
    >>> guard.check()  # intact: nothing happens
    >>> os.truncate(path, 4096)
    >>> try:
    ...     guard.check(thorough=True)  # the guard's mark is set by a fault; thorough also compares sizes
    ... except FormatError as error:
    ...     print(str(error).split(", so")[0])
    shard shard.stk was truncated to 4,096 bytes while in use (the manifest says 8,192)
    >>> guard.release(); mapping.close()
"""

from __future__ import annotations

import faulthandler
import mmap
import os
import weakref
from collections.abc import Callable

from stoke.errors import FormatError

ENV = "STOKE_MAPGUARD"

try:
    from stoke.format import _mapguard
except ImportError:  # not compiled: every shard is checked by its size before each read
    _mapguard = None
if os.environ.get(ENV, "").strip().lower() in ("off", "0", "no", "false"):
    _mapguard = None

_MARKS = _mapguard.marks if _mapguard is not None else None
_installed = False  # whether this process (or the one it was forked from) has installed the handler


def available() -> bool:
    """Whether the SIGBUS guard is compiled and enabled in this process (else the size check runs)."""
    return _mapguard is not None


def pages_lost() -> bool:
    """Whether any guarded mapping of this process has lost pages (cheap: one flag); False without the guard.

    Readers call it after each sample is used, and look at the sample's own shard only when it is True.
    """
    return _MARKS is not None and _MARKS[0] != 0


def _ensure_handler() -> bool:
    """Put the handler first in line for SIGBUS, unless that could make a loop of handlers; whether it is."""
    global _installed
    state = _mapguard.handler_state()
    if state == "stoke":
        return True
    if state == "other" and _installed and faulthandler.is_enabled():
        # A handler replaced ours after we installed it. faulthandler enabled since then chains back to
        # ours: installing ours over it again would make each hand the signal to the other. Leave it be
        # (mappings made from now on get the size check instead).
        return False
    _mapguard.install()  # over the default action, faulthandler enabled before us, or a handler that ends
    _installed = True
    return True


class MappingGuard:
    """Watches one read-only mapping of a shard; :meth:`check` raises FormatError naming it once it shrank.

    ``release`` stops watching (call it once the mapping is closed); a mapping still held by views when
    it is closed stays watched until it is freed.
    """

    __slots__ = ("_file_size", "_mapping", "_name", "_slot", "release")

    def __init__(self, mapping: mmap.mmap, name: str, file_size: int) -> None:
        self._mapping = mapping
        self._name = name
        self._file_size = file_size
        self._slot = _mapguard.register(mapping) if _mapguard is not None and _ensure_handler() else 0
        self.release: Callable[[], object] = (
            weakref.finalize(mapping, _mapguard.unregister, self._slot) if self._slot else _nothing
        )

    @property
    def guarded(self) -> bool:
        """Whether a SIGBUS in this mapping is caught (else only the size check protects it)."""
        return self._slot != 0

    def check(self, thorough: bool = False) -> None:
        """Raise FormatError naming the shard if its mapping lost pages (or, without the guard or when
        ``thorough``, if the file is now shorter than the manifest says)."""
        if self._slot:
            if _MARKS[self._slot] or (thorough and self._size() < self._file_size):
                raise self._error()
        elif self._size() < self._file_size:
            raise self._error()

    def _size(self) -> int:
        try:
            return self._mapping.size()  # fstat of the mapping's own descriptor: the file as it is now
        except (OSError, ValueError):  # a closed mapping, a file gone stale on NFS
            return -1

    def _error(self) -> FormatError:
        size = self._size()
        if 0 <= size < self._file_size:
            what = f"was truncated to {size:,} bytes while in use (the manifest says {self._file_size:,})"
        else:
            what = (
                "lost pages while in use (it was truncated and rewritten in place, or the storage could not read them)"
            )
        return FormatError(
            f"shard {self._name} {what}, so its samples cannot be read; restore the file and open the dataset again"
        )


def _nothing() -> None:
    return None
