"""One pack task: read, encode and write the items of one shard, quarantining the bad ones.

A task is a pure function of (source, schema, plan, output directory, shard number): it writes ``shard-NNNNNN.stk``
atomically and then ``.stoke-pack/shard-NNNNNN.json`` with what the manifest needs (sample count, size,
checksum, field statistics) and the quarantine entries of its items. Any engine can run it (this
process, a process pool, a cluster), and a finished task is never redone by ``--resume``.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from stoke.sources import ArraysSource
    >>> out = pathlib.Path(tempfile.mkdtemp()); (out / ".stoke-pack").mkdir()
    >>> source = ArraysSource({"y": np.arange(5)})
    >>> plan = PackPlan(num_items=5, shard_items=8, fingerprint="f")
    >>> pack_shard(source, source.schema(), plan, out, shard=0).num_samples
    5
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stoke.errors import InvalidItem, StokeError
from stoke.format.atomic import write_json_atomically
from stoke.format.checksum import file_checksum, shard_seed
from stoke.format.fields import Field
from stoke.format.manifest import PACK_STATE_DIR, FieldEntry, shard_file_name
from stoke.format.shard import ShardWriter
from stoke.pack.plan import PackPlan
from stoke.pack.quarantine import quarantine_entry
from stoke.sources.base import Source


@dataclass
class ShardResult:
    """What a finished task reports; stored beside the shard so a resumed pack can trust it."""

    shard: int
    file: str | None  # None when every item of the shard was quarantined and no file was written
    num_samples: int
    file_size: int
    checksum: str
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    def result_path(self, out: Path) -> Path:
        return result_path(out, self.shard)

    @classmethod
    def read(cls, out: Path, shard: int) -> ShardResult | None:
        """The stored result of ``shard`` if it exists and its shard file is intact, else None."""
        path = result_path(out, shard)
        try:
            result = cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None
        if result.file is None:
            return result
        shard_path = out / result.file
        try:
            if shard_path.stat().st_size != result.file_size or file_checksum(shard_path) != result.checksum:
                return None
        except OSError:
            return None
        return result


def result_path(out: Path, shard: int) -> Path:
    return out / PACK_STATE_DIR / f"{shard_file_name(shard)}.json"


def pack_shard(
    source: Source,
    entries: list[FieldEntry],
    plan: PackPlan,
    out: Path,
    shard: int,
    advance: Callable[[int], None] | None = None,
) -> ShardResult:
    """Pack the items of ``shard``; ``advance(n)`` is called as items are done (for progress bars)."""
    fields: list[Field] = [entry.field for entry in entries]
    name = plan.file_of(shard)
    writer = ShardWriter(out / name, len(fields), shard_seed(plan.fingerprint, shard))
    quarantined: list[dict[str, Any]] = []
    stats: dict[str, dict[str, int] | None] = {entry.name: None for entry in entries}
    done = 0
    try:
        for item in plan.item_range(shard):
            try:
                values = source.read(item)
                encoded = [f.encode(value) for f, value in zip(fields, values)]
            except InvalidItem as error:
                quarantined.append(quarantine_entry(item, source.name_of(item), error.code, str(error)))
            except StokeError as error:
                quarantined.append(quarantine_entry(item, source.name_of(item), "invalid_value", str(error)))
            except Exception as error:
                reason = f"unexpected {type(error).__name__}: {error}"
                quarantined.append(quarantine_entry(item, source.name_of(item), "source_error", reason))
            else:
                writer.add(encoded)
                for entry, record in zip(entries, encoded):
                    stats[entry.name] = entry.field.merge_stats(stats[entry.name], entry.field.record_stats(record))
            done += 1
            if advance is not None and done % 16 == 0:
                advance(16)
        if len(writer):
            info = writer.commit()
            result = ShardResult(shard, name, info.num_samples, info.file_size, info.checksum, quarantined)
        else:
            writer.abort()
            result = ShardResult(shard, None, 0, 0, "", quarantined)
    except BaseException:
        writer.abort()
        raise
    result.stats = {key: value for key, value in stats.items() if value is not None}
    write_json_atomically(result.result_path(out), asdict(result))
    if advance is not None and done % 16:
        advance(done % 16)
    return result
