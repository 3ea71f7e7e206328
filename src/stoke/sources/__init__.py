"""Where data comes from: image folders, CSV/JSONL listings, text, map-style datasets, numpy arrays.

``resolve_source`` picks the source for what the user passed to ``stoke.pack``. Each source refuses an
input with nothing to pack (an empty folder, a listing or table without rows, arrays or a dataset of
length 0) with a ``SourceError`` that names it, before any worker starts.

Example:
    >>> import numpy as np
    >>> type(resolve_source({"y": np.arange(3)})).__name__
    'ArraysSource'
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stoke.errors import SourceError
from stoke.format.fields import Field, ImageField
from stoke.sources.arrays import ArraysSource
from stoke.sources.base import AppendTarget, Source
from stoke.sources.dataset import DatasetSource
from stoke.sources.imagefolder import ImageFolderSource
from stoke.sources.listing import ListingSource
from stoke.sources.table import TableSource, encode_categories, is_table
from stoke.sources.text import TextSource


def resolve_source(
    source: Any,
    *,
    image: ImageField | None = None,
    names: Sequence[str] | None = None,
    fields: Mapping[str, Field] | None = None,
    path_column: str | None = None,
    label_column: str = "label",
    append_to: AppendTarget | None = None,
) -> Source:
    """The :class:`Source` for a path (folder or listing), arrays, or a map-style dataset.

    ``append_to``: the dataset the source is appended to; a table path is then read with its cleaning
    (``TableSource(path, fitted=...)``) rather than fitted first.
    """
    if isinstance(source, Source):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return ImageFolderSource(path, image)
        if path.is_file() and path.suffix.lower() == ".txt":
            return TextSource(path)
        if path.is_file() and is_table(path, path_column):  # Parquet, or CSV/TSV without image paths
            if append_to is not None and append_to.source.get("kind") == "table":
                label = append_to.source.get("label")
                return TableSource(path, label=label if isinstance(label, str) else None, fitted=append_to)
            return TableSource(path, label=label_column)
        if path.is_file():
            return ListingSource(path, image, path_column, label_column)
        raise SourceError(f"{path} does not exist; give an image folder, a .csv/.jsonl listing, or a dataset")
    if is_arrays(source):
        arrays = ArraysSource(source, names, fields, image)
        if len(arrays) == 0:
            raise SourceError("the arrays have no rows (their first dimension is 0); nothing to pack")
        return arrays
    if hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        if _has_no_items(source):
            raise SourceError(f"the {type(source).__name__} has no items (its len() is 0); nothing to pack")
        return DatasetSource(source, names, fields, image)
    raise SourceError(
        f"stoke cannot pack a {type(source).__name__}; give an image folder, a .csv/.jsonl listing, numpy arrays "
        f"or a map-style dataset (with __len__ and __getitem__)"
    )


def _has_no_items(dataset: Any) -> bool:
    try:
        return len(dataset) == 0
    except TypeError:  # no usable len(): DatasetSource says so
        return False


def is_arrays(source: Any) -> bool:
    """Whether ``source`` is numpy arrays: one, a dict of them, or a tuple of them."""
    if isinstance(source, np.ndarray):
        return True
    if isinstance(source, Mapping):
        return bool(source) and all(isinstance(value, np.ndarray) for value in source.values())
    if isinstance(source, tuple):
        return bool(source) and all(isinstance(value, np.ndarray) for value in source)
    return False


__all__ = [
    "ArraysSource",
    "DatasetSource",
    "ImageFolderSource",
    "ListingSource",
    "Source",
    "TableSource",
    "TextSource",
    "encode_categories",
    "is_arrays",
    "resolve_source",
]
