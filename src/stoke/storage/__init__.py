"""Where shards live: local files (mapped by ``stoke.read``) or a remote URL through fsspec and a bounded cache.

``remote.py`` reads a dataset's files from a URL, ``retry.py`` retries transient errors with backoff,
``cache.py`` keeps verified shard copies within a byte budget (LRU, pinned while read), ``prefetch.py``
fetches them ahead in the epoch's order, and ``dataset.py`` puts these behind the usual Dataset.

Not for: the byte layout (``stoke.format``) or the order of samples (``stoke.order``).

Example:
    >>> from stoke.storage import is_remote_url
    >>> is_remote_url("gs://bucket/ds")
    True
"""

from __future__ import annotations

from typing import Any

from stoke.storage.cache import CacheWriteError, ShardCache
from stoke.storage.remote import RemoteStore, is_remote_url
from stoke.storage.retry import DownloadMismatch, RemoteError, Retry


def __getattr__(name: str) -> Any:  # dataset.py imports stoke.read, which imports this package
    if name in ("open_remote", "RemoteDataset"):
        from stoke.storage import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'stoke.storage' has no attribute {name!r}")


__all__ = [
    "CacheWriteError",
    "DownloadMismatch",
    "RemoteDataset",
    "RemoteError",
    "RemoteStore",
    "Retry",
    "ShardCache",
    "is_remote_url",
    "open_remote",
]
