"""How the Loader reads one sample's fields, from a packed dataset or from a user's own dataset.

:class:`PackedReader` hands out each field's stored bytes as zero-copy views of the mapped shard,
checked against the sample's checksum (``verify``: the first time this Loader reads each sample, on every
read, or never); the stages decode them. :class:`LiveReader` calls the
user's ``dataset[i]`` and hands out the values it returns, with fields inferred from the first items
(see ``stoke.sources.dataset``); the stages coerce them. Both name samples the same way in errors.

Example:
    >>> reader = LiveReader(DatasetSource([{"x": 1.0}, {"x": 2.0}]))
    >>> reader.fields, reader.read(1)
    ({'x': FloatField()}, [2.0])
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stoke.errors import ConfigError, InvalidItem, SampleError, StokeError
from stoke.format import mapguard
from stoke.format.fields import Field, ImageField
from stoke.read import Dataset, DatasetView
from stoke.sources import ArraysSource, DatasetSource, Source, is_arrays
from stoke.sources.dataset import PROBE_ITEMS

VERIFY_MODES = ("once", "always", "never")


def verify_mode(verify: bool | str) -> str:
    """The checksum policy for ``verify``: ``"once"``, ``"always"`` or ``"never"`` (True and False are the
    last two)."""
    if verify is True or verify is False:
        return "always" if verify else "never"
    if verify not in VERIFY_MODES:
        raise ConfigError(f"verify must be 'once', 'always', 'never', True or False, got {verify!r}")
    return str(verify)


class CheckedSamples:
    """Which samples have passed their checksum, one bit each, in memory that forked workers share.

    An anonymous shared mapping made before the process workers fork, so a sample a worker has checked
    is not checked again by another. Bits are only ever set after a check succeeded; two threads setting
    bits of one byte at once may lose one of them, which costs a second check, never a missed one.
    """

    def __init__(self, size: int) -> None:
        self._bits = mmap.mmap(-1, max(1, (size + 7) // 8))

    def __contains__(self, position: int) -> bool:
        return bool(self._bits[position >> 3] >> (position & 7) & 1)

    def add(self, position: int) -> None:
        self._bits[position >> 3] |= 1 << (position & 7)


class PackedReader:
    """Fields of a packed :class:`~stoke.read.Dataset` (or a view of one), as stored bytes."""

    packed = True
    layout = "dict"  # dataset[i] is a dict

    def __init__(self, dataset: Dataset | DatasetView, names: Sequence[str] | None, verify: bool | str) -> None:
        self.dataset = dataset
        chosen = list(dataset.fields) if names is None else list(names)
        unknown = [name for name in chosen if name not in dataset.fields]
        if unknown:
            raise ConfigError(f"the dataset has no field {unknown[0]!r}; its fields are {', '.join(dataset.fields)}")
        self.fields: dict[str, Field] = {name: dataset.fields[name] for name in chosen}
        self._positions = dataset.field_positions(chosen)
        self.verify = verify_mode(verify)
        self._checked = CheckedSamples(len(dataset)) if self.verify == "once" else None
        self.clock: Any = None  # a stoke.profile StageClock while profiled, with the (read, checksum) slots
        self.slots: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, position: int) -> list[Any]:
        if self.clock is not None:
            return self._read_profiled(position)
        checked = self._checked
        if checked is None:
            return self.dataset.read_fields(position, self._positions, self.verify == "always")
        if position in checked:
            return self.dataset.read_fields(position, self._positions, False)
        fields = self.dataset.read_fields(position, self._positions, True)
        checked.add(position)
        return fields

    def _read_profiled(self, position: int) -> list[Any]:
        """``read``, timing the lookup and the checksum apart (the checked read looks the record up again:
        microseconds, against the hash of the whole record)."""
        checked = self._checked
        check = self.verify == "always" or (checked is not None and position not in checked)
        started = time.perf_counter_ns()
        fields = self.dataset.read_fields(position, self._positions, False)
        located = time.perf_counter_ns()
        self.clock.add(self.slots[0], located - started)
        if check:
            fields = self.dataset.read_fields(position, self._positions, True)
            self.clock.add(self.slots[1], time.perf_counter_ns() - located)
            if checked is not None:
                checked.add(position)
        return fields

    def check_read(self, position: int) -> None:
        """After the sample was used: raise SampleError if its shard was truncated meanwhile (its lost pages
        read as zeros; ``stoke.format.mapguard``). One flag unless some mapping of this process lost pages."""
        if mapguard.pages_lost():
            self.dataset.check_read(position)

    def dataset_index(self, positions: np.ndarray) -> np.ndarray:
        return self.dataset.dataset_index(positions)

    def will_read(self, positions: np.ndarray) -> None:
        """Tell the dataset the positions an epoch will read, in order (a remote one fetches ahead)."""
        self.dataset.will_read(positions)

    def describe(self, position: int) -> str:
        return self.dataset.describe(position)

    def field_stats(self, name: str) -> dict[str, int] | None:
        return self.dataset.manifest.field_entry(name).stats


class LiveReader:
    """Fields of a user's map-style dataset (or of arrays), as the Python values it returns."""

    packed = False

    def __init__(self, source: Source, names: Sequence[str] | None = None, layout: str = "dict") -> None:
        self.source = source
        self.layout = layout  # the structure of the items (stoke.pipeline.structure)
        schema = {entry.name: entry.field for entry in source.schema()}
        available = list(schema)
        chosen = available if names is None else list(names)
        unknown = [name for name in chosen if name not in available]
        if unknown:
            raise ConfigError(f"the dataset's items have no field {unknown[0]!r}; they have {', '.join(available)}")
        self.fields: dict[str, Field] = {name: schema[name] for name in chosen}
        self._positions = [available.index(name) for name in chosen]
        self.clock: Any = None  # a stoke.profile StageClock while profiled; reading is slot 0
        self.slots: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.source)

    def read(self, position: int) -> list[Any]:
        clock = self.clock
        started = time.perf_counter_ns() if clock is not None else 0
        try:
            values = self.source.read(position)
        except InvalidItem as error:
            raise SampleError(f"sample {position}: {error}", index=position) from error.__cause__
        if clock is not None:
            clock.add(self.slots[0], time.perf_counter_ns() - started)
        return [values[index] for index in self._positions]

    def check_read(self, position: int) -> None:
        """Nothing to check: the values are the user's own, not mapped shards."""

    def dataset_index(self, positions: np.ndarray) -> np.ndarray:
        return np.asarray(positions, dtype=np.int64)

    def will_read(self, positions: np.ndarray) -> None:
        """Nothing to prepare: the user's dataset reads its items itself."""

    def describe(self, position: int) -> str:
        return f"sample {position}"

    def field_stats(self, name: str) -> dict[str, int] | None:
        """For an image field, the size of the first readable image (later ones are checked against it)."""
        field = self.fields[name]
        if not isinstance(field, ImageField):
            return None
        position_of_field = self._positions[list(self.fields).index(name)]
        for position in range(min(len(self), PROBE_ITEMS)):
            try:
                value = self.source.read(position)[position_of_field]
                height, width = field.coerce(value).shape[:2]
            except (InvalidItem, StokeError):
                continue
            return {"min_height": height, "max_height": height, "min_width": width, "max_width": width}
        return None


def reader_for(
    dataset: Any, fields: Sequence[str] | None, verify: bool | str, names: Sequence[str] | None = None
) -> PackedReader | LiveReader:
    """The reader for a packed dataset, a view of one, numpy arrays, or any map-style dataset.

    ``fields`` chooses the fields to load; ``names`` names the values of tuple items (the batches are then
    dicts), as ``stoke.pack(names=)`` does.
    """
    if isinstance(dataset, (Dataset, DatasetView)):
        if names is not None:
            raise ConfigError(
                f"names= names the values of tuple items; a packed dataset's fields already have names "
                f"({', '.join(dataset.fields)}): choose among them with fields="
            )
        return PackedReader(dataset, fields, verify)
    if is_arrays(dataset):
        source = ArraysSource(dataset, names=names)
        layout = "dict" if isinstance(dataset, Mapping) or names is not None else "tuple"
        return LiveReader(source, fields, "single" if isinstance(dataset, np.ndarray) and names is None else layout)
    source = DatasetSource(dataset, names=names)
    return LiveReader(source, fields, "dict" if names is not None else source.layout)
