"""How the Loader reads one sample's fields, from a packed dataset or from a user's own dataset.

:class:`PackedReader` hands out each field's stored bytes as zero-copy views of the mapped shard,
optionally checked against the sample's checksum; the stages decode them. :class:`LiveReader` calls the
user's ``dataset[i]`` and hands out the values it returns, with fields inferred from the first items
(see ``stoke.sources.dataset``); the stages coerce them. Both name samples the same way in errors.

Example:
    >>> reader = LiveReader(DatasetSource([{"x": 1.0}, {"x": 2.0}]))
    >>> reader.fields, reader.read(1)
    ({'x': FloatField()}, [2.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stoke.errors import ConfigError, InvalidItem, SampleError, StokeError
from stoke.format.fields import Field, ImageField
from stoke.read import Dataset, DatasetView
from stoke.sources import ArraysSource, DatasetSource, Source, is_arrays
from stoke.sources.dataset import PROBE_ITEMS


class PackedReader:
    """Fields of a packed :class:`~stoke.read.Dataset` (or a view of one), as stored bytes."""

    packed = True

    def __init__(self, dataset: Dataset | DatasetView, names: Sequence[str] | None, verify: bool) -> None:
        self.dataset = dataset
        chosen = list(dataset.fields) if names is None else list(names)
        unknown = [name for name in chosen if name not in dataset.fields]
        if unknown:
            raise ConfigError(f"the dataset has no field {unknown[0]!r}; its fields are {', '.join(dataset.fields)}")
        self.fields: dict[str, Field] = {name: dataset.fields[name] for name in chosen}
        self._positions = dataset.field_positions(chosen)
        self._verify = verify

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, position: int) -> list[Any]:
        return self.dataset.read_fields(position, self._positions, self._verify)

    def dataset_index(self, positions: np.ndarray) -> np.ndarray:
        return self.dataset.dataset_index(positions)

    def describe(self, position: int) -> str:
        return self.dataset.describe(position)

    def field_stats(self, name: str) -> dict[str, int] | None:
        return self.dataset.manifest.field_entry(name).stats


class LiveReader:
    """Fields of a user's map-style dataset (or of arrays), as the Python values it returns."""

    packed = False

    def __init__(self, source: Source, names: Sequence[str] | None = None) -> None:
        self.source = source
        schema = {entry.name: entry.field for entry in source.schema()}
        available = list(schema)
        chosen = available if names is None else list(names)
        unknown = [name for name in chosen if name not in available]
        if unknown:
            raise ConfigError(f"the dataset's items have no field {unknown[0]!r}; they have {', '.join(available)}")
        self.fields: dict[str, Field] = {name: schema[name] for name in chosen}
        self._positions = [available.index(name) for name in chosen]

    def __len__(self) -> int:
        return len(self.source)

    def read(self, position: int) -> list[Any]:
        try:
            values = self.source.read(position)
        except InvalidItem as error:
            raise SampleError(f"sample {position}: {error}", index=position) from error.__cause__
        return [values[index] for index in self._positions]

    def dataset_index(self, positions: np.ndarray) -> np.ndarray:
        return np.asarray(positions, dtype=np.int64)

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


def reader_for(dataset: Any, names: Sequence[str] | None, verify: bool) -> PackedReader | LiveReader:
    """The reader for a packed dataset, a view of one, numpy arrays, or any map-style dataset."""
    if isinstance(dataset, (Dataset, DatasetView)):
        return PackedReader(dataset, names, verify)
    if is_arrays(dataset):
        return LiveReader(ArraysSource(dataset), names)
    return LiveReader(DatasetSource(dataset), names)
