"""The manifest: the one file that makes a directory a dataset, written last and atomically.

``manifest.json`` holds the format version, the schema (named, typed fields with their settings and
pack-time statistics), the sample count, the shard list (file name, sample count, byte size, checksum),
the pack settings, a description of the source and, when the source provides any, its attachments
(whole-dataset files such as ``tokenizer.json``: name, byte size, checksum). It holds nothing per
sample, so it stays small: the per-sample index lives in the shards and is mapped lazily. A dataset that
grew (``stoke pack --append``) also holds its ``version`` and ``versions``, the history of every published
version (``stoke.format.versions``); the newest manifest is still a whole dataset on its own.

Everything read from a manifest is validated before it is trusted: types, counts that must add up and
fit the sizes they imply (a shard of N samples and F fields is at least ``64 + 8*(N*F + 1) + 8*N`` bytes,
plus what its fields' fixed sizes take), image statistics that fit the pixel limit, and shard names that
can only name plain files inside the dataset directory. Unknown newer versions are refused with a message
that names both versions; version 1 datasets are still read (their checksums do not cover the field
boundaries: ``stoke verify`` says so, and a re-pack upgrades them).

Example:
    >>> from stoke.format.fields import IntField
    >>> manifest = Manifest(fields=[FieldEntry("label", IntField())], shards=[], num_samples=0)
    >>> Manifest.from_dict(manifest.to_dict(), where="manifest.json").num_samples
    0
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stoke._version import __version__
from stoke.errors import FormatError, NotADatasetError, VersionError
from stoke.format import strict_json
from stoke.format.atomic import write_json_atomically
from stoke.format.checksum import ALGORITHM, canonical_json, format_digest, sample_checksum
from stoke.format.fields import Field, ImageField, field_from_dict
from stoke.format.fields.base import is_int, require
from stoke.format.shard import ShardLayout
from stoke.format.versions import VersionEntry, read_version_number, read_versions

FORMAT_NAME = "stoke"
FORMAT_VERSION = 2  # what this stoke writes; it reads every version from 1 to this one
MAX_SHARD_BYTES = (1 << 63) - 1  # the largest file a filesystem can hold
IMAGE_STATS = ("min_height", "max_height", "min_width", "max_width")
MANIFEST_NAME = "manifest.json"
QUARANTINE_NAME = "quarantine.jsonl"
PACK_STATE_DIR = ".stoke-pack"
RESERVED_FIELD_NAMES = frozenset({"index"})
MAX_MANIFEST_BYTES = 1 << 30
MAX_ATTACHMENT_BYTES = 1 << 30
MAX_ATTACHMENTS = 256
_SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
MANIFEST_CHECKSUM = "manifest_checksum"  # version 2: the xxh3-64 of the rest of the manifest (manifest_digest)


@dataclass(frozen=True)
class FieldEntry:
    """A named field of the schema, with pack-time statistics and, for labels, the class names."""

    name: str
    field: Field
    stats: dict[str, int] | None = None
    classes: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, **self.field.to_dict()}
        if self.stats is not None:
            entry["stats"] = self.stats
        if self.classes is not None:
            entry["classes"] = self.classes
        return entry


@dataclass(frozen=True)
class ShardEntry:
    """A shard as the manifest lists it."""

    file: str
    num_samples: int
    file_size: int
    checksum: str
    seed: int = 0  # version 2: the shard's sample_seed, which every sample checksum of the shard is bound to

    def to_dict(self, version: int = 2) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "file": self.file,
            "num_samples": self.num_samples,
            "bytes": self.file_size,
            ALGORITHM: self.checksum,
        }
        if version >= 2:
            entry["sample_seed"] = format_digest(self.seed)
        return entry


@dataclass(frozen=True)
class AttachmentEntry:
    """A whole-dataset file beside the shards (such as ``tokenizer.json``), as the manifest lists it."""

    file: str
    file_size: int
    checksum: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "bytes": self.file_size, ALGORITHM: self.checksum}


@dataclass
class Manifest:
    """The parsed, validated content of ``manifest.json``."""

    fields: list[FieldEntry]
    shards: list[ShardEntry]
    num_samples: int
    num_quarantined: int = 0
    source: dict[str, Any] = field(default_factory=dict)
    pack: dict[str, Any] = field(default_factory=dict)
    attachments: list[AttachmentEntry] = field(default_factory=list)
    format_version: int = FORMAT_VERSION
    created_by: str = f"stoke {__version__}"
    version: int = 1  # the dataset's version: 1 as packed, one more for each append (docs/format.md §3.7)
    versions: list[VersionEntry] = field(default_factory=list)  # one entry per version; empty at version 1

    @property
    def total_bytes(self) -> int:
        return sum(shard.file_size for shard in self.shards)

    @property
    def history(self) -> list[VersionEntry]:
        """Every version of the dataset up to this one: ``versions``, or the one version of a dataset that
        never grew (whose creation time nothing recorded)."""
        if self.versions:
            return list(self.versions)
        return [VersionEntry(1, self.num_samples, len(self.shards), self.num_quarantined)]

    def field_entry(self, name: str) -> FieldEntry:
        for entry in self.fields:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The document ``manifest.json`` holds (JSON-ready), with its own checksum from version 2."""
        document = {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "created_by": self.created_by,
            "num_samples": self.num_samples,
            "num_quarantined": self.num_quarantined,
            "checksum": ALGORITHM,
            "fields": [entry.to_dict() for entry in self.fields],
            "shards": [shard.to_dict(self.format_version) for shard in self.shards],
            "source": self.source,
            "pack": self.pack,
        }
        if self.attachments:  # only when used, so datasets without attachments stay byte-identical
            document["attachments"] = [attachment.to_dict() for attachment in self.attachments]
        if self.version > 1:  # only once the dataset has grown, so packs stay byte-identical
            document["version"] = self.version
            document["versions"] = [entry.to_dict() for entry in self.versions]
        if self.format_version >= 2:
            document[MANIFEST_CHECKSUM] = manifest_digest(document)
        return document

    def attachment(self, name: str) -> AttachmentEntry:
        """The attachment named ``name``; KeyError when the manifest lists none by that name."""
        for attachment in self.attachments:
            if attachment.file == name:
                return attachment
        raise KeyError(name)

    def write(self, directory: str | Path) -> Path:
        """Write ``manifest.json`` atomically (temporary file, fsync, rename, fsync the directory)."""
        directory = Path(directory)
        final = directory / MANIFEST_NAME
        write_json_atomically(final, self.to_dict())
        return final

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        """Read and validate ``DIRECTORY/manifest.json``.

        A directory without one (or a path that is no directory) is a :class:`NotADatasetError` that says
        only that; :class:`~stoke.storage.local.LocalStore`, which opens datasets for users, replaces it
        with advice about what the path holds (``stoke.sources.guess``).
        """
        return cls.read_file(directory)[0]

    @classmethod
    def read_file(cls, directory: str | Path, name: str = MANIFEST_NAME) -> tuple[Manifest, str]:
        """The validated manifest in file ``name`` of ``directory`` (``manifest.json``, or an older version's
        ``versions/manifest-v<N>.json``) and the xxh3-64 of the bytes it was read from (its packing id).

        The file must resolve inside the directory, where its name says it is (no link leads out).
        """
        raw = cls.read_raw(directory, name)
        return cls.from_bytes(raw, str(Path(directory) / name)), format_digest(sample_checksum(raw))

    @staticmethod
    def read_raw(directory: str | Path, name: str = MANIFEST_NAME) -> bytes:
        """The bytes of the manifest file ``name`` of ``directory``, which must resolve inside it, where its name
        says it is (no link leads out), and be at most 1 GiB; nothing is parsed."""
        directory = Path(directory)
        path = directory / name
        if not directory.is_dir() or not path.is_file():
            if name == MANIFEST_NAME:
                raise NotADatasetError(f"{directory} is not a stoke dataset (it has no {MANIFEST_NAME})")
            raise FormatError(f"{path} is missing; restore it from a copy of the dataset")
        real = os.path.realpath(path)
        parent = os.path.dirname(name)
        expected = os.path.realpath(directory) if not parent else os.path.join(os.path.realpath(directory), parent)
        if os.path.dirname(real) != expected:
            raise FormatError(f"{path} links to {real}, outside the dataset directory; stoke refuses to follow it")
        with open(real, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > MAX_MANIFEST_BYTES:
                raise FormatError(f"{path} is {size:,} bytes, more than any stoke manifest; it is not a stoke manifest")
            return stream.read()

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> Manifest:
        """Parse (strict UTF-8 JSON) and validate the bytes of a manifest file; ``where`` names it in errors."""
        try:
            document = strict_json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise FormatError(f"{where} is damaged ({error}); restore it from a copy or re-pack the dataset") from None
        return cls.from_dict(document, where=where)

    @classmethod
    def from_dict(cls, document: Any, where: str) -> Manifest:
        """Validate a parsed manifest document; every problem is one :class:`FormatError` sentence."""
        require(isinstance(document, dict), where, "is damaged: it is not a JSON object")
        if document.get("format") != FORMAT_NAME:
            raise FormatError(f"{where} is not a stoke manifest (its 'format' is {document.get('format')!r})")
        version = document.get("format_version")
        require(
            is_int(version) and version >= 1,
            where,
            f"is damaged: format_version {version!r} is not a version",
        )
        if version > FORMAT_VERSION:
            raise VersionError(
                f"{where} was written in format version {version} by {document.get('created_by', 'a newer stoke')}; "
                f"this stoke ({__version__}) reads versions 1 to {FORMAT_VERSION}: upgrade stoke"
            )
        if document.get("checksum") != ALGORITHM:
            raise FormatError(f"{where} uses checksum {document.get('checksum')!r}; this stoke knows only {ALGORITHM}")
        if version >= 2 and document.get(MANIFEST_CHECKSUM) != manifest_digest(document):
            raise FormatError(
                f"{where} does not match its {MANIFEST_CHECKSUM}: it was changed after packing (a damaged byte, or "
                f"an edit); restore it from a copy or re-pack the dataset"
            )
        num_samples = document.get("num_samples")
        num_quarantined = document.get("num_quarantined", 0)
        require(is_int(num_samples) and num_samples >= 0, where, f"is damaged: num_samples is {num_samples!r}")
        require(is_int(num_quarantined) and num_quarantined >= 0, where, "is damaged: num_quarantined is invalid")
        fields = _read_fields(document.get("fields"), where)
        shards = _read_shards(document.get("shards"), [entry.field for entry in fields], where, version)
        listed = sum(shard.num_samples for shard in shards)
        require(
            listed == num_samples,
            where,
            f"is damaged: its shards hold {listed:,} samples but num_samples is {num_samples:,}",
        )
        source, pack = document.get("source", {}), document.get("pack", {})
        require(
            isinstance(source, dict) and isinstance(pack, dict),
            where,
            "is damaged: 'source' and 'pack' must be objects",
        )
        attachments = _read_attachments(document.get("attachments", []), {shard.file for shard in shards}, where)
        dataset_version = read_version_number(document.get("version"), where)
        entries = document.get("versions")
        versions = (
            read_versions(entries, dataset_version, num_samples, len(shards), where)
            if entries is not None or dataset_version > 1
            else []
        )
        created_by = document.get("created_by", "")
        return cls(
            fields=fields,
            shards=shards,
            num_samples=num_samples,
            num_quarantined=num_quarantined,
            source=source,
            pack=pack,
            attachments=attachments,
            format_version=version,
            created_by=created_by if isinstance(created_by, str) else "",
            version=dataset_version,
            versions=versions,
        )


def is_safe_file_name(name: Any) -> bool:
    """A plain file name: no directory part, no leading dot, nothing that could leave the dataset directory."""
    return isinstance(name, str) and bool(_SAFE_FILE_NAME.fullmatch(name)) and ".." not in name


def shard_file_name(number: int) -> str:
    return f"shard-{number:06d}.stk"


def _read_fields(entries: Any, where: str) -> list[FieldEntry]:
    require(
        isinstance(entries, list) and 0 < len(entries) <= 4096,
        where,
        "is damaged: 'fields' must be a non-empty list",
    )
    fields: list[FieldEntry] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        place = f"{where} fields[{position}]"
        require(isinstance(entry, dict), place, "is damaged: not an object")
        name = entry.get("name")
        require(
            isinstance(name, str) and 0 < len(name) <= 256,
            place,
            "is damaged: its name is not a short string",
        )
        require(
            name not in seen and name not in RESERVED_FIELD_NAMES,
            place,
            f"repeats or reserves the name {name!r}",
        )
        seen.add(name)
        stats, classes = entry.get("stats"), entry.get("classes")
        require(
            stats is None or (isinstance(stats, dict) and all(is_int(v) for v in stats.values())),
            place,
            "is damaged: 'stats' must map names to integers",
        )
        require(
            classes is None or (isinstance(classes, list) and all(isinstance(c, str) for c in classes)),
            place,
            "is damaged: 'classes' must be a list of strings",
        )
        params = {key: value for key, value in entry.items() if key not in ("name", "stats", "classes")}
        value_field = field_from_dict(params, place)
        if stats is not None and isinstance(value_field, ImageField):
            _check_image_stats(stats, value_field.max_pixels, place)
        fields.append(FieldEntry(name, value_field, stats, classes))
    return fields


def _check_image_stats(stats: dict[str, int], max_pixels: int, place: str) -> None:
    """Image statistics are sizes the Loader allocates from: each must be possible under ``max_pixels``.

    The tallest image is at least ``min_width`` wide and the widest at least ``min_height`` high, and
    neither has more than ``max_pixels`` pixels.
    """
    require(set(stats) == set(IMAGE_STATS), place, f"is damaged: image 'stats' must hold exactly {list(IMAGE_STATS)}")
    min_height, max_height, min_width, max_width = (stats[key] for key in IMAGE_STATS)
    require(
        1 <= min_height <= max_height
        and 1 <= min_width <= max_width
        and max_height * min_width <= max_pixels
        and max_width * min_height <= max_pixels,
        place,
        f"is damaged: its image stats ({min_height}-{max_height} high, {min_width}-{max_width} wide) are not "
        f"sizes of images of at most {max_pixels:,} pixels",
    )


def manifest_digest(document: dict[str, Any]) -> str:
    """The ``manifest_checksum`` of a manifest document: the xxh3-64 of its canonical JSON without that key
    (``stoke.format.checksum.canonical_json``), so that no byte of the manifest changes unnoticed."""
    body = {key: value for key, value in document.items() if key != MANIFEST_CHECKSUM}
    return format_digest(sample_checksum(canonical_json(body)))


def _read_shards(entries: Any, fields: list[Field], where: str, version: int = 2) -> list[ShardEntry]:
    require(isinstance(entries, list), where, "is damaged: 'shards' must be a list")
    record_floor = sum(value.min_record_bytes() for value in fields)  # the bytes every record takes at least
    shards: list[ShardEntry] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        place = f"{where} shards[{position}]"
        require(isinstance(entry, dict), place, "is damaged: not an object")
        name, count, size, checksum = (
            entry.get("file"),
            entry.get("num_samples"),
            entry.get("bytes"),
            entry.get(ALGORITHM),
        )
        require(
            is_safe_file_name(name),
            place,
            f"names the file {name!r}, which is not a plain file name inside the dataset directory; stoke refuses it",
        )
        require(name not in seen, place, f"repeats the shard {name!r}")
        seen.add(name)
        require(is_int(count) and count >= 0, place, "is damaged: num_samples is invalid")
        require(
            is_int(size) and 0 <= size <= MAX_SHARD_BYTES and size % 8 == 0,
            place,
            f"is damaged: bytes is {size!r}, not a shard's size (a multiple of 8, at most 2**63 - 1)",
        )
        # The count is checked against the size it implies before anything is allocated from it.
        smallest = ShardLayout.smallest(count, len(fields)) + count * record_floor
        require(
            size >= smallest,
            place,
            f"is damaged: it lists {count:,} samples, which take at least {smallest:,} bytes, in a shard of "
            f"{size:,} bytes",
        )
        require(
            isinstance(checksum, str) and bool(_HEX16.fullmatch(checksum)),
            place,
            "is damaged: checksum is invalid",
        )
        seed = entry.get("sample_seed", "0" * 16) if version < 2 else entry.get("sample_seed")
        require(isinstance(seed, str) and bool(_HEX16.fullmatch(seed)), place, "is damaged: sample_seed is invalid")
        shards.append(ShardEntry(name, count, size, checksum, int(seed, 16) if version >= 2 else 0))
    return shards


def _read_attachments(entries: Any, shard_names: set[str], where: str) -> list[AttachmentEntry]:
    require(
        isinstance(entries, list) and len(entries) <= MAX_ATTACHMENTS,
        where,
        f"is damaged: 'attachments' must be a list of at most {MAX_ATTACHMENTS} entries",
    )
    attachments: list[AttachmentEntry] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        place = f"{where} attachments[{position}]"
        require(isinstance(entry, dict), place, "is damaged: not an object")
        name, size, checksum = entry.get("file"), entry.get("bytes"), entry.get(ALGORITHM)
        require(
            is_safe_file_name(name),
            place,
            f"names the file {name!r}, which is not a plain file name inside the dataset directory; stoke refuses it",
        )
        require(
            name not in seen and name not in shard_names and name not in (MANIFEST_NAME, QUARANTINE_NAME),
            place,
            f"repeats the name {name!r} of another file of the dataset",
        )
        seen.add(name)
        require(is_int(size) and 0 <= size <= MAX_ATTACHMENT_BYTES, place, "is damaged: bytes is invalid")
        require(
            isinstance(checksum, str) and bool(_HEX16.fullmatch(checksum)),
            place,
            "is damaged: checksum is invalid",
        )
        attachments.append(AttachmentEntry(name, size, checksum))
    return attachments
