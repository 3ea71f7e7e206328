"""Where shards live and how a shard becomes readable: the shard stores a :class:`~stoke.read.Dataset` reads through.

``store.py`` defines the protocol (:class:`ShardStore`); ``local.py`` is a dataset directory (shards mapped
where they lie) and ``remote_store.py`` a dataset at a URL, whose shards come through a bounded local cache:
``remote.py`` reads its files through fsspec, ``retry.py`` retries transient errors with backoff,
``cache.py`` keeps verified shard copies within a byte budget (LRU, pinned while read) and ``prefetch.py``
fetches them ahead in the epoch's order. ``stoke.open`` picks the store; nothing here imports ``stoke.read``.

Not for: the byte layout (``stoke.format``), decoding samples (``stoke.read``) or the order of samples
(``stoke.order``).

Example:
    >>> from stoke.storage import is_remote_url
    >>> is_remote_url("gs://bucket/ds")
    True
"""

from __future__ import annotations

from stoke.storage.cache import CacheWriteError, ShardCache
from stoke.storage.local import LocalStore
from stoke.storage.remote import RemoteFiles, is_remote_url
from stoke.storage.remote_store import RemoteStore
from stoke.storage.retry import DownloadMismatch, RemoteError, Retry
from stoke.storage.store import ShardStore

__all__ = [
    "CacheWriteError",
    "DownloadMismatch",
    "LocalStore",
    "RemoteError",
    "RemoteFiles",
    "RemoteStore",
    "Retry",
    "ShardCache",
    "ShardStore",
    "is_remote_url",
]
