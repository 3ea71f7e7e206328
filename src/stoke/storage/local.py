"""A dataset directory on a local filesystem: each shard memory-mapped where it lies.

Making the store reads and validates ``manifest.json`` (:meth:`~stoke.format.manifest.Manifest.read`);
a path that is not a dataset is a :class:`~stoke.errors.NotADatasetError` saying what the path holds and
what to do (``stoke.sources.guess``). :meth:`LocalStore.confirm_counts` then meets each listed size with
the file's real one, one ``stat`` per shard, no shard opened. A shard is mapped the first time it is
opened, once its name is found to resolve inside the directory (a link out of it is refused,
docs/format.md §10 step 5), and stays mapped until :meth:`LocalStore.close`, so reads hand out views into
the mapping: nothing is copied.

The store pickles as its directory: the copy (in a DataLoader worker, say) maps the same files again and
shares the page cache instead of copying the data. A forked child keeps the mappings it inherited.

Not for: datasets at a URL (``remote_store.py``), or decoding samples (``stoke.read``).

Example:
    >>> import numpy as np, pickle, stoke, tempfile
    >>> out = tempfile.mkdtemp() + "/ds"
    >>> _ = stoke.pack({"y": np.arange(4)}, out, progress=False)
    >>> store = LocalStore(out)
    >>> store.confirm_counts()  # one stat per shard
    >>> copy = pickle.loads(pickle.dumps(store))
    >>> copy.open_shard(0).num_samples, copy.mapped_shard(0) is not None, store.mapped_shard(0)
    (4, True, None)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from stoke.errors import FormatError, NotADatasetError
from stoke.format.manifest import MANIFEST_NAME, Manifest
from stoke.format.shard import ShardReader, ShardTable
from stoke.format.splits import Splits, has_splits, read_splits
from stoke.format.versions import VersionEntry
from stoke.sources.guess import not_a_dataset
from stoke.storage.store import (
    MAX_UNCONFIRMED_SAMPLES,
    close_readers,
    fork_safe_lock,
    lineage,
    mapped_once,
    older_version,
)


class LocalStore:
    """The :class:`~stoke.storage.store.ShardStore` of the dataset directory ``root``, at its newest version
    or at ``version`` (``versions/manifest-v<N>.json``, checked against the newest manifest's history)."""

    fetches = False
    evicts = False  # mapped until close(): reads hand out views, zero-copy

    def __init__(self, root: str | os.PathLike[str], version: int | None = None) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        try:
            newest, packing_id = Manifest.read_file(self.root)
        except NotADatasetError:  # say what the path holds, and the command that makes or finds a dataset
            raise NotADatasetError(not_a_dataset(self.root)) from None
        self.versions: list[VersionEntry] = newest.history
        self.manifest, self._packing_id, self._newest = newest, packing_id, newest
        if version is not None and version != newest.version:
            self.manifest, self._packing_id = older_version(newest, version, self.location, self._read_version)
        self._readers: list[ShardReader | None] = [None] * len(self.manifest.shards)
        self._lock = fork_safe_lock(self)
        self._real_root: str | None = None

    def __repr__(self) -> str:
        return f"stoke.storage.LocalStore({self.location!r})"

    @property
    def packing_id(self) -> str:
        return self._packing_id  # of the bytes read at open: an append meanwhile does not change it

    def where(self, name: str) -> str:
        return str(self.root / name)

    def confirm_counts(self) -> None:
        """Refuse counts the shard files do not back, before anything is allocated from them.

        The manifest's arithmetic is checked already (each count fits its shard's listed size); here each
        listed size meets the file's real one, one ``stat`` per shard. A missing or resized shard is damage
        that ``stoke verify`` lists sample by sample, up to as many samples as the intact shards hold (plus
        :data:`~stoke.storage.store.MAX_UNCONFIRMED_SAMPLES`); more than that is a manifest that does not
        describe these files.
        """
        unconfirmed, example = 0, ""
        for entry in self.manifest.shards:
            try:
                size: int | None = os.stat(self.root / entry.file).st_size
            except OSError:
                size = None
            if size != entry.file_size:
                unconfirmed += entry.num_samples
                if not example:
                    found = "is missing" if size is None else f"is {size:,} bytes, not {entry.file_size:,}"
                    example = f"{entry.file} {found}"
        confirmed = self.manifest.num_samples - unconfirmed
        if unconfirmed > confirmed + MAX_UNCONFIRMED_SAMPLES:
            raise FormatError(
                f"{self.root / MANIFEST_NAME} lists {self.manifest.num_samples:,} samples, but {unconfirmed:,} of "
                f"them are in shards that are missing or differ in size from what it lists ({example}): the "
                f"manifest does not describe these files; restore the dataset from a copy or re-pack it"
            )

    # ---- shards ----------------------------------------------------------------------------------
    def open_shard(self, number: int) -> ShardReader:
        reader = self._readers[number]
        if reader is not None:
            return reader
        path = self._inside(self.manifest.shards[number].file)
        return mapped_once(self._readers, self._lock, number, path, self.manifest)

    def release(self, number: int, sample_read: bool = False) -> None:
        """Nothing to do: a local shard stays mapped until :meth:`close`."""

    def mapped_shard(self, number: int) -> ShardReader | None:
        return self._readers[number]

    def will_read(self, indices: np.ndarray) -> None:
        """Nothing to fetch ahead: the page cache reads ahead by itself."""

    def shard_table(self, number: int) -> ShardTable | None:
        """None: a local shard is mapped at no cost; open it."""
        return None

    # ---- other files -----------------------------------------------------------------------------
    def read_file(self, name: str, size: int) -> bytes:
        path = self._inside(name, what="attached file")
        with path.open("rb") as stream:
            actual = os.fstat(stream.fileno()).st_size
            if actual != size:
                raise FormatError(f"{path} is {actual:,} bytes but the manifest lists {size:,}; restore it or re-pack")
            return stream.read(size)

    def read_version(self, number: int) -> Manifest:
        return (
            self._newest
            if number == self._newest.version
            else older_version(self._newest, number, self.location, self._read_version)[0]
        )

    def has_splits(self) -> bool:
        return has_splits(self.root)

    def read_splits(self) -> Splits:
        return read_splits(self.root, self.manifest.num_samples, self.packing_id, lineage(self))

    # ---- life cycle ------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            readers, self._readers = self._readers, [None] * len(self._readers)
        close_readers(readers)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = [None] * len(self._readers)  # the copy maps the files again
        state["_real_root"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = fork_safe_lock(self)

    # ---- internals -------------------------------------------------------------------------------
    def _read_version(self, name: str) -> bytes:
        """The bytes of the manifest kept in ``name`` (``versions/manifest-v<N>.json``), checked to lie inside."""
        return Manifest.read_raw(self.root, name)

    def _inside(self, name: str, what: str = "shard") -> Path:
        """The resolved path of a file the manifest names; refuses any that resolves outside the dataset."""
        if self._real_root is None:
            self._real_root = os.path.realpath(self.root)
        path = self.root / name
        real = os.path.realpath(path)
        if os.path.dirname(real) != self._real_root:
            raise FormatError(
                f"{path} links to {real}, outside the dataset directory; stoke reads only files inside {self.root}"
            )
        if not os.path.isfile(real):
            raise FormatError(f"{what} {name} is missing from {self.root}; restore it or re-pack the dataset")
        return Path(real)  # what was checked is what is opened
