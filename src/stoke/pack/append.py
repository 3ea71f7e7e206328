"""Appending to a dataset: what must agree, and publishing the new version so that a crash leaves one whole.

``stoke.pack(source, dataset, append=True)`` (``stoke pack SOURCE DATASET --append``) packs the source's
items as new shards beside the dataset's and publishes version *N* + 1, whose manifest lists the old
shards, unchanged, then the new ones (docs/growing.md). This module holds the parts of it that are not
packing:

* :func:`dataset_lock`: one append at a time per dataset, by an exclusive ``flock`` on the dataset
  directory, held for the whole append. The kernel lets go of it when the process ends, however it ends,
  so a killed append never leaves a stale lock; a second append refuses at once, naming the dataset.
* :func:`read_base`: the version appended to (its manifest, the bytes they were read from, its
  attachments checked against their checksums) and the :class:`~stoke.sources.base.AppendTarget` the
  source adopts (``Source.for_append``: class ids, tokenizer, table cleaning).
* :func:`image_template`: image settings come from the dataset; settings asked for must be its own.
* :func:`compatible_fields`: the source's fields must be the dataset's (names, order, types, settings);
  class lists may only grow at their end; attachments must be the dataset's, byte for byte. Each refusal
  is one :class:`~stoke.errors.AppendError` sentence naming what differs and what to do.
* :func:`publish`: keep the old manifest as ``versions/manifest-v<N>.json`` (its bytes as they were),
  check that the manifest is still the one appended to (compare and swap, under the lock), and replace
  ``manifest.json`` atomically: readers see version *N* or version *N* + 1, never a mix.

Killed at any moment, an append leaves the dataset at version *N* (new shards, unlisted, beside it; the
pack state in ``.stoke-pack/``) or at *N* + 1 (perhaps with the pack state left). Run again, it resumes
from its finished shards, or finds its version published and only cleans up (:func:`published_by`).

Not for: packing shards (``stoke.pack``, ``task.py``) or reading versions (``stoke.open(path, version=N)``).

Example:
    >>> import numpy as np, stoke, tempfile
    >>> out = tempfile.mkdtemp() + "/ds"
    >>> _ = stoke.pack({"y": np.arange(3)}, out, progress=False)
    >>> result = stoke.pack({"y": np.arange(3, 5)}, out, append=True, progress=False)
    >>> result.version, result.num_samples, len(stoke.open(out)), len(stoke.open(out, version=1))
    (2, 2, 5, 3)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stoke.errors import AppendError
from stoke.format.atomic import fsync_directory, write_bytes_atomically
from stoke.format.checksum import format_digest, sample_checksum
from stoke.format.fields import Field, ImageField
from stoke.format.manifest import MANIFEST_NAME, FieldEntry, Manifest
from stoke.format.versions import VERSIONS_DIR, VersionEntry, version_manifest_name
from stoke.sources.base import AppendTarget

_SHARD_NUMBER = re.compile(r"shard-(\d+)\.stk")


@dataclass(frozen=True)
class Base:
    """The version an append adds to: its manifest, the bytes they were read from, and their digest."""

    manifest: Manifest
    raw: bytes
    packing_id: str
    target: AppendTarget

    @property
    def first_shard(self) -> int:
        """The number of the append's first shard file: one past every shard file the dataset lists."""
        numbers = [int(match.group(1)) for s in self.manifest.shards if (match := _SHARD_NUMBER.fullmatch(s.file))]
        return max(numbers, default=-1) + 1


@contextlib.contextmanager
def dataset_lock(out: Path) -> Iterator[None]:
    """Hold the dataset directory ``out``'s append lock (an exclusive ``flock``) for the block, or refuse at
    once with an :class:`~stoke.errors.AppendError` when another process holds it."""
    descriptor = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AppendError(
                f"{out} is being appended to by another process; appends to one dataset run one at a time: wait for "
                f"it to finish, then append again"
            ) from None
        yield
    finally:
        os.close(descriptor)  # lets go of the lock (forked pack workers, which hold the descriptor too, are gone)


def read_base(out: Path) -> Base:
    """The newest version of the dataset ``out``, for an append; refuses a dataset of format version 1."""
    path = out / MANIFEST_NAME
    raw = path.read_bytes()
    manifest = Manifest.from_bytes(raw, str(path))
    if manifest.format_version < 2:
        raise AppendError(
            f"{out} is in format version 1, whose shards cannot be listed beside this stoke's version-2 shards; "
            f"upgrade it first with `stoke pack SOURCE {out} --overwrite`, then append"
        )
    attachments: dict[str, bytes] = {}
    for entry in manifest.attachments:
        data = (out / entry.file).read_bytes()
        if len(data) != entry.file_size or format_digest(sample_checksum(data)) != entry.checksum:
            raise AppendError(
                f"{out / entry.file} does not match its size and checksum in the manifest, and an append must reuse "
                f"it; restore it (`stoke verify {out}`) before appending"
            )
        attachments[entry.file] = data
    target = AppendTarget(str(out), list(manifest.fields), dict(manifest.source), attachments)
    return Base(manifest, raw, format_digest(sample_checksum(raw)), target)


def image_template(base: Manifest, given: ImageField, default: ImageField, location: str) -> ImageField:
    """The image settings an append encodes with: the dataset's (its first image field's), refusing settings
    asked for (``given`` differing from ``default``) that are not the dataset's."""
    stored = next((entry.field for entry in base.fields if isinstance(entry.field, ImageField)), None)
    if stored is None:
        return given
    differ = [
        f"{name}={getattr(given, name)!r}"
        for name in ("mode", "encoding", "quality", "max_side", "max_pixels")
        if getattr(given, name) != getattr(default, name) and getattr(given, name) != getattr(stored, name)
    ]
    if differ:
        raise AppendError(
            f"{location} stores its images with {_settings(stored)}, and an append encodes new images the same way; "
            f"{', '.join(differ)} differs: leave the image settings out (--image-mode, --color-mode, --quality, "
            f"--max-side, --max-pixels)"
        )
    return stored


def compatible_fields(base: Manifest, entries: Sequence[FieldEntry], where: str, location: str) -> list[FieldEntry]:
    """The fields of the appended version: the dataset's, with class lists grown by the source's new classes.

    The source's fields must be the dataset's: the same names in the same order, each of the same type with
    the same settings; a class list may only gain names at its end. Anything else is an AppendError.
    """
    have, bring = [entry.name for entry in base.fields], [entry.name for entry in entries]
    if have != bring:
        raise AppendError(
            f"the fields of {where} are {', '.join(bring)}, and those of {location} are {', '.join(have)}: an "
            f"append must bring the same fields in the same order"
        )
    merged: list[FieldEntry] = []
    for old, new in zip(base.fields, entries):
        if old.field.to_dict() != new.field.to_dict():
            image = isinstance(old.field, ImageField)
            hint = " (leave the image settings out: an append takes the dataset's)" if image else ""
            raise AppendError(
                f"field {old.name!r} is {_describe(new.field)} in {where} but {_describe(old.field)} in {location}: "
                f"an append must encode every field as the dataset does{hint}"
            )
        classes = old.classes
        if old.classes is not None or new.classes is not None:
            if old.classes is None or new.classes is None or new.classes[: len(old.classes)] != old.classes:
                raise AppendError(
                    f"field {old.name!r} names its values {_classes(new.classes)} in {where} but "
                    f"{_classes(old.classes)} in {location}: an append keeps the dataset's class ids and may only add "
                    f"classes at the end of its list"
                )
            classes = list(new.classes)
        merged.append(FieldEntry(old.name, old.field, old.stats, classes))
    return merged


def check_attachments(base: Base, attachments: Mapping[str, bytes], where: str) -> None:
    """Refuse attachments (a ``tokenizer.json``) that are not the dataset's, byte for byte."""
    have = base.target.attachments
    for name in sorted(set(have) | set(attachments)):
        if have.get(name) != attachments.get(name):
            what = "does not attach" if name not in attachments else "attaches a different"
            raise AppendError(
                f"{where} {what} {name} than {base.target.location}'s, and an append must reuse the dataset's (a "
                f"tokenizer trained on new text gives its ids other meanings): pack text with the dataset's tokenizer "
                f"(leave --tokenizer out)"
            )


def added_classes(base: Manifest, fields: Sequence[FieldEntry]) -> list[str]:
    """Notes for the summary: the classes an append added to each field's class list, with their ids."""
    notes = []
    for old, new in zip(base.fields, fields):
        if old.classes is not None and new.classes is not None and len(new.classes) > len(old.classes):
            added = new.classes[len(old.classes) :]
            shown = ", ".join(f"{name!r} ({len(old.classes) + offset})" for offset, name in enumerate(added[:10]))
            more = f" and {len(added) - 10:,} more" if len(added) > 10 else ""
            notes.append(
                f"added {len(added):,} classes to field {old.name!r}: {shown}{more}; the ids of its "
                f"{len(old.classes):,} classes are unchanged"
            )
    return notes


def history_after(base: Base, entry: VersionEntry) -> list[VersionEntry]:
    """The ``versions`` of the appended manifest: the base's history, its newest entry now with the checksum
    of its manifest (kept as ``versions/manifest-v<N>.json``), then ``entry``."""
    history = base.manifest.history
    last = history[-1]
    history[-1] = VersionEntry(
        last.version,
        last.num_samples,
        last.num_shards,
        last.num_quarantined,
        last.created,
        base.packing_id,
        last.source,
        last.pack_id,
    )
    return [*history, entry]


def published_by(manifest: Manifest, pack_id: str) -> bool:
    """Whether the newest version of ``manifest`` is the append fingerprinted ``pack_id`` (a rerun of it)."""
    return manifest.version > 1 and manifest.versions[-1].pack_id == pack_id


def publish(out: Path, base: Base, manifest: Manifest) -> None:
    """Publish ``manifest`` (version *N* + 1) over ``base`` (version *N*): keep the old manifest's bytes as
    ``versions/manifest-v<N>.json``, then replace ``manifest.json`` atomically, unless it changed meanwhile."""
    versions = out / VERSIONS_DIR
    if not versions.is_dir():
        versions.mkdir()
        fsync_directory(out)
    write_bytes_atomically(out / version_manifest_name(base.manifest.version), base.raw)
    now = (out / MANIFEST_NAME).read_bytes()
    if format_digest(sample_checksum(now)) != base.packing_id:  # compare and swap: the lock makes it hold
        raise AppendError(
            f"{out / MANIFEST_NAME} changed while this append ran (a writer that does not take stoke's lock); "
            f"nothing was published: run the append again"
        )
    manifest.write(out)


def _describe(field: Field) -> str:
    settings = {key: value for key, value in field.to_dict().items() if key != "type"}
    article = "an" if field.type_name in ("int", "image", "ndarray") else "a"
    return f"{article} {field.type_name} field" + (f" ({_settings(field)})" if settings else "")


def _settings(field: Field) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in field.to_dict().items() if key != "type")


def _classes(classes: list[str] | None) -> str:
    if classes is None:
        return "by number only"
    shown = ", ".join(repr(name) for name in classes[:5]) + (", ..." if len(classes) > 5 else "")
    return f"[{shown}]"


__all__ = [
    "Base",
    "added_classes",
    "check_attachments",
    "compatible_fields",
    "dataset_lock",
    "history_after",
    "image_template",
    "publish",
    "published_by",
    "read_base",
]
