"""Tables: CSV, TSV and Parquet files read whole by pyarrow, cleaned once, packed one row per sample.

Each column becomes one field. Its type is inferred and can be overridden with ``types={"col": ...}``:

* ``numeric`` (a ``float`` field) or ``int`` (an ``int`` field): a text column is numeric when at least
  95% of its non-empty values spell numbers; the others are *unparseable* and their rows are quarantined
  (``invalid_value``), with their line number. Infinite values are quarantined too.
* ``categorical`` (an ``int`` field): the distinct values, whitespace-trimmed and sorted, are the
  vocabulary kept in the manifest (``FieldEntry.classes``); each value is stored as its position. The id
  ``len(classes)`` is the *unknown* id: :func:`encode_categories` maps values the table never held to it.
  A text column with at most 1,000 distinct values, no more than half its non-empty values, is inferred
  categorical, and so is a text label column (``label=``, default ``label``).
* ``text`` (a ``text`` field): everything else.

Missing values (an empty cell, ``NA``, ``null``, ``nan`` and pyarrow's other null spellings, a Parquet
null or NaN) follow ``missing`` (every column's policy) and ``missing_columns`` (per column); see
``stoke.prepare.impute``. The default keeps every row: the median fills numbers, the most frequent value
categories, an empty string text, and :meth:`TableSource.notes` (the pack summary) says what was filled.
A dropped row (``missing="drop"``) is quarantined with code ``missing_value``; a row with a missing label
is always dropped. The policy, the value each column was filled with, the rows it dropped and filled, and
the column statistics (``stoke.prepare.stats``, over the packed rows before filling) are recorded in the
manifest under ``source.columns``. CSV rows with the wrong number of columns are quarantined as
``invalid_row``. A table without rows is a ``SourceError``.

**Appending** a table to a dataset packed from one (``stoke.pack(table, dataset, append=True)``) cleans
the new rows with what the dataset stored, never refitted (``fitted=``, which :meth:`TableSource.for_append`
passes): the same columns in the same order, read as the dataset's column types; gaps dropped or filled
with the stored fill value (the median the packed rows had, say); categories numbered by the stored
vocabulary. Whatever cannot be cleaned that way refuses the append in one sentence: a category the
vocabulary lacks (except in the label column, whose new classes are added at the end of its list), gaps
in a column filled by ``knn`` (which needs the packed rows), gaps in a column whose fill value the
dataset did not record, or types and policies asked for that are not the stored ones.

Not for: tables with image paths (``ListingSource`` reads those), JSON Lines (``ListingSource``), or
normalising at load time (``stoke.ops.Standardize``, fitted on the training split).

Example:
    >>> import tempfile, pathlib
    >>> table = pathlib.Path(tempfile.mkdtemp()) / "people.csv"
    >>> _ = table.write_text("age,city,label\\n30,Oslo,yes\\n,Rome,no\\n50,Oslo,yes\\n")
    >>> source = TableSource(table, types={"city": "categorical"}, missing="mean")
    >>> [(e.name, e.field.type_name, e.classes) for e in source.schema()]
    [('age', 'float', None), ('city', 'int', ['Oslo', 'Rome']), ('label', 'int', ['no', 'yes'])]
    >>> source.read(1)
    [40.0, 1, 0]
    >>> TableSource(table).notes()  # the default: the median, keeping the row
    ['filled 1 missing value in 1 column (the median for numbers); pass --missing drop (missing="drop" in \
Python) to leave rows with missing numbers or categories out instead']
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from stoke.errors import AppendError, ConfigError, InvalidItem, SourceError
from stoke.extras import require
from stoke.format.fields import Field, FloatField, IntField, TextField
from stoke.format.manifest import RESERVED_FIELD_NAMES, FieldEntry
from stoke.prepare.impute import (
    DEFAULT_NEIGHBORS,
    DEFAULT_POLICY,
    Policy,
    check_policy_for,
    describe_fill,
    fill_numeric,
    impute_knn,
    parse_policy,
    policy_to_json,
)
from stoke.prepare.stats import category_counts, numeric_stats
from stoke.sources.base import AppendTarget, Source, grown_classes

if TYPE_CHECKING:
    import pyarrow as pa  # imported where a table is read: pyarrow is the tables extra

    from stoke.read import Dataset, DatasetView

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
COLUMN_TYPES = ("numeric", "float", "int", "categorical", "text")
NUMERIC_SHARE = 0.95  # the share of a text column's values that must spell numbers for it to be numeric
MAX_CATEGORIES = 1000
_INT_RE = r"^[+-]?\d+$"
_FLOAT_RE = r"(?i)^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)$"
_GROUP_WORDS = {"numeric": "numbers", "categorical": "categories", "text": "text"}
_FILL_EXAMPLE = {"numeric": "median", "categorical": "mode"}  # a fill to suggest for a column that drops rows
_DECLARED = {"float": "numeric", "int": "int", "categorical": "categorical", "text": "text"}  # stored type -> types=
_GROUP_OF = {"float": "numeric", "int": "numeric", "categorical": "categorical", "text": "text"}


@dataclass
class _Column:
    """One parsed column over every table row: numbers or category codes in numpy, text in pyarrow."""

    name: str
    kind: str  # float | int | categorical | text
    inferred: bool
    values: np.ndarray | None = None  # float64 / int64 numbers, or int64 codes (-1: missing)
    text: pa.Array | None = None
    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    invalid: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    problem: str = ""  # what an invalid value is (for the quarantine sentence)
    infinite: np.ndarray | None = None  # invalid because infinite (a clearer sentence than "not a number")
    vocabulary: list[str] = field(default_factory=list)
    policy: tuple[str, Any] = ("drop", None)
    explicit: bool = False  # whether the policy is the column's own (missing_columns), not the default
    record: dict[str, Any] = field(default_factory=dict)  # what the manifest says about the column

    @property
    def group(self) -> str:
        return "numeric" if self.kind in ("float", "int") else self.kind


class TableSource(Source):
    """Rows of a ``.csv``, ``.tsv`` or ``.parquet`` table, typed and cleaned; see the module docstring."""

    kind = "table"

    def __init__(
        self,
        path: str | Path,
        types: Mapping[str, str] | None = None,
        missing: Policy | None = None,
        missing_columns: Mapping[str, Policy] | None = None,
        label: str | None = "label",
        null_values: Sequence[str] = (),
        neighbors: int = DEFAULT_NEIGHBORS,
        fitted: AppendTarget | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"{self.path} is not a file")
        self.format = TABLE_SUFFIXES.get(self.path.suffix.lower())
        if self.format is None:
            raise SourceError(f"{self.path} is not a table stoke reads (.csv, .tsv or .parquet)")
        if neighbors < 1:
            raise ConfigError(f"neighbors must be at least 1, got {neighbors}")
        self.label = label
        self.neighbors = neighbors
        self._fitted = fitted
        self._default_missing = missing is None  # the pack summary then says how to drop rows instead
        default = parse_policy(DEFAULT_POLICY if missing is None else missing)
        self._settings = {
            "types": dict(types or {}),
            "missing": policy_to_json(default),
            "missing_columns": {
                k: policy_to_json(parse_policy(v, f"the policy of {k!r}")) for k, v in (missing_columns or {}).items()
            },
            "label": label,
            "null_values": list(null_values),
            "neighbors": neighbors,
        }
        if self.format == "parquet":
            table, self._lines, bad_rows = _read_parquet(self.path), None, {}
        else:
            table, self._lines, bad_rows = _read_csv(self.path, "\t" if self.format == "tsv" else ",", null_values)
        names = table.column_names
        if table.num_rows + len(bad_rows) == 0:
            raise SourceError(
                f"{self.path} has a header but no rows; nothing to pack"
                if self.format != "parquet"
                else f"{self.path} has no rows; nothing to pack"
            )
        unknown = sorted(set(types or {}) - set(names)) + sorted(set(missing_columns or {}) - set(names))
        if unknown:
            raise ConfigError(f"{self.path} has no column {unknown[0]!r} (its columns: {', '.join(names)})")
        for name in names:
            if name in RESERVED_FIELD_NAMES:
                raise SourceError(f"column {name!r} of {self.path} clashes with a field name stoke reserves; rename it")
        self._num_items = table.num_rows + len(bad_rows)
        good = np.setdiff1d(np.arange(self._num_items), np.fromiter(bad_rows, np.int64, len(bad_rows)))
        self._table_row = np.full(self._num_items, -1, dtype=np.int64)
        self._table_row[good] = np.arange(good.size)
        self._problems: dict[int, tuple[str, str]] = {item: ("invalid_row", why) for item, why in bad_rows.items()}

        stored = _stored_columns(fitted, names, self.path) if fitted is not None else None
        declared = {c["name"]: _DECLARED[c["type"]] for c in stored} if stored is not None else dict(types or {})
        self._columns = [
            _parse_column(name, table.column(name), declared.get(name), name == label, self.path) for name in names
        ]
        kept = self._quarantine_invalid(good)
        if fitted is not None and stored is not None:
            self._clean_like(kept, good, stored, fitted)
        else:
            kept = self._drop_missing(kept, default, dict(missing_columns or {}), good)
            self._fill(kept)
        self.num_dropped = sum(column.record["missing"]["dropped"] for column in self._columns)
        self.num_filled = sum(column.record["missing"]["filled"] for column in self._columns)
        self.num_invalid = len(self._problems) - self.num_dropped

    # -- the Source protocol -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._num_items

    def schema(self) -> list[FieldEntry]:
        fields: dict[str, Field] = {"float": FloatField(), "int": IntField(), "categorical": IntField()}
        return [
            FieldEntry(
                column.name,
                fields.get(column.kind, TextField()),
                classes=list(column.vocabulary) if column.kind == "categorical" else None,
            )
            for column in self._columns
        ]

    def read(self, index: int) -> list[Any]:
        problem = self._problems.get(index)
        if problem is not None:
            raise InvalidItem(*problem)
        row = int(self._table_row[index])
        values: list[Any] = []
        for column in self._columns:
            if column.kind == "text":
                assert column.text is not None
                values.append(column.text[row].as_py())
            else:
                assert column.values is not None
                values.append(column.values[row].item())
        return values

    def name_of(self, index: int) -> str:
        if self._lines is None:
            return f"{self.path.name} row {index}"
        return f"{self.path.name} line {int(self._lines[index])}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path.resolve()),
            "format": self.format,
            "num_items": len(self),
            "num_invalid": self.num_invalid,
            "num_dropped": self.num_dropped,
            "num_filled": self.num_filled,
            "missing": self._settings["missing"],
            "label": self.label if any(c.name == self.label for c in self._columns) else None,
            "columns": [{"name": c.name, "type": c.kind, "inferred": c.inferred, **c.record} for c in self._columns],
        }

    def notes(self) -> list[str]:
        """What the pack summary says about the cleaning: how many gaps were filled, in which columns, with what."""
        filled = [column for column in self._columns if column.record["missing"]["filled"]]
        if not filled:
            return []
        phrases: dict[str, dict[str, list[str]]] = {}  # group -> what filled it -> the columns
        for column in filled:
            phrase = describe_fill(column.group, column.policy)
            phrases.setdefault(column.group, {}).setdefault(phrase, []).append(column.name)
        parts = []
        for group in ("numeric", "categorical", "text"):
            for phrase, names in phrases.get(group, {}).items():
                where = _GROUP_WORDS[group] if len(phrases[group]) == 1 else ", ".join(names)
                parts.append(f"{phrase} for {where}")
        values, columns = _plural(self.num_filled, "missing value"), _plural(len(filled), "column")
        note = f"filled {values} in {columns} ({', '.join(parts)})"
        if self._default_missing and any(c.group != "text" and not c.explicit for c in filled):
            note += (
                '; pass --missing drop (missing="drop" in Python) to leave rows with missing numbers or '
                "categories out instead"
            )
        return [note]

    def fingerprint(self) -> str:
        hasher = xxhash.xxh3_64(self.path.read_bytes())
        hasher.update(json.dumps(self._settings, sort_keys=True, default=str).encode())
        return hasher.hexdigest()

    def for_append(self, target: AppendTarget) -> TableSource:
        """This table cleaned as ``target`` was (its column types, policies, fill values and vocabularies),
        read again with ``fitted=target``; types or policies asked for that are not the stored ones, or a
        dataset not packed from a table, are an :class:`~stoke.errors.AppendError`."""
        if self._fitted is target:
            return self
        source = target.source
        if source.get("kind") != "table" or not isinstance(source.get("columns"), list):
            raise AppendError(
                f"{target.location} was not packed from a table (its source is {source.get('kind', 'unknown')!r}), "
                f"so it keeps no table cleaning for the rows of {self.path}; append a source like the one it was "
                f"packed from"
            )
        self._check_request(source, target.location)
        label = source.get("label")
        return TableSource(
            self.path,
            label=label if isinstance(label, str) else None,
            null_values=self._settings["null_values"],
            neighbors=self.neighbors,
            fitted=target,
        )

    def _check_request(self, source: Mapping[str, Any], location: str) -> None:
        """Refuse column types and missing-value policies asked of this table that the dataset did not use."""
        stored = {c.get("name"): c for c in source["columns"] if isinstance(c, dict)}
        for name, declared in self._settings["types"].items():
            asked = "float" if declared in ("numeric", "float") else declared
            have = stored.get(name, {}).get("type")
            if have is not None and asked != have and not (asked == "int" and have == "float"):  # a filled int
                raise AppendError(
                    f"column {name!r} is a {have} column in {location}, not {asked}: an append reads new rows with "
                    f"the dataset's column types; leave --type (types=) out"
                )
        label = source.get("label")
        explicit = self._settings["missing_columns"]
        for name, column in stored.items():
            have, group = column.get("missing", {}).get("policy"), _GROUP_OF.get(column.get("type"), "text")
            if name == label or have is None or (name not in explicit and self._default_missing):
                continue
            asked = explicit[name] if name in explicit else self._settings["missing"]
            try:
                used = check_policy_for(group, parse_policy(asked), name, name in explicit)
            except ConfigError:
                used = None
            if used is None or policy_to_json(used) != have:
                raise AppendError(
                    f"column {name!r} of {location} was cleaned with {have!r} when it was packed, not {asked!r}: an "
                    f"append cleans new rows as the packed ones were; leave --missing and --missing-col out (the "
                    f"dataset's policies apply)"
                )

    # -- cleaning ------------------------------------------------------------------------------------
    def _quarantine_invalid(self, good: np.ndarray) -> np.ndarray:
        """Quarantine rows holding unparseable or infinite numbers; returns the table rows still kept."""
        kept = np.ones(good.size, dtype=bool)
        for column in self._columns:
            for row in np.flatnonzero(column.invalid & kept):
                shown = column.text[int(row)].as_py() if column.text is not None else column.values[row].item()
                problem = "not a finite number" if column.infinite is not None and column.infinite[row] else None
                problem = problem or column.problem
                spells_number = re.fullmatch(_FLOAT_RE, str(shown).strip()) is not None  # 1.5 in an int column
                declare = "numeric" if spells_number else "text"
                self._problems[int(good[row])] = (
                    "invalid_value",
                    f"column {column.name!r} holds {shown!r}, which is {problem}; fix the value, or declare the "
                    f"column's type (--type {column.name}={declare}, or types={{{column.name!r}: {declare!r}}} in "
                    f"Python)",
                )
            kept &= ~column.invalid
        return kept

    def _drop_missing(
        self, kept: np.ndarray, default: tuple[str, Any], per_column: dict[str, Policy], good: np.ndarray
    ) -> np.ndarray:
        for column in self._columns:
            explicit = column.name in per_column
            policy = parse_policy(per_column[column.name], f"the policy of {column.name!r}") if explicit else default
            if column.name == self.label:
                if explicit and policy[0] != "drop":
                    raise ConfigError(
                        f"the label column {column.name!r} cannot be filled in; its rows can only be dropped"
                    )
                policy = ("drop", None)
            column.policy = check_policy_for(column.group, policy, column.name, explicit)
            column.explicit = explicit
            dropped = self._drop_rows_without(column, kept, good) if column.policy[0] == "drop" else 0
            column.record["missing"] = {"policy": policy_to_json(column.policy), "dropped": dropped}
        return kept

    def _drop_rows_without(self, column: _Column, kept: np.ndarray, good: np.ndarray) -> int:
        """Leave out the kept rows where ``column`` has no value, each quarantined with the reason; how many."""
        rows = np.flatnonzero(column.missing & kept)
        reason = self._drop_reason(column)
        for row in rows:
            self._problems[int(good[row])] = ("missing_value", reason)
        kept[rows] = False
        return int(rows.size)

    def _drop_reason(self, column: _Column) -> str:
        """The sentence for a row left out because ``column`` has no value, naming the knob that keeps it."""
        if column.name == self.label:
            return (
                f"the label column {column.name!r} has no value; a label is never filled in, so the row is "
                f"left out (give it a label in the table to keep it)"
            )
        if column.explicit:
            fill = _FILL_EXAMPLE.get(column.group)
            cli, python = (fill, repr(fill)) if fill else ("constant=", "('constant', '')")
            knob = f"--missing-col {column.name}={cli}, or missing_columns={{{column.name!r}: {python}}} in Python"
        else:
            knob = f'--missing {DEFAULT_POLICY}, or missing="{DEFAULT_POLICY}" in Python'
        return (
            f"column {column.name!r} has no value and its missing-value policy is 'drop'; fill it to keep the row "
            f"({knob})"
        )

    def _fill(self, kept: np.ndarray) -> None:
        """Statistics over the kept rows, then every gap filled by its column's policy."""
        import pyarrow as pa
        import pyarrow.compute as pc

        knn = [c for c in self._columns if c.policy[0] == "knn"]
        for column in self._columns:
            self._check_fillable(column, kept)
        for column in self._columns:
            gaps = column.missing & kept
            column.record["missing"]["filled"] = int(gaps.sum()) if column.policy[0] != "drop" else 0
            if column.group == "numeric":
                assert column.values is not None
                as_float = np.where(column.missing, np.nan, column.values.astype(np.float64))
                column.record["stats"] = numeric_stats(column.values[kept], column.missing[kept])
                if column.policy[0] not in ("drop", "knn") and gaps.any():
                    if column.kind == "int" and column.policy[0] in ("mean", "median"):
                        column.kind = "float"  # a mean of integers is not one
                    filled, value = fill_numeric(as_float[kept], column.policy)
                    value = int(value) if column.kind == "int" and float(value).is_integer() else value
                    column.record["missing"]["fill"] = value
                    if column.kind == "int" and not float(value).is_integer():
                        column.kind = "float"
                    column.values = as_float if column.kind == "float" else column.values.copy()
                    column.values[np.flatnonzero(kept)] = filled
                    column.values[np.flatnonzero(column.missing & ~kept)] = 0  # quarantined rows, never read
                elif column.policy[0] in ("mean", "median", "mode") and (kept & ~column.missing).any():
                    # No gap to fill here, but an append fills its rows' gaps with this value (never refitted).
                    _, value = fill_numeric(as_float[kept], column.policy)
                    is_whole = column.kind == "int" and float(value).is_integer()
                    column.record["missing"]["fill"] = int(value) if is_whole else value
            elif column.kind == "categorical":
                self._fill_categories(column, kept, gaps)
            elif gaps.any():
                assert column.text is not None
                mask = pa.array(column.missing & kept)
                column.text = pc.if_else(mask, pa.scalar(str(column.policy[1]), pa.string()), column.text)
                column.record["missing"]["fill"] = column.policy[1]
        if knn:
            self._fill_knn(knn, kept)

    def _check_fillable(self, column: _Column, kept: np.ndarray) -> None:
        """A column whose gaps a statistic should fill must have a value to compute it from."""
        gaps = column.missing & kept
        if column.policy[0] in ("drop", "constant") or not gaps.any() or (kept & ~column.missing).any():
            return
        where = "at all" if column.missing.all() else "in the rows that are kept"
        constant, spelled = ("0", "0") if column.group == "numeric" else ("none", "'none'")
        raise ConfigError(
            f"column {column.name!r} of {self.path} has no values {where}, so its {column.policy[0]} cannot fill "
            f"its gaps; give it a constant (--missing-col {column.name}=constant={constant}, or "
            f"missing_columns={{{column.name!r}: ('constant', {spelled})}} in Python) or remove the column"
        )

    def _fill_categories(self, column: _Column, kept: np.ndarray, gaps: np.ndarray) -> None:
        assert column.values is not None
        codes = np.where(kept, column.values, -1)
        counts = np.bincount(codes[codes >= 0], minlength=len(column.vocabulary))
        used = np.flatnonzero(counts)  # categories seen only in quarantined rows leave the vocabulary
        vocabulary = [column.vocabulary[i] for i in used]
        fill: str | None = None
        if column.policy[0] == "mode" and used.size:  # recorded without gaps too: an append fills with it
            column.record["missing"]["fill"] = column.vocabulary[int(used[np.argmax(counts[used])])]
        if gaps.any() and column.policy[0] == "mode":
            if not used.size:
                raise SourceError(f"column {column.name!r} of {self.path} has no values, so it has no mode")
            fill = column.vocabulary[int(used[np.argmax(counts[used])])]
        elif gaps.any() and column.policy[0] == "constant":
            fill = str(column.policy[1]).strip()
        if fill is not None and fill not in vocabulary:
            vocabulary = sorted([*vocabulary, fill])
        _recode(column, vocabulary, fill, gaps, kept)

    def _clean_like(
        self, kept: np.ndarray, good: np.ndarray, stored: list[dict[str, Any]], target: AppendTarget
    ) -> None:
        """Drop or fill the gaps of these rows by the policies, fill values and vocabularies ``target`` stored."""
        for column, record in zip(self._columns, stored):
            try:
                policy = parse_policy(record["missing"]["policy"])
            except (ConfigError, KeyError, TypeError):
                raise AppendError(
                    f"{target.location} records no cleaning stoke can apply for column {column.name!r}; re-pack the "
                    f"whole table instead of appending"
                ) from None
            column.policy = ("drop", None) if column.name == self.label else policy
            dropped = self._drop_rows_without(column, kept, good) if column.policy[0] == "drop" else 0
            column.record["missing"] = {"policy": policy_to_json(column.policy), "dropped": dropped}
        for column, record in zip(self._columns, stored):
            gaps = column.missing & kept
            column.record["missing"]["filled"] = int(gaps.sum()) if column.policy[0] != "drop" else 0
            kind, constant = column.policy
            value = constant if kind == "constant" else record["missing"].get("fill")
            if column.group == "numeric":
                assert column.values is not None
                column.record["stats"] = numeric_stats(column.values[kept], column.missing[kept])
                if not gaps.any() or kind == "drop":
                    continue
                self._check_fill(column, kind, value, target.location)
                column.values = column.values.astype(np.float64 if column.kind == "float" else np.int64)
                column.values[gaps] = value
                column.record["missing"]["fill"] = value
            elif column.kind == "categorical":
                fill = None if not gaps.any() or kind == "drop" else value
                if gaps.any() and kind == "mode" and fill is None:
                    self._check_fill(column, kind, None, target.location)
                self._categories_like(column, kept, gaps, target.classes(column.name), fill, target.location)
            elif gaps.any() and kind != "drop":
                assert column.text is not None
                import pyarrow as pa
                import pyarrow.compute as pc

                column.text = pc.if_else(pa.array(gaps), pa.scalar(str(constant), pa.string()), column.text)
                column.record["missing"]["fill"] = constant

    def _check_fill(self, column: _Column, kind: str, value: Any, location: str) -> None:
        """Refuse gaps that the stored cleaning cannot fill as it filled the packed rows'."""
        if kind == "knn":
            raise AppendError(
                f"column {column.name!r} of {self.path} has gaps, which {location} filled from the nearest packed rows "
                f"(knn); an append does not refit on them: fill the gaps in the table, or re-pack it whole"
            )
        if value is None or (column.group == "numeric" and not isinstance(value, (int, float))):
            raise AppendError(
                f"column {column.name!r} of {self.path} has gaps, but {location} recorded no {kind} to fill them with "
                f"(its packed rows had none, or an older stoke packed it); fill the gaps in the table, or re-pack it"
            )
        if column.kind == "int" and not float(value).is_integer():
            raise AppendError(
                f"column {column.name!r} of {self.path} has gaps, and the {kind} {value!r} that {location} fills them "
                f"with is not a whole number for its int column; fill the gaps in the table, or re-pack it"
            )

    def _categories_like(
        self, column: _Column, kept: np.ndarray, gaps: np.ndarray, known: list[str] | None, fill: Any, location: str
    ) -> None:
        """Number the categories by the stored vocabulary ``known`` (a label's new classes go at its end)."""
        assert column.values is not None
        known = list(known or [])
        codes = np.where(kept, column.values, -1)
        found = [column.vocabulary[i] for i in np.unique(codes[codes >= 0]).tolist()]
        fill = None if fill is None else str(fill).strip()
        new = [name for name in [*found, *([fill] if fill is not None else [])] if name not in set(known)]
        if new and column.name != self.label:
            shown = ", ".join(repr(name) for name in new[:3]) + (", ..." if len(new) > 3 else "")
            raise AppendError(
                f"column {column.name!r} of {self.path} holds {len(new):,} values that {location}'s categories lack "
                f"({shown}); an append keeps a table's categories as they were packed (their ids, and the unknown id "
                f"{len(known)}): map them to known values in the table, or re-pack the whole table"
            )
        vocabulary = grown_classes(known, sorted(set(new)))
        _recode(column, vocabulary, fill, gaps, kept)

    def _fill_knn(self, targets: list[_Column], kept: np.ndarray) -> None:
        """KNNImputer over every numeric column except the label (which would leak into the features)."""
        features = [c for c in self._columns if c.group == "numeric" and c.name != self.label]
        matrix = np.column_stack(
            [np.where(c.missing, np.nan, np.asarray(c.values, dtype=np.float64))[kept] for c in features]
        )
        for position, column in enumerate(features):
            if column in targets and np.isnan(matrix[:, position]).all() and column.missing[kept].any():
                raise SourceError(f"column {column.name!r} of {self.path} has no values for knn to learn from")
        filled = impute_knn(matrix, self.neighbors)
        for position, column in enumerate(features):
            if column not in targets:
                continue
            gaps = column.missing & kept
            column.record["missing"].update(neighbors=self.neighbors, features=[c.name for c in features])
            if not gaps.any():
                continue
            imputed = filled[:, position]
            if column.kind == "int" and not np.all(imputed == np.round(imputed)):
                column.kind = "float"
            values = np.asarray(column.values, dtype=np.float64 if column.kind == "float" else np.int64).copy()
            values[np.flatnonzero(kept)] = imputed if column.kind == "float" else np.round(imputed)
            column.values = values


def _stored_columns(target: AppendTarget, names: Sequence[str], path: Path) -> list[dict[str, Any]]:
    """The columns ``target`` recorded (name, type, missing-value cleaning), which must be ``names``, in order."""
    columns = target.source.get("columns")
    stored = [c for c in columns if isinstance(c, dict)] if isinstance(columns, list) else []
    if [c.get("name") for c in stored] != list(names):
        have = ", ".join(str(c.get("name")) for c in stored)
        raise AppendError(
            f"{path} has the columns {', '.join(names)}, and the table {target.location} was packed from had {have}: "
            f"an append brings the same columns in the same order"
        )
    for column in stored:
        if column.get("type") not in _DECLARED or not isinstance(column.get("missing"), dict):
            raise AppendError(
                f"{target.location} records no cleaning stoke can apply for column {column.get('name')!r}; re-pack "
                f"the whole table instead of appending"
            )
    return stored


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def encode_categories(dataset: Dataset | DatasetView, field: str, values: Iterable[Any]) -> np.ndarray:
    """The ids a categorical field stores for ``values`` (new data); values never seen get ``len(classes)``.

    Values are compared as whitespace-trimmed text, as the table's were when it was packed.

    Example:
        >>> import tempfile, pathlib, stoke
        >>> table = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = table.write_text("colour,label\\nred,1\\nblue,0\\nred,1\\n")
        >>> root = table.with_suffix(".stoke")
        >>> _ = stoke.pack(TableSource(table, types={"colour": "categorical"}), root, progress=False)
        >>> encode_categories(stoke.open(root), "colour", ["red", "green", " blue"]).tolist()
        [1, 2, 0]
    """
    try:
        classes = dataset.manifest.field_entry(field).classes
    except KeyError:
        raise ConfigError(f"the dataset has no field {field!r}; its fields are {list(dataset.fields)}") from None
    if classes is None:
        raise ConfigError(f"field {field!r} is not categorical: the manifest keeps no vocabulary for it")
    lookup = {name: position for position, name in enumerate(classes)}
    return np.fromiter((lookup.get(str(value).strip(), len(classes)) for value in values), dtype=np.int64)


def is_table(path: Path, path_column: str | None = None) -> bool:
    """Whether ``path`` is read as a table: Parquet, or a CSV/TSV with no column of image paths."""
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind == "parquet":
        return True
    if kind is None or path_column is not None:
        return False
    from stoke.sources.listing import PATH_COLUMN_NAMES

    with open(path, newline="", encoding="utf-8-sig", errors="replace") as stream:
        header = next(csv.reader(stream, delimiter="\t" if kind == "tsv" else ","), [])
    return not any(name in header for name in PATH_COLUMN_NAMES)


# -- reading -----------------------------------------------------------------------------------------------
def _read_csv(path: Path, delimiter: str, null_values: Sequence[str]) -> tuple[pa.Table, np.ndarray | None, dict]:
    """The table (every column as text), each item's line number, and the rows with the wrong column count."""
    arrow_csv = require("pyarrow.csv", extra="tables", what=f"reading the table {path}")
    import pyarrow as pa

    data = path.read_bytes()
    lines = _record_lines(data)
    if lines.size == 0:
        raise SourceError(f"{path} is empty; a table needs a header row")
    first = data[: _line_end(data, lines)]
    try:
        header = next(csv.reader(io.StringIO(first.decode("utf-8-sig")), delimiter=delimiter))
    except (UnicodeDecodeError, csv.Error, StopIteration) as error:
        raise SourceError(f"{path} has no readable header row ({error})") from None
    if len(set(header)) != len(header) or any(not name for name in header):
        raise SourceError(f"{path} has empty or repeated column names in its header: {header}")
    bad: dict[int, str] = {}

    def invalid_row(row: Any) -> str:
        if row.number is None:  # only multi-threaded reading loses it; stoke reads with one thread
            raise SourceError(f"{path}: a row has {row.actual_columns} columns and its position is unknown")
        bad[row.number - 2] = f"the row has {row.actual_columns} columns, the header {row.expected_columns}"
        return "skip"

    try:
        table = arrow_csv.read_csv(
            io.BytesIO(data),
            read_options=arrow_csv.ReadOptions(use_threads=False, skip_rows=1, column_names=header),
            parse_options=arrow_csv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=invalid_row
            ),
            convert_options=arrow_csv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=True,
                null_values=[*arrow_csv.ConvertOptions().null_values, *null_values],
            ),
        )
    except (pa.ArrowInvalid, OSError) as error:
        raise SourceError(f"{path} cannot be read as a table ({error}); check that it is UTF-8 CSV") from None
    items = lines[1:]
    if items.size != table.num_rows + len(bad):
        items = None  # a dialect the line count does not follow: name rows by position instead of line
    if items is None:
        return table, None, bad
    return table, items, bad


def _record_lines(data: bytes) -> np.ndarray:
    """The 1-based line on which each non-blank CSV record starts, the header first (vectorised).

    A newline ends a record unless it lies inside quotes, that is after an odd number of quote characters
    (an escaped quote ``""`` adds two, so it keeps the count even); blank lines are no records.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(raw == 10)
    quotes = np.flatnonzero(raw == 34)
    ends = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [raw.size]])
    length = stops - starts
    first_byte = raw[np.minimum(starts, max(raw.size - 1, 0))] if raw.size else np.zeros(starts.size, np.uint8)
    blank = (length == 0) | ((length == 1) & (first_byte == 13))
    return (np.searchsorted(newlines, starts) + 1)[~blank]


def _line_end(data: bytes, lines: np.ndarray) -> int:
    """The byte where the header record ends (the start of the next record's line, or the end)."""
    if lines.size < 2:
        return len(data)
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    return int(newlines[lines[1] - 2])


def _read_parquet(path: Path) -> pa.Table:
    parquet = require("pyarrow.parquet", extra="tables", what=f"reading the table {path}")
    import pyarrow as pa

    try:
        table = parquet.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise SourceError(f"{path} cannot be read as Parquet ({error})") from None
    names = table.column_names
    if len(set(names)) != len(names) or any(not name for name in names):
        raise SourceError(f"{path} has empty or repeated column names: {names}")
    return table


# -- typing and parsing a column --------------------------------------------------------------------------
def _parse_column(name: str, data: pa.ChunkedArray, declared: str | None, is_label: bool, path: Path) -> _Column:
    if declared is not None and declared not in COLUMN_TYPES:
        raise ConfigError(f"types gives column {name!r} the type {declared!r}; use one of {', '.join(COLUMN_TYPES)}")
    import pyarrow as pa
    import pyarrow.compute as pc

    array = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
    kind_of = array.type
    if pa.types.is_dictionary(kind_of):
        array, kind_of = array.cast(kind_of.value_type), kind_of.value_type
    if pa.types.is_large_string(kind_of):
        array, kind_of = array.cast(pa.string()), pa.string()
    if pa.types.is_boolean(kind_of) or pa.types.is_integer(kind_of) or pa.types.is_decimal(kind_of):
        array = array.cast(pa.int64() if not pa.types.is_decimal(kind_of) else pa.float64())
    elif pa.types.is_floating(kind_of):
        array = array.cast(pa.float64())
    elif not pa.types.is_string(kind_of) and not pa.types.is_null(kind_of):
        raise SourceError(
            f"column {name!r} of {path} holds {kind_of} values, which stoke does not read from tables; "
            f"convert it to numbers or text"
        )
    if pa.types.is_null(kind_of):
        array = array.cast(pa.string())
    number_typed = pa.types.is_integer(array.type) or pa.types.is_floating(array.type)
    if number_typed:
        kind = {"numeric": "float", "float": "float"}.get(declared or "", declared) or (
            "int" if pa.types.is_integer(array.type) else "float"
        )
        if kind in ("categorical", "text"):
            return _parse_text(name, array.cast(pa.string()), kind, False)
        return _parse_numbers(name, array, kind, declared is None)
    trimmed = pc.utf8_trim_whitespace(array)
    present = pc.fill_null(pc.not_equal(trimmed, ""), False).to_numpy(zero_copy_only=False)
    if declared in ("numeric", "float", "int"):
        parsed = _parse_number_text(name, array, trimmed, present, "float" if declared != "int" else "int", False)
        if parsed.problem == "too large":
            raise SourceError(
                f"column {name!r} of {path} holds integers beyond 64 bits; declare it 'numeric' or 'text'"
            )
        return parsed
    if declared is None:
        spelled = pc.fill_null(pc.match_substring_regex(trimmed, _FLOAT_RE), False).to_numpy(zero_copy_only=False)
        count = int(present.sum())
        if count and (spelled & present).sum() >= NUMERIC_SHARE * count:
            integral = pc.fill_null(pc.match_substring_regex(trimmed, _INT_RE), False).to_numpy(zero_copy_only=False)
            kind = "int" if np.all(integral[spelled & present]) else "float"
            parsed = _parse_number_text(name, array, trimmed, present, kind, True)
            if kind == "int" and parsed.problem == "too large":
                return _parse_number_text(name, array, trimmed, present, "float", True)
            return parsed
    if declared is None:
        distinct = pc.count_distinct(pc.if_else(pa.array(present), trimmed, None)).as_py()
        count = int(present.sum())
        categorical = is_label or (distinct <= MAX_CATEGORIES and distinct <= max(1, count // 2))
        return _parse_text(name, array, "categorical" if categorical else "text", True)
    return _parse_text(name, array, declared, False)


def _parse_numbers(name: str, array: pa.Array, kind: str, inferred: bool) -> _Column:
    """A column pyarrow already holds as numbers (Parquet); NaN counts as missing, infinities are invalid."""
    import pyarrow as pa

    missing = array.is_null().to_numpy(zero_copy_only=False)
    values = array.fill_null(0).to_numpy(zero_copy_only=False)
    invalid = np.zeros(values.size, bool)
    problem = ""
    if values.dtype.kind == "f":
        missing = missing | np.isnan(values)
        invalid = np.isinf(values)
        problem = "not a finite number"
        if kind == "int":
            whole = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2.0**63)
            invalid = ~missing & ~whole
            problem = "not an integer"
            shown = array.cast(pa.string())
            values = np.where(whole, values, 0).astype(np.int64)
            return _Column(name, kind, inferred, values, shown, missing, invalid, problem)
    elif kind == "float":
        values = values.astype(np.float64)
    return _Column(name, kind, inferred, values=values, missing=missing, invalid=invalid, problem=problem)


def _parse_number_text(
    name: str, array: pa.Array, trimmed: pa.Array, present: np.ndarray, kind: str, inferred: bool
) -> _Column:
    """Numbers spelled as text; values that do not spell one (of ``kind``) are invalid."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pattern = _INT_RE if kind == "int" else _FLOAT_RE
    spelled = pc.fill_null(pc.match_substring_regex(trimmed, pattern), False).to_numpy(zero_copy_only=False)
    valid = spelled & present
    unsigned = pc.replace_substring_regex(trimmed, r"^\+", "")
    source = pc.if_else(pa.array(valid), unsigned, pa.scalar("0"))
    try:
        values = pc.cast(source, pa.int64() if kind == "int" else pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        return _Column(name, kind, inferred, problem="too large")
    missing = ~present
    invalid = present & ~spelled
    problem = "not an integer" if kind == "int" else "not a number"
    if kind == "float":
        missing = missing | (valid & np.isnan(values))
        infinite = np.isinf(values)
        invalid = invalid | infinite
        values = np.where(missing | invalid, np.nan, values)
        return _Column(name, kind, inferred, values, array, missing, invalid, problem, infinite)
    return _Column(name, kind, inferred, values=values, text=array, missing=missing, invalid=invalid, problem=problem)


def _parse_text(name: str, array: pa.Array, kind: str, inferred: bool) -> _Column:
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind == "text":
        missing = array.is_null().to_numpy(zero_copy_only=False)
        return _Column(name, "text", inferred, text=array, missing=missing, invalid=np.zeros(missing.size, bool))
    trimmed = pc.utf8_trim_whitespace(array)
    trimmed = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
    encoded = pc.dictionary_encode(trimmed)
    dictionary = encoded.dictionary.to_pylist()
    order = sorted(range(len(dictionary)), key=dictionary.__getitem__)
    rank = np.empty(len(dictionary) + 1, dtype=np.int64)
    rank[order] = np.arange(len(dictionary))
    rank[-1] = -1
    indices = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    codes = rank[indices]
    missing = indices < 0
    return _Column(
        name,
        "categorical",
        inferred,
        values=codes,
        text=array,
        missing=missing,
        invalid=np.zeros(missing.size, bool),
        vocabulary=[dictionary[i] for i in order],
    )


def _recode(column: _Column, vocabulary: list[str], fill: str | None, gaps: np.ndarray, kept: np.ndarray) -> None:
    """Give a categorical ``column`` the ids of ``vocabulary`` (``fill`` in its ``gaps``) and record them.

    A value only quarantined rows hold gets -1 (through the extra last slot), never read."""
    position = {name: number for number, name in enumerate(vocabulary)}
    remap = np.full(len(column.vocabulary) + 1, -1, dtype=np.int64)
    for old, name in enumerate(column.vocabulary):
        remap[old] = position.get(name, -1)
    codes = remap[column.values]
    if fill is not None:
        codes[gaps] = position[fill]
        column.record["missing"]["fill"] = fill
    column.vocabulary, column.values = vocabulary, codes
    observed = np.where(gaps, -1, codes)
    column.record["categories"] = category_counts(observed[kept], vocabulary)
    column.record["unknown_id"] = len(vocabulary)
    column.record["stats"] = {"count": int((kept & ~column.missing).sum()), "missing": int(gaps.sum())}
