"""``stoke inspect``: what a dataset holds, from its manifest (and its splits, with their class balance).

``summarize`` gives the JSON-able description that ``stoke inspect --json`` prints (with ``versions``, every
published version of a dataset that grew: number, samples, shards, when); ``format_summary``
lays it out as aligned tables (with ``rich``) for people, and ``show`` prints them: in colour on a
terminal, as plain text at its natural width when piped (no escape codes, no row cut at 80 columns).
``split_tables`` lays out a set of splits the same way, for ``stoke split`` too.

Not for: checking the data (``stoke verify`` reads every sample; this reads the manifest, plus the label
column when the dataset has stratified splits).

Example:
    >>> import numpy as np, stoke, tempfile
    >>> out = tempfile.mkdtemp() + "/ds"
    >>> _ = stoke.pack({"y": np.arange(4)}, out, progress=False)
    >>> summary = summarize(stoke.open(out))
    >>> summary["num_samples"], summary["fields"][0]["type"]
    (4, 'int')
    >>> print(format_summary(summary).splitlines()[1])
      samples      4
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from stoke.errors import ConfigError
from stoke.prepare.split import class_balance, strata
from stoke.read import Dataset

PLAIN_WIDTH = 10_000
"""The width text is laid out at when it is not going to a terminal: rows are never wrapped."""
MAX_CLASS_ROWS = 20
"""Classes listed by name in a split's balance table; ``--json`` has them all."""
_INDENT = 2


def summarize(dataset: Dataset) -> dict[str, Any]:
    """A JSON-able description: counts, sizes, schema (with statistics and classes), source, pack settings."""
    manifest = dataset.manifest
    return {
        "path": str(dataset.root),
        "format_version": manifest.format_version,
        "version": dataset.version,
        "versions": [entry.to_dict() for entry in dataset.versions],
        "created_by": manifest.created_by,
        "num_samples": manifest.num_samples,
        "num_quarantined": manifest.num_quarantined,
        "num_shards": len(manifest.shards),
        "total_bytes": manifest.total_bytes,
        "fields": [entry.to_dict() for entry in manifest.fields],
        "source": manifest.source,
        "pack": manifest.pack,
        "splits": _splits(dataset),
        "attachments": [attachment.to_dict() for attachment in manifest.attachments],
    }


def _splits(dataset: Dataset) -> dict[str, Any] | None:
    """Each stored split's size and, when it was stratified, its samples per class (the label column only)."""
    if not dataset.has_splits():
        return None
    splits = dataset.splits()
    stratify = splits.info.get("stratify")
    bins = splits.info.get("stratify_bins")
    classes = None
    if isinstance(stratify, str) and stratify in dataset.fields:
        try:
            classes = strata(dataset, stratify, bins if isinstance(bins, int) else None)
        except ConfigError:  # splits made by an older stoke on a field it no longer stratifies by
            classes = None
    balance = class_balance(splits.parts, classes.ids if classes is not None else None)
    return {
        "seed": splits.info.get("seed"),
        "stratify": stratify,
        "dropped_duplicates": splits.info.get("dropped", 0),
        "unassigned": splits.added,  # samples appended since the splits were made: in no split yet
        "parts": {
            name: {"count": int(part.size), "classes": {str(k): v for k, v in balance.get(name, {}).items()}}
            for name, part in splits.parts.items()
        },
        "class_names": {str(k): name for k, name in classes.names.items()} if classes is not None else {},
    }


# ---- layout -------------------------------------------------------------------------------------------------


def _table(*columns: str, right: Sequence[str] = ()) -> Table:
    """A borderless table with a bold header; columns named in ``right`` are right-aligned (numbers)."""
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", overflow="fold")
    return table


def _row(table: Table, *cells: Any) -> None:
    """Add a row of plain text: a field named ``[bold]`` is shown as it is, never read as markup."""
    table.add_row(*(Text(str(cell)) for cell in cells))


def _indented(renderable: RenderableType) -> Padding:
    return Padding(renderable, (0, 0, 0, _INDENT))


def split_tables(
    counts: Mapping[str, int],
    balance: Mapping[str, Mapping[str, int]] | None = None,
    class_names: Mapping[str, str] | None = None,
) -> list[RenderableType]:
    """A table of each split's size and share, then one of its samples per class, classes by name.

    ``balance`` maps each split to its counts by class key (the JSON's string ids), and ``class_names``
    names the keys (a key without a name is shown as it is).
    """
    total = sum(counts.values()) or 1
    sizes = _table("split", "samples", "share", right=("samples", "share"))
    for name, count in counts.items():
        _row(sizes, name, f"{count:,}", f"{count / total:.1%}")
    shown: list[RenderableType] = [sizes]
    keys = sorted({key for classes in (balance or {}).values() for key in classes}, key=_class_order)
    if keys:
        names = class_names or {}
        table = _table("class", *counts, right=tuple(counts))
        for key in keys[:MAX_CLASS_ROWS]:
            _row(table, names.get(key, key), *(f"{(balance or {}).get(split, {}).get(key, 0):,}" for split in counts))
        shown.append(Text(""))
        shown.append(table)
        if len(keys) > MAX_CLASS_ROWS:
            shown.append(Text(f"... and {len(keys) - MAX_CLASS_ROWS:,} more classes (--json lists them all)"))
    return shown


def _class_order(key: str) -> tuple[int, int | str]:
    """Class ids in numeric order, then any other keys by name."""
    return (0, int(key)) if key.lstrip("-").isdigit() else (1, key)


def _field_table(fields: list[dict[str, Any]]) -> Table:
    rows = []
    for entry in fields:
        settings = {k: v for k, v in entry.items() if k not in ("name", "type", "stats", "classes") and v is not None}
        details = []
        stats = entry.get("stats")
        if stats and "min_height" in stats:
            details.append(
                f"sizes {stats['min_height']}x{stats['min_width']} to "
                f"{stats['max_height']}x{stats['max_width']} (height x width)"
            )
        classes = entry.get("classes")
        if classes:
            shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
            details.append(f"{len(classes)} classes: {shown}")
        rows.append(
            (entry["name"], entry["type"], ", ".join(f"{k}={v}" for k, v in settings.items()), "; ".join(details))
        )
    kept = [
        number
        for number, _ in enumerate(("field", "type", "settings", "details"))
        if number < 2 or any(row[number] for row in rows)
    ]
    table = _table(*(("field", "type", "settings", "details")[number] for number in kept))
    for row in rows:
        _row(table, *(row[number] for number in kept))
    return table


def _column_table(columns: Any) -> Table | None:
    """A table source's cleaning and statistics, one row per column (None for other sources)."""
    if not isinstance(columns, list):
        return None
    table = _table("column", "type", "cleaning at pack time", "statistics after it")
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
        _row(table, column.get("name", "?"), column.get("type", "?"), cleaning, figures)
    return table


def _versions_table(versions: list[dict[str, Any]], opened: int) -> Table:
    """One row per published version: its number, samples (and how many it added), shards, quarantined, when."""
    numbers = ("samples", "added", "shards", "quarantined")
    table = _table("version", "samples", "added", "shards", "quarantined", "published", right=numbers)
    before = 0
    for entry in versions:
        mark = " (open)" if entry["version"] == opened and len(versions) > 1 else ""
        _row(
            table,
            f"{entry['version']}{mark}",
            f"{entry['num_samples']:,}",
            f"{entry['num_samples'] - before:,}",
            f"{entry['num_shards']:,}",
            f"{entry.get('num_quarantined', 0):,}",
            entry.get("created") or "when packed (not recorded)",
        )
        before = entry["num_samples"]
    return table


def summary_renderables(summary: dict[str, Any]) -> list[RenderableType]:
    """What ``stoke inspect`` shows, as ``rich`` renderables: facts, then the fields, columns and splits."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column()
    facts.add_column()
    _row(facts, "samples", f"{summary['num_samples']:,}")
    versions = summary.get("versions") or []
    if len(versions) > 1:
        _row(facts, "version", f"{summary['version']} of {len(versions)} (stoke.open(path, version=N) opens another)")
    appended = sum(entry.get("num_quarantined", 0) for entry in versions[1 : summary.get("version", 1)])
    by_appends = f"  ({summary['num_quarantined']:,} when packed, {appended:,} by appends)" if appended else ""
    _row(facts, "quarantined", f"{summary['num_quarantined'] + appended:,}{by_appends}")
    _row(facts, "shards", f"{summary['num_shards']:,}  ({summary['total_bytes'] / 1e6:,.1f} MB)")
    source = summary["source"]
    if source:
        where = source.get("path") or source.get("type") or ""
        _row(facts, "source", f"{source.get('kind', '?')} {where}".rstrip())
    for attachment in summary.get("attachments", []):
        _row(facts, "attached", f"{attachment['file']} ({attachment['bytes']:,} bytes)")
    splits = summary.get("splits")
    if splits:
        by = f", stratified by {splits['stratify']}" if splits["stratify"] else ""
        dropped = f", {splits['dropped_duplicates']:,} duplicates left out" if splits["dropped_duplicates"] else ""
        added = splits.get("unassigned") or 0
        unassigned = f"; {added:,} samples appended since are in no split: `stoke split` adds them" if added else ""
        _row(facts, "splits", f"seed {splits['seed']}{by}{dropped}{unassigned}")
    header = Text(f"{summary['path']}  (stoke format {summary['format_version']}, {summary['created_by']})")
    shown: list[RenderableType] = [header, _indented(facts), Text(""), _indented(_field_table(summary["fields"]))]
    if len(versions) > 1:
        shown += [Text(""), _indented(_versions_table(versions, summary["version"]))]
    columns = _column_table(source.get("columns")) if source else None
    if columns is not None:
        shown += [Text(""), _indented(columns)]
    if splits:
        balance = {name: part["classes"] for name, part in splits["parts"].items()}
        counts = {name: part["count"] for name, part in splits["parts"].items()}
        tables = split_tables(counts, balance, splits.get("class_names"))
        shown += [Text(""), _indented(Group(*tables))]
    return shown


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as the plain text ``stoke inspect`` prints when piped."""
    return render_text(summary_renderables(summary))


def render_text(renderables: Sequence[RenderableType], width: int = PLAIN_WIDTH) -> str:
    """``renderables`` as plain text (no escape codes), ``width`` columns wide, each line right-stripped.

    Strings among them are shown as they are, never read as ``rich`` markup.
    """
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False)
    for renderable in renderables:
        console.print(Text(renderable) if isinstance(renderable, str) else renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def show(renderables: Sequence[RenderableType], console: Console | None = None) -> None:
    """Print ``renderables`` to stdout: styled and fitted to a terminal, or as :func:`render_text` when piped."""
    console = console or Console(highlight=False)
    if console.is_terminal:
        for renderable in renderables:
            console.print(Text(renderable) if isinstance(renderable, str) else renderable)
    else:
        console.file.write(render_text(renderables) + "\n")
