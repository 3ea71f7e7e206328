"""Retries with exponential backoff and jitter for remote reads, and which errors deserve one.

A transient error (a refused or reset connection, a timeout, a server error 5xx or 429, a body cut short)
is retried after ``min(max_delay, base_delay * 2**attempt)`` seconds times a random factor in [0.5, 1], so
many readers do not hammer a recovering server in step. A permanent one (the file does not exist, access
is denied, a 4xx answer) is raised at once, and so is a full or read-only local disk (``ENOSPC``,
``EDQUOT``, ``EROFS``): another attempt would meet the same disk. When every attempt failed, one
:class:`RemoteError` names what was read, from where, how many attempts were made and the last cause.

Not for: deciding what to download or where to keep it (``remote.py``, ``cache.py``).

Example:
    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise ConnectionResetError("reset by peer")
    ...     return "ok"
    >>> Retry(attempts=5, base_delay=0.0).call(flaky, "shard-000000.stk from https://example.org/ds"), len(calls)
    ('ok', 3)
"""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from stoke.errors import ConfigError, FormatError, StokeError

T = TypeVar("T")

# A local disk that cannot take more: no retry helps (the cache reports it as a CacheWriteError).
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class RemoteError(StokeError):
    """A remote read that still failed after every retry (network, server), or that cannot succeed."""


class DownloadMismatch(FormatError):  # noqa: N818 - names the condition
    """Downloaded bytes that do not match the size or checksum the manifest lists (never kept, never read)."""

    def __init__(self, message: str, *, short: bool) -> None:
        super().__init__(message)
        self.short = short  # fewer bytes than listed: a transfer cut short, worth another attempt


@dataclass(frozen=True)
class Retry:
    """How often and how patiently a remote read is tried: ``attempts`` in all, doubling delays."""

    attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 8.0

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigError(f"retry attempts must be a positive integer, got {self.attempts!r}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ConfigError("retry delays must not be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based), jittered."""
        return min(self.max_delay, self.base_delay * 2.0**attempt) * random.uniform(0.5, 1.0)

    def call(self, function: Callable[[], T], what: str) -> T:
        """``function()``, retried on transient errors; ``what`` names the read in the final error."""
        for attempt in range(self.attempts):
            try:
                return function()
            except Exception as error:
                if not is_transient(error):
                    if isinstance(error, StokeError):
                        raise
                    raise RemoteError(f"reading {what} failed: {_describe(error)}; check the URL and access") from error
                if attempt + 1 == self.attempts:
                    if isinstance(error, DownloadMismatch) and not error.short:
                        raise DownloadMismatch(
                            f"{error} ({self.attempts} downloads); the remote copy is damaged or was replaced: "
                            f"restore it or re-pack the dataset",
                            short=False,
                        ) from error
                    raise RemoteError(
                        f"reading {what} failed {self.attempts} times, the last with {_describe(error)}; check the "
                        f"network and the server, then try again (or pass a more patient retry=)"
                    ) from error
                time.sleep(self.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` may go away if the same read is tried again."""
    if isinstance(error, DownloadMismatch):
        return True  # cut short, or bytes damaged in transit; a damaged remote copy fails every attempt
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        # fsspec's HTTP filesystem reports a refused connection as FileNotFoundError raised from it
        cause = error.__cause__
        return cause is not None and not isinstance(cause, type(error)) and is_transient(cause)
    if isinstance(error, StokeError):
        return False
    if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
        return False
    status = getattr(error, "status", None)  # aiohttp.ClientResponseError
    if isinstance(status, int):
        return status >= 500 or status in (408, 429)
    code = getattr(error, "response", None)  # botocore ClientError: {"ResponseMetadata": {"HTTPStatusCode": …}}
    if isinstance(code, dict):
        http = code.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(http, int):
            return http >= 500 or http in (408, 429)
    if isinstance(error, (OSError, TimeoutError, ConnectionError, EOFError)):
        return True
    module = type(error).__module__.split(".")[0]
    return module in ("aiohttp", "botocore", "aiobotocore", "urllib3", "requests", "fsspec", "s3fs", "gcsfs")


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
