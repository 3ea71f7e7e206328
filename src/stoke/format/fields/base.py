"""The field protocol: one typed column of a dataset, with its encoder and decoder together.

A field turns a source value into the bytes stored in a shard (``encode``), turns those bytes back into
the value ``dataset[i]`` returns (``decode``), and turns a live value from a user's own ``Dataset`` into
that same decoded form without storing it (``coerce``). It declares the decoded form's shape and dtype
(``spec``) so the Loader can allocate its batch buffers once.

Fields are settings, not state: immutable, JSON round-trippable through ``to_dict`` and
``field_from_dict``, and free of per-sample data. They are not for reading files; sources do that.

Example:
    >>> from stoke.format.fields import IntField, field_from_dict
    >>> field = IntField()
    >>> field.decode(memoryview(field.encode(7)))
    7
    >>> field_from_dict({"type": "int"}, where="fields[0]") == field
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from stoke.errors import FormatError


@dataclass(frozen=True)
class ValueSpec:
    """Shape and dtype of a decoded value; ``None`` in ``shape`` marks a dimension that varies.

    ``shape is None`` means the number of dimensions varies too. ``dtype is None`` marks values that are
    not tensors (text, JSON): the Loader hands those over as Python lists.
    """

    shape: tuple[int | None, ...] | None
    dtype: np.dtype | None

    @property
    def is_tensor(self) -> bool:
        return self.dtype is not None

    @property
    def is_fixed(self) -> bool:
        return self.shape is not None and all(dim is not None for dim in self.shape)


class Field(ABC):
    """Base of every field type; subclasses are frozen dataclasses registered by ``type_name``."""

    type_name: ClassVar[str]

    @abstractmethod
    def encode(self, value: Any) -> bytes:
        """The stored bytes of ``value``; raises :class:`stoke.errors.InvalidItem` for a bad value."""

    @abstractmethod
    def decode(self, data: memoryview) -> Any:
        """The value stored in ``data``; raises :class:`stoke.errors.FormatError` for damaged bytes."""

    def coerce(self, value: Any) -> Any:
        """A live value in the form ``decode`` returns (the user-``Dataset`` path, nothing stored)."""
        return self.decode(memoryview(self.encode(value)))

    @property
    @abstractmethod
    def spec(self) -> ValueSpec:
        """What ``decode`` returns, for allocating batch buffers."""

    def params(self) -> dict[str, Any]:
        """The settings that ``to_dict`` stores beside the type name."""
        return {}

    def min_record_bytes(self) -> int:
        """The fewest bytes any valid record of this field takes: what a count of samples implies about
        the size of the shards that hold them (``Manifest`` checks it before trusting a count)."""
        return 0

    def to_dict(self) -> dict[str, Any]:
        """The manifest's entry for this field (JSON-ready): ``{"type": ..., settings}``."""
        return {"type": self.type_name, **self.params()}

    @classmethod
    def from_params(cls, params: dict[str, Any], where: str) -> Field:
        """Build from the manifest's settings; subclasses with settings validate them here."""
        if params:
            raise FormatError(f"{where} has settings {sorted(params)} that type '{cls.type_name}' does not take")
        return cls()

    # Statistics gathered at pack time (image sizes, ...). Fields without any return None.
    def record_stats(self, record: bytes) -> dict[str, int] | None:
        return None

    @staticmethod
    def merge_stats(first: dict[str, int] | None, second: dict[str, int] | None) -> dict[str, int] | None:
        if first is None or second is None:
            return first if second is None else second
        return {key: (min if key.startswith("min") else max)(first[key], second[key]) for key in first}


def require(condition: bool, where: str, what: str) -> None:
    """Raise the standard damaged-manifest error unless ``condition`` holds."""
    if not condition:
        raise FormatError(f"{where} {what}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
