"""``stoke.pack``: turn a source into a dataset directory, in parallel, atomically and resumably.

The driver resolves the source (a source with no items is an error before anything is written), fixes
the plan (``plan.py``), runs one task per unfinished shard on an engine (``task.py``, ``stoke.engines``),
and when every task has succeeded writes ``quarantine.jsonl`` and then ``manifest.json``, last: a
directory without a manifest is never mistaken for a dataset. A killed pack leaves finished shards and
their results in place; ``resume=True`` checks them against their checksums and runs only the rest,
producing the same bytes as an uninterrupted pack. A pack that quarantined more than ``max_quarantined``
of its items, or all of them, writes ``quarantine.jsonl`` but no manifest and raises (``quarantine.py``);
resuming it with a larger limit commits it from the finished shards.

``append=True`` adds the source to an existing dataset as new shards and publishes the next version of it
(``append.py``, docs/growing.md): the old shards are never rewritten, and the fields, class lists,
tokenizer and table cleaning must agree with the dataset's, or the append refuses, naming what differs.

Example:
    >>> import numpy as np, tempfile
    >>> result = pack({"y": np.arange(10)}, tempfile.mkdtemp() + "/ds", progress=False)
    >>> result.num_samples, result.num_quarantined
    (10, 0)
    >>> sorted(json.loads(result.to_json()))[:3]
    ['dataset_samples', 'ignored', 'notes']
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from stoke.engines.local import run_tasks
from stoke.errors import AppendError, ConfigError, PackError, SourceError, StokeError
from stoke.extras import require
from stoke.format.atomic import write_bytes_atomically
from stoke.format.checksum import format_digest, sample_checksum, shard_seed
from stoke.format.fields import Field, ImageField
from stoke.format.fields.image_codec import DEFAULT_MAX_PIXELS
from stoke.format.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    PACK_STATE_DIR,
    QUARANTINE_NAME,
    AttachmentEntry,
    FieldEntry,
    Manifest,
    ShardEntry,
    is_safe_file_name,
)
from stoke.format.versions import VERSIONS_DIR, VersionEntry, utc_now, version_quarantine_name
from stoke.machine import available_cores
from stoke.pack import append as growing
from stoke.pack.plan import DEFAULT_SHARD_BYTES, PackPlan, estimate_shard_items
from stoke.pack.quarantine import DEFAULT_MAX_QUARANTINED, check_limit, limit_error, read_quarantine, write_quarantine
from stoke.pack.task import ShardResult, pack_shard
from stoke.sources import Source, resolve_source
from stoke.storage.remote import is_remote_url


@dataclass
class PackResult:
    """What a pack produced; ``str(result)`` is the summary the CLI prints, :meth:`to_json` its ``--json``."""

    path: Path
    num_samples: int
    num_quarantined: int
    num_shards: int
    total_bytes: int
    seconds: float
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    reused_shards: int = 0
    notes: list[str] = field(default_factory=list)  # what the source did to its items (a table's fills)
    version: int = 1  # the dataset's version this pack made: 1, or the one an append published
    dataset_samples: int | None = None  # the dataset's samples at that version (None: num_samples, a pack's)
    unchanged: bool = False  # an append found already published (a rerun): it describes it and added nothing

    @property
    def appended(self) -> bool:
        """Whether this was an append (it published version 2 or later)."""
        return self.version > 1

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data: every attribute, ``path`` as a string."""
        return {
            "path": str(self.path),
            "num_samples": self.num_samples,
            "num_quarantined": self.num_quarantined,
            "num_shards": self.num_shards,
            "total_bytes": self.total_bytes,
            "seconds": self.seconds,
            "quarantine": [dict(entry) for entry in self.quarantine],
            "ignored": list(self.ignored),
            "reused_shards": self.reused_shards,
            "notes": list(self.notes),
            "version": self.version,
            "dataset_samples": self.num_samples if self.dataset_samples is None else self.dataset_samples,
            "unchanged": self.unchanged,
        }

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as JSON text: one line, or indented by ``indent``."""
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        reusing = f", reusing {self.reused_shards} finished shards" if self.reused_shards else ""
        if self.unchanged:
            lines = [
                f"{self.path} already holds this append as version {self.version} ({self.num_samples:,} samples "
                f"added, {self.dataset_samples or 0:,} in all); nothing was added"
            ]
        elif self.appended:
            lines = [
                f"appended {self.num_samples:,} samples to {self.path} as version {self.version} "
                f"({self.dataset_samples or 0:,} samples now; {self.num_shards} new shards, "
                f"{self.total_bytes / 1e6:,.1f} MB) in {self.seconds:.1f} s{reusing}"
            ]
        else:
            lines = [
                f"packed {self.num_samples:,} samples into {self.path} ({self.num_shards} shards, "
                f"{self.total_bytes / 1e6:,.1f} MB) in {self.seconds:.1f} s{reusing}"
            ]
        lines += self.notes
        if self.quarantine:
            listed = self.path / version_quarantine_name(self.version)
            lines.append(f"quarantined {self.num_quarantined:,} items (all listed in {listed}):")
            lines += [f"  {entry['source']}: {entry['reason']}" for entry in self.quarantine[:10]]
            if len(self.quarantine) > 10:
                lines.append(f"  ... and {len(self.quarantine) - 10:,} more")
        if self.ignored:
            shown = ", ".join(self.ignored[:5]) + (", ..." if len(self.ignored) > 5 else "")
            lines.append(f"ignored {len(self.ignored):,} files whose names are not images: {shown}")
        return "\n".join(lines)


def pack(
    source: Any,
    out: str | Path,
    *,
    workers: int | None = None,
    image_mode: str = "keep",
    color_mode: str = "RGB",
    quality: int = 90,
    max_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    shard_items: int | None = None,
    names: Sequence[str] | None = None,
    fields: Mapping[str, Field] | None = None,
    path_column: str | None = None,
    label_column: str = "label",
    resume: bool = False,
    overwrite: bool = False,
    append: bool = False,
    progress: bool = True,
    engine: str = "local",
    scheduler: str | None = None,
    max_quarantined: float = DEFAULT_MAX_QUARANTINED,
) -> PackResult:
    """Pack ``source`` into the dataset directory ``out``.

    ``source`` is an ImageFolder-layout folder, a ``.csv``/``.jsonl`` listing, numpy arrays (a dict, a
    tuple or one array), or any map-style dataset. ``image_mode`` stores images as the source's bytes
    (``keep``), re-encoded ``jpeg`` at ``quality``, lossless ``png`` or ``raw`` pixels; ``color_mode``
    (``RGB`` or ``L``) is what they decode to; ``max_side`` shrinks larger images at pack time and
    ``max_pixels`` quarantines decompression bombs. These settings apply to the image fields stoke
    finds (folders, listings, Pillow images in a dataset); ``fields`` declares the type of named fields
    of arrays and datasets, and an ``ImageField`` declared there keeps its own settings. ``workers`` defaults to all
    cores. Bad items are quarantined and the returned :class:`PackResult` lists them, up to ``max_quarantined``
    of the source's items (a fraction; 1.0 allows any number). Past it the pack commits nothing and raises
    :class:`~stoke.errors.QuarantineLimitError` naming the first reasons; ``resume=True`` with a larger limit
    then commits the dataset without re-encoding a shard. A source with no items, or none that could be
    packed, is an error.

    ``engine="dask"`` runs the shard tasks on a Dask cluster: the scheduler at ``scheduler``, or a
    ``LocalCluster`` of ``workers`` processes when it is None (``docs/engines.md``). The dataset is the same.

    ``append=True`` adds the source's items to the dataset already in ``out`` as new shards and publishes its
    next version atomically (docs/growing.md); the result's ``version`` is its number. Images are encoded
    with the dataset's settings (image settings given must be its own), labels take its class ids (new
    classes go at the end of its lists), text its tokenizer, a table its cleaning; fields that differ are an
    :class:`~stoke.errors.AppendError` naming them. A killed append leaves the previous version readable,
    and running it again finishes it (or, once published, does nothing); two appends at once: the second
    refuses. ``resume`` is implied, ``overwrite`` refused.
    """
    started = time.perf_counter()
    if append and is_remote_url(str(out)):
        raise AppendError(
            f"{out} is a remote dataset, and stoke appends only to a local directory: append to a local copy, then "
            f"upload its new files (the new shards, versions/, and manifest.json last)"
        )
    out = Path(out)
    if resume and overwrite:
        raise ConfigError("resume and overwrite contradict each other; choose one")
    if append and overwrite:
        raise ConfigError("append and overwrite contradict each other: append adds to a dataset, overwrite replaces it")
    image = ImageField(color_mode, image_mode, quality, max_side, max_pixels)  # a ConfigError for bad settings
    if shard_items is not None and shard_items < 1:
        raise ConfigError(f"shard_items must be at least 1, got {shard_items}")
    if engine not in ("local", "dask"):
        raise ConfigError(f"engine must be 'local' or 'dask', got {engine!r}")
    if scheduler is not None and engine != "dask":
        raise ConfigError("a scheduler address needs engine='dask' (--engine dask)")
    if engine == "dask":  # before anything is written
        require("distributed", extra="dask", what="packing with engine='dask' (stoke pack --engine dask)")
    workers = available_cores() if workers is None else workers
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    max_quarantined = check_limit(max_quarantined)

    if append:
        return _append(
            source,
            out,
            image,
            started,
            workers=workers,
            shard_bytes=shard_bytes,
            shard_items=shard_items,
            resolve=functools.partial(
                resolve_source, names=names, fields=fields, path_column=path_column, label_column=label_column
            ),
            progress=progress,
            engine=engine,
            scheduler=scheduler,
            max_quarantined=max_quarantined,
        )
    finished = _check_directory(out, resume, overwrite)
    if finished is not None:
        return finished
    resolved = resolve_source(
        source, image=image, names=names, fields=fields, path_column=path_column, label_column=label_column
    )
    where = _name_of_input(source, resolved)
    if len(resolved) == 0:  # before the directory is touched or a worker started
        raise SourceError(f"{where} holds no items; nothing to pack")
    _prepare_directory(out, overwrite)
    entries = resolved.schema()
    attachments = _checked_attachments(resolved.attachments())
    # The format version too: a resume must not mix shards of another version into this pack.
    settings = _settings(shard_bytes, shard_items, FORMAT_VERSION, attachments)
    fingerprint = _fingerprint(resolved, entries, settings)
    state_dir = out / PACK_STATE_DIR
    plan = PackPlan.read(state_dir) if resume else None
    if plan is not None and plan.fingerprint != fingerprint:
        raise PackError(
            f"{out} holds an unfinished pack of a different source or different settings; resume it with the "
            f"same source and options, or start over with --overwrite"
        )
    if plan is None:
        items = shard_items or estimate_shard_items(resolved, entries, shard_bytes)
        plan = PackPlan(len(resolved), items, fingerprint)
        state_dir.mkdir(parents=True, exist_ok=True)
        plan.write(state_dir)

    ordered, reused = _pack_shards(resolved, entries, plan, out, resume, engine, scheduler, workers, progress)
    quarantine = sorted((entry for result in ordered for entry in result.quarantine), key=lambda e: e["item"])
    num_quarantined = write_quarantine(out / QUARANTINE_NAME, quarantine)
    refused = limit_error(quarantine, plan.num_items, max_quarantined, where, out / QUARANTINE_NAME, overwrite)
    if refused is not None:  # the shards and the pack state stay, for a resume that accepts them
        raise refused
    attached = [_write_attachment(out, name, data) for name, data in attachments.items()]
    manifest = Manifest(
        fields=_with_stats(entries, ordered),
        shards=_shard_entries(plan, ordered),
        num_samples=sum(result.num_samples for result in ordered),
        num_quarantined=num_quarantined,
        source=resolved.describe(),
        pack={"shard_items": plan.shard_items, "shard_bytes": shard_bytes},
        attachments=attached,
    )
    manifest.write(out)
    shutil.rmtree(state_dir, ignore_errors=True)
    return PackResult(
        path=out,
        num_samples=manifest.num_samples,
        num_quarantined=num_quarantined,
        num_shards=len(manifest.shards),
        total_bytes=manifest.total_bytes,
        seconds=time.perf_counter() - started,
        quarantine=quarantine,
        ignored=resolved.ignored(),
        reused_shards=sum(1 for shard in reused if shard.file is not None),  # the files, as num_shards counts
        notes=resolved.notes(),
    )


def _append(
    source: Any,
    out: Path,
    image: ImageField,
    started: float,
    *,
    workers: int,
    shard_bytes: int,
    shard_items: int | None,
    resolve: Any,
    progress: bool,
    engine: str,
    scheduler: str | None,
    max_quarantined: float,
) -> PackResult:
    """``pack(..., append=True)``: the source's items as new shards, published as the dataset's next version."""
    if not (out / MANIFEST_NAME).is_file():
        if (out / PACK_STATE_DIR).is_dir():
            raise PackError(f"{out} holds an unfinished pack, not a dataset to append to; finish it with --resume")
        raise PackError(f"{out} holds no dataset to append to; pack one there first, without --append")
    with growing.dataset_lock(out):
        base = growing.read_base(out)
        template = growing.image_template(base.manifest, image, ImageField(), str(out))
        resolved = resolve(source, image=template, append_to=base.target)
        where = _name_of_input(source, resolved)
        if len(resolved) == 0:
            raise SourceError(f"{where} holds no items; nothing to append")
        resolved = resolved.for_append(base.target)
        entries = growing.compatible_fields(base.manifest, resolved.schema(), where, str(out))
        attachments = _checked_attachments(resolved.attachments())
        growing.check_attachments(base, attachments, where)
        settings = _settings(shard_bytes, shard_items, base.manifest.format_version, attachments)
        fingerprint = _fingerprint(resolved, entries, {**settings, "append_to": base.packing_id})
        state_dir = out / PACK_STATE_DIR
        _remove_temporaries(out)  # left by an interrupted run: this one holds the lock
        try:
            plan = PackPlan.read(state_dir)
        except PackError:  # a damaged plan of an interrupted append: its shards are unlisted, and redone
            shutil.rmtree(state_dir, ignore_errors=True)
            plan = None
        if plan is not None and plan.fingerprint != fingerprint:
            if growing.published_by(base.manifest, plan.fingerprint):  # killed after publishing: only tidy up
                shutil.rmtree(state_dir, ignore_errors=True)
                return _appended_result(out, base.manifest, started)
            _discard_unfinished(out, base.manifest, plan)
            plan = None
        if plan is None:
            history = base.manifest.history
            if len(history) >= 2:  # the same append run again after it finished: never add its samples twice
                before = _fingerprint(resolved, entries, {**settings, "append_to": history[-2].manifest_checksum})
                if growing.published_by(base.manifest, before):
                    return _appended_result(out, base.manifest, started)
            items = shard_items or estimate_shard_items(resolved, entries, shard_bytes)
            plan = PackPlan(len(resolved), items, fingerprint, base.first_shard)
            state_dir.mkdir(exist_ok=True)
            plan.write(state_dir)

        ordered, reused = _pack_shards(resolved, entries, plan, out, True, engine, scheduler, workers, progress)
        number = base.manifest.version + 1
        quarantine = sorted((entry for result in ordered for entry in result.quarantine), key=lambda e: e["item"])
        (out / VERSIONS_DIR).mkdir(exist_ok=True)
        listing = out / version_quarantine_name(number)
        num_quarantined = write_quarantine(listing, quarantine)
        refused = limit_error(quarantine, plan.num_items, max_quarantined, where, listing, False, append=True)
        if refused is not None:  # nothing published; the shards stay for a rerun that accepts them
            raise refused
        added = _shard_entries(plan, ordered)
        seeds = {shard.seed for shard in base.manifest.shards}
        if any(shard.seed in seeds for shard in added):  # never in practice: 64-bit digests of distinct ids
            raise PackError(f"a new shard's sample_seed repeats one of {out}'s; append with another --shard-items")
        fields = [
            FieldEntry(entry.name, entry.field, _merged_stats(entry, ordered), entry.classes) for entry in entries
        ]
        shards = [*base.manifest.shards, *added]
        num_samples = base.manifest.num_samples + sum(result.num_samples for result in ordered)
        version = VersionEntry(
            number, num_samples, len(shards), num_quarantined, utc_now(), None, resolved.describe(), fingerprint
        )
        manifest = Manifest(
            fields=fields,
            shards=shards,
            num_samples=num_samples,
            num_quarantined=base.manifest.num_quarantined,  # version 1's, as in quarantine.jsonl (§3.2)
            source=base.manifest.source,  # what the dataset was packed from, whose cleaning appends reuse
            pack=base.manifest.pack,
            attachments=base.manifest.attachments,
            format_version=base.manifest.format_version,
            version=number,
            versions=growing.history_after(base, version),
        )
        growing.publish(out, base, manifest)
        shutil.rmtree(state_dir, ignore_errors=True)
    return PackResult(
        path=out,
        num_samples=num_samples - base.manifest.num_samples,
        num_quarantined=num_quarantined,
        num_shards=len(added),
        total_bytes=sum(shard.file_size for shard in added),
        seconds=time.perf_counter() - started,
        quarantine=quarantine,
        ignored=resolved.ignored(),
        reused_shards=sum(1 for shard in reused if shard.file is not None),
        notes=[*growing.added_classes(base.manifest, fields), *resolved.notes()],
        version=number,
        dataset_samples=num_samples,
    )


def _settings(shard_bytes: int, shard_items: int | None, version: int, attachments: Mapping[str, bytes]) -> dict:
    """The pack settings a fingerprint covers: the shard sizes, the format version, the attachments' digests."""
    settings: dict[str, Any] = {"shard_bytes": shard_bytes, "shard_items": shard_items, "format_version": version}
    if attachments:  # a re-trained tokenizer that differs must not meet shards encoded with the old one
        settings["attachments"] = {name: format_digest(sample_checksum(data)) for name, data in attachments.items()}
    return settings


def _pack_shards(
    resolved: Source,
    entries: list[FieldEntry],
    plan: PackPlan,
    out: Path,
    resume: bool,
    engine: str,
    scheduler: str | None,
    workers: int,
    progress: bool,
) -> tuple[list[ShardResult], list[ShardResult]]:
    """Run the plan's unfinished shard tasks; (every task's result in order, those reused from a resume)."""
    results: dict[int, ShardResult] = {}
    for shard in range(plan.num_shards):
        stored = ShardResult.read(out, shard) if resume else None
        if stored is not None and (stored.file is None or stored.file == plan.file_of(shard)):
            results[shard] = stored
    pending = [shard for shard in range(plan.num_shards) if shard not in results]
    reused = [results[shard] for shard in results]
    remaining = sum(len(plan.item_range(shard)) for shard in pending)
    if engine == "dask":
        from stoke.engines.dask import run_tasks_dask

        work = functools.partial(pack_shard, resolved, entries, plan, out.absolute())  # workers have another cwd
        items = [len(plan.item_range(shard)) for shard in pending]
        done = run_tasks_dask(
            pending,
            work,
            remaining,
            progress,
            scheduler=scheduler,
            workers=workers,
            task_items=items,
            output_dir=out.absolute(),
            describe=lambda shard: f"shard {shard} ({plan.file_of(shard)})",
        )
    else:
        work = functools.partial(pack_shard, resolved, entries, plan, out)
        done = run_tasks(pending, work, workers, remaining, progress)
    for result in done:
        results[result.shard] = result
    _remove_temporaries(out)  # a retried task (Dask) may have left the failed attempt's temporary file
    return [results[shard] for shard in range(plan.num_shards)], reused


def _shard_entries(plan: PackPlan, results: Sequence[ShardResult]) -> list[ShardEntry]:
    """The manifest's entries for the shard files the tasks wrote, in order."""
    return [
        ShardEntry(r.file, r.num_samples, r.file_size, r.checksum, shard_seed(plan.fingerprint, r.shard))
        for r in results
        if r.file is not None
    ]


def _discard_unfinished(out: Path, manifest: Manifest, plan: PackPlan) -> None:
    """Remove what an unfinished append of another source (or onto another version) left: its pack state and
    its shard files, never a file the manifest lists."""
    listed = {shard.file for shard in manifest.shards}
    for shard in range(plan.num_shards):
        name = plan.file_of(shard)
        if name not in listed:
            (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / PACK_STATE_DIR, ignore_errors=True)


def _appended_result(out: Path, manifest: Manifest, started: float) -> PackResult:
    """The result of the append that made ``manifest``'s newest version, found published by a rerun."""
    newest, before = manifest.history[-1], manifest.history[-2]
    listing = out / newest.quarantine_file
    return PackResult(
        path=out,
        num_samples=newest.num_samples - before.num_samples,
        num_quarantined=newest.num_quarantined,
        num_shards=newest.num_shards - before.num_shards,
        total_bytes=sum(shard.file_size for shard in manifest.shards[before.num_shards :]),
        seconds=time.perf_counter() - started,
        quarantine=read_quarantine(listing),
        reused_shards=newest.num_shards - before.num_shards,
        version=manifest.version,
        dataset_samples=manifest.num_samples,
        unchanged=True,
    )


def _name_of_input(source: Any, resolved: Source) -> str:
    """How messages name what is being packed: the path the user gave, or the source's path, type or kind."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Source):
        path = source.describe().get("path")
        return str(path) if path else f"the {source.kind} source"
    return "the arrays" if resolved.kind == "arrays" else f"the {type(source).__name__} dataset"


def _check_directory(out: Path, resume: bool, overwrite: bool) -> PackResult | None:
    """Check what ``out`` holds, changing nothing; returns the existing result when a resumed pack had finished."""
    if out.exists() and not out.is_dir():
        raise PackError(f"{out} is a file; give a directory to pack into")
    has_manifest = (out / MANIFEST_NAME).is_file()
    has_state = (out / PACK_STATE_DIR).is_dir()
    if overwrite and (has_manifest or has_state):
        return None  # replaced once the source has been read
    if has_manifest:
        if resume:
            return _existing_result(out)
        raise PackError(
            f"{out} already holds a dataset; pack into another directory, pass --append to add to it, or --overwrite "
            f"to replace it"
        )
    if has_state and not resume:
        raise PackError(f"{out} holds an unfinished pack; continue it with --resume or start over with --overwrite")
    if out.is_dir() and not has_state and any(out.iterdir()):
        raise PackError(f"{out} is not empty and holds no stoke dataset; pack into a new or empty directory")
    return None


def _prepare_directory(out: Path, overwrite: bool) -> None:
    """Make ``out`` ready for the pack :func:`_check_directory` allowed: replace a dataset, or tidy a resumed one."""
    has_manifest = (out / MANIFEST_NAME).is_file()
    has_state = (out / PACK_STATE_DIR).is_dir()
    if overwrite and (has_manifest or has_state):
        _remove_dataset_files(out)
    elif has_state:
        _remove_temporaries(out)  # left by the interrupted run; one pack at a time writes into a directory
    out.mkdir(parents=True, exist_ok=True)


def _remove_dataset_files(out: Path) -> None:
    """Remove only what stoke writes: the manifest, quarantine list, shards and pack state."""
    _remove_temporaries(out)
    shutil.rmtree(out / PACK_STATE_DIR, ignore_errors=True)
    shutil.rmtree(out / VERSIONS_DIR, ignore_errors=True)  # the versions of the dataset replaced
    try:
        attached = [entry.file for entry in Manifest.read(out).attachments]
    except StokeError:
        attached = []  # no readable manifest: nothing stoke attached can be named safely
    for name in attached:
        (out / name).unlink(missing_ok=True)
    for path in out.iterdir():
        name = path.name
        if name in (MANIFEST_NAME, QUARANTINE_NAME) or (name.startswith("shard-") and name.endswith(".stk")):
            path.unlink()


def _remove_temporaries(out: Path) -> None:
    """Remove the temporary files stoke writes before renaming (``.NAME.tmp-PID``) in ``out`` and its state."""
    for directory in (out, out / PACK_STATE_DIR, out / VERSIONS_DIR):
        if directory.is_dir():
            for path in directory.glob(".*.tmp-*"):
                path.unlink(missing_ok=True)


def _checked_attachments(attachments: Mapping[str, bytes]) -> dict[str, bytes]:
    """The source's attachments, refusing names that are not plain file names or that a dataset uses."""
    for name, data in attachments.items():
        reserved = name in (MANIFEST_NAME, QUARANTINE_NAME) or (name.startswith("shard-") and name.endswith(".stk"))
        if not is_safe_file_name(name) or reserved:
            raise PackError(
                f"the source attaches a file named {name!r}, which is not a plain file name stoke may write into a "
                f"dataset (letters, digits, '.', '_', '-'; not manifest.json, quarantine.jsonl or shard-*.stk)"
            )
        if not isinstance(data, (bytes, bytearray)):
            raise PackError(f"the source's attachment {name!r} is a {type(data).__name__}; attachments are bytes")
    return dict(attachments)


def _write_attachment(out: Path, name: str, data: bytes) -> AttachmentEntry:
    """Write one attachment atomically (temporary file, fsync, rename) and describe it for the manifest."""
    write_bytes_atomically(out / name, data)
    return AttachmentEntry(name, len(data), format_digest(sample_checksum(data)))


def _existing_result(out: Path) -> PackResult:
    manifest = Manifest.read(out)
    quarantine = read_quarantine(out / QUARANTINE_NAME)
    return PackResult(
        out,
        manifest.num_samples,
        manifest.num_quarantined,
        len(manifest.shards),
        manifest.total_bytes,
        0.0,
        quarantine,
        reused_shards=len(manifest.shards),
        version=manifest.version,
        dataset_samples=manifest.num_samples,
    )


def _fingerprint(source: Source, entries: list[FieldEntry], settings: dict[str, Any]) -> str:
    document = {
        "source": source.fingerprint(),
        "schema": [entry.to_dict() for entry in entries],
        "settings": settings,
    }
    return xxhash.xxh3_64(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _with_stats(entries: list[FieldEntry], results: list[ShardResult]) -> list[FieldEntry]:
    return [FieldEntry(entry.name, entry.field, _merged_stats(entry, results), entry.classes) for entry in entries]


def _merged_stats(entry: FieldEntry, results: Sequence[ShardResult]) -> dict[str, int] | None:
    """``entry``'s statistics (an append's: the dataset's) merged with those of the shards just packed."""
    stats = entry.stats
    for result in results:
        stats = entry.field.merge_stats(stats, result.stats.get(entry.name))
    return stats
