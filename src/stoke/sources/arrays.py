"""NumPy arrays as a source: one sample per row of arrays that share their first dimension.

A dict maps field names to arrays; a tuple ``(X, y)`` is named ``x``, ``y``; a single array ``x``. 1-D
integer and boolean arrays become ``int`` fields, 1-D float arrays ``float``, 1-D string arrays ``text``
or ``bytes``; an array with more dimensions becomes an ``ndarray`` field of fixed shape ``array.shape[1:]``.
Declare ``fields={"x": stoke.ImageField()}`` to store uint8 rows as images.

Example:
    >>> import numpy as np
    >>> source = ArraysSource({"x": np.zeros((4, 2), np.float32), "y": np.arange(4)})
    >>> [entry.field.type_name for entry in source.schema()], len(source)
    (['ndarray', 'int'], 4)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xxhash

from stoke.errors import SourceError
from stoke.format.fields import BytesField, Field, FloatField, ImageField, IntField, NDArrayField, TextField
from stoke.format.manifest import RESERVED_FIELD_NAMES, FieldEntry
from stoke.sources.base import Source


class ArraysSource(Source):
    """Rows of equally long arrays; see the module docstring."""

    kind = "arrays"

    def __init__(
        self,
        arrays: Mapping[str, Any] | Sequence[Any] | np.ndarray,
        names: Sequence[str] | None = None,
        fields: Mapping[str, Field] | None = None,
        image: ImageField | None = None,
    ) -> None:
        if isinstance(arrays, Mapping):
            named = {str(name): np.asarray(array) for name, array in arrays.items()}
        else:
            listed = [np.asarray(arrays)] if isinstance(arrays, np.ndarray) else [np.asarray(a) for a in arrays]
            default = (
                ["x"] if len(listed) == 1 else ["x", "y"] if len(listed) == 2 else [f"f{i}" for i in range(len(listed))]
            )
            if names is not None and len(names) != len(listed):
                raise SourceError(f"{len(listed)} arrays were given but {len(names)} names: {list(names)}")
            named = dict(zip(names or default, listed))
        if not named:
            raise SourceError("no arrays were given")
        lengths = {name: array.shape[0] if array.ndim else None for name, array in named.items()}
        if None in lengths.values() or len(set(lengths.values())) != 1:
            raise SourceError(f"the arrays must share their first dimension; their lengths are {lengths}")
        clash = RESERVED_FIELD_NAMES.intersection(named)
        if clash:
            raise SourceError(f"the array name {sorted(clash)[0]!r} is reserved by stoke; rename it")
        self.arrays = named
        self.fields = {name: _field_for(name, array) for name, array in named.items()}
        for name, field in (fields or {}).items():
            if name not in self.fields:
                raise SourceError(f"fields= declares {name!r}, but the arrays are {', '.join(self.fields)}")
            self.fields[name] = field

    def __len__(self) -> int:
        return next(iter(self.arrays.values())).shape[0]

    def schema(self) -> list[FieldEntry]:
        return [FieldEntry(name, field) for name, field in self.fields.items()]

    def read(self, index: int) -> list[Any]:
        return [array[index] for array in self.arrays.values()]

    def name_of(self, index: int) -> str:
        return f"row {index}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "num_items": len(self),
            "arrays": {
                name: {"dtype": array.dtype.str, "shape": list(array.shape)} for name, array in self.arrays.items()
            },
        }

    def fingerprint(self) -> str:
        digest = xxhash.xxh3_64()
        for name, array in self.arrays.items():
            digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
            if array.dtype.kind != "O":
                digest.update(np.ascontiguousarray(array).data)
        return digest.hexdigest()


def _field_for(name: str, array: np.ndarray) -> Field:
    kind = array.dtype.kind
    if array.ndim == 1:
        if kind in "biu":
            return IntField()
        if kind == "f":
            return FloatField()
        if kind == "U":
            return TextField()
        if kind == "S":
            return BytesField()
    if kind not in "biufc":
        raise SourceError(
            f"array {name!r} has dtype {array.dtype}, which stoke cannot store; use numeric or string arrays"
        )
    return NDArrayField(array.dtype, array.shape[1:])
