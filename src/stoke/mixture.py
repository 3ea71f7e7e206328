"""``stoke.mix``: several packed datasets as one, each in a chosen proportion of every epoch.

A :class:`Mixture` is a dataset the Loader takes like any other: ``stoke.Loader(stoke.mix({"web": a,
"code": b}, weights={"web": 3, "code": 1}), batch_size=...)``. Its sources may be datasets
(``stoke.open``), views of them (a split, a slice) or paths and URLs, which it opens. Each epoch has
``epoch_samples`` samples (default: the sum of the sources' sizes), each source contributing its weight's
share; within a source, samples come from its own permutation, so none repeats before all of that source
were drawn (``stoke.order.mixture`` says how, and how every global batch keeps the proportions).

Every batch says where each row came from: ``source`` (the source's name, per row) beside ``index`` (the
sample's index within that source). The mixture loads the fields its sources share, or those named with
``Loader(fields=...)`` (a ConfigError names a field missing from a source, or one that differs in type).

Resume, ranks and elastic world sizes work as for one dataset: ``state_dict()`` stays a small JSON dict
(it also holds the mixture's weights and each source's draws at the start of the epoch), so a resumed
epoch is the rest of the same epoch, even if the weights changed in between; the new weights apply from
the next epoch (docs/mixtures.md).

Example:
    >>> import numpy as np, stoke, tempfile
    >>> root = tempfile.mkdtemp()
    >>> _ = stoke.pack({"x": np.arange(6.0)}, root + "/a", progress=False, workers=1)
    >>> _ = stoke.pack({"x": np.arange(100.0, 102.0)}, root + "/b", progress=False, workers=1)
    >>> mixture = stoke.mix({"a": root + "/a", "b": root + "/b"}, weights={"a": 1, "b": 1}, shuffle=False)
    >>> len(mixture), mixture.counts
    (8, {'a': 4, 'b': 4})
    >>> batch = next(iter(stoke.Loader(mixture, batch_size=4)))
    >>> batch["source"], batch["index"].tolist(), batch["x"].tolist()
    (['a', 'b', 'a', 'b'], [0, 0, 1, 1], [0.0, 100.0, 1.0, 101.0])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stoke.errors import ConfigError
from stoke.format.fields import Field, ImageField
from stoke.order.mixture import MixtureOrder, check_weights
from stoke.pipeline.blocks import TokenBlocks
from stoke.pipeline.mixture_reader import MixtureReader
from stoke.pipeline.timing import Timing
from stoke.read import Dataset, DatasetView
from stoke.read import open as open_dataset

Source = Dataset | DatasetView | TokenBlocks | str | os.PathLike


class Mixture:
    """Packed datasets mixed in proportion to weights; see the module docstring (made by :func:`mix`).

    Attributes:
        names: the sources' names, in the order given.
        datasets: the opened sources, in that order.
        weights: name -> weight.
        counts: name -> samples per epoch.
        seed, shuffle: the order's seed and whether it shuffles within sources.
    """

    def __init__(
        self,
        sources: Mapping[str, Source],
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
        epoch_samples: int | None = None,
        shuffle: bool = True,
    ) -> None:
        if not isinstance(sources, Mapping) or not sources:
            raise ConfigError("stoke.mix takes a dict of named sources, such as {'web': dataset, 'code': 'path'}")
        bad = [name for name in sources if not isinstance(name, str) or not name]
        if bad:
            raise ConfigError(f"source names must be non-empty strings, got {bad[0]!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.names = list(sources)
        self.datasets = [_opened(name, source) for name, source in sources.items()]
        given = list(sources.values())
        self._opened_here = [ds for ds, source in zip(self.datasets, given) if isinstance(source, (str, os.PathLike))]
        sizes = [len(dataset) for dataset in self.datasets]
        values = check_weights(self.names, weights) if weights is not None else [float(n) for n in sizes]
        self.seed, self.shuffle = int(seed), bool(shuffle)
        total = sum(sizes) if epoch_samples is None else epoch_samples
        self.order = MixtureOrder(self.names, sizes, values, total, self.seed, self.shuffle)
        self.weights = dict(zip(self.names, values))
        self.counts = dict(zip(self.names, self.order.counts.tolist()))
        self.starts = self.order.starts

    def __len__(self) -> int:
        """Samples per epoch."""
        return self.order.size

    def close(self) -> None:
        """Close the datasets this mixture opened from paths (those it was given stay open)."""
        for dataset in self._opened_here:
            dataset.close()

    def __enter__(self) -> Mixture:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        parts = ", ".join(f"{name} {self.counts[name]} (of {len(ds)})" for name, ds in zip(self.names, self.datasets))
        return f"Mixture({len(self)} samples per epoch: {parts})"

    def fields(self, names: list[str] | None = None) -> dict[str, Field]:
        """The fields to load: ``names`` (each checked in every source), or those every source has.

        A ConfigError names a field a source lacks, or one whose type differs between sources.
        """
        every = [_fields_of(dataset) for dataset in self.datasets]
        first = every[0]
        if names is None:
            names = [name for name in first if all(name in fields for fields in every[1:])]
            if not names:
                raise ConfigError(
                    f"the sources {', '.join(map(repr, self.names))} share no field; pack them with common field "
                    f"names, or load each on its own"
                )
        chosen: dict[str, Field] = {}
        for name in names:
            for source, fields in zip(self.names, every):
                if name not in fields:
                    raise ConfigError(
                        f"field {name!r} is missing from source {source!r} (it has {', '.join(fields)}); "
                        f"leave it out with fields=, or give that source the field"
                    )
            chosen[name] = _shared(name, self.names, [fields[name] for fields in every])
        return chosen

    def sample_reader(
        self, fields: Sequence[str] | None, verify: bool | str, timing: Timing | None = None
    ) -> MixtureReader:
        """The Loader's reader of this mixture (``stoke.pipeline.mixture_reader``); it also brings the
        mixture's order."""
        return MixtureReader(self, fields, verify, timing)

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source number, index within it) of global ids ``positions``."""
        positions = np.asarray(positions, dtype=np.int64)
        source = np.searchsorted(self.starts, positions, side="right") - 1
        return source, positions - self.starts[source]


def mix(
    sources: Mapping[str, Source],
    weights: Mapping[str, float] | None = None,
    seed: int = 0,
    epoch_samples: int | None = None,
    shuffle: bool = True,
) -> Mixture:
    """Several packed datasets as one, in proportion to ``weights`` (default: their sizes); see the module
    docstring.

    Args:
        sources: name -> a dataset, a view of one, or a path or URL to open.
        weights: name -> a non-negative weight (they need not add up to anything).
        seed: the seed of the mixture's order (within-source permutations and the interleave).
        epoch_samples: samples per epoch (default: every source's size added up).
        shuffle: permute within each source (each permutation used up before the next); False takes each
            source in sequence. The Loader's own ``shuffle=`` does not apply to a mixture.

    Example:
        >>> import numpy as np, stoke, tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = stoke.pack({"x": np.arange(3.0)}, root + "/small", progress=False, workers=1)
        >>> _ = stoke.pack({"x": np.arange(30.0)}, root + "/large", progress=False, workers=1)
        >>> stoke.mix({"small": root + "/small", "large": root + "/large"}, weights={"small": 1, "large": 1})
        Mixture(33 samples per epoch: small 17 (of 3), large 16 (of 30))
    """
    return Mixture(sources, weights, seed, epoch_samples, shuffle)


def _opened(name: str, source: Source) -> Any:
    if isinstance(source, (Dataset, DatasetView)):
        return source
    if isinstance(source, (str, os.PathLike)):
        return open_dataset(source)
    if isinstance(source, TokenBlocks):
        return source
    raise ConfigError(
        f"source {name!r} is a {type(source).__name__}; a mixture's sources are packed datasets (stoke.open), "
        f"views of them, their paths, or stoke.TokenBlocks of them: stoke.pack a dataset of your own first"
    )


def _fields_of(dataset: Any) -> dict[str, Field]:
    """A source's fields: a packed dataset's, or those of the blocks of a ``TokenBlocks``."""
    return dict(dataset.fields)


def _shared(name: str, sources: list[str], fields: list[Field]) -> Field:
    """The one field ``name`` is in every source: same type and values of the same kind (an image's mode,
    an array's dtype and shape); the smallest image pixel limit of them all."""
    first = fields[0]
    for source, field in zip(sources[1:], fields[1:]):
        same = type(field) is type(first) and field.spec == first.spec
        if isinstance(first, ImageField) and isinstance(field, ImageField):
            same = first.mode == field.mode
        if not same:
            raise ConfigError(
                f"field {name!r} is {first!r} in source {sources[0]!r} but {field!r} in source {source!r}; a "
                f"mixture loads a field only where every source stores it alike (leave it out with fields=)"
            )
    if isinstance(first, ImageField):
        return first.limited(min(field.max_pixels for field in fields if isinstance(field, ImageField)))
    return first
