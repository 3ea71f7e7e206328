"""How the Loader reads one sample's fields, from a packed dataset or from a user's own dataset.

:class:`PackedReader` hands out each field's stored bytes as zero-copy views of the mapped shard,
optionally checked against the sample's checksum; the stages decode them. :class:`LiveReader` calls the
user's ``dataset[i]`` and hands out the values it returns, with fields inferred from the first items
(see ``stoke.sources.dataset``); the stages coerce them. Both name samples the same way in errors.

Example:
    >>> reader = LiveReader([{"x": 1.0}, {"x": 2.0}])
    >>> reader.fields, reader.read(1)
    ({'x': FloatField()}, [2.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stoke.errors import ConfigError, InvalidItem, SampleError
from stoke.format.fields import Field
from stoke.read import Dataset, DatasetView
from stoke.sources.dataset import DatasetSource


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
    """Fields of a user's map-style dataset, as the Python values its ``__getitem__`` returns."""

    packed = False

    def __init__(self, dataset: Any, names: Sequence[str] | None = None) -> None:
        self.source = DatasetSource(dataset)
        available = self.source.names
        chosen = available if names is None else list(names)
        unknown = [name for name in chosen if name not in available]
        if unknown:
            raise ConfigError(f"the dataset's items have no field {unknown[0]!r}; they have {', '.join(available)}")
        self.fields: dict[str, Field] = {name: self.source.fields[name] for name in chosen}
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
        return None


def reader_for(dataset: Any, names: Sequence[str] | None, verify: bool) -> PackedReader | LiveReader:
    """The reader for a packed dataset, a view of one, or any map-style dataset."""
    if isinstance(dataset, (Dataset, DatasetView)):
        return PackedReader(dataset, names, verify)
    return LiveReader(dataset, names)
