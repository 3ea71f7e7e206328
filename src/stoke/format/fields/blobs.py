"""Variable-length fields stored as bytes: ``bytes`` (as given), ``text`` (UTF-8) and ``json`` (UTF-8 JSON).

JSON is data: it is parsed with the standard library's parser, never evaluated, and written without
NaN or infinities so that every stored value is strict JSON.

Example:
    >>> JsonField().decode(memoryview(JsonField().encode({"a": [1, 2]})))
    {'a': [1, 2]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from stoke.errors import FormatError, InvalidItem
from stoke.format import strict_json
from stoke.format.fields.base import Field, ValueSpec


@dataclass(frozen=True)
class BytesField(Field):
    """Opaque bytes; the Loader pads them into a uint8 tensor with a lengths tensor."""

    type_name: ClassVar[str] = "bytes"

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise InvalidItem("invalid_value", f"expected bytes, got {type(value).__name__}")
        return bytes(value)

    def decode(self, data: memoryview) -> bytes:
        return bytes(data)

    def coerce(self, value: Any) -> bytes:
        return self.encode(value)

    @property
    def spec(self) -> ValueSpec:
        return ValueSpec((None,), np.dtype("u1"))


@dataclass(frozen=True)
class TextField(Field):
    """A Unicode string stored as UTF-8; the Loader hands a batch of them over as a list of str."""

    type_name: ClassVar[str] = "text"

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise InvalidItem("invalid_value", f"expected a str, got {type(value).__name__}")
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidItem("invalid_value", f"text is not valid Unicode ({error.reason})") from None

    def decode(self, data: memoryview) -> str:
        try:
            return str(data, "utf-8")
        except UnicodeDecodeError:
            raise FormatError("a text record is not valid UTF-8") from None

    def coerce(self, value: Any) -> str:
        self.encode(value)
        return str(value)  # numpy's str_ becomes a plain str

    @property
    def spec(self) -> ValueSpec:
        return ValueSpec(None, None)


@dataclass(frozen=True)
class JsonField(Field):
    """Any JSON value (dicts, lists, strings, numbers, booleans, null); a batch is a list of them."""

    type_name: ClassVar[str] = "json"

    def encode(self, value: Any) -> bytes:
        try:
            return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as error:
            raise InvalidItem("invalid_value", f"value is not JSON-serialisable ({error})") from None

    def min_record_bytes(self) -> int:
        return 1  # the shortest JSON text is one digit

    def decode(self, data: memoryview) -> Any:
        try:
            return strict_json.loads(str(data, "utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise FormatError("a json record is not valid UTF-8 JSON") from None

    @property
    def spec(self) -> ValueSpec:
        return ValueSpec(None, None)
