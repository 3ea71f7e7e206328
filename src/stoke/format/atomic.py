"""Atomic, durable file replacement: readers see the old file or the whole new one, never a part.

Every file stoke writes goes through here: the manifest, splits and their index files, attachments, pack
state, shards, checkpoints and the remote cache's shards. Each is written to a temporary file beside its
target (``.NAME.tmp-PID``, so an interrupted write is recognisable and removable), fsynced, renamed over
the target, and the directory is fsynced so that the rename survives a crash. A write that fails (an
exception, a full disk) removes its temporary file and leaves the old file as it was.

* :func:`write_bytes_atomically`, :func:`write_text_atomically` and :func:`write_json_atomically`: a
  whole file from memory.
* :class:`AtomicFile`: a file written in pieces (a shard, a checkpoint through ``torch.save``), as a
  context manager (committed when the block ends, discarded when it raises) or by hand
  (:meth:`AtomicFile.commit` / :meth:`AtomicFile.abort`) when it stays open across calls.
* :func:`publish`: the rename and the directory's fsync alone, for a caller that writes and checks its
  temporary file its own way (the remote cache, which retries downloads into it).

Not for: files stoke does not own, or appending to a file in place.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> write_text_atomically(path, "hello\\n"); path.read_text()
    'hello\\n'
    >>> with AtomicFile(path) as stream:
    ...     _ = stream.write(b"hello ")
    ...     _ = stream.write(b"again\\n")
    >>> path.read_text(), sorted(p.name for p in path.parent.iterdir())
    ('hello again\\n', ['note.txt'])
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO


def temporary_name(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: ``.NAME.tmp-PID`` beside it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


class AtomicFile:
    """A binary file written under a temporary name and renamed over ``path`` when whole.

    ``stream`` is the open temporary file. :meth:`commit` flushes and fsyncs it, renames it over ``path``
    and fsyncs the directory; :meth:`abort` closes and removes it. As a context manager it commits when
    the block ends and aborts when the block raises (the exception goes on). ``path``'s directory must
    exist.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.temporary = temporary_name(self.path)
        self.stream: BinaryIO = open(self.temporary, "wb")  # noqa: SIM115 - closed by commit() or abort()

    def commit(self) -> Path:
        """Make the written bytes the file at ``path``, durably; the temporary file is gone after."""
        try:
            self.stream.flush()
            os.fsync(self.stream.fileno())
            self.stream.close()  # here: some filesystems report write errors only on close
            publish(self.temporary, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Discard what was written: ``path`` stays as it was (absent, or the old file)."""
        with contextlib.suppress(OSError):
            self.stream.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)

    def __enter__(self) -> BinaryIO:
        return self.stream

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


def write_bytes_atomically(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    with AtomicFile(path) as stream:
        stream.write(data)


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically and durably."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_json_atomically(path: str | os.PathLike[str], document: Any) -> None:
    """Replace ``path`` with ``document`` as JSON (UTF-8, strict: no NaN) atomically and durably."""
    write_text_atomically(path, json.dumps(document, indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def publish(temporary: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Rename the finished, fsynced file ``temporary`` over ``path`` and fsync the directory.

    Raises the rename's OSError (the temporary file is then the caller's to remove).
    """
    os.replace(temporary, path)
    fsync_directory(Path(path).parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
