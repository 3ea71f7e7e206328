"""Any map-style dataset or sequence as a source: the user's own ``torch.utils.data.Dataset``.

Items may be dicts (field names are the keys), tuples or lists (names from ``names``; an ``(image, int)``
pair is named ``image``, ``label``; otherwise ``f0``, ``f1``, ...) or single values (``value``). Field
types are inferred from the first items that can be read (see ``infer.py``) and can be declared with
``fields={"name": field}``. An item whose ``__getitem__`` raises, or whose values do not fit the schema,
is quarantined with the reason; the rest are packed.

The Loader uses the same class to read a user's dataset directly, without packing it.

Example:
    >>> source = DatasetSource([{"x": 1.5, "tag": "a"}, {"x": 2.0, "tag": "b"}])
    >>> [(entry.name, entry.field.type_name) for entry in source.schema()], source.read(1)
    ([('x', 'float'), ('tag', 'text')], [2.0, 'b'])
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from stoke.errors import InvalidItem, SourceError
from stoke.format.fields import Field, ImageField
from stoke.format.manifest import RESERVED_FIELD_NAMES, FieldEntry
from stoke.sources.base import Source
from stoke.sources.infer import infer_field, widen

PROBE_ITEMS = 16


class DatasetSource(Source):
    """A map-style dataset (``__len__`` and ``__getitem__``); see the module docstring."""

    kind = "dataset"

    def __init__(
        self,
        dataset: Any,
        names: Sequence[str] | None = None,
        fields: Mapping[str, Field] | None = None,
        image: ImageField | None = None,
    ) -> None:
        self.dataset = dataset
        try:
            self._size = len(dataset)
        except TypeError:
            raise SourceError(f"{type(dataset).__name__} has no len(); stoke packs map-style datasets") from None
        self._names: list[str] | None = list(names) if names is not None else None
        self._kind: str | None = None  # "dict", "tuple" or "single", fixed by the first readable item
        inferred: dict[str, Field] = {}
        first_error: InvalidItem | None = None
        for index in range(min(self._size, PROBE_ITEMS)):
            try:
                item = self._get(index)
                if self._kind is None:
                    self._fix_layout(item)
                pairs = self._pairs(item)
            except InvalidItem as error:
                first_error = first_error or error
                continue
            for name, value in pairs:
                field = infer_field(value, image, name)
                inferred[name] = widen(inferred[name], field) if name in inferred else field
        if self._kind is None:
            reason = f": {first_error}" if first_error else ""
            raise SourceError(
                f"none of the first {min(self._size, PROBE_ITEMS)} items of the dataset could be read{reason}"
            )
        for name, field in (fields or {}).items():
            if name not in inferred:
                raise SourceError(f"fields= declares {name!r}, but the dataset's items have {', '.join(inferred)}")
            inferred[name] = field
        self.fields = inferred

    def __len__(self) -> int:
        return self._size

    @property
    def names(self) -> list[str]:
        return list(self.fields)

    @property
    def layout(self) -> str:
        """The structure of the items: ``"dict"``, ``"tuple"`` (lists too) or ``"single"`` (one value each)."""
        return self._kind or "single"

    def schema(self) -> list[FieldEntry]:
        return [FieldEntry(name, field) for name, field in self.fields.items()]

    def read(self, index: int) -> list[Any]:
        values = dict(self._pairs(self._get(index)))
        return [values[name] for name in self.fields]

    def name_of(self, index: int) -> str:
        return f"item {index}"

    def describe(self) -> dict[str, Any]:
        kind = type(self.dataset)
        return {"kind": self.kind, "type": f"{kind.__module__}.{kind.__qualname__}", "num_items": self._size}

    def fingerprint(self) -> str:
        kind = type(self.dataset)
        return f"{kind.__module__}.{kind.__qualname__}:{self._size}"

    def _get(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as error:
            frame = traceback.extract_tb(error.__traceback__)[-1]
            raise InvalidItem(
                "source_error",
                f"dataset[{index}] raised {type(error).__name__}: {error} (at {frame.filename}:{frame.lineno})",
            ) from error

    def _fix_layout(self, item: Any) -> None:
        if isinstance(item, Mapping):
            if self._names is not None:
                raise SourceError("names= names the values of tuple items; dict items are named by their keys")
            self._kind = "dict"
            self._names = [str(key) for key in item]
        elif isinstance(item, (tuple, list)):
            self._kind = "tuple"
            if self._names is None:
                pair = len(item) == 2 and isinstance(item[0], Image.Image) and isinstance(item[1], int)
                self._names = ["image", "label"] if pair else [f"f{position}" for position in range(len(item))]
            elif len(self._names) != len(item):
                raise SourceError(f"the items are {len(item)}-tuples but names= gives {len(self._names)} names")
        else:
            self._kind = "single"
            self._names = self._names or ["value"]
        clash = RESERVED_FIELD_NAMES.intersection(self._names)
        if clash:
            raise SourceError(f"the dataset's items use the name {sorted(clash)[0]!r}, which stoke reserves; rename it")

    def _pairs(self, item: Any) -> list[tuple[str, Any]]:
        names = self._names or []
        if self._kind == "dict":
            if not isinstance(item, Mapping) or set(map(str, item)) != set(names):
                keys = sorted(map(str, item)) if isinstance(item, Mapping) else type(item).__name__
                raise InvalidItem("invalid_value", f"the item has keys {keys}, the first items had {sorted(names)}")
            return [(str(key), value) for key, value in item.items()]
        if self._kind == "tuple":
            if not isinstance(item, (tuple, list)) or len(item) != len(names):
                raise InvalidItem("invalid_value", f"the item is not a {len(names)}-tuple like the first items")
            return list(zip(names, item))
        return [(names[0], item)]
