"""``stoke.open``: a map-style dataset over a packed dataset's shard store.

A :class:`Dataset` reads through a shard store (:class:`~stoke.storage.store.ShardStore`): a
:class:`~stoke.storage.local.LocalStore` for a directory, a :class:`~stoke.storage.remote_store.RemoteStore`
for a URL. The store says where the files are and makes a shard readable; the dataset does everything
else the same way for both: locating a sample, checksums, decoding, columns, attachments, the tokenizer,
splits and views.

Opening reads and validates the manifest, and confirms its counts against the shard files' sizes (one
``stat`` per shard, no shard is read), so nothing is ever allocated from a count that the files do not
back. Each shard is opened (memory-mapped; fetched first for a remote dataset) the first time one of its
samples is read. The per-sample index lives in the shards' offset tables, so the dataset holds no Python
object per sample, pickles without its mappings (worker processes re-map the same files, sharing the page
cache instead of copying the data), and is safe to read from many threads.

Limits that protect the reader come from the caller, never from the file: ``max_pixels`` (default
:data:`~stoke.format.fields.image_codec.DEFAULT_MAX_PIXELS`, Pillow's) bounds every image decode, and a
dataset's own ``max_pixels`` can only lower it.

Not for: batching, shuffling or augmenting (the Loader does those), or where shards live (``stoke.storage``).

Example:
    >>> import stoke, numpy as np, tempfile
    >>> out = tempfile.mkdtemp() + "/ds"
    >>> _ = stoke.pack({"x": np.arange(6.0).reshape(3, 2), "y": np.array([0, 1, 0])}, out, progress=False)
    >>> dataset = stoke.open(out)
    >>> len(dataset), dataset[1]["y"], dataset[1]["x"].tolist()
    (3, 1, [2.0, 3.0])
    >>> type(dataset.store).__name__, dataset.root == dataset.store.root
    ('LocalStore', True)
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from stoke.errors import ConfigError, FormatError, SampleError
from stoke.format import mapguard
from stoke.format.checksum import format_digest, sample_checksum
from stoke.format.fields import Field, FloatField, ImageField, IntField
from stoke.format.fields.image_codec import DEFAULT_MAX_PIXELS
from stoke.format.manifest import ShardEntry
from stoke.format.shard import DATA_START, ShardReader
from stoke.format.splits import Splits
from stoke.format.versions import VersionEntry
from stoke.storage.cache import ShardCache
from stoke.storage.local import LocalStore
from stoke.storage.remote import is_remote_url
from stoke.storage.remote_store import RemoteStore
from stoke.storage.store import MAX_UNCONFIRMED_SAMPLES, ShardStore, fork_safe_lock, shard_starts

__all__ = ["MAX_UNCONFIRMED_SAMPLES", "Dataset", "DatasetView", "open", "selection", "with_split"]


def open(
    path: str | os.PathLike[str],
    split: str | None = None,
    *,
    version: int | None = None,
    max_pixels: int | None = None,
    **remote_options: Any,
) -> Dataset | DatasetView:
    """Open the packed dataset at ``path``; reads the manifest and stats the shard files.

    A dataset that grew (``stoke pack SOURCE DATASET --append``) opens at its newest version, or at
    ``version`` (1 is the dataset as first packed): its samples are the first ones of every later
    version, and ``dataset.versions`` lists them all. An unknown version is a
    :class:`~stoke.errors.ConfigError` that says which there are (docs/growing.md).

    A URL (``s3://``, ``gs://``, ``https://``, any fsspec protocol) opens a remote dataset whose shards are
    fetched into a bounded, verified local cache; ``remote_options`` (``cache_dir``, ``cache_bytes``,
    ``storage_options``, ``retry``, ``ahead``) go to :class:`~stoke.storage.remote_store.RemoteStore`
    (docs/remote.md).

    With ``split``, only that stored split (made by ``stoke split``) is returned, as an index view of the
    dataset: no data is copied. ``max_pixels`` is the largest image (height x width) any read decodes
    (default 89,478,485, Pillow's limit); larger ones are damaged samples. The dataset's own
    ``max_pixels`` (its pack-time limit) can lower it, never raise it.

    Raises :class:`~stoke.errors.NotADatasetError` for a directory that is not (yet) a dataset and
    :class:`~stoke.errors.FormatError` for a damaged manifest or splits file, counts the shard files do
    not back, or a split that does not exist.
    """
    if remote_options or is_remote_url(path):
        store: ShardStore = RemoteStore(str(path), version=version, **remote_options)
    else:
        store = LocalStore(path, version=version)
    try:
        return with_split(Dataset(store, max_pixels=max_pixels), split)
    except BaseException:
        store.close()  # a remote store holds its cache directory's lock
        raise


def with_split(dataset: Dataset, split: str | None) -> Dataset | DatasetView:
    """``dataset``, or the view of its stored split ``split``."""
    if split is None:
        return dataset
    parts = dataset.splits().parts
    if split not in parts:
        raise FormatError(f"{dataset.location} has no split {split!r}; its splits are {sorted(parts)}")
    return dataset.select(parts[split])


class Dataset:
    """A packed dataset: ``len(ds)``, ``ds[i]`` → dict of decoded fields, ``ds.select(indices)``.

    ``ds[i]`` checks the sample against its stored checksum first (xxh3: about a microsecond for a
    45 KB image) and raises :class:`~stoke.errors.SampleError` naming the sample and shard if it is damaged.

    Images decode to HWC uint8 numpy arrays, ``int``/``float`` to Python numbers, ``ndarray`` to numpy
    arrays, ``bytes``/``text``/``json`` to bytes, str and JSON values.

    ``fields`` are the manifest's, with the reader's limits: each image field's ``max_pixels`` is the
    smaller of the caller's (``max_pixels``, default Pillow's 89,478,485) and the dataset's own.

    ``store`` is where the shards live (:class:`~stoke.storage.store.ShardStore`); ``root`` is the dataset
    as its user named it, the directory (a ``Path``) of a local dataset or the URL (a ``str``) of a remote
    one, and ``location`` is ``str(root)``; ``cache`` is a remote dataset's
    :class:`~stoke.storage.cache.ShardCache` (None for a local one).
    """

    def __init__(self, store: ShardStore, max_pixels: int | None = None) -> None:
        self.store = store
        self.manifest = store.manifest
        self.root: Path | str = store.root
        self.location = store.location
        limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        self.fields: dict[str, Field] = {
            entry.name: entry.field.limited(limit) if isinstance(entry.field, ImageField) else entry.field
            for entry in self.manifest.fields
        }
        store.confirm_counts()  # before anything is allocated from the counts
        self._starts: list[int] = shard_starts(self.manifest).tolist()
        self._copy_out = store.evicts  # a released shard may be unmapped at once: hand out copies
        self._held: set[int] = set()  # shards handed out by shard_reader(): held until close()
        self._lock = fork_safe_lock(self)

    @property
    def cache(self) -> ShardCache | None:
        """A remote dataset's cache (``cache.stats()``: hits, downloads, evictions); None for a local one."""
        return getattr(self.store, "cache", None)

    # ---- versions --------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """The version this dataset was opened at: 1 as packed, one more for each append."""
        return self.manifest.version

    @property
    def versions(self) -> list[VersionEntry]:
        """Every published version (number, samples, shards, when), as the newest manifest listed them when
        the dataset was opened; ``stoke.open(path, version=N)`` opens one.

        Example:
            >>> import numpy as np, stoke, tempfile
            >>> out = tempfile.mkdtemp() + "/ds"
            >>> _ = stoke.pack({"y": np.arange(4)}, out, progress=False)
            >>> _ = stoke.pack({"y": np.arange(4, 6)}, out, append=True, progress=False)
            >>> grown = stoke.open(out)
            >>> grown.version, [(v.version, v.num_samples) for v in grown.versions]
            (2, [(1, 4), (2, 6)])
            >>> len(stoke.open(out, version=1))
            4
        """
        return list(self.store.versions)

    # ---- the map-style protocol --------------------------------------------------------------------
    def __len__(self) -> int:
        return self.manifest.num_samples

    @overload
    def __getitem__(self, index: int | np.integer) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice | Sequence[int] | np.ndarray) -> DatasetView: ...

    def __getitem__(self, index: Any) -> dict[str, Any] | DatasetView:
        """``ds[i]``: sample ``i``, decoded; ``ds[a:b]``, ``ds[[i, j]]``, ``ds[array]``: a view, as ``select``."""
        selected = selection(index, len(self))
        if selected is not None:
            return self.select(selected)
        index = self._check_index(index)
        raw = self.read_fields(index, verify=True)
        try:
            sample = {name: field.decode(data) for (name, field), data in zip(self.fields.items(), raw)}
        except FormatError as error:
            self.check_read(index)  # zeros from a shard truncated meanwhile: say that, not what they decoded to
            raise self._sample_error(index, error.reason) from error
        self.check_read(index)
        return sample

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]

    def __repr__(self) -> str:
        schema = ", ".join(f"{name}: {field.type_name}" for name, field in self.fields.items())
        return f"stoke.Dataset({self.location!r}, {len(self):,} samples, {{{schema}}})"

    # ---- splits ----------------------------------------------------------------------------------
    @property
    def packing_id(self) -> str:
        """The xxh3 digest of the manifest: what stored splits are tied to (a re-pack changes it)."""
        return self.store.packing_id

    def splits(self) -> Splits:
        """The stored splits (``stoke split``), validated; raises FormatError when there are none."""
        return self.store.read_splits()

    def has_splits(self) -> bool:
        """Whether ``stoke split`` has stored splits in the dataset (not whether they are valid)."""
        return self.store.has_splits()

    # ---- attachments -----------------------------------------------------------------------------
    def attachment(self, name: str) -> bytes:
        """The bytes of a file the manifest attaches (such as ``tokenizer.json``), checked before use.

        Only names the manifest lists are read; each must lie inside the dataset (a local one's must
        resolve inside its directory) and have the listed size and xxh3 checksum, else
        :class:`~stoke.errors.FormatError`. An unlisted name is a KeyError.
        """
        try:
            entry = self.manifest.attachment(name)
        except KeyError:
            listed = ", ".join(a.file for a in self.manifest.attachments) or "none"
            raise KeyError(f"{self.location} attaches no file {name!r} (it attaches: {listed})") from None
        data = self.store.read_file(entry.file, entry.file_size)
        if format_digest(sample_checksum(data)) != entry.checksum:
            raise FormatError(
                f"{self.store.where(entry.file)} does not match its checksum in the manifest; restore it or re-pack"
            )
        return data

    def tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` the text was tokenized with at pack time (from ``tokenizer.json``).

        Byte-level datasets get a tokenizer whose ids are the UTF-8 bytes, so ``decode`` works for both.
        """
        from stoke.prepare.tokenize import TOKENIZER_FILE, tokenizer_from_json

        names = [a.file for a in self.manifest.attachments]
        if TOKENIZER_FILE not in names:
            raise ConfigError(
                f"{self.location} has no {TOKENIZER_FILE}; only datasets packed from text carry a tokenizer"
            )
        return tokenizer_from_json(self.attachment(TOKENIZER_FILE), self.store.where(TOKENIZER_FILE)).hf

    # ---- what the Loader and verify use -------------------------------------------------------------
    def dataset_index(self, positions: np.ndarray) -> np.ndarray:
        """The dataset indices of positions of this dataset (the identity; views map through their indices)."""
        return np.asarray(positions, dtype=np.int64)

    def will_read(self, indices: np.ndarray) -> None:
        """The Loader announces the dataset indices an epoch will read, in order (remote datasets prefetch)."""
        self.store.will_read(indices)

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, sample number inside the shard) of dataset index ``index``."""
        shard = bisect.bisect_right(self._starts, index) - 1  # a Python list: faster than numpy for one value
        return shard, index - self._starts[shard]

    def shard_of(self, index: int) -> ShardEntry:
        return self.manifest.shards[self.locate(index)[0]]

    def read_fields(self, index: int, positions: Sequence[int] | None = None, verify: bool = False) -> list[memoryview]:
        """The encoded bytes of each field of sample ``index`` (all, or those at ``positions``).

        Zero-copy views into the mapped shard for a local dataset; copies taken while the shard is held for
        a store that may unmap a shard as soon as it is released (a remote cache evicting it). With
        ``verify`` the sample's checksum is checked first, and a damaged sample raises
        :class:`~stoke.errors.SampleError`.
        """
        shard, local = self.locate(index)
        store = self.store
        reader = store.open_shard(shard)
        try:
            parts = reader.fields_checked(local) if verify else reader.fields(local)
            if positions is not None:
                parts = [parts[position] for position in positions]
            if self._copy_out:
                parts = [memoryview(bytes(part)) for part in parts]
        except FormatError as error:
            raise self._sample_error(index, error.reason) from error
        finally:
            store.release(shard, sample_read=True)
        return parts

    def check_read(self, index: int, thorough: bool = False) -> None:
        """After sample ``index``'s bytes were used: raise SampleError if its shard was truncated meanwhile
        (the lost pages read as zeros, ``stoke.format.mapguard``); one flag unless a mapping lost pages.
        ``thorough`` also compares the file's size now (an fstat): a cut inside the last page it kept
        reads zeros without losing a page."""
        reader = self.store.mapped_shard(self.locate(index)[0]) if thorough or mapguard.pages_lost() else None
        if reader is not None:
            try:
                reader.check_mapping(thorough)
            except FormatError as error:
                raise self._sample_error(index, error.reason) from error

    def is_intact(self, index: int) -> bool:
        """Whether sample ``index`` matches its stored checksum (False also when its shard cannot be read)."""
        shard, local = self.locate(index)
        try:
            reader = self.store.open_shard(shard)
        except (FormatError, OSError):
            return False
        try:
            return reader.is_intact(local)
        finally:
            self.store.release(shard)

    def column(self, name: str, indices: np.ndarray | None = None) -> np.ndarray:
        """Every sample's value of an ``int`` or ``float`` field (or those of ``indices``, in that order),
        read straight from the shards' tables.

        Gathers the eight bytes of each value by its offset, without decoding other fields: labels for
        a stratified split or a class count cost one pass over the offset tables, not over the images.
        Each shard's offsets table is checked once against its checksum; where it does not match, each
        sample is checked against its own, and samples that fail raise a
        :class:`~stoke.errors.FormatError` naming them (a view without them still reads).
        """
        field = self.fields[name]
        if not isinstance(field, (IntField, FloatField)):
            raise ConfigError(f"column() reads int and float fields; {name!r} is a {field.type_name} field")
        position = self.field_positions([name])[0]
        dtype = field.spec.dtype
        if indices is None:
            parts = [
                self._using_shard(shard, lambda reader, shard=shard: self._column_part(reader, shard, name, position))
                for shard in range(len(self.manifest.shards))
            ]
            return np.concatenate(parts) if parts else np.empty(0, dtype)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        values = np.empty(indices.size, dtype)
        for shard, chosen, local in self.by_shard(indices):
            values[chosen] = self._using_shard(
                shard, lambda reader, shard=shard, local=local: self._column_part(reader, shard, name, position, local)
            )
        return values

    def by_shard(self, indices: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Dataset ``indices`` shard by shard: (shard number, a mask of the ``indices`` in it, their sample
        numbers inside it), for readers of many samples at once."""
        starts = np.asarray(self._starts, dtype=np.int64)
        shards = np.searchsorted(starts, indices, side="right") - 1
        for shard in np.unique(shards).tolist():
            chosen = shards == shard
            yield shard, chosen, indices[chosen] - starts[shard]

    def damaged_samples_error(self, shard: int, what: str, local: np.ndarray) -> FormatError:
        """The one-sentence error for samples (``local`` numbers of shard ``shard``) whose ``what`` cannot be
        read: it names them and what to do."""
        first = self._starts[shard]
        listed = ", ".join(str(first + int(i)) for i in local[:5]) + (", ..." if local.size > 5 else "")
        return FormatError(
            f"{what} cannot be read for {local.size:,} damaged samples of {self.manifest.shards[shard].file} "
            f"(samples {listed}); run `stoke verify {self.location}`, then restore the shard, re-pack, or leave "
            f"those samples out with dataset.select(...)"
        )

    def _column_part(
        self, reader: ShardReader, shard: int, name: str, position: int, local: np.ndarray | None = None
    ) -> np.ndarray:
        """The values of int or float field ``name`` of shard ``shard`` (its ``local`` samples, or all)."""
        reader.check_mapping()  # before and after reading the mapping: truncated meanwhile? (stoke.format.mapguard)
        starts, stops, damaged = reader.field_spans(position, local)
        wrong_size = stops - starts != 8
        if np.any(wrong_size):
            damaged = np.union1d(damaged, (np.arange(reader.num_samples) if local is None else local)[wrong_size])
        if damaged.size:
            raise self.damaged_samples_error(shard, f"field {name!r}", damaged)
        data = np.frombuffer(reader.mapping, np.uint8, reader.layout.offsets_start - DATA_START, DATA_START)
        gathered = data[starts[:, None] + np.arange(8)]  # a copy: nothing refers to the mapping afterwards
        reader.check_mapping()
        return gathered.view(self.fields[name].spec.dtype).reshape(-1)

    def _using_shard(self, shard: int, use: Any) -> Any:
        """``use(reader)`` on shard ``shard``'s reader, held by the store meanwhile."""
        reader = self.store.open_shard(shard)
        try:
            return use(reader)
        finally:
            self.store.release(shard)

    def shard_reader(self, shard: int) -> ShardReader:
        """The reader of shard number ``shard``, opened (fetched, for a remote dataset) if need be and held
        by the store until :meth:`close`, so that it can be used directly (by verify, say)."""
        reader = self.store.open_shard(shard)
        with self._lock:
            held = shard in self._held
            self._held.add(shard)
        if held:
            self.store.release(shard)  # one hold per shard handed out
        return reader

    def select(self, indices: Iterable[int] | np.ndarray) -> DatasetView:
        """A view of some samples, in the given order, without copying any data."""
        return DatasetView(self, indices)

    def describe(self, index: int) -> str:
        """'sample 17 (shard-000001.stk)': where a dataset index lives, for messages."""
        return f"sample {index} ({self.shard_of(index).file})"

    def close(self) -> None:
        """Unmap every shard and let go of what the store holds (a remote cache's lock; its files stay); the
        dataset opens them again if it is used again."""
        with self._lock:
            held, self._held = self._held, set()
        for shard in held:
            self.store.release(shard)
        self.store.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # the store pickles by its own rules: without its mappings
        state["_held"] = set()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = fork_safe_lock(self)

    # ---- internals --------------------------------------------------------------------------------
    def _check_index(self, index: Any) -> int:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"dataset indices are integers, slices or lists of integers, not {type(index).__name__}")
        index = int(index)
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError(f"index {index} is out of range for a dataset of {size:,} samples")
        return index

    def field_positions(self, names: Sequence[str]) -> list[int]:
        """Schema positions of the named fields, for :meth:`read_fields`."""
        order = list(self.fields)
        try:
            return [order.index(name) for name in names]
        except ValueError:
            missing = [name for name in names if name not in self.fields]
            raise ConfigError(f"no field named {missing[0]!r}; the dataset has {', '.join(order)}") from None

    def _sample_error(self, index: int, reason: str) -> SampleError:
        shard = self.shard_of(index).file
        return SampleError(
            f"sample {index} in {self.store.where(shard)} is damaged: {reason}", index=index, shard=shard
        )


def selection(index: Any, size: int) -> np.ndarray | None:
    """The positions ``index`` selects when it is a slice, a list of ints, an int array or a boolean mask
    (negative positions count from the end); None for a single index. Raises IndexError or TypeError."""
    if isinstance(index, slice):
        return np.arange(size, dtype=np.int64)[index]
    if isinstance(index, (list, tuple, range, np.ndarray)) or (
        hasattr(index, "__array__") and getattr(index, "ndim", 0)
    ):
        positions = np.asarray(index)
        if positions.dtype == np.bool_:
            if positions.shape != (size,):
                raise IndexError(
                    f"a boolean mask must have one value per sample ({size:,}), got shape {positions.shape}"
                )
            return np.flatnonzero(positions).astype(np.int64)
        if positions.size == 0:
            return np.empty(0, np.int64)
        if positions.dtype.kind not in "iu":
            raise TypeError(f"dataset indices are integers, not {positions.dtype}")
        positions = positions.astype(np.int64).reshape(-1)
        if positions.min() < -size or positions.max() >= size:
            raise IndexError(f"indices must lie in [-{size:,}, {size:,}) for {size:,} samples")
        return np.where(positions < 0, positions + size, positions)
    return None


class DatasetView:
    """Some samples of a :class:`Dataset`, by index, in a given order; ``ds[i]`` reads ``base[indices[i]]``."""

    def __init__(self, base: Dataset, indices: Iterable[int] | np.ndarray) -> None:
        if isinstance(base, DatasetView):
            indices = base.indices[np.asarray(indices, dtype=np.int64)]
            base = base.base
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(base)):
            raise IndexError(f"a view's indices must lie in [0, {len(base)}) for this dataset")
        self.fields = base.fields
        self.manifest = base.manifest
        self.root = base.root
        self.location = base.location

    @property
    def version(self) -> int:
        """The version of the dataset this is a view of."""
        return self.base.version

    def __len__(self) -> int:
        return int(self.indices.size)

    @overload
    def __getitem__(self, position: int | np.integer) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, position: slice | Sequence[int] | np.ndarray) -> DatasetView: ...

    def __getitem__(self, position: Any) -> dict[str, Any] | DatasetView:
        selected = selection(position, len(self))
        if selected is not None:
            return self.select(selected)
        if isinstance(position, (bool, np.bool_)) or not isinstance(position, (int, np.integer)):
            raise TypeError(f"dataset indices are integers, slices or lists of integers, not {type(position).__name__}")
        size = len(self)
        if not -size <= position < size:
            raise IndexError(f"index {position} is out of range for a view of {size:,} samples")
        return self.base[int(self.indices[position])]

    def __iter__(self):
        for position in range(len(self)):
            yield self[position]

    def __repr__(self) -> str:
        return f"stoke.DatasetView({len(self):,} of {self.base!r})"

    def dataset_index(self, positions: np.ndarray) -> np.ndarray:
        return self.indices[np.asarray(positions, dtype=np.int64)]

    def will_read(self, positions: np.ndarray) -> None:
        self.base.will_read(self.dataset_index(positions))

    def read_fields(
        self, position: int, positions: Sequence[int] | None = None, verify: bool = False
    ) -> list[memoryview]:
        return self.base.read_fields(int(self.indices[position]), positions, verify)

    def check_read(self, position: int, thorough: bool = False) -> None:
        self.base.check_read(int(self.indices[position]), thorough)

    def field_positions(self, names: Sequence[str]) -> list[int]:
        return self.base.field_positions(names)

    def describe(self, position: int) -> str:
        return self.base.describe(int(self.indices[position]))

    def select(self, positions: Iterable[int] | np.ndarray) -> DatasetView:
        return DatasetView(self, positions)

    def column(self, name: str) -> np.ndarray:
        """The view's samples' values of an int or float field: only their shards' samples are read."""
        return self.base.column(name, self.indices)

    def attachment(self, name: str) -> bytes:
        return self.base.attachment(name)

    def tokenizer(self) -> Any:
        return self.base.tokenizer()

    def close(self) -> None:
        self.base.close()
