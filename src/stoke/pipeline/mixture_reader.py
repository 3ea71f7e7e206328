"""How the Loader reads a :class:`~stoke.mixture.Mixture`: one reader per source behind one
:class:`~stoke.pipeline.reader.SampleReader` (packed readers, or live ones for sources of TokenBlocks).

Positions are the mixture's global ids (``stoke.order.mixture``): source ``s``'s sample ``i`` is
``starts[s] + i``. A read goes to that source's reader (a dataset's
:class:`~stoke.pipeline.reader.PackedReader`, so checksums, ``verify`` and a truncated shard behave as
for one dataset); random numbers are keyed by the
global id, so two sources' sample 0 are augmented differently; and each batch's ``origin`` gives the
``source`` of every row and its ``index`` within that source. Image fields' statistics are merged
across the sources, so a batch is sized for all of them.

Not for which positions an epoch visits (``stoke.order.mixture``) nor for the mixture itself
(``stoke.mixture``).

Example:
    >>> import numpy as np, stoke, tempfile
    >>> root = tempfile.mkdtemp()
    >>> _ = stoke.pack({"x": np.arange(3.0)}, root + "/a", progress=False, workers=1)
    >>> _ = stoke.pack({"x": np.arange(10.0, 12.0)}, root + "/b", progress=False, workers=1)
    >>> reader = stoke.mix({"a": root + "/a", "b": root + "/b"}).sample_reader(None, "never")
    >>> len(reader), reader.input_for("x").decode(reader.read(3)[0]), reader.describe(3)
    (5, 10.0, "sample 0 (shard-000000.stk) of source 'b'")
    >>> origin = reader.origin(np.array([0, 4])); origin["source"], origin["index"].tolist()
    (['a', 'b'], [0, 1])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from stoke.errors import ConfigError, SampleError
from stoke.format.fields import Field, ImageField
from stoke.order import Order
from stoke.pipeline.inputs import LiveImages, LiveValues, StoredImages, StoredValues, live_input, stored_input
from stoke.pipeline.reader import SampleReader, reader_for, verify_mode
from stoke.pipeline.timing import Timing

_SIDES = {"min_height", "max_height", "min_width", "max_width"}


class MixtureReader:
    """The sources of a mixture, read through one packed reader each; a :class:`SampleReader`."""

    layout = "dict"

    def __init__(
        self, mixture: Any, names: Sequence[str] | None, verify: bool | str, timing: Timing | None = None
    ) -> None:
        self.mixture = mixture  # a stoke.mixture.Mixture (not imported: the mixture makes this reader)
        self.own_order: Order = mixture.order
        self.fields: dict[str, Field] = mixture.fields(list(names) if names is not None else None)
        self.verify = verify_mode(verify)
        self.timing = timing if timing is not None else Timing()
        chosen = list(self.fields)
        self.readers = [reader_for(dataset, chosen, verify, None, self.timing) for dataset in mixture.datasets]
        kinds = {reader.packed for reader in self.readers}
        if len(kinds) > 1:
            live = next(name for name, reader in zip(mixture.names, self.readers) if not reader.packed)
            raise ConfigError(
                f"source {live!r} is read as live values and the others as packed records; mix packed datasets "
                f"with packed datasets, or TokenBlocks with TokenBlocks"
            )
        self.packed = kinds.pop()
        self.fills_rows = all(getattr(reader, "fills_rows", False) for reader in self.readers)  # TokenBlocks
        self._starts = mixture.starts
        self._names = np.array(mixture.names, dtype=object)
        self._size = int(sum(len(reader) for reader in self.readers))

    def __len__(self) -> int:
        return self._size

    def _where(self, position: int) -> tuple[SampleReader, int, int]:
        source = int(np.searchsorted(self._starts, position, side="right")) - 1
        return self.readers[source], position - int(self._starts[source]), source

    def read(self, position: int) -> list[Any]:
        """The stored bytes of the loaded fields of global id ``position``, from its source; a damaged
        sample is a SampleError keyed by the global id and naming the source."""
        reader, local, source = self._where(position)
        try:
            return reader.read(local)
        except SampleError as error:
            raise self._named(error, position, source) from error

    def start_fill(
        self,
        positions: np.ndarray,
        rows: np.ndarray,
        arrays: dict[str, np.ndarray],
        threads: int = 1,
        background: bool = True,
    ) -> Callable[[], list] | None:
        """Where every source's reader fills rows itself (TokenBlocks: ``stoke.pipeline.block_reader``), each
        source's rows of the chunk in one call to its ``start_fill``, in turn (the first may still be copied
        in the background, the gather's helpers being busy with it, and the others are copied as they
        start); the function it returns finishes them all and gives the failed rows, named for the mixture.
        None, with nothing left running, where a source cannot, and the rows are read one by one."""
        if not self.fills_rows:
            return None
        positions = np.asarray(positions, dtype=np.int64)
        source, local = self.mixture.locate(positions)
        started: list[tuple[int, np.ndarray, Callable[[], list]]] = []
        for number in np.unique(source).tolist():
            chosen = np.flatnonzero(source == number)
            finish = self.readers[number].start_fill(local[chosen], rows[chosen], arrays, threads, background)
            if finish is None:
                for _, _, begun in started:  # nothing is left copying into rows read one by one now
                    begun()
                return None
            started.append((number, chosen, finish))

        def finished() -> list:
            failures = []
            for number, chosen, finish in started:
                at = {int(rows[j]): int(positions[j]) for j in chosen.tolist()}
                failures += [(row, self._named(error, at[row], number)) for row, error in finish()]
            return failures

        return finished

    def check_read(self, position: int) -> None:
        """As the source's reader checks it (a shard truncated while its bytes were used)."""
        reader, local, source = self._where(position)
        try:
            reader.check_read(local)
        except SampleError as error:
            raise self._named(error, position, source) from error

    def _named(self, error: SampleError, position: int, source: int) -> SampleError:
        """``error`` of a source's sample, for the mixture: its global id (two sources' sample 6 are two
        failures), the source named in the message."""
        return SampleError(f"{error} (source {self.mixture.names[source]!r})", index=position, shard=error.shard)

    def dataset_index(self, positions: np.ndarray) -> np.ndarray:
        """The global ids themselves: what randomness and failures are keyed on."""
        return np.asarray(positions, dtype=np.int64)

    def origin(self, indices: np.ndarray) -> dict[str, Any]:
        """Where each row came from: ``source`` (names) and ``index`` (int64, within the source)."""
        source, local = self.mixture.locate(indices)
        return {"index": torch.from_numpy(local), "source": self._names[source].tolist()}

    def check_delivery(self, dtypes: Mapping[str, np.dtype]) -> None:
        """Each source's reader checks the batch dtypes, where it checks them (TokenBlocks: a ConfigError
        for a dtype too narrow for its ids)."""
        for reader in self.readers:
            check = getattr(reader, "check_delivery", None)
            if check is not None:
                check(dtypes)

    def will_read(self, positions: np.ndarray) -> None:
        """Each source learns the positions of it the epoch reads, in the epoch's order."""
        source, local = self.mixture.locate(positions)
        for number, reader in enumerate(self.readers):
            reader.will_read(local[source == number])

    def describe(self, position: int) -> str:
        """The sample, its shard and its source, in words."""
        reader, local, source = self._where(position)
        return f"{reader.describe(local)} of source {self.mixture.names[source]!r}"

    def field_stats(self, name: str) -> dict[str, int] | None:
        """An image field's smallest and largest sizes over every source (None if a source has none, and
        for other fields: their statistics are each source's own)."""
        if not isinstance(self.fields[name], ImageField):
            return None
        every = [reader.field_stats(name) or {} for reader in self.readers]
        if not all(stats.keys() >= _SIDES for stats in every):
            return None
        return {
            "min_height": min(stats["min_height"] for stats in every),
            "max_height": max(stats["max_height"] for stats in every),
            "min_width": min(stats["min_width"] for stats in every),
            "max_width": max(stats["max_width"] for stats in every),
        }

    def input_for(self, name: str) -> StoredImages | StoredValues | LiveImages | LiveValues:
        """Stored records (or the live values of TokenBlocks), decoded by the field every source shares."""
        if not self.packed:
            return live_input(self.fields[name])
        return stored_input(self.fields[name], self.field_stats(name))
