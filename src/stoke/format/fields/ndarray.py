"""The ``ndarray`` field: numeric arrays of one dtype, of fixed or variable shape.

Stored little-endian in C order. A fixed shape stores the bare elements; a shape with any variable
dimension (``None``) or no declared shape at all stores a small header first: ``u32 ndim, u32 zero,
u64 dims[ndim]``, then the elements. Only numeric dtypes (bool, signed and unsigned integers, floats,
complex) exist in the format: no object arrays, nothing that could hold code.

Example:
    >>> import numpy as np
    >>> field = NDArrayField("float32", (None, 2))
    >>> field.decode(memoryview(field.encode(np.ones((3, 2))))).shape
    (3, 2)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from stoke.errors import ConfigError, FormatError, InvalidItem
from stoke.format.fields.base import Field, ValueSpec, is_int, require

_MAX_NDIM = 32
_MAX_RECORD_BYTES = (1 << 63) - 1  # no file, so no record, is larger
_HEADER = struct.Struct("<II")
# Every dtype the format holds, spelled as numpy's ``dtype.str`` of its little-endian form.
STORED_DTYPES = frozenset(
    {"|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8", "<c8", "<c16"}
)


def normalize_dtype(dtype: Any) -> np.dtype:
    """The little-endian numeric dtype stoke stores for ``dtype``; refuses non-numeric dtypes."""
    resolved = np.dtype(dtype)
    stored = resolved.newbyteorder("<") if resolved.kind in "biufc" else resolved
    if stored.str not in STORED_DTYPES:
        raise ConfigError(
            f"dtype {resolved} is not one stoke stores; ndarray fields hold bool, (u)int8-64, float16-64, complex64/128"
        )
    return stored


def as_numpy(value: Any) -> np.ndarray:
    """A numpy view of an array-like: numpy arrays, torch tensors (moved to the CPU), lists."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


@dataclass(frozen=True)
class NDArrayField(Field):
    """A numeric array; ``shape=None`` accepts any shape, ``None`` inside ``shape`` one varying dimension."""

    type_name: ClassVar[str] = "ndarray"
    dtype: np.dtype
    shape: tuple[int | None, ...] | None = None

    def __init__(self, dtype: Any, shape: tuple[int | None, ...] | list[int | None] | None = None) -> None:
        object.__setattr__(self, "dtype", normalize_dtype(dtype))
        object.__setattr__(self, "shape", None if shape is None else tuple(shape))
        if self.shape is not None and (
            len(self.shape) > _MAX_NDIM or not all(d is None or (is_int(d) and d >= 0) for d in self.shape)
        ):
            raise ConfigError(f"shape {shape} must list at most {_MAX_NDIM} non-negative sizes or None")
        if self.shape is not None and _product(d or 1 for d in self.shape) * self.dtype.itemsize > _MAX_RECORD_BYTES:
            raise ConfigError(f"shape {shape} of {self.dtype.name} describes arrays larger than any file")

    @property
    def is_fixed(self) -> bool:
        return self.shape is not None and None not in self.shape

    @property
    def spec(self) -> ValueSpec:
        return ValueSpec(self.shape, self.dtype)

    def encode(self, value: Any) -> bytes:
        array = self._conformed(value)
        body = np.ascontiguousarray(array).tobytes()
        if self.is_fixed:
            return body
        dims = np.asarray(array.shape, dtype="<u8").tobytes()
        return _HEADER.pack(array.ndim, 0) + dims + body

    def _conformed(self, value: Any) -> np.ndarray:
        """``value`` as an array of this field's dtype and a shape it accepts; InvalidItem otherwise."""
        array = as_numpy(value)
        if array.dtype.kind not in "biufc":
            raise InvalidItem("invalid_value", f"expected a numeric array, got dtype {array.dtype}")
        if self.shape is not None and not _fits(array.shape, self.shape):
            raise InvalidItem("invalid_value", f"expected shape {_show(self.shape)}, got {array.shape}")
        if array.dtype != self.dtype:
            integers = array.dtype.kind in "biu" and self.dtype.kind in "iu"
            if not integers and not np.can_cast(array.dtype, self.dtype, casting="same_kind"):
                raise InvalidItem("invalid_value", f"expected dtype {self.dtype.name}, got {array.dtype.name}")
            cast = array.astype(self.dtype)
            if integers and not np.array_equal(cast, array):
                raise InvalidItem("invalid_value", f"values do not fit in {self.dtype.name}")
            array = cast
        return array

    def min_record_bytes(self) -> int:
        if self.is_fixed:
            return _product(self.shape) * self.dtype.itemsize  # type: ignore[arg-type]
        return _HEADER.size + 8 * (len(self.shape) if self.shape is not None else 0)

    def decode_view(self, data: memoryview) -> np.ndarray:
        """A read-only array over ``data`` itself (no copy); the Loader copies it into its batch buffer."""
        if self.is_fixed:
            shape: tuple[int, ...] = self.shape  # type: ignore[assignment]
            body = data
        else:
            if len(data) < _HEADER.size:
                raise FormatError(f"an ndarray record of {len(data)} bytes is shorter than its header")
            ndim, zero = _HEADER.unpack_from(data)
            if ndim > _MAX_NDIM or zero != 0 or len(data) < _HEADER.size + 8 * ndim:
                raise FormatError("an ndarray record has a damaged header")
            shape = tuple(int(d) for d in np.frombuffer(data, "<u8", ndim, _HEADER.size))
            if self.shape is not None and not _fits(shape, self.shape):
                raise FormatError(f"an ndarray record has shape {shape}, the field declares {_show(self.shape)}")
            body = data[_HEADER.size + 8 * ndim :]
        count = 1
        for dim in shape:
            count *= dim
        if count * self.dtype.itemsize != len(body):
            raise FormatError(
                f"an ndarray record holds {len(body)} bytes where shape {shape} of {self.dtype.name} needs "
                f"{count * self.dtype.itemsize}"
            )
        return np.frombuffer(body, self.dtype, count).reshape(shape)

    def decode(self, data: memoryview) -> np.ndarray:
        return self.decode_view(data).copy()

    def coerce(self, value: Any) -> np.ndarray:
        """What :meth:`encode` then :meth:`decode_view` give, without the bytes in between: the checks and
        the cast, and a copy of a variable-shape value (the Loader keeps it until the batch is collected)."""
        array = self._conformed(value)
        return array if self.is_fixed else np.array(array, order="C", copy=True)

    def params(self) -> dict[str, Any]:
        return {"dtype": self.dtype.str, "shape": None if self.shape is None else list(self.shape)}

    @classmethod
    def from_params(cls, params: dict[str, Any], where: str) -> NDArrayField:
        dtype, shape = params.get("dtype"), params.get("shape")
        require(set(params) <= {"dtype", "shape"}, where, f"has unknown settings {sorted(set(params))}")
        require(
            dtype in STORED_DTYPES,
            where,
            f"has an invalid dtype {dtype!r}",
        )
        require(
            shape is None
            or (
                isinstance(shape, list)
                and len(shape) <= _MAX_NDIM
                and all(d is None or (is_int(d) and d >= 0) for d in shape)
            ),
            where,
            f"has an invalid shape {shape!r}",
        )
        try:
            return cls(dtype, shape)
        except (TypeError, ValueError) as error:
            raise FormatError(f"{where} has invalid ndarray settings: {error}") from None


def _product(dims: Any) -> int:
    total = 1
    for dim in dims:
        total *= dim
    return total


def _fits(shape: tuple[int, ...], declared: tuple[int | None, ...]) -> bool:
    return len(shape) == len(declared) and all(want is None or got == want for got, want in zip(shape, declared))


def _show(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("any" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
