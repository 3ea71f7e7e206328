"""Deterministic train/validation/test splits of sample indices, stratified by label when asked.

Algorithm: with ``labels``, each class's indices are shuffled by a Philox generator keyed by (seed,
class) and cut at the cumulative fractions, with the largest-remainder rule deciding rounding so that
the split sizes add up; without labels the whole index range is cut the same way. The result depends
only on (labels, fractions, seed): not on the order classes are met in, nor on the platform.

Example:
    >>> import numpy as np
    >>> parts = split_indices(10, {"train": 0.8, "val": 0.2}, seed=0, labels=np.array([0, 1] * 5))
    >>> {name: len(part) for name, part in parts.items()}
    {'train': 8, 'val': 2}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from stoke.format.splits import check_name, write_splits
from stoke.rng import epoch_generator

if TYPE_CHECKING:
    from stoke.read import Dataset


def split_indices(
    size: int, fractions: Mapping[str, float], seed: int = 0, labels: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Disjoint, sorted index arrays covering ``range(size)``, one per named fraction (which must sum to 1)."""
    names = list(fractions)
    shares = np.array([float(fractions[name]) for name in names])
    if not names or np.any(shares < 0) or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {dict(fractions)}")
    groups: list[np.ndarray]
    if labels is None:
        groups = [np.arange(size, dtype=np.int64)]
    else:
        labels = np.asarray(labels)
        if labels.shape != (size,):
            raise ValueError(f"labels must have shape ({size},), got {labels.shape}")
        groups = [np.flatnonzero(labels == value) for value in np.unique(labels)]
    parts: dict[str, list[np.ndarray]] = {name: [np.empty(0, np.int64)] for name in names}
    for number, group in enumerate(groups):
        shuffled = epoch_generator(seed, number, stream=0x5B17).permutation(group)
        for name, chunk in zip(names, np.split(shuffled, np.cumsum(_counts(len(group), shares))[:-1])):
            parts[name].append(chunk)
    return {name: np.sort(np.concatenate(chunks)).astype(np.int64) for name, chunks in parts.items()}


def _counts(total: int, shares: np.ndarray) -> np.ndarray:
    """Integer counts proportional to ``shares`` that add up to ``total`` (largest remainder)."""
    exact = shares * total
    counts = np.floor(exact).astype(np.int64)
    remainder = total - counts.sum()
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1
    return counts


@dataclass
class SplitReport:
    """What :func:`make_splits` stored and found: counts, class balance, leaks, duplicates dropped."""

    counts: dict[str, int]
    balance: dict[str, dict[int, int]]
    leaks: list[dict[str, Any]]
    dropped: list[int]

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "balance": {name: {str(k): v for k, v in classes.items()} for name, classes in self.balance.items()},
            "leaks": self.leaks,
            "dropped": self.dropped,
        }


def content_hashes(dataset: Dataset, exclude: Sequence[str] = ()) -> np.ndarray:
    """One xxh3 digest per sample of the bytes of every field not in ``exclude`` (checksums verified first).

    Two samples with the same digest hold the same content, whatever their labels.
    """
    names = [name for name in dataset.fields if name not in exclude]
    positions = dataset.field_positions(names)
    digests = np.empty(len(dataset), dtype=np.uint64)
    for index in range(len(dataset)):
        hasher = xxhash.xxh3_64()
        for data in dataset.read_fields(index, positions, verify=True):
            hasher.update(len(data).to_bytes(8, "little"))  # field boundaries count: (ab, c) != (a, bc)
            hasher.update(data)
        digests[index] = hasher.intdigest()
    return digests


def make_splits(
    dataset: Dataset,
    fractions: Mapping[str, float],
    seed: int = 0,
    stratify: str | None = None,
    dedupe: bool = False,
) -> SplitReport:
    """Split ``dataset`` into named index views stored inside it, and report leaks between splits.

    ``stratify`` names an int field (the label) whose class shares each split keeps. Samples whose other
    fields are byte-identical are *leaks* when they land in different splits; they are listed. With
    ``dedupe`` only the first sample of each group of identical ones is split and the rest are left out
    of every split (listed in ``dropped``), so no content can be in two splits.

    Example:
        >>> import tempfile, pathlib, stoke
        >>> root = pathlib.Path(tempfile.mkdtemp()) / "ds"
        >>> _ = stoke.pack([{"x": i % 5, "label": i % 5 % 2} for i in range(10)], root, progress=False)
        >>> report = make_splits(stoke.open(root), {"train": 0.6, "val": 0.4}, stratify="label")
        >>> report.counts, len(report.leaks)  # x repeats: 5 contents, each twice, most across splits
        ({'train': 6, 'val': 4}, 4)
        >>> report = make_splits(stoke.open(root), {"train": 0.6, "val": 0.4}, dedupe=True)
        >>> report.counts, report.dropped, report.leaks
        ({'train': 3, 'val': 2}, [5, 6, 7, 8, 9], [])
        >>> len(stoke.open(root, split="val"))
        2
    """
    for name in fractions:
        check_name(name)
    labels = dataset.column(stratify) if stratify is not None else None
    digests = content_hashes(dataset, exclude=[stratify] if stratify else [])
    _, first = np.unique(digests, return_index=True)
    kept = np.sort(first) if dedupe else np.arange(len(dataset), dtype=np.int64)
    dropped = np.setdiff1d(np.arange(len(dataset)), kept)
    positions = split_indices(len(kept), fractions, seed, labels[kept] if labels is not None else None)
    parts = {name: kept[chosen] for name, chosen in positions.items()}
    info = {
        "dataset": dataset.packing_id,
        "seed": int(seed),
        "fractions": {name: float(share) for name, share in fractions.items()},
        "stratify": stratify,
        "dropped": int(dropped.size),
    }
    write_splits(dataset.root, parts, info)
    return SplitReport(
        counts={name: int(part.size) for name, part in parts.items()},
        balance=class_balance(parts, labels),
        leaks=_leaks(parts, digests),
        dropped=dropped.tolist(),
    )


def class_balance(parts: Mapping[str, np.ndarray], labels: np.ndarray | None) -> dict[str, dict[int, int]]:
    """Samples per class in each split (empty without labels)."""
    if labels is None:
        return {}
    return {
        name: {int(value): int(count) for value, count in zip(*np.unique(labels[part], return_counts=True))}
        for name, part in parts.items()
    }


def _leaks(parts: Mapping[str, np.ndarray], digests: np.ndarray) -> list[dict[str, Any]]:
    """Groups of identical samples that span more than one split: their indices by split."""
    owner = np.full(digests.size, -1, dtype=np.int64)
    names = list(parts)
    for number, name in enumerate(names):
        owner[parts[name]] = number
    placed = np.flatnonzero(owner >= 0)
    order = placed[np.argsort(digests[placed], kind="stable")]
    leaks = []
    for group in np.split(order, np.flatnonzero(np.diff(digests[order])) + 1):
        if group.size > 1 and np.unique(owner[group]).size > 1:
            by_split: dict[str, list[int]] = {}
            for index in group.tolist():
                by_split.setdefault(names[owner[index]], []).append(index)
            leaks.append({"content": f"{int(digests[group[0]]):016x}", "samples": by_split})
    return leaks
