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

A dataset that grew (``stoke pack --append``) since its splits were made has samples in no split.
:func:`make_splits` then keeps every stored sample where it is and splits only the samples added since,
by the same rule with the stored settings (:func:`growing_settings`); ``fresh=True`` splits every sample
again instead (docs/growing.md).

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
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import xxhash

from stoke.errors import ConfigError, FormatError
from stoke.format.splits import Splits, check_name, write_splits
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
    kept: int = 0  # samples that kept the split they had (splits extended over samples an append added)
    added: int = 0  # samples split now for the first time, when the splits were extended

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
            "kept": self.kept,
            "added": self.added,
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
    fresh: bool = False,
) -> SplitReport:
    """Split ``dataset`` into named index views stored inside it, and report leaks between splits.

    When the dataset grew since its stored splits were made, the samples they hold keep their split and
    only the samples added since are split, by the same rule; the settings must be those the splits were
    made with (:func:`growing_settings`), and ``fresh=True`` splits every sample again instead. Splits
    that hold every sample are replaced.

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
    stored = None if fresh else _splits_to_grow(dataset)
    if stored is not None:
        given = {
            "fractions": dict(fractions),
            "seed": seed,
            "stratify": stratify,
            "stratify_bins": stratify_bins,
            "dedupe": dedupe,
            **({"content": list(content)} if content is not None else {}),
        }
        return _grow(dataset, stored, given)
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
    settings = _Settings(seed, fractions, stratify, stratify_bins, compared, dedupe)
    return _write(dataset, parts, settings, dropped, labels, digests, classes)


def growing_settings(dataset: Dataset) -> dict[str, Any] | None:
    """The settings the stored splits were made with, when ``dataset`` grew since and :func:`make_splits`
    would extend them (``fractions``, ``seed``, ``stratify``, ``stratify_bins``, ``dedupe``, ``content``);
    None when it would make new splits (none stored, or they already hold every sample).

    Example:
        >>> import numpy as np, stoke, tempfile
        >>> out = tempfile.mkdtemp() + "/ds"
        >>> _ = stoke.pack({"x": np.arange(20), "label": np.arange(20) % 2}, out, progress=False)
        >>> _ = make_splits(stoke.open(out), {"train": 0.5, "val": 0.5}, seed=3, stratify="label")
        >>> growing_settings(stoke.open(out)) is None  # every sample is in a split
        True
        >>> _ = stoke.pack({"x": np.arange(20, 30), "label": np.arange(10) % 2}, out, append=True, progress=False)
        >>> settings = growing_settings(stoke.open(out))
        >>> settings["seed"], settings["stratify"], settings["fractions"]
        (3, 'label', {'train': 0.5, 'val': 0.5})
        >>> report = make_splits(stoke.open(out), **settings)
        >>> report.kept, report.added, sum(report.counts.values())
        (20, 10, 30)
    """
    stored = _splits_to_grow(dataset)
    return _stored_settings(stored) if stored is not None else None


def _splits_to_grow(dataset: Dataset) -> Splits | None:
    """The stored splits when the dataset gained samples since they were made (None otherwise); splits made on
    a later version than the one open are a ConfigError (splitting this version would lose theirs)."""
    if not dataset.has_splits():
        return None
    try:
        stored = dataset.splits()
    except FormatError:  # another packing's, or damaged: made anew, as always
        return None
    made_on = stored.info.get("num_samples")
    if isinstance(made_on, int) and made_on > len(dataset):
        raise ConfigError(
            f"the splits of {dataset.location} were made on a later version (of {made_on:,} samples) than the one "
            f"open (version {dataset.version}, {len(dataset):,} samples); split the newest version "
            f"(stoke.open without version=), or pass fresh=True (--fresh) to split this one anew"
        )
    return stored if stored.added > 0 else None


def _stored_settings(stored: Splits) -> dict[str, Any]:
    info = stored.info
    fractions = info.get("fractions")
    if not isinstance(fractions, dict) or not fractions:  # an older file: the shares its splits hold
        total = sum(int(part.size) for part in stored.parts.values()) or 1
        fractions = {name: int(part.size) / total for name, part in stored.parts.items()}
    bins = info.get("stratify_bins")
    dedupe = info.get("dedupe", bool(info.get("dropped", 0)))
    content = info.get("content")
    return {
        "fractions": {str(name): float(share) for name, share in fractions.items()},
        "seed": int(info.get("seed", 0)) if isinstance(info.get("seed", 0), int) else 0,
        "stratify": info.get("stratify") if isinstance(info.get("stratify"), str) else None,
        "stratify_bins": bins if isinstance(bins, int) and not isinstance(bins, bool) else None,
        "dedupe": bool(dedupe),
        **({"content": [str(name) for name in content]} if isinstance(content, list) else {}),
    }


def _grow(dataset: Dataset, stored: Splits, given: dict[str, Any]) -> SplitReport:
    """Keep every stored sample's split; split the samples added since by the stored settings."""
    settings = _stored_settings(stored)
    differ = [
        key
        for key in ("fractions", "seed", "stratify", "stratify_bins", "dedupe", "content")
        if key in given and not _same(given[key], settings.get(key))
    ]
    size = len(dataset)
    first_new = size - stored.added
    if differ:
        made = ", ".join(f"{key}={settings.get(key)!r}" for key in differ)
        raise ConfigError(
            f"the splits of {dataset.location} were made with {made}; its {stored.added:,} samples added since are "
            f"split the same way, and no sample ever moves: leave those options out (stoke split with no options "
            f"uses the stored ones), or pass fresh=True (--fresh) to split every sample again"
        )
    fractions, seed, stratify = settings["fractions"], settings["seed"], settings["stratify"]
    bins, dedupe = settings["stratify_bins"], settings["dedupe"]
    for name in fractions:
        check_name(name)
    classes = strata(dataset, stratify, bins) if stratify is not None else None
    labels = classes.ids if classes is not None else None
    compared = settings.get("content", content_fields(dataset, stratify))
    missing = [name for name in compared if name not in dataset.fields]
    if missing:
        raise ConfigError(f"the stored splits compare the field {missing[0]!r}, which {dataset.location} lacks")
    digests = content_hashes(dataset, compared) if compared else np.arange(size, dtype=np.uint64)
    new = np.arange(first_new, size, dtype=np.int64)
    if dedupe:  # a new sample whose content an earlier sample has is left out, as a first split would
        _, first = np.unique(digests, return_index=True)
        is_first = np.zeros(size, bool)
        is_first[first] = True
        kept_new = new[is_first[new]]
    else:
        kept_new = new
    positions = split_indices(len(kept_new), fractions, seed, labels[kept_new] if labels is not None else None)
    parts = {
        name: np.sort(np.concatenate([stored.parts.get(name, np.empty(0, np.int64)), kept_new[chosen]]))
        for name, chosen in positions.items()
    }
    for name, part in stored.parts.items():  # a stored split the shares no longer name keeps its samples
        parts.setdefault(name, part)
    placed = np.concatenate([np.empty(0, np.int64), *parts.values()])
    dropped = np.setdiff1d(np.arange(size, dtype=np.int64), placed)
    settings = _Settings(seed, fractions, stratify, bins, compared, dedupe)
    kept = int(sum(part.size for part in stored.parts.values()))
    return _write(dataset, parts, settings, dropped, labels, digests, classes, kept=kept, added=int(kept_new.size))


class _Settings(NamedTuple):
    """What a split was made with, as ``splits.json`` records it."""

    seed: int
    fractions: Mapping[str, float]
    stratify: str | None
    bins: int | None
    compared: list[str]
    dedupe: bool


def _write(
    dataset: Dataset,
    parts: dict[str, np.ndarray],
    settings: _Settings,
    dropped: np.ndarray,
    labels: np.ndarray | None,
    digests: np.ndarray,
    classes: Any,
    **counts: int,
) -> SplitReport:
    """Write ``parts`` as ``dataset``'s splits, with what they were made with; the report of them."""
    binned = settings.stratify is not None and settings.bins is not None
    info = {
        **_made_on(dataset),
        "seed": int(settings.seed),
        "fractions": {name: float(share) for name, share in settings.fractions.items()},
        "stratify": settings.stratify,
        **({"stratify_bins": int(settings.bins or 0)} if binned else {}),
        "content": settings.compared,
        "dropped": int(dropped.size),
        "dedupe": bool(settings.dedupe),
    }
    write_splits(dataset.root, parts, info)
    return SplitReport(
        counts={name: int(part.size) for name, part in parts.items()},
        balance=class_balance(parts, labels),
        leaks=_leaks(parts, digests),
        dropped=dropped.tolist(),
        class_names=classes.names if classes is not None else {},
        content=settings.compared,
        **counts,
    )


def _made_on(dataset: Dataset) -> dict[str, Any]:
    """What ties splits to the version they are made on: its packing id (``dataset``), those of versions 1 to
    it (``chain``), its size and number; splits of one version apply to every version (stoke.format.splits)."""
    history = dataset.versions[: dataset.version - 1]
    return {
        "dataset": dataset.packing_id,
        "chain": [*(entry.manifest_checksum for entry in history), dataset.packing_id],
        "version": dataset.version,
        "num_samples": len(dataset),
    }


def _same(given: Any, stored: Any) -> bool:
    if isinstance(given, Mapping) and isinstance(stored, Mapping):
        return set(given) == set(stored) and all(np.isclose(float(given[k]), float(stored[k])) for k in given)
    if isinstance(given, (list, tuple)) and isinstance(stored, (list, tuple)):
        return list(given) == list(stored)
    return given == stored


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
