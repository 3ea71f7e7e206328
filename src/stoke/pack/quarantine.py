"""Quarantine: every item that could not be packed, with its reason, in ``OUT/quarantine.jsonl``, and
the limit on how many there may be.

One JSON object per line, in source order: ``item`` (the source index), ``source`` (a path, a listing
line, an item number), ``code`` (a short machine-readable reason: ``empty``, ``not_an_image``,
``truncated``, ``undecodable``, ``decompression_bomb``, ``unreadable``, ``broken_symlink``,
``missing_file``, ``missing_value``, ``invalid_row``, ``invalid_value``, ``source_error``) and
``reason`` (one sentence for people).

A pack may quarantine at most ``max_quarantined`` of its source's items (a fraction, by default
:data:`DEFAULT_MAX_QUARANTINED`, 1%): a few bad files are expected in any large dataset, but a large share
means the source or its options are wrong (a table's gaps left out, a folder of damaged downloads), and a
dataset missing most of its data must not look like a success. Past the limit the packer writes
``quarantine.jsonl`` and raises :class:`~stoke.errors.QuarantineLimitError` instead of committing the
manifest; the finished shards stay, so resuming with a larger limit commits without re-encoding anything.
The limit is not part of the pack's fingerprint for exactly that reason.

Not for: samples that fail at load time (``stoke.pipeline.quarantine``).

Example:
    >>> entry = quarantine_entry(3, "cat/x.jpg", "empty", "the file is empty (0 bytes)")
    >>> entry["code"], entry["source"]
    ('empty', 'cat/x.jpg')
    >>> within_limit(1, 100, DEFAULT_MAX_QUARANTINED), within_limit(2, 100, DEFAULT_MAX_QUARANTINED)
    (True, False)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from stoke.errors import ConfigError, PackError, QuarantineLimitError
from stoke.format.atomic import write_text_atomically

DEFAULT_MAX_QUARANTINED = 0.01
SHOWN_REASONS = 3


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


def check_limit(max_quarantined: Any) -> float:
    """``max_quarantined`` as a float in [0, 1], or a ConfigError."""
    if isinstance(max_quarantined, bool) or not isinstance(max_quarantined, (int, float)):
        raise ConfigError(f"max_quarantined must be a fraction from 0 to 1, got {max_quarantined!r}")
    if not 0.0 <= max_quarantined <= 1.0:  # NaN fails both comparisons
        raise ConfigError(
            f"max_quarantined must be a fraction from 0 to 1 (0.01 allows 1% of the items), got {max_quarantined!r}"
        )
    return float(max_quarantined)


def within_limit(num_quarantined: int, num_items: int, max_quarantined: float) -> bool:
    """Whether ``num_quarantined`` of ``num_items`` is at most the share ``max_quarantined``.

    The share is compared as a count, with a tolerance for limits such as 0.29 that binary floats do not hold
    exactly, so a limit always allows the share it spells.
    """
    return num_quarantined <= math.floor(max_quarantined * num_items + 1e-6)


def limit_error(
    entries: Sequence[dict[str, Any]],
    num_items: int,
    max_quarantined: float,
    source: str,
    listing: Path,
    overwrite: bool,
    append: bool = False,
) -> PackError | None:
    """The error for a pack whose quarantine ``entries`` (sorted) are too many, or None when they are allowed.

    Every item quarantined is an error whatever the limit: there is nothing to pack. Otherwise the error
    says how many, the first reasons, where the rest are, and the limit that would accept them, in
    Python's spelling (``str``) and the command line's (``cli_message``). An ``append``'s remedies are to
    run it again (it resumes by itself, and publishes nothing until it is accepted).
    """
    count = len(entries)
    shown = _reasons(entries)
    if count and count == num_items:
        remedy = (
            "nothing was appended: fix the source and append again"
            if append
            else "fix the source and pack again with --overwrite (overwrite=True in Python)"
        )
        return PackError(
            f"none of the {num_items:,} items of {source} could be packed; all {count:,} were quarantined ({shown}); "
            f"all are listed in {listing}; {remedy}"
        )
    if within_limit(count, num_items, max_quarantined):
        return None
    share = count / num_items
    suggested = min(1.0, math.ceil(share * 100 - 1e-9) / 100)
    while not within_limit(count, num_items, suggested):
        suggested = min(1.0, suggested + 0.01)

    def sentence(limit: str, remedy: str) -> str:
        return (
            f"quarantined {count:,} of {num_items:,} items of {source} ({_percent(share)}), more than {limit} "
            f"allows ({shown}); all are listed in {listing}; {remedy}"
        )

    if append:
        python = (
            f"nothing was appended: fix the source and append again, or accept them: run the same append with "
            f"max_quarantined={suggested:g} (the finished shards are kept, nothing is re-encoded)"
        )
        cli = python.replace(f"max_quarantined={suggested:g}", f"--max-quarantined {suggested:g}")
    else:
        python = (
            f"fix the source and pack again with overwrite=True, or accept them: pack again with resume=True, "
            f"max_quarantined={suggested:g} (the finished shards are kept, nothing is re-encoded)"
        )
        without = " (without --overwrite)" if overwrite else ""
        cli = (
            f"fix the source and pack again with --overwrite, or accept them: run the same command with --resume "
            f"--max-quarantined {suggested:g}{without} (the finished shards are kept, nothing is re-encoded)"
        )
    return QuarantineLimitError(
        sentence(f"max_quarantined={max_quarantined:g}", python),
        cli_message=sentence(f"--max-quarantined {max_quarantined:g}", cli),
        num_quarantined=count,
        num_items=num_items,
        suggested=suggested,
    )


def _reasons(entries: Sequence[dict[str, Any]]) -> str:
    """The count of each code, most frequent first, each with its first item: '455 missing_value, the first ...'."""
    first: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for entry in entries:
        first.setdefault(entry["code"], entry)
        counts[entry["code"]] = counts.get(entry["code"], 0) + 1
    ranked = sorted(counts, key=lambda code: (-counts[code], first[code]["item"]))
    shown = [
        f"{counts[code]:,} {code}, the first {first[code]['source']}: {first[code]['reason']}"
        for code in ranked[:SHOWN_REASONS]
    ]
    more = len(ranked) - SHOWN_REASONS
    return "; ".join(shown) + (f"; {more} more kinds" if more > 0 else "")


def _percent(share: float) -> str:
    return f"{share:.0%}" if share >= 0.01 else f"{share:.2%}"
