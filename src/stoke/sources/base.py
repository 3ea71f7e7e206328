"""The source protocol: where the items to pack come from.

A source knows how many items it has, the schema they share, and how to read item ``i`` as a list of
values in schema order. A bad item raises :class:`~stoke.errors.InvalidItem`, which the packer
quarantines; a source that cannot be read at all raises :class:`~stoke.errors.SourceError` when it is
built. Sources are picklable so that packing can run in other processes or on a cluster.

Not for: encoding (fields do that) or writing (the packer does).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from stoke.errors import InvalidItem
from stoke.format.manifest import FieldEntry


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
