"""``stoke.open``: a map-style dataset over a packed directory.

Opening reads and validates the manifest only; each shard is memory-mapped the first time one of its
samples is read. The per-sample index lives in the shards' offset tables, so the dataset holds no Python
object per sample, pickles without its mappings (worker processes re-map the same files, sharing the
page cache instead of copying the data), and is safe to read from many threads.

Not for: batching, shuffling or augmenting; the Loader does those.

Example:
    >>> import stoke, numpy as np, tempfile
    >>> out = tempfile.mkdtemp() + "/ds"
    >>> _ = stoke.pack({"x": np.arange(6.0).reshape(3, 2), "y": np.array([0, 1, 0])}, out, progress=False)
    >>> dataset = stoke.open(out)
    >>> len(dataset), dataset[1]["y"], dataset[1]["x"].tolist()
    (3, 1, [2.0, 3.0])
"""

from __future__ import annotations

import bisect
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from stoke.errors import ConfigError, FormatError, SampleError
from stoke.format.checksum import file_checksum, format_digest, sample_checksum
from stoke.format.fields import Field, FloatField, IntField
from stoke.format.manifest import MANIFEST_NAME, Manifest, ShardEntry
from stoke.format.shard import DATA_START, ShardReader
from stoke.format.splits import Splits, has_splits, read_splits
from stoke.storage.remote import is_remote_url


def open(path: str | os.PathLike[str], split: str | None = None, **remote_options: Any) -> Dataset | DatasetView:
    """Open the packed dataset at ``path``; reads the manifest only.

    A URL (``s3://``, ``gs://``, ``https://``, any fsspec protocol) opens a remote dataset whose shards are
    fetched into a bounded, verified local cache; ``remote_options`` (``cache_dir``, ``cache_bytes``,
    ``storage_options``, ``retry``, ``ahead``) go to :func:`stoke.storage.open_remote` (docs/remote.md).

    With ``split``, only that stored split (made by ``stoke split``) is returned, as an index view of the
    dataset: no data is copied. Raises :class:`~stoke.errors.NotADatasetError` for a directory that is
    not (yet) a dataset and :class:`~stoke.errors.FormatError` for a damaged manifest or splits file, or
    a split that does not exist.
    """
    if remote_options or is_remote_url(path):
        from stoke.storage.dataset import open_remote

        return open_remote(str(path), split, **remote_options)
    root = Path(path)
    return with_split(Dataset(root, Manifest.read(root)), split, str(root))


def with_split(dataset: Dataset, split: str | None, where: str) -> Dataset | DatasetView:
    """``dataset``, or the view of its stored split ``split`` (``where`` names it in the error)."""
    if split is None:
        return dataset
    parts = dataset.splits().parts
    if split not in parts:
        raise FormatError(f"{where} has no split {split!r}; its splits are {sorted(parts)}")
    return dataset.select(parts[split])


class Dataset:
    """A packed dataset: ``len(ds)``, ``ds[i]`` → dict of decoded fields, ``ds.select(indices)``.

    ``ds[i]`` checks the sample against its stored checksum first (xxh3: about a microsecond for a
    45 KB image) and raises :class:`~stoke.errors.SampleError` naming the sample and shard if it is damaged.

    Images decode to HWC uint8 numpy arrays, ``int``/``float`` to Python numbers, ``ndarray`` to numpy
    arrays, ``bytes``/``text``/``json`` to bytes, str and JSON values.
    """

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest
        self.fields: dict[str, Field] = {entry.name: entry.field for entry in manifest.fields}
        counts = np.fromiter((shard.num_samples for shard in manifest.shards), np.int64, len(manifest.shards))
        self._starts: list[int] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64).tolist()
        self._readers: list[ShardReader | None] = [None] * len(manifest.shards)
        self._lock = threading.Lock()
        self._real_root: str | None = None
        _OPEN_DATASETS.add(self)

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
            return {name: field.decode(data) for (name, field), data in zip(self.fields.items(), raw)}
        except FormatError as error:
            raise self._sample_error(index, str(error)) from error

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]

    def __repr__(self) -> str:
        schema = ", ".join(f"{name}: {field.type_name}" for name, field in self.fields.items())
        return f"stoke.Dataset({str(self.root)!r}, {len(self):,} samples, {{{schema}}})"

    # ---- splits ----------------------------------------------------------------------------------
    @property
    def packing_id(self) -> str:
        """The xxh3 digest of the manifest: what stored splits are tied to (a re-pack changes it)."""
        return file_checksum(self.root / MANIFEST_NAME)

    def splits(self) -> Splits:
        """The stored splits (``stoke split``), validated; raises FormatError when there are none."""
        return read_splits(self.root, len(self), self.packing_id)

    def has_splits(self) -> bool:
        """Whether ``stoke split`` has stored splits in the dataset (not whether they are valid)."""
        return has_splits(self.root)

    # ---- attachments -----------------------------------------------------------------------------
    def attachment(self, name: str) -> bytes:
        """The bytes of a file the manifest attaches (such as ``tokenizer.json``), checked before use.

        Only names the manifest lists are read; each must resolve inside the dataset directory and have
        the listed size and xxh3 checksum, else :class:`~stoke.errors.FormatError`. An unlisted name is
        a KeyError.
        """
        try:
            entry = self.manifest.attachment(name)
        except KeyError:
            listed = ", ".join(a.file for a in self.manifest.attachments) or "none"
            raise KeyError(f"{self.root} attaches no file {name!r} (it attaches: {listed})") from None
        path = self._inside(entry.file, what="attached file")
        with path.open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if size != entry.file_size:
                raise FormatError(
                    f"{path} is {size:,} bytes but the manifest lists {entry.file_size:,}; restore it or re-pack"
                )
            data = stream.read(entry.file_size)
        if format_digest(sample_checksum(data)) != entry.checksum:
            raise FormatError(f"{path} does not match its checksum in the manifest; restore it or re-pack")
        return data

    def tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` the text was tokenized with at pack time (from ``tokenizer.json``).

        Byte-level datasets get a tokenizer whose ids are the UTF-8 bytes, so ``decode`` works for both.
        """
        from stoke.prepare.tokenize import TOKENIZER_FILE, tokenizer_from_json

        names = [a.file for a in self.manifest.attachments]
        if TOKENIZER_FILE not in names:
            raise ConfigError(f"{self.root} has no {TOKENIZER_FILE}; only datasets packed from text carry a tokenizer")
        return tokenizer_from_json(self.attachment(TOKENIZER_FILE), str(self.root / TOKENIZER_FILE)).hf

    # ---- what the Loader and verify use -------------------------------------------------------------
    def dataset_index(self, positions: np.ndarray) -> np.ndarray:
        """The dataset indices of positions of this dataset (the identity; views map through their indices)."""
        return np.asarray(positions, dtype=np.int64)

    def will_read(self, indices: np.ndarray) -> None:
        """The Loader announces the dataset indices an epoch will read, in order (remote datasets prefetch)."""

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, sample number inside the shard) of dataset index ``index``."""
        shard = bisect.bisect_right(self._starts, index) - 1  # a Python list: faster than numpy for one value
        return shard, index - self._starts[shard]

    def shard_of(self, index: int) -> ShardEntry:
        return self.manifest.shards[self.locate(index)[0]]

    def read_fields(self, index: int, positions: Sequence[int] | None = None, verify: bool = False) -> list[memoryview]:
        """The encoded bytes of each field of sample ``index`` (all, or those at ``positions``), zero-copy.

        With ``verify`` the sample's checksum is checked first, and a damaged sample raises
        :class:`~stoke.errors.SampleError`.
        """
        shard, local = self.locate(index)
        reader = self._reader(shard)
        try:
            parts = reader.fields_checked(local) if verify else reader.fields(local)
        except FormatError as error:
            raise self._sample_error(index, str(error).rsplit(": ", 1)[-1]) from error
        if positions is None:
            return parts
        return [parts[position] for position in positions]

    def is_intact(self, index: int) -> bool:
        """Whether sample ``index`` matches its stored checksum (False also when its shard cannot be read)."""
        shard, local = self.locate(index)
        try:
            return self._reader(shard).is_intact(local)
        except (FormatError, OSError):
            return False

    def column(self, name: str) -> np.ndarray:
        """Every sample's value of an ``int`` or ``float`` field, read straight from the shards' tables.

        Gathers the eight bytes of each value by its offset, without decoding other fields: labels for
        a stratified split or a class count cost one pass over the offset tables, not over the images.
        """
        field = self.fields[name]
        if not isinstance(field, (IntField, FloatField)):
            raise TypeError(f"column() reads int and float fields; {name!r} is a {field.type_name} field")
        position = self.field_positions([name])[0]
        parts = [
            column_of_shard(self._reader(shard), name, field, position, len(self.fields))
            for shard in range(len(self.manifest.shards))
        ]
        return np.concatenate(parts) if parts else np.empty(0, field.spec.dtype)

    def shard_reader(self, shard: int) -> ShardReader:
        """The (lazily opened) reader of shard number ``shard``."""
        return self._reader(shard)

    def select(self, indices: Iterable[int] | np.ndarray) -> DatasetView:
        """A view of some samples, in the given order, without copying any data."""
        return DatasetView(self, indices)

    def describe(self, index: int) -> str:
        """'sample 17 (shard-000001.stk)': where a dataset index lives, for messages."""
        return f"sample {index} ({self.shard_of(index).file})"

    def close(self) -> None:
        """Unmap every shard; the dataset re-maps them if it is used again."""
        with self._lock:
            readers, self._readers = self._readers, [None] * len(self._readers)
        for reader in readers:
            if reader is not None:
                reader.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = [None] * len(self._readers)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        _OPEN_DATASETS.add(self)

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
            raise KeyError(f"no field named {missing[0]!r}; the dataset has {', '.join(order)}") from None

    def _reader(self, shard: int) -> ShardReader:
        reader = self._readers[shard]
        if reader is not None:
            return reader
        return self._map_shard(shard, self._inside(self.manifest.shards[shard].file))

    def _map_shard(self, shard: int, path: Path) -> ShardReader:
        """The reader of shard ``shard``, mapping the file at ``path`` unless another thread already has."""
        with self._lock:
            reader = self._readers[shard]
            if reader is None:
                entry = self.manifest.shards[shard]
                reader = ShardReader(path, len(self.fields), entry.num_samples, entry.file_size)
                self._readers[shard] = reader
        return reader

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

    def _sample_error(self, index: int, reason: str) -> SampleError:
        shard = self.shard_of(index).file
        return SampleError(f"sample {index} in {self.root / shard} is damaged: {reason}", index=index, shard=shard)


def column_of_shard(reader: ShardReader, name: str, field: Field, position: int, width: int) -> np.ndarray:
    """The values of int or float field ``name`` (schema ``position`` of ``width``) of one shard, copied out."""
    starts = reader.offsets[position : reader.num_samples * width : width].astype(np.int64)
    stops = reader.offsets[position + 1 : reader.num_samples * width + 1 : width].astype(np.int64)
    if np.any(stops - starts != 8) or (starts.size and starts.max() + 8 > reader.layout.offsets_start - DATA_START):
        raise FormatError(f"shard {reader.path.name} has damaged offsets for field {name!r}; run `stoke verify`")
    data = np.frombuffer(reader.mapping, np.uint8, reader.layout.offsets_start - DATA_START, DATA_START)
    gathered = data[starts[:, None] + np.arange(8)]
    return gathered.view(field.spec.dtype).reshape(-1)


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


# A forked child (process workers, a pack pool) gets a copy of the parent's memory but only the forking
# thread: a lock another thread held at that moment (opening a shard for a thread Loader on the same
# dataset, say) would stay held in the child forever. Each child starts with fresh locks instead.
_OPEN_DATASETS: weakref.WeakSet[Dataset] = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    for dataset in list(_OPEN_DATASETS):
        dataset._lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_locks_in_child)


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

    def field_positions(self, names: Sequence[str]) -> list[int]:
        return self.base.field_positions(names)

    def describe(self, position: int) -> str:
        return self.base.describe(int(self.indices[position]))

    def select(self, positions: Iterable[int] | np.ndarray) -> DatasetView:
        return DatasetView(self, positions)

    def column(self, name: str) -> np.ndarray:
        return self.base.column(name)[self.indices]

    def attachment(self, name: str) -> bytes:
        return self.base.attachment(name)

    def tokenizer(self) -> Any:
        return self.base.tokenizer()

    def close(self) -> None:
        self.base.close()
