"""``stoke verify``: recompute every checksum and decode every sample of a dataset.

For each shard: its file must exist with the manifest's size and checksum, and its header must match its
layout; then every sample must match its own checksum and every field must decode (every image in
full). A problem with a shard as a whole (missing, wrong size) makes all its samples damaged; damage the
per-sample checksums do not localise (a flipped byte in a header or in padding) is reported for the
shard. Attached files (``tokenizer.json``) must have their listed size and checksum; a damaged one is
reported as a problem of that file. Shards are checked by a pool of threads: hashing and decoding
release the GIL. ``progress`` shows a bar of samples checked on stderr (when it is a terminal).

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

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from stoke.engines.local import available_cores
from stoke.errors import FormatError
from stoke.format.checksum import file_checksum
from stoke.lifecycle import completed
from stoke.read import Dataset
from stoke.read import open as open_dataset


@dataclass
class VerifyReport:
    """What ``verify`` found: damaged samples (index, shard, reason) and shard-level problems."""

    path: Path
    num_samples: int
    num_shards: int
    damaged: list[dict[str, Any]] = field(default_factory=list)
    shard_problems: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.shard_problems

    @property
    def damaged_indices(self) -> list[int]:
        return [entry["index"] for entry in self.damaged]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "ok": self.ok,
            "num_samples": self.num_samples,
            "num_shards": self.num_shards,
            "num_damaged": len(self.damaged),
            "damaged": self.damaged,
            "shard_problems": self.shard_problems,
        }

    def __str__(self) -> str:
        if self.ok:
            return f"{self.path}: all {self.num_samples:,} samples in {self.num_shards} shards are intact"
        lines = [f"{self.path}: {len(self.damaged):,} damaged samples, {len(self.shard_problems)} damaged shards"]
        lines += [f"  shard {problem['shard']}: {problem['reason']}" for problem in self.shard_problems]
        lines += [f"  sample {entry['index']} ({entry['shard']}): {entry['reason']}" for entry in self.damaged[:50]]
        if len(self.damaged) > 50:
            lines.append(f"  ... and {len(self.damaged) - 50:,} more (see --json)")
        return "\n".join(lines)


def verify(path: str | os.PathLike[str], threads: int | None = None, progress: bool = False) -> VerifyReport:
    """Check every shard and sample of the dataset at ``path``; never raises for damaged data."""
    dataset = open_dataset(path)
    try:
        report = VerifyReport(Path(path), len(dataset), len(dataset.manifest.shards))
        for problems, damaged in _check_shards(dataset, threads or available_cores(), progress):
            report.shard_problems.extend(problems)
            report.damaged.extend(damaged)
        for attachment in dataset.manifest.attachments:
            try:
                dataset.attachment(attachment.file)
            except (FormatError, OSError) as error:
                report.shard_problems.append({"shard": attachment.file, "reason": str(error)})
    finally:
        dataset.close()
    report.damaged.sort(key=lambda entry: entry["index"])
    return report


def _check_shards(
    dataset: Dataset, threads: int, progress: bool
) -> list[tuple[list[dict[str, str]], list[dict[str, Any]]]]:
    """Every shard's (problems, damaged samples), in shard order, checked by ``threads`` threads."""
    shards = dataset.manifest.shards
    starts = [0]
    for shard in shards:
        starts.append(starts[-1] + shard.num_samples)
    checked = [0] * len(shards)  # samples checked so far in each shard; each slot is written by one thread
    stop = threading.Event()
    results: dict[int, tuple[list[dict[str, str]], list[dict[str, Any]]]] = {}
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


def _check_shard(
    dataset: Dataset, number: int, first: int, checked: list[int], stop: threading.Event
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    entry = dataset.manifest.shards[number]
    problems: list[dict[str, str]] = []
    try:
        reader = dataset.shard_reader(number)
    except (FormatError, OSError) as error:
        reason = str(error)
        every = [{"index": first + local, "shard": entry.file, "reason": reason} for local in range(entry.num_samples)]
        checked[number] = entry.num_samples
        return [{"shard": entry.file, "reason": reason}], every
    if file_checksum(reader.path) != entry.checksum:
        problems.append({"shard": entry.file, "reason": "the file's checksum differs from the manifest's"})
    if not reader.header_ok:
        problems.append(
            {
                "shard": entry.file,
                "reason": "the shard header is damaged (samples are read from the manifest's layout)",
            }
        )
    damaged: list[dict[str, Any]] = []
    fields = list(dataset.fields.values())
    for local in range(entry.num_samples):
        if stop.is_set():
            break
        reason = None
        if not reader.is_intact(local):
            reason = "its bytes do not match their checksum"
        else:
            try:
                for value, data in zip(fields, reader.fields(local)):
                    value.decode(data)
            except FormatError as error:
                reason = f"it does not decode: {error}"
        if reason is not None:
            damaged.append({"index": first + local, "shard": entry.file, "reason": reason})
        checked[number] = local + 1
    return problems, damaged
