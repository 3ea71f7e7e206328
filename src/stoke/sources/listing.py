"""A CSV or JSONL listing: one row per sample, optionally with a column of image paths.

The path column (``path_column``, or the first of ``path``, ``image``, ``image_path``, ``file``,
``filename``) becomes an ``image`` field read from that path (relative to the listing's folder) plus a
``path`` text field; every other column becomes a field of its inferred type: ``int`` when every value
is an integer, ``float`` when every value is a number, ``text`` otherwise. In JSONL, a column whose
values are all numeric lists of one depth (nested lists of one rank, such as embeddings or boxes)
becomes an ``ndarray`` field (``int64`` or ``float64``; a dimension that varies between rows is
variable); other lists and objects become ``json``. A text label column (``label_column``, default
``label``) becomes integer class ids, the class names kept in the manifest. ``images=False`` reads no
image column at all (``stoke.sources.TextSource`` reads JSONL documents this way).

Rows that cannot be packed are quarantined with their line number: a CSV row with the wrong number of
columns, an invalid JSON line, a missing value, a missing or broken image file. A listing with no path
column is a plain table. A listing without rows is a ``SourceError``. Appended to a dataset
(``for_append``), label names take the dataset's ids, and names it does not have are added at the end of
its class list.

Example:
    >>> import tempfile, pathlib
    >>> listing = pathlib.Path(tempfile.mkdtemp()) / "rows.csv"
    >>> _ = listing.write_text("x,label\\n1.5,cat\\n2,dog\\n")
    >>> source = ListingSource(listing)
    >>> [entry.field.type_name for entry in source.schema()], source.read(1)
    (['float', 'int'], [2.0, 1])
"""

from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from stoke.errors import InvalidItem, SourceError
from stoke.format.fields import Field, FloatField, ImageField, IntField, JsonField, NDArrayField, TextField
from stoke.format.manifest import RESERVED_FIELD_NAMES, FieldEntry
from stoke.sources.base import AppendTarget, Source, grown_classes, read_file

PATH_COLUMN_NAMES = ("path", "image", "image_path", "file", "filename")
_MISSING = object()


class ListingSource(Source):
    """Rows of a CSV (``.csv``, ``.tsv``) or JSON Lines (``.jsonl``, ``.ndjson``) file; see the module docstring."""

    kind = "listing"

    def __init__(
        self,
        listing: str | Path,
        image: ImageField | None = None,
        path_column: str | None = None,
        label_column: str | None = "label",
        images: bool = True,
    ) -> None:
        self.listing = Path(listing)
        self.image = image or ImageField()
        if not self.listing.is_file():
            raise SourceError(f"{self.listing} is not a file")
        suffix = self.listing.suffix.lower()
        if suffix in (".csv", ".tsv"):
            self.columns, rows = _read_csv(self.listing, "\t" if suffix == ".tsv" else ",")
        elif suffix in (".jsonl", ".ndjson"):
            self.columns, rows = _read_jsonl(self.listing)
        else:
            raise SourceError(f"{self.listing} is not a listing stoke reads (.csv, .tsv, .jsonl or .ndjson)")
        if not rows:
            raise SourceError(f"{self.listing} has a header but no rows; nothing to pack")
        self.path_column = _choose_path_column(self.columns, path_column, self.listing) if images else None
        self._lines = [line for line, _ in rows]
        self._rows = [values for _, values in rows]
        self._value_columns = [c for c in self.columns if c != self.path_column]
        for name in self._value_columns:
            if name in RESERVED_FIELD_NAMES or (self.path_column and name in ("image", "path")):
                raise SourceError(
                    f"column {name!r} of {self.listing} clashes with a field name stoke reserves; rename the column"
                )
        self._fields: dict[str, Field] = {}
        self._classes: dict[str, list[str]] = {}
        for name in self._value_columns:
            values = [
                row[name] for row in self._rows if isinstance(row, dict) and row.get(name, _MISSING) not in _EMPTY
            ]
            field = _infer_column(values, text_numbers=suffix in (".csv", ".tsv"))
            if name == label_column and isinstance(field, TextField):
                self._classes[name] = sorted(set(values))
                field = IntField()
            self._fields[name] = field
        self._class_ids = {name: {c: i for i, c in enumerate(classes)} for name, classes in self._classes.items()}

    def __len__(self) -> int:
        return len(self._rows)

    def schema(self) -> list[FieldEntry]:
        entries = []
        if self.path_column is not None:
            entries.append(FieldEntry("image", self.image))
        entries.extend(
            FieldEntry(name, self._fields[name], classes=self._classes.get(name)) for name in self._value_columns
        )
        if self.path_column is not None:
            entries.append(FieldEntry("path", TextField()))
        return entries

    def read(self, index: int) -> list[Any]:
        row = self._rows[index]
        if isinstance(row, InvalidItem):
            raise row
        values: list[Any] = []
        if self.path_column is not None:
            relative = row.get(self.path_column, _MISSING)
            if relative in _EMPTY:
                raise InvalidItem("missing_value", f"the path column {self.path_column!r} is empty")
            if not isinstance(relative, str):
                raise InvalidItem(
                    "invalid_value", f"the path column {self.path_column!r} holds {relative!r}, not a path"
                )
            values.append(read_file(self.listing.parent / relative))
        for name in self._value_columns:
            values.append(self._convert(name, row.get(name, _MISSING)))
        if self.path_column is not None:
            values.append(row[self.path_column])
        return values

    def name_of(self, index: int) -> str:
        row = self._rows[index]
        line = f"{self.listing.name} line {self._lines[index]}"
        if self.path_column is not None and isinstance(row, dict) and isinstance(row.get(self.path_column), str):
            return f"{row[self.path_column]} ({line})"
        return line

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.listing.resolve()),
            "num_items": len(self),
            "path_column": self.path_column,
        }

    def fingerprint(self) -> str:
        return xxhash.xxh3_64(self.listing.read_bytes()).hexdigest()

    def for_append(self, target: AppendTarget) -> ListingSource:
        """This listing with each label column numbered by ``target``'s class list (new names at its end)."""
        grown = {name: grown_classes(target.classes(name), classes) for name, classes in self._classes.items()}
        if grown == self._classes:
            return self
        adopted = copy.copy(self)
        adopted._classes = grown
        adopted._class_ids = {name: {c: i for i, c in enumerate(classes)} for name, classes in grown.items()}
        return adopted

    def _convert(self, name: str, value: Any) -> Any:
        field = self._fields[name]
        if value in _EMPTY and not isinstance(field, (TextField, JsonField)):
            raise InvalidItem("missing_value", f"column {name!r} has no value")
        if value is _MISSING or value is None:
            if isinstance(field, JsonField):
                return None
            raise InvalidItem("missing_value", f"column {name!r} has no value")
        if name in self._class_ids:
            return self._class_ids[name][value]
        if isinstance(value, str) and isinstance(field, IntField):
            return int(value)  # inference checked that every value of the column spells one
        if isinstance(value, str) and isinstance(field, FloatField):
            return float(value)
        if isinstance(field, NDArrayField):
            return _as_array(value, field, name)
        return value


_EMPTY = (_MISSING, None, "")


def _read_csv(path: Path, delimiter: str) -> tuple[list[str], list[tuple[int, Any]]]:
    with open(path, newline="", encoding="utf-8-sig") as stream:
        reader = csv.reader(stream, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise SourceError(f"{path} is empty; a listing needs a header row") from None
        except (csv.Error, UnicodeDecodeError) as error:
            raise SourceError(f"{path} is not a readable CSV file ({error})") from None
        if len(set(header)) != len(header) or any(not name for name in header):
            raise SourceError(f"{path} has empty or repeated column names in its header: {header}")
        rows: list[tuple[int, Any]] = []
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as error:
                rows.append((reader.line_num, InvalidItem("invalid_row", f"the row cannot be parsed ({error})")))
                continue
            if not cells:
                continue  # blank line
            if len(cells) != len(header):
                rows.append(
                    (
                        reader.line_num,
                        InvalidItem("invalid_row", f"the row has {len(cells)} columns, the header {len(header)}"),
                    )
                )
            else:
                rows.append((reader.line_num, dict(zip(header, cells))))
    return header, rows


def _read_jsonl(path: Path) -> tuple[list[str], list[tuple[int, Any]]]:
    columns: dict[str, None] = {}
    rows: list[tuple[int, Any]] = []
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                rows.append((number, InvalidItem("invalid_row", f"the line is not valid JSON ({error})")))
                continue
            if not isinstance(row, dict):
                rows.append((number, InvalidItem("invalid_row", "the line is not a JSON object")))
                continue
            columns.update(dict.fromkeys(row))
            rows.append((number, row))
    if not columns:
        raise SourceError(f"{path} has no JSON object rows")
    return list(columns), rows


def _choose_path_column(columns: list[str], requested: str | None, listing: Path) -> str | None:
    if requested is not None:
        if requested not in columns:
            raise SourceError(f"{listing} has no column {requested!r} (its columns: {', '.join(columns)})")
        return requested
    return next((name for name in PATH_COLUMN_NAMES if name in columns), None)


_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*")
_FLOAT_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)\s*", re.IGNORECASE)


def _infer_column(values: list[Any], text_numbers: bool) -> Field:
    """The field of a column from its non-empty values; CSV text that spells numbers becomes numbers."""
    if not values:
        return TextField()
    if all(isinstance(v, str) for v in values):
        if text_numbers and all(_INT_TEXT.fullmatch(v) for v in values):
            return IntField()
        if text_numbers and all(_FLOAT_TEXT.fullmatch(v) for v in values):
            return FloatField()
        return TextField()
    if all(isinstance(v, (bool, int)) for v in values):
        return IntField()
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return FloatField()
    return _infer_array(values) or JsonField()


def _infer_array(values: list[Any]) -> NDArrayField | None:
    """An ndarray field when every value is a numeric list of one rank, else None (the column stays json).

    Integers (and booleans) give ``int64``, any float ``float64``; a dimension that differs between rows
    is variable. Empty lists fit any dtype; a column of only empty lists stays json.
    """
    if not all(isinstance(v, list) for v in values):
        return None
    shapes: set[tuple[int, ...]] = set()
    kinds: set[str] = set()
    for value in values:
        array = _numeric(value)
        if array is None:
            return None
        shapes.add(array.shape)
        if array.size:
            kinds.add(array.dtype.kind)
    if not kinds or len({len(shape) for shape in shapes}) != 1:
        return None
    first = next(iter(shapes))
    shape = [dim if all(other[axis] == dim for other in shapes) else None for axis, dim in enumerate(first)]
    return NDArrayField(np.float64 if "f" in kinds else np.int64, shape)


def _numeric(value: list[Any]) -> np.ndarray | None:
    """``value`` as a numeric numpy array, or None when it is ragged or holds anything but numbers."""
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError):  # ragged nesting
        return None
    return array if array.dtype.kind in "biuf" else None


def _as_array(value: Any, field: NDArrayField, name: str) -> np.ndarray:
    array = _numeric(value) if isinstance(value, list) else None
    if array is None:
        raise InvalidItem("invalid_value", f"column {name!r} holds {value!r}, not a list of numbers")
    return array.astype(field.dtype) if array.size == 0 else array
