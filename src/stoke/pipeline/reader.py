"""How the Loader reads one sample's fields, from a packed dataset or from a user's own dataset.

Both readers implement :class:`SampleReader`. :class:`PackedReader` hands out each field's stored bytes
as zero-copy views of the mapped shard, checked against the sample's checksum (``verify``: the first time
this Loader reads each sample, on every read, or never). :class:`LiveReader` calls the user's
``dataset[i]`` and hands out the values it returns, with fields inferred from the first items (see
``stoke.sources.dataset``). Each reader also gives every stage the input for its field
(:meth:`SampleReader.input_for`, ``stoke.pipeline.inputs``): stored records that the field decodes, or
live values that it coerces, so no stage asks which kind of reader it has. Both name samples the same
way in errors.

Example:
    >>> reader = LiveReader(DatasetSource([{"x": 1.0}, {"x": 2.0}]))
    >>> reader.fields, reader.read(1), reader.input_for("x").decode(reader.read(1)[0])
    ({'x': FloatField()}, [2.0], 2.0)
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from stoke.errors import ConfigError, InvalidItem, SampleError, StokeError
from stoke.format import mapguard
from stoke.format.fields import Field, ImageField
from stoke.order import Order
from stoke.pipeline.inputs import LiveImages, LiveValues, StoredImages, StoredValues, live_input, stored_input
from stoke.pipeline.timing import Timing
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


@runtime_checkable
class SampleReader(Protocol):
    """What the Loader asks of the part that reads samples: one sample's values by position, and the words
    and inputs around them.

    A *position* is an index into what the Loader was given (a view's own numbering); the dataset index
    (``dataset_index``) is what randomness and errors are keyed on. ``read`` is called from many worker
    threads (or forked processes) at once, so it keeps no per-call state. Values come in ``fields``'
    order; each field's stage gets them through ``input_for(name)``, made once per stage.

    Attributes:
        fields: the loaded fields, by name, in the order ``read`` returns their values.
        layout: the structure of the dataset's items, ``"dict"``, ``"tuple"`` or ``"single"``
            (``stoke.pipeline.structure`` shapes batches like them).
        packed: whether values are stored records (``stoke.open``) rather than a user's live values; for
            reports and for reading a whole column at once. No stage reads it.
        timing: the Loader's timing hook (``stoke.pipeline.timing``), to which ``read`` reports its reads
            (and checked reads) when the Loader is watched.
        own_order: the order the data brings with it (a mixture's proportions), which the Loader uses
            instead of its own ``shuffle``; None for every other reader.

    A reader may also write whole rows into a batch's arrays itself: ``start_fill(positions, rows,
    arrays, threads=1, background=True)`` returns None to be read row by row, or a function that
    finishes the fill and returns the rows that failed (``(row, error)`` pairs); it may share the work
    with up to ``threads`` threads of its own, which may go on copying after it returns when
    ``background``. ``fills_rows = True`` tells the Loader to make each batch one chunk
    (``stoke.pipeline.block_reader``).

    Example:
        >>> import numpy as np
        >>> reader: SampleReader = reader_for({"x": np.arange(4.0)}, None, "never")
        >>> (x,) = reader.read(2)
        >>> len(reader), reader.input_for("x").decode(x), reader.describe(2), reader.dataset_index(np.array([3]))
        (4, 2.0, 'sample 2', array([3]))
    """

    fields: dict[str, Field]
    layout: str
    packed: bool
    timing: Timing
    own_order: Order | None

    def __len__(self) -> int:
        """The number of positions."""
        ...

    def read(self, position: int) -> list[Any]:
        """The values of ``fields`` at ``position``, in order; a SampleError naming it for a bad sample."""
        ...

    def check_read(self, position: int) -> None:
        """After the sample's values were used: a SampleError if what they came from changed under them."""
        ...

    def dataset_index(self, positions: np.ndarray) -> np.ndarray:
        """The dataset indices (int64) of ``positions``: what random numbers and failures are keyed on."""
        ...

    def origin(self, indices: np.ndarray) -> dict[str, Any]:
        """The batch entries that say where its rows came from, from their dataset ``indices``: ``index``
        (int64), and for a mixture ``source``."""
        ...

    def will_read(self, positions: np.ndarray) -> None:
        """The positions an epoch will read, in order, before it reads them (to fetch ahead)."""
        ...

    def describe(self, position: int) -> str:
        """The sample at ``position`` in words, for errors (``"sample 17 (shard-000001.stk)"``)."""
        ...

    def field_stats(self, name: str) -> dict[str, int] | None:
        """Field ``name``'s statistics (an image field's smallest and largest sizes), None if unknown."""
        ...

    def input_for(self, name: str) -> StoredImages | StoredValues | LiveImages | LiveValues:
        """The input through which field ``name``'s stage takes the values ``read`` hands out."""
        ...


class CheckedSamples:
    """Which samples have passed their checksum, one bit each, in memory that forked workers share.

    An anonymous shared mapping made before the process workers fork, so a sample a worker has checked
    is not checked again by another. Bits are only ever set after a check succeeded; two threads setting
    bits of one byte at once may lose one of them, which costs a second check, never a missed one.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._bits = mmap.mmap(-1, max(1, (size + 7) // 8))

    def __contains__(self, position: int) -> bool:
        return bool(self._bits[position >> 3] >> (position & 7) & 1)

    def add(self, position: int) -> None:
        self._bits[position >> 3] |= 1 << (position & 7)

    def add_all(self, passed: np.ndarray) -> None:
        """Mark every sample where the bool array ``passed`` (one per sample) is True."""
        bits = np.frombuffer(self._bits, np.uint8)
        packed = np.packbits(passed, bitorder="little")
        bits[: len(packed)] |= packed

    def complete(self) -> bool:
        """Whether every sample has passed (one pass over the bits)."""
        bits = np.frombuffer(self._bits, np.uint8)
        whole, rest = divmod(self.size, 8)
        tail = (1 << rest) - 1  # the last byte's bits that are samples
        return bool(np.all(bits[:whole] == 255)) and (rest == 0 or int(bits[whole]) & tail == tail)

    def holds(self, positions: np.ndarray) -> np.ndarray:
        """Whether each of ``positions`` (int64) has passed, as a bool array: one numpy pass, no loop."""
        bits = np.frombuffer(self._bits, np.uint8)
        return (bits[positions >> 3] >> (positions & 7).astype(np.uint8) & 1).astype(bool)


class PackedReader:
    """Fields of a packed :class:`~stoke.read.Dataset` (or a view of one), as stored bytes; a
    :class:`SampleReader`."""

    packed = True
    layout = "dict"  # dataset[i] is a dict
    own_order = None

    def __init__(
        self,
        dataset: Dataset | DatasetView,
        names: Sequence[str] | None,
        verify: bool | str,
        timing: Timing | None = None,
    ) -> None:
        self.dataset = dataset
        chosen = list(dataset.fields) if names is None else list(names)
        unknown = [name for name in chosen if name not in dataset.fields]
        if unknown:
            raise ConfigError(f"the dataset has no field {unknown[0]!r}; its fields are {', '.join(dataset.fields)}")
        self.fields: dict[str, Field] = {name: dataset.fields[name] for name in chosen}
        self._positions = dataset.field_positions(chosen)
        self.verify = verify_mode(verify)
        self._checked = CheckedSamples(len(dataset)) if self.verify == "once" else None
        self.timing = timing = timing if timing is not None else Timing()
        # A checked read's lookup is microseconds against the hash of the record: one slot for both.
        self._slots = (timing.slot("read", "read"), timing.slot("read and checksum", "checksum"))

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, position: int) -> list[Any]:
        """The stored bytes of each loaded field; checked against the sample's checksum first as ``verify``
        says (with "once", a sample is marked checked only after it passed)."""
        checked = self._checked
        check = self.verify == "always" or (checked is not None and position not in checked)
        timing = self.timing
        started = timing.start()
        fields = self.dataset.read_fields(position, self._positions, check)
        timing.stop(self._slots[check], started)
        if check and checked is not None:
            checked.add(position)
        return fields

    def check_read(self, position: int) -> None:
        """After the sample was used: raise SampleError if its shard was truncated meanwhile (its lost pages
        read as zeros; ``stoke.format.mapguard``). One flag unless some mapping of this process lost pages."""
        if mapguard.pages_lost():
            self.dataset.check_read(position)

    def dataset_index(self, positions: np.ndarray) -> np.ndarray:
        """The dataset indices of ``positions`` (a view's positions map to its base's indices)."""
        return self.dataset.dataset_index(positions)

    def origin(self, indices: np.ndarray) -> dict[str, Any]:
        """``index``: the rows' dataset indices."""
        return {"index": torch.from_numpy(indices)}

    def will_read(self, positions: np.ndarray) -> None:
        """Tell the dataset the positions an epoch will read, in order (a remote one fetches ahead)."""
        self.dataset.will_read(positions)

    def describe(self, position: int) -> str:
        """The sample and the shard it lives in, in words."""
        return self.dataset.describe(position)

    def field_stats(self, name: str) -> dict[str, int] | None:
        """The manifest's statistics of field ``name``."""
        return self.dataset.manifest.field_entry(name).stats

    def input_for(self, name: str) -> StoredImages | StoredValues:
        """Stored records: the field decodes them (an image sized by its header, in the region a crop needs)."""
        return stored_input(self.fields[name], self.field_stats(name))


class LiveReader:
    """Fields of a user's map-style dataset (or of arrays), as the Python values it returns; a
    :class:`SampleReader`."""

    packed = False
    own_order = None

    def __init__(
        self, source: Source, names: Sequence[str] | None = None, layout: str = "dict", timing: Timing | None = None
    ) -> None:
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
        self.timing = timing if timing is not None else Timing()
        self._slot = self.timing.slot("read", "read")

    def __len__(self) -> int:
        return len(self.source)

    def read(self, position: int) -> list[Any]:
        started = self.timing.start()
        try:
            values = self.source.read(position)
        except InvalidItem as error:
            raise SampleError(f"sample {position}: {error}", index=position) from error.__cause__
        self.timing.stop(self._slot, started)
        return [values[index] for index in self._positions]

    def check_read(self, position: int) -> None:
        """Nothing to check: the values are the user's own, not mapped shards."""

    def dataset_index(self, positions: np.ndarray) -> np.ndarray:
        """The positions themselves: the user's dataset has no other numbering."""
        return np.asarray(positions, dtype=np.int64)

    def origin(self, indices: np.ndarray) -> dict[str, Any]:
        """``index``: the rows' positions in the user's dataset."""
        return {"index": torch.from_numpy(indices)}

    def will_read(self, positions: np.ndarray) -> None:
        """Nothing to prepare: the user's dataset reads its items itself."""

    def describe(self, position: int) -> str:
        """``"sample <position>"``."""
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

    def input_for(self, name: str) -> LiveImages | LiveValues:
        """Live values: the field coerces them (an image once, to HWC uint8)."""
        return live_input(self.fields[name])


def reader_for(
    dataset: Any,
    fields: Sequence[str] | None,
    verify: bool | str,
    names: Sequence[str] | None = None,
    timing: Timing | None = None,
) -> SampleReader:
    """The reader for a packed dataset, a view of one, numpy arrays, or any map-style dataset.

    ``fields`` chooses the fields to load; ``names`` names the values of tuple items (the batches are then
    dicts), as ``stoke.pack(names=)`` does; ``timing`` is the Loader's timing hook. A dataset that brings
    its own reader (a :class:`~stoke.mixture.Mixture`: ``sample_reader(fields, verify, timing)``) makes it.
    """
    if callable(getattr(dataset, "sample_reader", None)):
        if names is not None:
            raise ConfigError(f"names= names the values of tuple items; a {type(dataset).__name__}'s fields have names")
        return dataset.sample_reader(fields, verify, timing)
    if isinstance(dataset, (Dataset, DatasetView)):
        if names is not None:
            raise ConfigError(
                f"names= names the values of tuple items; a packed dataset's fields already have names "
                f"({', '.join(dataset.fields)}): choose among them with fields="
            )
        return PackedReader(dataset, fields, verify, timing)
    if is_arrays(dataset):
        source = ArraysSource(dataset, names=names)
        layout = "dict" if isinstance(dataset, Mapping) or names is not None else "tuple"
        single = isinstance(dataset, np.ndarray) and names is None
        return LiveReader(source, fields, "single" if single else layout, timing)
    source = DatasetSource(dataset, names=names)
    return LiveReader(source, fields, "dict" if names is not None else source.layout, timing)
