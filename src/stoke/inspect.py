"""``stoke inspect``: what a dataset holds, from its manifest (and its splits, with their class balance).

Example:
    >>> import numpy as np, stoke, tempfile
    >>> out = tempfile.mkdtemp() + "/ds"
    >>> _ = stoke.pack({"y": np.arange(4)}, out, progress=False)
    >>> summary = summarize(stoke.open(out))
    >>> summary["num_samples"], summary["fields"][0]["type"]
    (4, 'int')
"""

from __future__ import annotations

from typing import Any

from stoke.prepare.split import class_balance
from stoke.read import Dataset


def summarize(dataset: Dataset) -> dict[str, Any]:
    """A JSON-able description: counts, sizes, schema (with statistics and classes), source, pack settings."""
    manifest = dataset.manifest
    return {
        "path": str(dataset.root),
        "format_version": manifest.format_version,
        "created_by": manifest.created_by,
        "num_samples": manifest.num_samples,
        "num_quarantined": manifest.num_quarantined,
        "num_shards": len(manifest.shards),
        "total_bytes": manifest.total_bytes,
        "fields": [entry.to_json() for entry in manifest.fields],
        "source": manifest.source,
        "pack": manifest.pack,
        "splits": _splits(dataset),
        "attachments": [attachment.to_json() for attachment in manifest.attachments],
    }


def _splits(dataset: Dataset) -> dict[str, Any] | None:
    """Each stored split's size and, when it was stratified, its samples per class (the label column only)."""
    if not dataset.has_splits():
        return None
    splits = dataset.splits()
    stratify = splits.info.get("stratify")
    labels = dataset.column(stratify) if isinstance(stratify, str) and stratify in dataset.fields else None
    balance = class_balance(splits.parts, labels)
    return {
        "seed": splits.info.get("seed"),
        "stratify": stratify,
        "dropped_duplicates": splits.info.get("dropped", 0),
        "parts": {
            name: {"count": int(part.size), "classes": {str(k): v for k, v in balance.get(name, {}).items()}}
            for name, part in splits.parts.items()
        },
    }


def _column_lines(columns: Any) -> list[str]:
    """A table source's cleaning and statistics, one line per column (nothing for other sources)."""
    if not isinstance(columns, list):
        return []
    lines = ["  columns      (cleaning at pack time; statistics after it)"]
    for column in columns:
        if not isinstance(column, dict):
            continue
        missing = column.get("missing") or {}
        policy = missing.get("policy")
        policy = f"constant {policy[1]!r}" if isinstance(policy, list) and len(policy) == 2 else policy
        cleaning = f"missing: {policy}"
        if missing.get("filled"):
            cleaning += f", {missing['filled']:,} filled"
        if missing.get("dropped"):
            cleaning += f", {missing['dropped']:,} rows dropped"
        stats = column.get("stats") or {}
        if "mean" in stats:
            figures = f"mean {stats['mean']:.4g} std {stats['std']:.4g} range {stats['min']:.4g}..{stats['max']:.4g}"
        elif column.get("categories"):
            figures = f"{len(column['categories'])} categories, unknown id {column.get('unknown_id')}"
        else:
            figures = ""
        name, kind = column.get("name", "?"), column.get("type", "?")
        lines.append(f"    {name:<12} {kind:<11} {cleaning}; {figures}".rstrip("; "))
    return lines


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as the lines ``stoke inspect`` prints."""
    lines = [
        f"{summary['path']}  (stoke format {summary['format_version']}, {summary['created_by']})",
        f"  samples      {summary['num_samples']:,}",
        f"  quarantined  {summary['num_quarantined']:,}",
        f"  shards       {summary['num_shards']:,}  ({summary['total_bytes'] / 1e6:,.1f} MB)",
        "  fields:",
    ]
    for entry in summary["fields"]:
        settings = {k: v for k, v in entry.items() if k not in ("name", "type", "stats", "classes") and v is not None}
        detail = ", ".join(f"{key}={value}" for key, value in settings.items())
        lines.append(f"    {entry['name']:<12} {entry['type']:<8} {detail}")
        stats = entry.get("stats")
        if stats and "min_height" in stats:
            lines.append(
                f"    {'':<12} {'':<8} sizes {stats['min_height']}x{stats['min_width']} to "
                f"{stats['max_height']}x{stats['max_width']} (height x width)"
            )
        classes = entry.get("classes")
        if classes:
            shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
            lines.append(f"    {'':<12} {'':<8} {len(classes)} classes: {shown}")
    source = summary["source"]
    if source:
        where = source.get("path") or source.get("type") or ""
        lines.append(f"  source       {source.get('kind', '?')} {where}".rstrip())
        lines.extend(_column_lines(source.get("columns")))
    for attachment in summary.get("attachments", []):
        lines.append(f"  attached     {attachment['file']} ({attachment['bytes']:,} bytes)")
    splits = summary.get("splits")
    if splits:
        by = f", stratified by {splits['stratify']}" if splits["stratify"] else ""
        dropped = f", {splits['dropped_duplicates']:,} duplicates left out" if splits["dropped_duplicates"] else ""
        lines.append(f"  splits       seed {splits['seed']}{by}{dropped}")
        total = sum(part["count"] for part in splits["parts"].values()) or 1
        for name, part in splits["parts"].items():
            classes = ", ".join(f"{label}: {count:,}" for label, count in part["classes"].items())
            lines.append(
                f"    {name:<12} {part['count']:>10,}  ({part['count'] / total:.1%})"
                + (f"  [{classes}]" if classes else "")
            )
    return "\n".join(lines)
