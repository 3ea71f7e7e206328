"""``stoke verify``: recompute every checksum and decode every sample of a dataset.

For each shard: its file must exist with the manifest's size and checksum, and its header must match its
layout; then every sample must match its own checksum (which, from format version 2, covers its field
boundaries too) and every field must decode (every image in full, under the reader's ``max_pixels``). A
problem with a shard as a whole (missing, wrong size) makes all its samples damaged; damage the
per-sample checksums do not localise (a flipped byte in a header or in padding) is reported for the
shard, and so is an offsets table that does not match its checksum (its samples are each checked anyway).
A version-1 dataset gets a note: its checksums do not cover field boundaries, and a re-pack upgrades it.
A dataset that grew has the manifest of each older version checked too (``versions/manifest-v<N>.json``:
present, with the checksum the newest manifest lists, and listing the first shards of the newest, which
verify checks): a problem of that file when it does not.
Attached files (``tokenizer.json``) must have their listed size and checksum; a damaged one is
reported as a problem of that file. Shards are checked by a pool of threads: hashing and decoding
release the GIL. ``progress`` shows a bar of samples checked on stderr (when it is a terminal).

Counts are confirmed before samples are listed: when more samples are in shards that cannot be read
at all than the readable shards hold (plus ``MAX_UNCONFIRMED_SAMPLES``), the manifest does not describe
the files, and verify refuses in one :class:`~stoke.errors.FormatError` sentence instead of listing
counts nothing backs.

Interrupted (Ctrl-C, or SIGTERM through the ``stoke`` command), the threads stop at their next sample,
shards not started are dropped, and the interruption goes on up: nothing is written, so there is
nothing to clean up.

Example:
    >>> import numpy as np, stoke, tempfile
    >>> out = tempfile.mkdtemp() + "/ds"
    >>> _ = stoke.pack({"y": np.arange(4)}, out, progress=False)
    >>> verify(out).ok
    True
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from stoke.errors import FormatError
from stoke.format.checksum import file_checksum
from stoke.format.manifest import MANIFEST_NAME
from stoke.format.shard import ShardReader
from stoke.lifecycle import completed
from stoke.machine import available_cores
from stoke.read import Dataset
from stoke.read import open as open_dataset
from stoke.storage.store import MAX_UNCONFIRMED_SAMPLES


@dataclass
class VerifyReport:
    """What ``verify`` found: damaged samples (index, shard, reason) and shard-level problems."""

    path: Path
    num_samples: int
    num_shards: int
    damaged: list[dict[str, Any]] = field(default_factory=list)
    shard_problems: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what is not damage but worth knowing (an old format)

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.shard_problems

    @property
    def damaged_indices(self) -> list[int]:
        return [entry["index"] for entry in self.damaged]

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (what ``stoke verify --json`` prints)."""
        return {
            "path": str(self.path),
            "ok": self.ok,
            "num_samples": self.num_samples,
            "num_shards": self.num_shards,
            "num_damaged": len(self.damaged),
            "damaged": self.damaged,
            "shard_problems": self.shard_problems,
            "notes": self.notes,
        }

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as JSON text: one line, or indented by ``indent``."""
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        notes = [f"  note: {note}" for note in self.notes]
        if self.ok:
            return "\n".join(
                [f"{self.path}: all {self.num_samples:,} samples in {self.num_shards} shards are intact", *notes]
            )
        shards = len({problem["shard"] for problem in self.shard_problems})
        lines = [f"{self.path}: {len(self.damaged):,} damaged samples, {shards} damaged shards"]
        lines += notes
        lines += [f"  shard {problem['shard']}: {problem['reason']}" for problem in self.shard_problems]
        lines += [f"  sample {entry['index']} ({entry['shard']}): {entry['reason']}" for entry in self.damaged[:50]]
        if len(self.damaged) > 50:
            lines.append(f"  ... and {len(self.damaged) - 50:,} more (see --json)")
        return "\n".join(lines)


def verify(
    path: str | os.PathLike[str], threads: int | None = None, progress: bool = False, max_pixels: int | None = None
) -> VerifyReport:
    """Check every shard and sample of the dataset at ``path``; damaged data is reported, not raised.

    ``max_pixels`` is the reader's image limit, as for :func:`stoke.open`. Raises
    :class:`~stoke.errors.FormatError` only for a dataset that cannot be checked at all: a damaged
    manifest, or counts that the shard files do not back.
    """
    dataset = open_dataset(path, max_pixels=max_pixels)
    try:
        report = VerifyReport(Path(path), len(dataset), len(dataset.manifest.shards))
        if dataset.manifest.format_version < 2:
            report.notes.append(
                f"format version {dataset.manifest.format_version}: its sample checksums do not cover the field "
                f"boundaries, so a damaged offset can go unnoticed; `stoke pack SOURCE {path} --overwrite` with "
                f"this stoke upgrades it"
            )
        checks = _check_shards(dataset, threads or available_cores(), progress)
        _confirm_lost_counts(dataset, checks)
        for check in checks:
            report.shard_problems.extend(check.problems)
            report.damaged.extend(check.damaged)
            if check.lost is not None:
                entry = dataset.manifest.shards[check.number]
                report.damaged.extend(
                    {"index": check.first + local, "shard": entry.file, "reason": check.lost}
                    for local in range(entry.num_samples)
                )
        for attachment in dataset.manifest.attachments:
            try:
                dataset.attachment(attachment.file)
            except (FormatError, OSError) as error:
                report.shard_problems.append({"shard": attachment.file, "reason": str(error)})
        for entry in dataset.versions[: dataset.version - 1]:  # the older versions: their kept manifests
            try:
                dataset.store.read_version(entry.version)
            except (FormatError, OSError) as error:
                report.shard_problems.append({"shard": entry.manifest_file, "reason": str(error)})
    finally:
        dataset.close()
    report.damaged.sort(key=lambda entry: entry["index"])
    return report


@dataclass
class _ShardCheck:
    """What checking one shard found: shard-level problems, damaged samples, and, when the shard cannot be
    read at all, why (then every one of its samples is lost, listed only once their count is confirmed)."""

    number: int
    first: int
    problems: list[dict[str, str]] = field(default_factory=list)
    damaged: list[dict[str, Any]] = field(default_factory=list)
    lost: str | None = None


def _confirm_lost_counts(dataset: Dataset, checks: list[_ShardCheck]) -> None:
    """Refuse, before listing them, more lost samples than the readable shards back (as ``stoke.open`` does)."""
    shards = dataset.manifest.shards
    lost = sum(shards[check.number].num_samples for check in checks if check.lost is not None)
    readable = dataset.manifest.num_samples - lost
    if lost > readable + MAX_UNCONFIRMED_SAMPLES:
        example = next(check for check in checks if check.lost is not None)
        raise FormatError(
            f"{dataset.root}/{MANIFEST_NAME} lists {dataset.manifest.num_samples:,} samples, but {lost:,} of them are "
            f"in shards that cannot be read ({shards[example.number].file}: {example.lost}): the manifest does not "
            f"describe these files; restore the dataset from a copy or re-pack it"
        )


def _check_shards(dataset: Dataset, threads: int, progress: bool) -> list[_ShardCheck]:
    """Every shard's check, in shard order, by ``threads`` threads."""
    shards = dataset.manifest.shards
    starts = [0]
    for shard in shards:
        starts.append(starts[-1] + shard.num_samples)
    checked = [0] * len(shards)  # samples checked so far in each shard; each slot is written by one thread
    stop = threading.Event()
    results: dict[int, _ShardCheck] = {}
    bar = tqdm(total=starts[-1], desc="verifying", unit="sample", disable=not progress or None, dynamic_ncols=True)
    pool = ThreadPoolExecutor(threads)
    try:
        futures = {
            pool.submit(_check_shard, dataset, number, starts[number], checked, stop): number
            for number in range(len(shards))
        }
        for finished in completed(futures):
            for future in finished:
                results[futures[future]] = future.result()
            bar.update(sum(checked) - bar.n)
    except BaseException:
        stop.set()  # the running checks end at their next sample; the queued ones are cancelled below
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return [results[number] for number in range(len(shards))]


def _check_shard(dataset: Dataset, number: int, first: int, checked: list[int], stop: threading.Event) -> _ShardCheck:
    entry = dataset.manifest.shards[number]
    check = _ShardCheck(number, first)
    problems = check.problems
    try:
        reader = dataset.store.open_shard(number)  # held while it is checked: a remote cache may evict it after
    except (FormatError, OSError) as error:
        check.lost = str(error)
        problems.append({"shard": entry.file, "reason": check.lost})
        checked[number] = entry.num_samples
        return check
    try:
        _check_samples(dataset, reader, check, checked, stop)
    finally:
        dataset.store.release(number)
    return check


def _check_samples(
    dataset: Dataset, reader: ShardReader, check: _ShardCheck, checked: list[int], stop: threading.Event
) -> None:
    """What checking the opened shard ``reader`` finds, into ``check``."""
    number, first = check.number, check.first
    entry = dataset.manifest.shards[number]
    problems = check.problems
    if file_checksum(reader.path) != entry.checksum:
        problems.append({"shard": entry.file, "reason": "the file's checksum differs from the manifest's"})
    if not reader.header_ok:
        problems.append(
            {
                "shard": entry.file,
                "reason": "the shard header is damaged (samples are read from the manifest's layout)",
            }
        )
    try:
        table_intact = reader.offsets_intact()
    except FormatError as error:  # the file was cut since it was mapped; its samples fail one by one below
        table_intact = None
        problems.append({"shard": entry.file, "reason": str(error)})
    if table_intact is False:
        problems.append(
            {
                "shard": entry.file,
                "reason": "its offsets table does not match its checksum (each sample is checked on its own)",
            }
        )
    damaged = check.damaged
    covered = "bytes or field boundaries" if reader.version >= 2 else "bytes"
    fields = list(dataset.fields.values())
    for local in range(entry.num_samples):
        if stop.is_set():
            break
        reason = None
        if not reader.is_intact(local):
            reason = f"its {covered} do not match their checksum"
        else:
            try:
                for value, data in zip(fields, reader.fields(local)):
                    value.decode(data)
            except FormatError as error:
                reason = f"it does not decode: {error.reason}"
        if reason is not None:
            damaged.append({"index": first + local, "shard": entry.file, "reason": reason})
        checked[number] = local + 1
    try:
        reader.check_mapping(thorough=True)  # truncated while being checked: its lost pages read as zeros
    except FormatError as error:
        problems.append({"shard": entry.file, "reason": str(error)})
