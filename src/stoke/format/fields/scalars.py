"""Scalar fields: ``int`` (int64) and ``float`` (float64), eight little-endian bytes each.

Example:
    >>> FloatField().decode(memoryview(FloatField().encode(0.5)))
    0.5
"""

from __future__ import annotations

import math
import numbers
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from stoke.errors import FormatError, InvalidItem
from stoke.format.fields.base import Field, ValueSpec

_INT64 = struct.Struct("<q")
_FLOAT64 = struct.Struct("<d")


def _scalar(value: Any) -> Any:
    """Unwrap a 0-d numpy array or torch tensor into a Python scalar; pass anything else through."""
    if hasattr(value, "ndim") and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


@dataclass(frozen=True)
class IntField(Field):
    """A signed 64-bit integer (labels, ids, counts). Booleans and integral floats are accepted."""

    type_name: ClassVar[str] = "int"

    def encode(self, value: Any) -> bytes:
        value = _scalar(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, numbers.Integral):
            raise InvalidItem("invalid_value", f"expected an integer, got {type(value).__name__} {value!r:.40}")
        try:
            return _INT64.pack(int(value))
        except struct.error:
            raise InvalidItem("invalid_value", f"integer {value} does not fit in 64 bits") from None

    def min_record_bytes(self) -> int:
        return 8

    def decode(self, data: memoryview) -> int:
        if len(data) != 8:
            raise FormatError(f"an int record holds {len(data)} bytes instead of 8")
        return _INT64.unpack(data)[0]

    @property
    def spec(self) -> ValueSpec:
        return ValueSpec((), np.dtype("<i8"))


@dataclass(frozen=True)
class FloatField(Field):
    """A 64-bit float. NaN and infinities are stored as they are (they are values, not damage)."""

    type_name: ClassVar[str] = "float"

    def encode(self, value: Any) -> bytes:
        value = _scalar(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidItem("invalid_value", f"expected a number, got {type(value).__name__} {value!r:.40}")
        as_float = float(value)
        if math.isinf(as_float) and not math.isinf(value):  # an integer too large for a float
            raise InvalidItem("invalid_value", f"number {value} does not fit in a 64-bit float")
        return _FLOAT64.pack(as_float)

    def min_record_bytes(self) -> int:
        return 8

    def decode(self, data: memoryview) -> float:
        if len(data) != 8:
            raise FormatError(f"a float record holds {len(data)} bytes instead of 8")
        return _FLOAT64.unpack(data)[0]

    @property
    def spec(self) -> ValueSpec:
        return ValueSpec((), np.dtype("<f8"))
