"""Where a remote dataset's files come from: an fsspec filesystem (``s3://``, ``gs://``, ``https://``, …).

:class:`RemoteFiles` resolves a dataset URL to a filesystem and reads the files a manifest names: small
files whole, with a size cap (the manifest, splits, attachments), and shards streamed in chunks into a
stream the cache provides. Every name is checked to be a plain file name before it is joined to the URL,
so a manifest cannot send a read outside the dataset's prefix. Reads are retried (``retry.py``). It
pickles as its URL, options and retry policy: the copy makes its own filesystem where it is used.

Not for: verifying or keeping what is read (``cache.py``), deciding what to read next (``prefetch.py``), or
how a dataset reads its shards (``remote_store.py``).

Example:
    >>> is_remote_url("s3://bucket/ds"), is_remote_url("https://host/ds"), is_remote_url("/data/ds")
    (True, True, False)
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from typing import Any, BinaryIO

from stoke.errors import ConfigError, FormatError, StokeError
from stoke.extras import require
from stoke.storage.retry import Retry

CHUNK_BYTES = 4 << 20
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
_STREAMING_PROTOCOLS = ("http", "https")
# The library behind each protocol of the remote extra (fsspec itself only says "install s3fs").
_PROTOCOL_LIBRARIES = {
    **dict.fromkeys(("s3", "s3a"), "s3fs"),
    **dict.fromkeys(("gs", "gcs"), "gcsfs"),
    **dict.fromkeys(("http", "https"), "aiohttp"),
}


def is_remote_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL with a protocol other than ``file``, to be opened through fsspec."""
    match = _URL.match(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else None
    return bool(match) and match.group(1).lower() != "file"


class RemoteFiles:
    """The files of one remote dataset directory, read through fsspec with retries."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None, retry: Retry | None = None) -> None:
        fsspec = require("fsspec", extra="remote", what=f"reading {url}")
        protocol_library = _PROTOCOL_LIBRARIES.get(url.partition("://")[0].lower())
        if protocol_library is not None:
            require(protocol_library, extra="remote", what=f"reading {url}")

        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.retry = retry or Retry()
        try:
            self.fs, path = fsspec.core.url_to_fs(self.url, **dict(storage_options or {}))
        except (ImportError, ValueError) as error:
            raise ConfigError(f"cannot open {url}: {error}; install the fsspec package for its protocol") from None
        self.path = path.rstrip("/")
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self._streaming = protocol in _STREAMING_PROTOCOLS

    def __reduce__(self) -> tuple[Any, ...]:
        # An fsspec filesystem holds sessions and event loops of the process that made it: a copy makes its own.
        return RemoteFiles, (self.url, self.storage_options, self.retry)

    def where(self, name: str) -> str:
        """The URL of file ``name`` of the dataset, for messages."""
        return f"{self.url}/{name}"

    def read_small(self, name: str, max_bytes: int, missing: StokeError | None = None, listed: bool = False) -> bytes:
        """The whole of file ``name``, refused when it is larger than ``max_bytes``.

        ``missing``: the error to raise when the file does not exist; else that is reported as a RemoteError.
        ``listed``: ``max_bytes`` is the size the manifest lists, so a larger file is said to differ from it.
        """
        path = self._path(name)

        def attempt() -> bytes:
            with self.fs.open(path, "rb", **self._open_options()) as stream:
                data = _read_up_to(stream, max_bytes + 1)
            if len(data) > max_bytes:
                if listed:
                    raise FormatError(
                        f"{self.where(name)} is more than the {max_bytes:,} bytes the manifest lists; restore it "
                        f"or re-pack"
                    )
                raise FormatError(f"{self.where(name)} is larger than {max_bytes:,} bytes; it is not a stoke file")
            return data

        try:
            return self.retry.call(attempt, self.where(name))
        except Exception as error:
            if missing is not None and _not_found(error):
                raise missing from None
            raise

    @property
    def reads_ranges(self) -> bool:
        """Whether a byte range of a file can be read alone (not over HTTP(S): servers that ignore Range
        would send the whole file, see ``_open_options``)."""
        return not self._streaming

    def read_range(self, name: str, start: int, size: int) -> bytes:
        """``size`` bytes of file ``name`` from byte ``start``, with retries; FormatError when the file
        does not hold them."""
        path = self._path(name)

        def attempt() -> bytes:
            data = self.fs.cat_file(path, start=start, end=start + size)
            if len(data) != size:
                raise FormatError(f"{self.where(name)} holds no {size:,} bytes at {start:,}; restore it or re-pack")
            return data

        return self.retry.call(attempt, self.where(name))

    def download(self, name: str, sink: BinaryIO, size: int) -> None:
        """Stream file ``name`` into ``sink`` (one attempt; the cache retries from a fresh temporary file).

        Stops after ``size + 1`` bytes, so a remote file larger than listed is noticed without reading it all.
        """
        with self.fs.open(self._path(name), "rb", **self._open_options()) as stream:
            _copy_up_to(stream, sink, size + 1)

    def _path(self, name: str) -> str:
        from stoke.format.manifest import is_safe_file_name

        parts = name.split("/")
        if not all(is_safe_file_name(part) for part in parts) or len(parts) > 2:
            raise FormatError(f"{self.url} names the file {name!r}, which is not a plain name inside the dataset")
        return f"{self.path}/{name}"

    def _open_options(self) -> dict[str, Any]:
        # Python's http.server and many CDNs ignore Range: stream plain GETs over HTTP(S); elsewhere read
        # in large sequential blocks without fsspec's read-ahead cache (the cache directory is the cache).
        return {"block_size": 0} if self._streaming else {"block_size": CHUNK_BYTES, "cache_type": "none"}


def _copy_up_to(stream: Any, sink: Any, limit: int) -> None:
    """Copy at most ``limit`` bytes of ``stream`` into ``sink``, in chunks."""
    left = limit
    while left > 0:
        chunk = stream.read(min(CHUNK_BYTES, left))
        if not chunk:
            break
        sink.write(chunk)
        left -= len(chunk)


def _read_up_to(stream: Any, limit: int) -> bytes:
    buffer = io.BytesIO()
    _copy_up_to(stream, buffer, limit)
    return buffer.getvalue()


def _not_found(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, FileNotFoundError):
            return True
        error = error.__cause__  # type: ignore[assignment]
    return False
