"""Named splits stored inside a dataset as index views: ``splits.json`` plus one index file per split.

Layout::

    DATASET/splits.json            {"format": "stoke.splits.v1", "dataset": <manifest digest>, "seed": ...,
                                    "fractions": {...}, "stratify": "label" | null, ["stratify_bins": N,]
                                    "content": ["image"], "dropped": N,
                                    "splits": [{"name": "train", "count": 8, "checksum": "<xxh3>"}, ...]}
    DATASET/splits/train.idx       count x uint64 little-endian, strictly increasing sample indices

``stratify_bins`` is there only when a number was stratified by quantile bins, and ``content`` names the
fields compared for leaks; every key but ``format``, ``dataset``, ``splits`` and (for splits of a dataset
that grew) ``chain`` and ``num_samples`` is information for people and ``stoke inspect``, so a file
without these still opens.

**Splits of a dataset that grows** (docs/growing.md). ``dataset`` is the packing id (the xxh3 of the
manifest file) of the version the splits were made on; ``chain`` lists the packing ids of versions 1 to
that one, and ``num_samples`` its size. Samples never move between versions, so the splits apply to every
version of the same dataset: made on an earlier version, they hold only samples below that version's
size, and the samples added since are in no split (:attr:`Splits.added`) until ``stoke split`` assigns
them; made on a later version (a reader that opened an older one), each split is cut to the samples that
version has. Splits of any other packing are refused.

No sample is copied. Index files are written first and ``splits.json`` last, atomically, so a reader
sees the old splits or the new ones. Reading validates everything before trusting it: names are plain
(letters, digits, ``_`` and ``-``) so a file can never point outside ``DATASET/splits/``, each file's size
must equal its count, its checksum must match, indices must be strictly increasing and inside the
dataset, and splits must be disjoint. The splits belong to one packing of the data: ``dataset`` is the
manifest's digest, and splits made for another packing are refused.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> parts = {"train": np.array([0, 2, 3]), "val": np.array([1])}
    >>> write_splits(root, parts, {"dataset": "d", "seed": 0})
    >>> {name: part.tolist() for name, part in read_splits(root, size=4, dataset="d").parts.items()}
    {'train': [0, 2, 3], 'val': [1]}
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stoke.errors import ConfigError, FormatError
from stoke.format.atomic import write_bytes_atomically, write_text_atomically
from stoke.format.checksum import file_checksum
from stoke.format.strict_json import loads

SPLITS_NAME = "splits.json"
SPLITS_DIR = "splits"
FORMAT = "stoke.splits.v1"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class Splits:
    """The splits of one dataset: sorted index arrays by name, and how they were made.

    ``added`` counts the samples the dataset gained since the splits were made (an append): they are in
    no split until ``stoke split`` runs again, which assigns them and never moves a sample.
    """

    parts: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)
    added: int = 0


def check_name(name: str) -> str:
    """``name`` if it may name a split (letters, digits, ``_``, ``-``; at most 64), else ValueError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"split name {name!r} must be 1-64 letters, digits, '_' or '-'")
    return name


def write_splits(root: Path, parts: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    """Store ``parts`` (disjoint index arrays) and ``info`` (JSON-able) as the dataset's splits."""
    directory = root / SPLITS_DIR
    directory.mkdir(exist_ok=True)
    entries = []
    for name, indices in parts.items():
        check_name(name)
        values = np.unique(np.asarray(indices, dtype=np.int64))
        if values.size != np.asarray(indices).size:
            raise ConfigError(f"split {name!r} lists a sample twice; give each index once")
        path = directory / f"{name}.idx"
        write_bytes_atomically(path, values.astype("<u8").tobytes())
        entries.append({"name": name, "count": int(values.size), "checksum": file_checksum(path)})
    document = {"format": FORMAT, **info, "splits": entries}
    write_text_atomically(root / SPLITS_NAME, json.dumps(document, indent=1) + "\n")
    for stale in directory.glob("*.idx"):  # files of splits the new set no longer has
        if stale.stem not in parts:
            stale.unlink()


def has_splits(root: Path) -> bool:
    """Whether the dataset at ``root`` has stored splits."""
    return (root / SPLITS_NAME).is_file()


def read_splits(root: Path, size: int, dataset: str, lineage: Sequence[tuple[str, int]] | None = None) -> Splits:
    """The validated splits of the dataset at ``root`` with ``size`` samples and manifest digest ``dataset``.

    ``lineage`` lists (packing id, samples) of each version of the dataset from 1 to the open one (the
    last is ``dataset`` and ``size``); splits made on any of them, or on a later version whose ``chain``
    holds them, apply (see the module docstring). Raises :class:`FormatError` naming the file and what is
    wrong when anything does not check out.
    """
    where = root / SPLITS_NAME
    try:
        document = loads(where.read_bytes())
    except FileNotFoundError:
        raise FormatError(f"{root} has no splits; make them with `stoke split {root} --train 0.8 --val 0.2`") from None
    except (OSError, ValueError) as error:
        raise FormatError(f"{where} is not valid JSON ({error}); run `stoke split` again") from None
    if (
        not isinstance(document, dict)
        or document.get("format") != FORMAT
        or not isinstance(document.get("splits"), list)
    ):
        raise FormatError(f"{where} is not a stoke splits file ({FORMAT}); run `stoke split` again")
    bound, added = splits_extent(document, size, dataset, lineage, str(where))
    parts: dict[str, np.ndarray] = {}
    taken = np.empty(0, np.int64)  # as the indices read need: no array is sized from a count in the file
    for entry in document["splits"]:
        parts_name, indices = _read_part(root, entry, bound, where)
        if parts_name in parts:
            raise FormatError(f"{where} lists split {parts_name!r} twice")
        if np.intersect1d(taken, indices, assume_unique=True).size:
            raise FormatError(f"{where}: split {parts_name!r} shares samples with another split")
        taken = np.union1d(taken, indices)
        parts[parts_name] = indices
    if bound > size:  # made on a later version: this version has only its first ``size`` samples
        parts = {name: part[part < size] for name, part in parts.items()}
    info = {key: value for key, value in document.items() if key not in ("format", "splits")}
    return Splits(parts, info, added)


def splits_extent(
    document: dict[str, Any], size: int, dataset: str, lineage: Sequence[tuple[str, int]] | None, where: str
) -> tuple[int, int]:
    """(the size of the version the splits were made on, samples added since) for a splits document, or the
    :class:`FormatError` for splits of another packing.

    Made on a version of ``lineage`` (its ``dataset`` is one of their packing ids): that version's size,
    and ``size`` minus it. Made on a later version (its ``chain`` begins with ``lineage``'s packing ids):
    its declared ``num_samples``, at least ``size``, and 0.
    """
    versions = list(lineage) if lineage else [(dataset, size)]
    made_for = document.get("dataset")
    for packing, count in versions:
        if made_for == packing:
            return count, size - count
    chain, declared = document.get("chain"), document.get("num_samples")
    ours = [packing for packing, _ in versions]
    if (
        isinstance(chain, list)
        and chain[: len(ours)] == ours
        and isinstance(declared, int)
        and not isinstance(declared, bool)
        and declared >= size
    ):
        return declared, 0
    raise FormatError(f"{where} was made for another packing of this dataset; run `stoke split` again")


def _read_part(root: Path, entry: Any, size: int, where: Path) -> tuple[str, np.ndarray]:
    if not isinstance(entry, dict):
        raise FormatError(f"{where} has a split entry that is not an object")
    name, count, checksum = entry.get("name"), entry.get("count"), entry.get("checksum")
    try:
        check_name(name)
    except ValueError as error:
        raise FormatError(f"{where}: {error}") from None
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= size:
        raise FormatError(f"{where}: split {name!r} has an invalid count {count!r}")
    path = root / SPLITS_DIR / f"{name}.idx"
    if path.is_symlink() or not path.is_file():
        raise FormatError(f"split {name!r} has no index file {path}; run `stoke split` again")
    if path.stat().st_size != 8 * count:
        raise FormatError(f"{path} holds {path.stat().st_size} bytes, not {8 * count} for {count} samples")
    if file_checksum(path) != checksum:
        raise FormatError(f"{path} does not match its checksum in {where}; run `stoke split` again")
    indices = np.fromfile(path, dtype="<u8").astype(np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= size or np.any(np.diff(indices) <= 0)):
        raise FormatError(f"{path} holds indices that are unsorted, repeated or outside the {size} samples")
    return name, indices
