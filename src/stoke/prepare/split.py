"""Deterministic train/validation/test splits of sample indices, stratified by label when asked.

:func:`make_splits` stores the splits inside a dataset (``stoke split``): :func:`strata` turns the
``stratify`` field into classes, :func:`content_fields` chooses the fields whose bytes make a sample's
content, and samples of identical content are reported as leaks across splits or left out
(``dedupe``). :func:`fill_fractions` completes the shares the command line was given. The rules are
spelled out in docs/splits.md. Not for: reading splits back (``stoke.open(..., split=)``,
``stoke.format.splits``).

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

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from stoke.errors import ConfigError
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
        raise ConfigError(f"split fractions must be non-negative and sum to 1, got {dict(fractions)}")
    groups: list[np.ndarray]
    if labels is None:
        groups = [np.arange(size, dtype=np.int64)]
    else:
        labels = np.asarray(labels)
        if labels.shape != (size,):
            raise ConfigError(f"labels must have shape ({size},), got {labels.shape}")
        groups = [np.flatnonzero(labels == value) for value in np.unique(labels)]
    parts: dict[str, list[np.ndarray]] = {name: [np.empty(0, np.int64)] for name in names}
    for number, group in enumerate(groups):
        shuffled = epoch_generator(seed, number, stream=0x5B17).permutation(group)
        for name, chunk in zip(names, np.split(shuffled, np.cumsum(_counts(len(group), shares))[:-1])):
            parts[name].append(chunk)
    return {name: np.sort(np.concatenate(chunks)).astype(np.int64) for name, chunks in parts.items()}


DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def fill_fractions(
    given: Mapping[str, float | None], default: Mapping[str, float] = DEFAULT_FRACTIONS
) -> dict[str, float]:
    """The shares of ``stoke split``: ``given`` names each split in order, with None for a share not given.

    None given: ``default``. Given shares that add up to 1: the others are 0. Less than 1: the rest goes
    to the first split not given and the others are 0 (``--train 0.9`` keeps a tenth for validation).
    Splits with a share of 0 are left out. More than 1, or all given and not 1, is a :class:`ConfigError`.

    Example:
        >>> fill_fractions({"train": 0.9, "val": None, "test": None})
        {'train': 0.9, 'val': 0.1}
        >>> fill_fractions({"train": 0.7, "val": None, "test": 0.1})
        {'train': 0.7, 'val': 0.2, 'test': 0.1}
    """
    chosen = {name: float(share) for name, share in given.items() if share is not None}
    if not chosen:
        return dict(default)
    total = sum(chosen.values())
    flags = [f"--{name} {share:g}" for name, share in chosen.items()]
    said = flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} and {flags[-1]}"
    missing = [name for name in given if name not in chosen]
    if total > 1 + 1e-9:
        raise ConfigError(f"{said} add up to {total:g}, more than 1; lower them so that they add up to 1")
    if total < 1 - 1e-9:
        if not missing:
            raise ConfigError(f"{said} add up to {total:g}, not 1; leave one out to give it the rest")
        chosen[missing[0]] = round(1.0 - total, 12)  # 1 - 0.9 is 0.09999999999999998
    return {name: chosen[name] for name in given if chosen.get(name, 0.0) > 0}


def _counts(total: int, shares: np.ndarray) -> np.ndarray:
    """Integer counts proportional to ``shares`` that add up to ``total`` (largest remainder)."""
    exact = shares * total
    counts = np.floor(exact).astype(np.int64)
    remainder = total - counts.sum()
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1
    return counts


IDENTITY_NAMES = frozenset(
    {"path", "file", "filename", "file_name", "filepath", "file_path", "image_path", "url", "uri"}
    | {"id", "uid", "uuid", "key", "sample_id"}
)
"""Names of scalar or text fields that say where a sample came from, not what it is (compared lowercased)."""
LABEL_NAMES = frozenset({"label", "labels", "target"})
"""Names of scalar or text fields that are a sample's label, which a leak does not depend on."""
MEDIA_TYPES = frozenset({"image", "ndarray", "bytes"})
"""Field types that hold a sample's data itself: when a dataset has any, they alone are its content."""
_SCALAR_TYPES = frozenset({"int", "float", "text"})


def content_fields(dataset: Dataset, stratify: str | None = None) -> list[str]:
    """The fields whose bytes make a sample's *content*: what the leakage report and ``dedupe`` compare.

    Left out: *identity* fields (an int, float or text field named as in :data:`IDENTITY_NAMES`, such as
    the ``path`` that image folders, listings and text folders write), and *labels* (the ``stratify``
    field, the label column a table source names, and a scalar or text field named as in
    :data:`LABEL_NAMES`). Of what remains, the image, ndarray and bytes fields are the content when
    there are any (the same picture is a leak whatever its caption); otherwise every remaining field is
    (the same row of features is a leak whatever its label).

    Example:
        >>> import numpy as np, stoke, tempfile
        >>> out = tempfile.mkdtemp() + "/ds"
        >>> _ = stoke.pack([{"image": np.zeros((2, 2, 3), np.uint8), "caption": "a", "label": 0}], out, progress=False)
        >>> content_fields(stoke.open(out))
        ['image']
    """
    labels = {stratify, dataset.manifest.source.get("label")}
    remaining = []
    for name, kind in dataset.fields.items():
        scalar = kind.type_name in _SCALAR_TYPES
        if name in labels or (scalar and name.lower() in IDENTITY_NAMES | LABEL_NAMES):
            continue
        remaining.append(name)
    media = [name for name in remaining if dataset.fields[name].type_name in MEDIA_TYPES]
    return media or remaining


@dataclass
class Strata:
    """What a stratified split keeps in share: a class id per sample, and each id's name."""

    ids: np.ndarray
    names: dict[int, str]


def strata(dataset: Dataset, field: str, bins: int | None = None) -> Strata:
    """The classes of ``field`` that a split stratified by it keeps in share, or a :class:`ConfigError`.

    An int field's values are its classes (named as in the manifest, when it holds class names); a text
    field's distinct values are; a float field's are when every value is a whole number. With ``bins``,
    an int or float field is cut into that many quantile bins instead (named ``low..high``; NaN gets a
    bin of its own). A field of more distinct values than half the samples is refused: an identifier or
    free text would put every sample in a class of its own, and every class of one sample in one split.

    Example:
        >>> import numpy as np, stoke, tempfile
        >>> out = tempfile.mkdtemp() + "/ds"
        >>> _ = stoke.pack({"price": np.array([1.0, 2.5, 4.0, 9.0])}, out, progress=False)
        >>> strata(stoke.open(out), "price", bins=2).names
        {0: '1..3.25', 1: '3.25..9'}
    """
    if field not in dataset.fields:
        raise ConfigError(
            f"stratify names {field!r}, which is not a field of {dataset.root}; "
            f"its fields are {', '.join(dataset.fields)}"
        )
    kind = dataset.fields[field].type_name
    if bins is not None:
        if kind not in ("int", "float"):
            raise ConfigError(
                f"stratify_bins bins a number; {field!r} is a {kind} field, so stratify on it without bins"
            )
        if bins < 2:
            raise ConfigError(f"stratify_bins must be at least 2, not {bins}")
        return _quantile_bins(dataset.column(field).astype(np.float64), bins)
    if kind == "int":
        values = dataset.column(field)
        classes = dataset.manifest.field_entry(field).classes or []
        found = np.unique(values)
        names = {int(v): classes[v] if 0 <= v < len(classes) else str(int(v)) for v in found.tolist()}
        result = Strata(values.astype(np.int64), names)
    elif kind == "float":
        values = dataset.column(field)
        if not np.all(np.isfinite(values) & (values == np.round(values))):
            raise ConfigError(
                f"stratify {field!r} is a float field, whose values are not classes; pass stratify_bins=N "
                f"(`--stratify-bins N`) to keep the share of N quantile bins of it, or stratify on a label"
            )
        result = Strata(values.astype(np.int64), {int(v): f"{int(v)}" for v in np.unique(values).tolist()})
    elif kind == "text":
        decode = dataset.fields[field].decode
        (position,) = dataset.field_positions([field])
        texts = [decode(dataset.read_fields(index, [position])[0]) for index in range(len(dataset))]
        distinct, ids = np.unique(np.array(texts, dtype=object), return_inverse=True)
        result = Strata(ids.astype(np.int64), dict(enumerate(str(text) for text in distinct)))
    else:
        article = "an" if kind[0] in "aeiou" else "a"
        raise ConfigError(f"stratify takes an int, float or text field, the label; {field!r} is {article} {kind} field")
    if len(result.names) > max(1, len(dataset) // 2):
        raise ConfigError(
            f"stratify {field!r} has {len(result.names):,} distinct values among {len(dataset):,} samples, "
            f"an identifier or free text rather than a label; stratify on a label"
            + (", or bin the number with `--stratify-bins N`" if kind != "text" else "")
        )
    return result


def _quantile_bins(values: np.ndarray, bins: int) -> Strata:
    """Quantile bins of ``values``: equal counts where ties allow; edges shared by ties merge."""
    finite = ~np.isnan(values)
    if not finite.any():
        return Strata(np.zeros(values.size, np.int64), {0: "nan"})
    edges = np.unique(np.quantile(values[finite], np.linspace(0, 1, bins + 1)))
    ids = np.searchsorted(edges[1:-1], values, side="right").astype(np.int64)
    names = {number: f"{edges[number]:.4g}..{edges[number + 1]:.4g}" for number in range(max(len(edges) - 1, 1))}
    if not finite.all():
        ids[~finite] = len(names)
        names[len(names)] = "nan"
    return Strata(ids, names)


@dataclass
class SplitReport:
    """What :func:`make_splits` stored and found: counts, class balance, leaks, duplicates dropped.

    ``balance`` counts each split's samples per class id; ``class_names`` names the ids; ``content`` lists
    the fields that were compared to find leaks and duplicates (empty: nothing was compared).
    """

    counts: dict[str, int]
    balance: dict[str, dict[int, int]]
    leaks: list[dict[str, Any]]
    dropped: list[int]
    class_names: dict[int, str] = dataclasses.field(default_factory=dict)
    content: list[str] = dataclasses.field(default_factory=list)

    def balance_by_name(self) -> dict[str, dict[str, int]]:
        """``balance`` keyed by class name instead of id."""
        return {
            split: {self.class_names.get(k, str(k)): v for k, v in classes.items()}
            for split, classes in self.balance.items()
        }

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (what ``stoke split --json`` prints): class ids as strings."""
        return {
            "counts": self.counts,
            "balance": {name: {str(k): v for k, v in classes.items()} for name, classes in self.balance.items()},
            "balance_by_name": self.balance_by_name(),
            "leaks": self.leaks,
            "dropped": self.dropped,
            "content": self.content,
        }

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as JSON text: one line, or indented by ``indent``."""
        return json.dumps(self.to_dict(), indent=indent)


def content_hashes(dataset: Dataset, fields: Sequence[str]) -> np.ndarray:
    """One xxh3 digest per sample of the bytes of ``fields`` (checksums verified first).

    Two samples with the same digest hold the same content in those fields, whatever their others.
    """
    positions = dataset.field_positions(fields)
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
    stratify_bins: int | None = None,
    content: Sequence[str] | None = None,
) -> SplitReport:
    """Split ``dataset`` into named index views stored inside it, and report leaks between splits.

    ``stratify`` names the field (the label) whose class shares each split keeps (see :func:`strata`;
    ``stratify_bins`` cuts a number into quantile bins). Samples whose *content* is byte-identical are
    *leaks* when they land in different splits; they are listed. The content is the ``content`` fields,
    by default those :func:`content_fields` chooses (the image, not its path or label). With ``dedupe``
    only the first sample of each group of identical ones is split and the rest are left out of every
    split (listed in ``dropped``), so no content can be in two splits.

    Example:
        >>> import tempfile, pathlib, stoke
        >>> root = pathlib.Path(tempfile.mkdtemp()) / "ds"
        >>> _ = stoke.pack([{"x": i % 5, "label": i % 5 % 2} for i in range(10)], root, progress=False)
        >>> report = make_splits(stoke.open(root), {"train": 0.6, "val": 0.4}, stratify="label")
        >>> report.counts, len(report.leaks), report.content  # x repeats: 5 contents, each twice
        ({'train': 6, 'val': 4}, 4, ['x'])
        >>> report = make_splits(stoke.open(root), {"train": 0.6, "val": 0.4}, dedupe=True)
        >>> report.counts, report.dropped, report.leaks
        ({'train': 3, 'val': 2}, [5, 6, 7, 8, 9], [])
        >>> len(stoke.open(root, split="val"))
        2
    """
    for name in fractions:
        check_name(name)
    classes = strata(dataset, stratify, stratify_bins) if stratify is not None else None
    labels = classes.ids if classes is not None else None
    compared = list(content) if content is not None else content_fields(dataset, stratify)
    for name in compared:
        if name not in dataset.fields:
            raise ConfigError(
                f"content names {name!r}, which is not a field of {dataset.root}; "
                f"its fields are {', '.join(dataset.fields)}"
            )
    if not compared and dedupe:
        raise ConfigError(
            f"{dataset.root} has no field to compare for duplicates (its fields are all labels or identities: "
            f"{', '.join(dataset.fields)}); name the fields that make a sample's content with `--content FIELD`"
        )
    # Without content fields every sample would hash alike; distinct digests report no leak instead.
    digests = content_hashes(dataset, compared) if compared else np.arange(len(dataset), dtype=np.uint64)
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
        **({"stratify_bins": int(stratify_bins)} if stratify is not None and stratify_bins is not None else {}),
        "content": compared,
        "dropped": int(dropped.size),
    }
    write_splits(dataset.root, parts, info)
    return SplitReport(
        counts={name: int(part.size) for name, part in parts.items()},
        balance=class_balance(parts, labels),
        leaks=_leaks(parts, digests),
        dropped=dropped.tolist(),
        class_names=classes.names if classes is not None else {},
        content=compared,
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
