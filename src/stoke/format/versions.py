"""The versions of a dataset that grows: the history its manifest keeps, and where each version's files are.

``stoke pack SOURCE DATASET --append`` adds samples as new shards and publishes version *N* + 1. The newest
manifest (``manifest.json``) is a complete manifest of version *N* + 1: it lists the old shards, unchanged,
then the new ones, so a reader that knows nothing of versions reads the newest version in full. It also
holds ``version`` and ``versions``, one :class:`VersionEntry` per published version (samples and shards
in total, items quarantined, when, and for every version but the newest the checksum of its manifest).
Each superseded manifest is kept, byte for byte, as ``versions/manifest-v<N>.json``, and the items an
append quarantined are in ``versions/quarantine-v<N>.jsonl`` (version 1's in ``quarantine.jsonl``). The
names follow from the version number alone, so no manifest can name a path (docs/format.md §3.7).

Not for: writing a version (``stoke.pack``'s append, ``stoke/pack/append.py``) or opening one (the shard
stores, ``stoke.open(path, version=N)``).

Example:
    >>> entry = VersionEntry(2, num_samples=150, num_shards=3, created="2026-12-05T10:00:00Z")
    >>> entry.manifest_file, entry.quarantine_file
    ('versions/manifest-v2.json', 'versions/quarantine-v2.jsonl')
    >>> read_versions([VersionEntry(1, 100, 2, manifest_checksum="0" * 16).to_dict(), entry.to_dict()],
    ...               version=2, num_samples=150, num_shards=3, where="manifest.json")[1].num_samples
    150
"""

from __future__ import annotations

import datetime
import itertools
import re
from dataclasses import dataclass
from typing import Any

from stoke.errors import ConfigError
from stoke.format.fields.base import is_int, require

VERSIONS_DIR = "versions"
MAX_VERSIONS = 1 << 20  # a dataset appended to once a minute for two years stays far below it
CHECKSUM_KEY = "manifest_xxh3_64"  # an older version's entry: the xxh3-64 of its manifest file's bytes
_HEX16 = re.compile(r"[0-9a-f]{16}")


def version_manifest_name(number: int) -> str:
    """Where the manifest of version ``number`` is kept once a newer version is published."""
    return f"{VERSIONS_DIR}/manifest-v{number}.json"


def version_quarantine_name(number: int) -> str:
    """The quarantine list of the pack (version 1) or append (later versions) that made version ``number``."""
    return "quarantine.jsonl" if number == 1 else f"{VERSIONS_DIR}/quarantine-v{number}.jsonl"


def utc_now() -> str:
    """The time now, as the ``created`` of a version records it: ISO 8601 in UTC, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class VersionEntry:
    """One published version of a dataset, as the newest manifest's ``versions`` lists it.

    ``num_samples`` and ``num_shards`` count the whole dataset at that version (its samples are the first
    ``num_samples`` of every later version, its shards the first ``num_shards``); ``num_quarantined``
    counts the items the pack or append that made it quarantined (listed in :attr:`quarantine_file`).
    ``created`` is when it was published (None for version 1 when it was packed: a pack does not record
    the time, so that packs stay byte-identical). ``manifest_checksum`` is the xxh3-64 of the version's
    manifest file, for every version but the newest; ``source`` describes what an append added and
    ``pack_id`` fingerprints it (the source, the settings and the version it was appended to), so that
    running the same append again finds it published instead of adding its samples twice.
    """

    version: int
    num_samples: int
    num_shards: int
    num_quarantined: int = 0
    created: str | None = None
    manifest_checksum: str | None = None
    source: dict[str, Any] | None = None
    pack_id: str | None = None

    @property
    def manifest_file(self) -> str:
        """The kept manifest of this version, relative to the dataset directory."""
        return version_manifest_name(self.version)

    @property
    def quarantine_file(self) -> str:
        """The quarantine list of the pack or append that made this version."""
        return version_quarantine_name(self.version)

    def to_dict(self) -> dict[str, Any]:
        """The entry as the manifest holds it (JSON-ready); keys that do not apply are left out."""
        entry: dict[str, Any] = {
            "version": self.version,
            "num_samples": self.num_samples,
            "num_shards": self.num_shards,
            "num_quarantined": self.num_quarantined,
            "created": self.created,
        }
        if self.source is not None:
            entry["source"] = self.source
        if self.pack_id is not None:
            entry["pack_id"] = self.pack_id
        if self.manifest_checksum is not None:
            entry[CHECKSUM_KEY] = self.manifest_checksum
        return entry

    @classmethod
    def from_dict(cls, entry: Any, number: int, newest: bool, where: str) -> VersionEntry:
        """Validate the entry of version ``number`` (``newest``: the manifest's own); FormatError if damaged."""
        place = f"{where} versions[{number - 1}]"
        require(isinstance(entry, dict), place, "is damaged: not an object")
        require(entry.get("version") == number and is_int(entry.get("version")), place, f"is not version {number}")
        samples, shards = entry.get("num_samples"), entry.get("num_shards")
        quarantined = entry.get("num_quarantined", 0)
        require(is_int(samples) and samples >= 0, place, "is damaged: num_samples is invalid")
        require(is_int(shards) and shards >= 0, place, "is damaged: num_shards is invalid")
        require(is_int(quarantined) and quarantined >= 0, place, "is damaged: num_quarantined is invalid")
        created, source, pack_id = entry.get("created"), entry.get("source"), entry.get("pack_id")
        require(created is None or isinstance(created, str), place, "is damaged: created is not a time")
        require(source is None or isinstance(source, dict), place, "is damaged: source is not an object")
        require(pack_id is None or _is_hex16(pack_id), place, "is damaged: pack_id is invalid")
        checksum = entry.get(CHECKSUM_KEY)
        if newest:
            require(checksum is None, place, f"is damaged: the newest version has no {CHECKSUM_KEY}")
        else:
            require(_is_hex16(checksum), place, f"is damaged: {CHECKSUM_KEY} is invalid")
        return cls(number, samples, shards, quarantined, created, checksum, source, pack_id)


def read_versions(entries: Any, version: int, num_samples: int, num_shards: int, where: str) -> list[VersionEntry]:
    """The validated history of a manifest of ``version`` with ``num_samples`` samples in ``num_shards`` shards.

    One entry per version from 1 to ``version``, in order; samples and shards never decrease, and the last
    entry's are the manifest's own. Raises :class:`~stoke.errors.FormatError` naming what is damaged.
    """
    require(
        isinstance(entries, list) and len(entries) == version,
        where,
        f"is damaged: version {version} must list {version} entries under 'versions'",
    )
    history = [
        VersionEntry.from_dict(entry, number, number == version, where) for number, entry in enumerate(entries, 1)
    ]
    for before, after in itertools.pairwise(history):
        require(
            before.num_samples <= after.num_samples and before.num_shards <= after.num_shards,
            where,
            f"is damaged: its versions say version {after.version} holds fewer samples or shards than version "
            f"{before.version}",
        )
    last = history[-1]
    require(
        last.num_samples == num_samples and last.num_shards == num_shards,
        where,
        f"is damaged: its versions say version {version} holds {last.num_samples:,} samples in {last.num_shards:,} "
        f"shards, but it lists {num_samples:,} in {num_shards:,}",
    )
    return history


def read_version_number(value: Any, where: str) -> int:
    """A manifest's ``version`` (1 when absent): a dataset version from 1 to :data:`MAX_VERSIONS`."""
    if value is None:
        return 1
    require(is_int(value) and 1 <= value <= MAX_VERSIONS, where, f"is damaged: version {value!r} is not a version")
    return value


def unknown_version(location: str, version: Any, history: list[VersionEntry]) -> str:
    """The sentence for a request of a version the dataset does not have (a ConfigError's message)."""
    newest = history[-1].version
    have = "only version 1" if newest == 1 else f"versions 1 to {newest}"
    return (
        f"{location} has {have}, so there is no version {version!r}; `stoke inspect {location}` lists them, and "
        f"stoke.open(path) without a version opens the newest"
    )


def check_is_version(value: Any) -> None:
    """Raise :class:`~stoke.errors.ConfigError` unless ``value`` may name a version (a positive integer)."""
    if not is_int(value) or value < 1:
        raise ConfigError(f"version must be a positive integer (1 is the dataset as first packed), got {value!r}")


def _is_hex16(value: Any) -> bool:
    return isinstance(value, str) and bool(_HEX16.fullmatch(value))


__all__ = [
    "CHECKSUM_KEY",
    "MAX_VERSIONS",
    "VERSIONS_DIR",
    "VersionEntry",
    "check_is_version",
    "read_version_number",
    "read_versions",
    "unknown_version",
    "utc_now",
    "version_manifest_name",
    "version_quarantine_name",
]
