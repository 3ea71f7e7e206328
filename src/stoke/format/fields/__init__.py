"""Field types: one typed column of a dataset, each with its encoder and decoder (see ``base.py``).

Example:
    >>> field_from_dict({"type": "ndarray", "dtype": "<f4", "shape": [3]}, where="fields[0]")
    NDArrayField(dtype=dtype('<f4'), shape=(3,))
"""

from __future__ import annotations

from typing import Any

from stoke.errors import FormatError
from stoke.format.fields.base import Field, ValueSpec
from stoke.format.fields.blobs import BytesField, JsonField, TextField
from stoke.format.fields.image import ImageField
from stoke.format.fields.ndarray import NDArrayField
from stoke.format.fields.scalars import FloatField, IntField

FIELD_TYPES: dict[str, type[Field]] = {
    cls.type_name: cls for cls in (ImageField, IntField, FloatField, NDArrayField, BytesField, TextField, JsonField)
}


def field_from_dict(entry: Any, where: str) -> Field:
    """Build a field from its manifest entry (``{"type": ..., settings}``), validating every setting."""
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise FormatError(f"{where} must be an object with a string 'type'")
    params = {key: value for key, value in entry.items() if key != "type"}
    cls = FIELD_TYPES.get(entry["type"])
    if cls is None:
        raise FormatError(
            f"{where} has field type {entry['type']!r}, which this stoke does not know "
            f"(it knows {', '.join(sorted(FIELD_TYPES))}); upgrade stoke to read this dataset"
        )
    return cls.from_params(params, where)


__all__ = [
    "FIELD_TYPES",
    "BytesField",
    "Field",
    "FloatField",
    "ImageField",
    "IntField",
    "JsonField",
    "NDArrayField",
    "TextField",
    "ValueSpec",
    "field_from_dict",
]
