"""Quarantine: every item that could not be packed, with its reason, in ``OUT/quarantine.jsonl``.

One JSON object per line, in source order: ``item`` (the source index), ``source`` (a path, a listing
line, an item number), ``code`` (a short machine-readable reason: ``empty``, ``not_an_image``,
``truncated``, ``undecodable``, ``decompression_bomb``, ``unreadable``, ``broken_symlink``,
``missing_file``, ``missing_value``, ``invalid_row``, ``invalid_value``, ``source_error``) and
``reason`` (one sentence for people).

Example:
    >>> entry = quarantine_entry(3, "cat/x.jpg", "empty", "the file is empty (0 bytes)")
    >>> entry["code"], entry["source"]
    ('empty', 'cat/x.jpg')
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stoke.format.shard import fsync_directory


def quarantine_entry(item: int, source: str, code: str, reason: str) -> dict[str, Any]:
    return {"item": item, "source": source, "code": code, "reason": reason}


def write_quarantine(path: Path, entries: Iterable[dict[str, Any]]) -> int:
    """Write the entries (sorted by item) atomically; returns how many there were."""
    ordered = sorted(entries, key=lambda entry: entry["item"])
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w", encoding="utf-8") as stream:
        for entry in ordered:
            stream.write(json.dumps(entry, ensure_ascii=False) + "\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)
    return len(ordered)


def read_quarantine(path: Path) -> list[dict[str, Any]]:
    """The entries of a ``quarantine.jsonl`` (empty when there is none)."""
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]
