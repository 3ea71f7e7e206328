"""The source protocol: where the items to pack come from.

A source knows how many items it has, the schema they share, and how to read item ``i`` as a list of
values in schema order. A bad item raises :class:`~stoke.errors.InvalidItem`, which the packer
quarantines; a source that cannot be read at all raises :class:`~stoke.errors.SourceError` when it is
built. Sources are picklable so that packing can run in other processes or on a cluster.

When a source is appended to a dataset (``stoke.pack(..., append=True)``), the packer first hands it the
dataset as an :class:`AppendTarget` (:meth:`Source.for_append`), and the source returns itself made to
encode its items as the dataset's were: label ids numbered by the dataset's class list (new classes at
the end), text tokenized with the dataset's tokenizer, a table cleaned with the statistics and policies
the dataset stored. What still differs is refused by the packer (docs/growing.md).

Not for: encoding (fields do that) or writing (the packer does).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stoke.errors import InvalidItem
from stoke.format.manifest import FieldEntry


@dataclass(frozen=True)
class AppendTarget:
    """The dataset a source is appended to, as the source needs it: where it is (for messages), its fields
    (settings, class lists), what its manifest records under ``source`` (a table's cleaning), and its
    attachments' bytes (``tokenizer.json``), checked against the manifest.

    Example:
        >>> from stoke.format.fields import IntField
        >>> target = AppendTarget("ds", [FieldEntry("label", IntField(), classes=["cat", "dog"])])
        >>> target.classes("label"), target.classes("other")
        (['cat', 'dog'], None)
    """

    location: str
    fields: list[FieldEntry]
    source: dict[str, Any] = field(default_factory=dict)
    attachments: dict[str, bytes] = field(default_factory=dict)

    def classes(self, name: str) -> list[str] | None:
        """The class names of the dataset's field ``name`` (None when it has none, or no such field)."""
        return next((entry.classes for entry in self.fields if entry.name == name), None)


def grown_classes(known: list[str] | None, found: list[str]) -> list[str]:
    """The class list of an append: the dataset's ``known`` classes, in their order (their ids never change),
    then the classes ``found`` in the new items that the dataset does not have, in ``found``'s order.

    Example:
        >>> grown_classes(["cat", "dog"], ["bird", "dog"])
        ['cat', 'dog', 'bird']
    """
    if known is None:
        return list(found)
    have = set(known)
    return [*known, *(name for name in found if name not in have)]


class Source(ABC):
    """Base of every source; see the module docstring."""

    kind: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def schema(self) -> list[FieldEntry]:
        """The named fields every item provides, in order."""

    @abstractmethod
    def read(self, index: int) -> list[Any]:
        """Item ``index`` as values in schema order; raises InvalidItem for an item that cannot be packed."""

    @abstractmethod
    def name_of(self, index: int) -> str:
        """How ``quarantine.jsonl`` and messages name item ``index`` (a path, a line, an item number)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the manifest records under ``source``: kind, location, item count, ..."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Changes when the items change; ``--resume`` refuses to continue over a changed source."""

    def ignored(self) -> list[str]:
        """Files the source saw and chose not to pack (not images, outside class folders), for the summary."""
        return []

    def notes(self) -> list[str]:
        """Lines for the pack summary about what the source did to its items (e.g. the gaps a table filled)."""
        return []

    def for_append(self, target: AppendTarget) -> Source:
        """This source made to encode its items as ``target``'s were (class ids, tokenizer, table cleaning),
        for an append; a source with nothing to adopt returns itself. Raises
        :class:`~stoke.errors.AppendError` for what it cannot make agree."""
        return self

    def attachments(self) -> dict[str, bytes]:
        """Whole-dataset files to store beside the shards (name → bytes), e.g. a trained ``tokenizer.json``.

        Names must be plain safe file names; the packer writes each one and lists it in the manifest with
        its size and checksum (``docs/format.md``). Data only: JSON or numbers, never code.
        """
        return {}


def read_file(path: Path) -> bytes:
    """The bytes of ``path``; every way a file can fail to be read becomes an InvalidItem with its reason."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if os.path.islink(path):
            raise InvalidItem(
                "broken_symlink", f"it is a symbolic link to {os.readlink(path)}, which does not exist"
            ) from None
        raise InvalidItem("missing_file", "the file does not exist") from None
    except PermissionError:
        raise InvalidItem("unreadable", "permission denied: the file cannot be read") from None
    except IsADirectoryError:
        raise InvalidItem("unreadable", "it is a directory, not a file") from None
    except OSError as error:
        raise InvalidItem("unreadable", f"the file cannot be read ({error.strerror or error})") from None
