"""The pack plan: which source items go to which shard, fixed before any shard is written.

Shard ``k`` holds the good items among source items ``[k * shard_items, (k + 1) * shard_items)``, in
source order. The plan depends only on the source and the settings, never on the number of workers or on
which worker ran first, so a resumed pack, a pack with 1 or 16 workers, and (later) a pack on a cluster
all write byte-identical shards. ``shard_items`` comes from a target shard size and the mean encoded size
of the first items, or is given explicitly.

The plan lives in ``OUT/.stoke-pack/plan.json`` with a fingerprint of the source and settings, so that
``--resume`` refuses to continue over a source or settings that changed. An append's shard files are
numbered from ``first_shard`` (one past the dataset's last shard file), its tasks from 0 as any pack's.

Example:
    >>> plan = PackPlan(num_items=10, shard_items=4, fingerprint="f")
    >>> plan.num_shards, list(plan.item_range(2))
    (3, [8, 9])
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stoke.errors import InvalidItem, PackError
from stoke.format.atomic import write_json_atomically
from stoke.format.manifest import FieldEntry, shard_file_name
from stoke.sources.base import Source

PLAN_NAME = "plan.json"
MAX_SHARD_ITEMS = 1 << 20
DEFAULT_SHARD_BYTES = 64 << 20
ESTIMATE_ITEMS = 32


@dataclass(frozen=True)
class PackPlan:
    num_items: int
    shard_items: int
    fingerprint: str
    first_shard: int = 0  # the number of task 0's shard file: an append's come after the dataset's

    def file_of(self, shard: int) -> str:
        """The name of task ``shard``'s shard file."""
        return shard_file_name(self.first_shard + shard)

    @property
    def num_shards(self) -> int:
        return -(-self.num_items // self.shard_items)

    def item_range(self, shard: int) -> range:
        start = shard * self.shard_items
        return range(start, min(start + self.shard_items, self.num_items))

    def write(self, state_dir: Path) -> None:
        write_json_atomically(state_dir / PLAN_NAME, asdict(self))

    @classmethod
    def read(cls, state_dir: Path) -> PackPlan | None:
        path = state_dir / PLAN_NAME
        if not path.is_file():
            return None
        try:
            document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            first = int(document.get("first_shard", 0))
            return cls(int(document["num_items"]), int(document["shard_items"]), str(document["fingerprint"]), first)
        except (ValueError, KeyError, TypeError):
            raise PackError(f"{path} is damaged; start the pack again with --overwrite") from None


def estimate_shard_items(source: Source, entries: list[FieldEntry], shard_bytes: int) -> int:
    """Items per shard so that shards come out near ``shard_bytes``, from the first readable items."""
    sizes: list[int] = []
    for index in range(min(len(source), ESTIMATE_ITEMS)):
        try:
            values = source.read(index)
            sizes.append(sum(len(entry.field.encode(value)) for entry, value in zip(entries, values)))
        except InvalidItem:
            continue
    if not sizes:
        return 1024
    mean = max(1.0, sum(sizes) / len(sizes) + 8 * (len(entries) + 1))
    return int(min(MAX_SHARD_ITEMS, max(1, shard_bytes // mean)))
