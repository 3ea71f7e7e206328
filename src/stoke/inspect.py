"""``stoke inspect``: what a dataset holds, from its manifest alone (no shard is read).

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
    }


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
    return "\n".join(lines)
