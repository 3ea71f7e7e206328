"""Infer a field type from a Python value: the schema of user datasets and arrays.

Pillow images become ``image`` fields, numbers ``int``/``float``, strings ``text``, bytes ``bytes``,
numpy arrays and torch tensors ``ndarray`` (0-d ones scalars), lists and dicts ``json``. Arrays meant as
images, or bytes holding encoded images, are declared with ``fields={"name": stoke.ImageField()}``.

Example:
    >>> infer_field(3).type_name, infer_field("a").type_name, infer_field([1, "x"]).type_name
    ('int', 'text', 'json')
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from PIL import Image

from stoke.errors import SourceError
from stoke.format.fields import (
    BytesField,
    Field,
    FloatField,
    ImageField,
    IntField,
    JsonField,
    NDArrayField,
    TextField,
)
from stoke.format.fields.ndarray import as_numpy


def infer_field(value: Any, image: ImageField | None = None, name: str = "value") -> Field:
    """The field that stores values like ``value``; ``image`` holds the settings for inferred images."""
    if isinstance(value, Image.Image):
        return image or ImageField()
    if isinstance(value, (bool, np.bool_, numbers.Integral)):
        return IntField()
    if isinstance(value, numbers.Real):
        return FloatField()
    if isinstance(value, str):
        return TextField()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return BytesField()
    if isinstance(value, np.ndarray) or hasattr(value, "detach"):
        array = as_numpy(value)
        if array.ndim == 0:
            return infer_field(array.item(), image, name)
        if array.dtype.kind not in "biufc":
            raise SourceError(f"field {name!r} holds arrays of dtype {array.dtype}, which are not numeric")
        return NDArrayField(array.dtype, array.shape)
    if value is None or isinstance(value, (list, tuple, dict)):
        return JsonField()
    raise SourceError(
        f"field {name!r} holds {type(value).__name__} values, which stoke cannot store; return numbers, str, "
        f"bytes, numpy arrays, tensors, Pillow images, or lists and dicts of those"
    )


def widen(field: Field, other: Field) -> Field:
    """One field that stores what either of two inferred fields stores (for a few samples' values)."""
    if field == other:
        return field
    if isinstance(field, NDArrayField) and isinstance(other, NDArrayField) and field.dtype == other.dtype:
        if field.shape is not None and other.shape is not None and len(field.shape) == len(other.shape):
            return NDArrayField(field.dtype, [a if a == b else None for a, b in zip(field.shape, other.shape)])
        return NDArrayField(field.dtype, None)
    if {type(field), type(other)} == {IntField, FloatField}:
        return FloatField()
    return field
