"""The shard store: where a dataset's shards and other files live, and how a shard becomes readable.

A :class:`~stoke.read.Dataset` reads through one store and never asks which kind it has. Two kinds exist:
:class:`~stoke.storage.local.LocalStore` (a directory: each shard is memory-mapped where it lies, after a
check that its name resolves inside the directory) and :class:`~stoke.storage.remote_store.RemoteStore` (a
URL: each shard is fetched into a bounded, verified local cache, mapped there and pinned while it is read).
A new kind (a store over a tar file, say) implements :class:`ShardStore` and nothing else changes.

This module also holds what both kinds share: the counts rule (:data:`MAX_UNCONFIRMED_SAMPLES`), the
mapping of one shard (:func:`map_shard`) and locks that a forked child gets fresh (:func:`fork_safe_lock`).

Not for: the byte layout of a shard (``stoke.format.shard``), or decoding samples (``stoke.read``).

Example:
    >>> import numpy as np, stoke, tempfile
    >>> from stoke.storage import LocalStore
    >>> out = tempfile.mkdtemp() + "/ds"
    >>> _ = stoke.pack({"y": np.arange(5)}, out, shard_items=2, progress=False)
    >>> store = LocalStore(out)
    >>> [shard.num_samples for shard in store.manifest.shards]
    [2, 2, 1]
    >>> reader = store.open_shard(1)  # mapped now; a remote store fetches it first
    >>> reader.num_samples, len(reader.fields_checked(0))  # sample 0 of shard 1 (dataset index 2): one field
    (2, 1)
    >>> store.release(1, sample_read=True)  # one release per open_shard
    >>> store.close()
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from stoke.errors import ConfigError, FormatError
from stoke.format.checksum import format_digest, sample_checksum
from stoke.format.manifest import Manifest
from stoke.format.shard import ShardReader, ShardTable
from stoke.format.splits import Splits
from stoke.format.versions import VersionEntry, check_is_version, unknown_version

# Samples in shards whose files are missing or of another size than listed are damage (verify lists them),
# up to as many as the files confirm, plus this many: beyond that the counts are not the files' and the
# dataset is refused before anything is allocated from them (docs/format.md §10, step 4).
MAX_UNCONFIRMED_SAMPLES = 1 << 20


@runtime_checkable
class ShardStore(Protocol):
    """Where the shards and the other files of one dataset live, and how a shard becomes readable.

    The :class:`~stoke.read.Dataset` over a store does everything else (locating samples, checksums,
    decoding, columns, attachments, splits, views), the same way for every kind of store.

    Attributes:
        root: the dataset as its user named it: the directory (a ``Path``) of a local store, the URL (a
            ``str``) of a remote one.
        location: ``str(root)``, as messages name the dataset.
        manifest: the validated manifest of the version the store was opened at (the newest, unless a
            ``version`` was asked for), read when the store was made (counts checked against the sizes it
            lists).
        versions: every published version (:class:`~stoke.format.versions.VersionEntry`), from the newest
            manifest as it was when the store was made; ``manifest.version`` says which one is open.
        fetches: whether opening a shard may download it, so that a caller reading something of every
            shard (the largest record of a field, say) would fetch the whole dataset.
        evicts: whether a released shard may be unmapped at once; a read then copies the bytes it hands
            out while it holds the shard.

    Shards: ``open_shard(number)`` returns the shard's mapped :class:`~stoke.format.shard.ShardReader`
    (fetched first if need be) and holds it until ``release(number)``: one release per open, also when
    the read failed. ``release(number, sample_read=True)`` also counts one sample read for the epoch
    announced by ``will_read``. Thread-safe.

    Pickling: a store pickles without its mappings, and the copy re-opens itself where it is used, as
    torch DataLoader workers (spawned) need: a local store re-maps its files, a remote store re-attaches
    to its cache directory (:class:`~stoke.storage.remote_store.RemoteStore` says what a copy may
    download). A forked child (process workers, DataLoader's fork workers) gets fresh locks
    (:func:`fork_safe_lock`); a local store keeps the mappings it inherited, a remote one re-attaches as
    a copy does, never touching its parent's cache, pins or prefetch thread.
    """

    root: Path | str
    location: str
    manifest: Manifest
    versions: list[VersionEntry]
    fetches: bool
    evicts: bool

    @property
    def packing_id(self) -> str:
        """The xxh3 digest of the manifest's bytes: what stored splits are tied to (a re-pack changes it)."""
        ...

    def where(self, name: str) -> str:
        """The path or URL of the dataset's file ``name``, for messages."""
        ...

    def confirm_counts(self) -> None:
        """Raise :class:`~stoke.errors.FormatError` if the manifest's counts are not the files' (checked
        before anything is allocated from them): a local store stats each shard, a remote one relies on
        the listed sizes, which every fetch checks."""
        ...

    def shard_table(self, number: int) -> ShardTable | None:
        """Shard ``number``'s offsets table alone, checked (``ShardTable.checked``), where reading it costs
        much less than opening the shard (a remote shard not in the cache: two range reads instead of a
        download); None where the caller should open the shard instead."""
        ...

    def open_shard(self, number: int) -> ShardReader:
        """Shard ``number`` mapped and held until :meth:`release`; FormatError or OSError when it cannot
        be read (missing, outside the dataset, of another size, damaged remote copy)."""
        ...

    def release(self, number: int, sample_read: bool = False) -> None:
        """Let go of one :meth:`open_shard` of shard ``number``; ``sample_read``: a sample was read."""
        ...

    def mapped_shard(self, number: int) -> ShardReader | None:
        """Shard ``number``'s reader if it is mapped now (never fetches or maps; for checks after a read)."""
        ...

    def read_file(self, name: str, size: int) -> bytes:
        """The whole of the dataset's file ``name`` (an attachment), which the manifest lists with ``size``
        bytes; FormatError naming it when it is missing, outside the dataset or of another size. The
        caller checks its checksum."""
        ...

    def read_version(self, number: int) -> Manifest:
        """The validated manifest of version ``number`` (the newest's, or ``versions/manifest-v<N>.json``
        checked against the checksum the newest lists); FormatError when it is missing or does not check out,
        ConfigError for a version the dataset does not have."""
        ...

    def has_splits(self) -> bool:
        """Whether the dataset holds stored splits (``splits.json``), not whether they are valid."""
        ...

    def read_splits(self) -> Splits:
        """The stored splits, validated against the dataset's size and its versions' packing ids (splits made
        on an earlier or later version of the same dataset apply: docs/growing.md); FormatError when there
        are none or they do not check out."""
        ...

    def will_read(self, indices: np.ndarray) -> None:
        """The dataset indices the coming epoch reads, in order (a remote store fetches shards ahead)."""
        ...

    def close(self) -> None:
        """Unmap every shard and let go of what the store holds (a cache's lock); it re-opens when used."""
        ...


def map_shard(path: str | os.PathLike[str], manifest: Manifest, number: int) -> ShardReader:
    """The reader of shard ``number`` of ``manifest``, mapping the file at ``path`` (checked there: size,
    derivable layout); what both stores do once they know where a shard's bytes are."""
    entry = manifest.shards[number]
    return ShardReader(
        path, len(manifest.fields), entry.num_samples, entry.file_size, manifest.format_version, entry.seed
    )


def mapped_once(
    readers: list[ShardReader | None],
    lock: threading.Lock,
    number: int,
    path: str | os.PathLike[str],
    manifest: Manifest,
) -> ShardReader:
    """Shard ``number``'s reader in ``readers``, mapping ``path`` the first time it is asked for: under
    ``lock``, once, whichever thread asks first."""
    reader = readers[number]
    if reader is None:
        with lock:
            reader = readers[number]
            if reader is None:  # unless another thread mapped it meanwhile
                reader = readers[number] = map_shard(path, manifest, number)
    return reader


def older_version(newest: Manifest, version: int, location: str, read: Callable[[str], bytes]) -> tuple[Manifest, str]:
    """The manifest of ``version`` of the dataset whose newest manifest is ``newest``, and its packing id.

    ``read(name)`` returns the bytes of the dataset's file ``name`` (a FormatError when it is missing). They
    must have the checksum the newest manifest lists for them (checked before they are parsed), be that
    version, and list the first shards of the newest version, unchanged. An unknown version is a
    :class:`~stoke.errors.ConfigError` that says which versions there are.
    """
    check_is_version(version)
    history = newest.history
    if version > newest.version:
        raise ConfigError(unknown_version(location, version, history))
    entry = history[version - 1]
    raw = read(entry.manifest_file)
    digest = format_digest(sample_checksum(raw))
    where = f"{location}/{entry.manifest_file}"
    if digest != entry.manifest_checksum:
        raise FormatError(
            f"{where} does not match the checksum version {newest.version} lists for it: it was changed or damaged "
            f"after version {version} was superseded; restore it from a copy (the newest version still reads)"
        )
    manifest = Manifest.from_bytes(raw, where)
    if (
        manifest.version != version
        or manifest.num_samples != entry.num_samples
        or manifest.shards != newest.shards[: entry.num_shards]
        or len(manifest.shards) != entry.num_shards
    ):
        raise FormatError(
            f"{where} is not version {version} of this dataset (its shards are not the first {entry.num_shards:,} "
            f"of version {newest.version}); restore it from a copy (the newest version still reads)"
        )
    return manifest, digest


def lineage(store: ShardStore) -> list[tuple[str, int]]:
    """(packing id, samples) of each version from 1 to the one ``store`` has open: what stored splits made
    on any of them are checked against (``stoke.format.splits.read_splits``)."""
    opened = store.manifest.version
    earlier = [(entry.manifest_checksum or "", entry.num_samples) for entry in store.versions[: opened - 1]]
    return [*earlier, (store.packing_id, store.manifest.num_samples)]


def shard_starts(manifest: Manifest) -> np.ndarray:
    """The dataset index of each shard's first sample, and the number of samples last (int64)."""
    counts = np.fromiter((shard.num_samples for shard in manifest.shards), np.int64, len(manifest.shards))
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def close_readers(readers: Sequence[ShardReader | None]) -> None:
    """Unmap these readers (views still held elsewhere keep a mapping alive until they are dropped)."""
    for reader in readers:
        if reader is not None:
            reader.close()


# A forked child (process workers, a pack pool) gets a copy of the parent's memory but only the forking
# thread: a lock another thread held at that moment (opening a shard for a thread Loader on the same
# dataset, say) would stay held in the child forever. Each child starts with fresh locks instead.
_LOCK_OWNERS: weakref.WeakSet[Any] = weakref.WeakSet()


def fork_safe_lock(owner: Any) -> threading.Lock:
    """A new lock for ``owner._lock``; in a forked child, ``owner._lock`` is replaced by a fresh one."""
    _LOCK_OWNERS.add(owner)
    return threading.Lock()


def _fresh_locks_in_child() -> None:
    for owner in list(_LOCK_OWNERS):
        owner._lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_locks_in_child)
