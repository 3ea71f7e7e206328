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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stoke.format.atomic import write_text_atomically


def quarantine_entry(item: int, source: str, code: str, reason: str) -> dict[str, Any]:
    return {"item": item, "source": source, "code": code, "reason": reason}


def write_quarantine(path: Path, entries: Iterable[dict[str, Any]]) -> int:
    """Write the entries (sorted by item) atomically; returns how many there were."""
    ordered = sorted(entries, key=lambda entry: entry["item"])
    write_text_atomically(path, "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in ordered))
    return len(ordered)


def read_quarantine(path: Path) -> list[dict[str, Any]]:
    """The entries of a ``quarantine.jsonl`` (empty when there is none)."""
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]
