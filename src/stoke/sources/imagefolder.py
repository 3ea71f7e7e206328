"""A folder in ImageFolder layout: ``ROOT/CLASS/.../IMAGE``.

Each subfolder of the root is a class (sorted by name, numbered from 0, the names kept in the manifest);
images below it, at any depth, are its samples, sorted by path. Fields: ``image``, ``label`` (int) and
``path`` (the path relative to the root). Files whose names do not end in an image extension are not
packed and are listed in the pack summary, as are files beside the class folders; hidden files (names
starting with a dot, such as ``.DS_Store``) are skipped; files that do but are not readable images (a text file named
``.jpg``, a broken symbolic link, a truncated file) are quarantined with their reason. A folder with no
class subfolders, or whose class folders hold no images at all, is a ``SourceError`` naming them.

Appended to a dataset (``for_append``), the folder's classes take the dataset's ids, and classes the
dataset does not have are added at the end of its list: no label already packed changes meaning.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "cat").mkdir(); (root / "cat" / "a.jpg").write_bytes(b"")
    0
    >>> source = ImageFolderSource(root)
    >>> len(source), source.classes, source.name_of(0)
    (1, ['cat'], 'cat/a.jpg')
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from stoke.errors import SourceError
from stoke.format.fields import ImageField, IntField, TextField
from stoke.format.manifest import FieldEntry
from stoke.sources.base import AppendTarget, Source, grown_classes, read_file

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
)


class ImageFolderSource(Source):
    """Images in class subfolders; see the module docstring."""

    kind = "imagefolder"

    def __init__(self, root: str | Path, image: ImageField | None = None) -> None:
        self.root = Path(root)
        self.image = image or ImageField()
        if not self.root.is_dir():
            raise SourceError(f"{self.root} is not a directory")
        self.classes = sorted(
            entry.name for entry in os.scandir(self.root) if entry.is_dir() and not entry.name.startswith(".")
        )
        self._ignored: list[str] = sorted(
            entry.name for entry in os.scandir(self.root) if entry.is_file() and not entry.name.startswith(".")
        )  # files beside the class folders belong to no class
        if not self.classes:
            raise SourceError(
                f"{self.root} has no class subfolders; the ImageFolder layout is ROOT/CLASS/IMAGE "
                f"(for a flat folder, list the files in a CSV with a path column)"
            )
        paths: list[str] = []
        labels: list[int] = []
        for label, name in enumerate(self.classes):
            for relative in _walk(self.root, name):
                if Path(relative).suffix.lower() in IMAGE_EXTENSIONS:
                    paths.append(relative)
                    labels.append(label)
                else:
                    self._ignored.append(relative)
        if not paths:
            raise SourceError(self._no_images())
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def schema(self) -> list[FieldEntry]:
        return [
            FieldEntry("image", self.image),
            FieldEntry("label", IntField(), classes=list(self.classes)),
            FieldEntry("path", TextField()),
        ]

    def read(self, index: int) -> list[Any]:
        relative = self.paths[index]
        return [read_file(self.root / relative), int(self.labels[index]), relative]

    def name_of(self, index: int) -> str:
        return self.paths[index]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.root.resolve()),
            "num_items": len(self),
            "num_classes": len(self.classes),
            "ignored_files": len(self._ignored),
        }

    def fingerprint(self) -> str:
        digest = xxhash.xxh3_64()
        for relative in self.paths:
            digest.update(relative.encode("utf-8", "surrogateescape") + b"\n")
        return digest.hexdigest()

    def ignored(self) -> list[str]:
        return list(self._ignored)

    def for_append(self, target: AppendTarget) -> ImageFolderSource:
        """This folder labelled by ``target``'s class list: its classes keep their ids there, and new ones
        are numbered after them, in name order (``label`` 0 stays the dataset's first class)."""
        classes = grown_classes(target.classes("label"), self.classes)
        if classes == self.classes:
            return self
        grown = copy.copy(self)
        position = {name: number for number, name in enumerate(classes)}
        grown.labels = np.array([position[name] for name in self.classes], np.int64)[self.labels]
        grown.classes = classes
        return grown

    def _no_images(self) -> str:
        """Why there is nothing to pack: empty class folders, or class folders of files that are not images."""
        shown = ", ".join(f"{name}/" for name in self.classes[:5]) + (", ..." if len(self.classes) > 5 else "")
        one = len(self.classes) == 1
        folders = f"class folder {shown}" if one else f"class folders {shown}"
        inside = [name for name in self._ignored if "/" in name]  # the files beside the class folders have none
        if not inside:
            what = f"{folders} {'is' if one else 'are'} empty"
        else:
            files = ", ".join(inside[:3]) + (", ..." if len(inside) > 3 else "")
            what = f"{folders} {'holds' if one else 'hold'} only files whose names are not images: {files}"
        return f"{self.root} holds no images ({what}); put images (.jpg, .png, .webp, ...) in {self.root}/CLASS/"


def _walk(root: Path, class_name: str) -> list[str]:
    """Paths of the files below ``root/class_name`` relative to ``root``, sorted; follows links to folders."""
    found: list[str] = []
    for directory, subdirectories, files in os.walk(root / class_name, followlinks=True):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        base = Path(directory).relative_to(root)
        found.extend((base / name).as_posix() for name in files if not name.startswith("."))
    return sorted(found)
