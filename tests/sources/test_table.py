"""TableSource: CSV/TSV/Parquet typing, cleaning, quarantine with line numbers, manifest records, routing."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stoke
from stoke.cli import main
from stoke.errors import ConfigError, InvalidItem, QuarantineLimitError, SourceError
from stoke.format.manifest import Manifest
from stoke.inspect import format_summary, summarize
from stoke.sources import ListingSource, TableSource, encode_categories, resolve_source
from stoke.sources.table import _record_lines

MESSY = (
    "age,city,score,note,label\n"  # line 1
    "30,Oslo,1.5,hi,yes\n"  # 2
    ",Rome,2,,no\n"  # 3: age missing, note empty
    "50,Oslo,x,ok,yes\n"  # 4: unparseable score
    "\n"  # 5: blank
    '61,Rome,3,"two\nlines",no\n'  # 6-7: a quoted newline
    "7,Oslo,4\n"  # 8: 3 columns
    "8,Oslo,inf,z,no\n"  # 9: infinite score
    "9,Rome,5,a,\n"  # 10: no label
    "40, Oslo ,6,b,yes\n"  # 11
)


def outcomes(source):
    rows = []
    for index in range(len(source)):
        try:
            rows.append((source.name_of(index), source.read(index)))
        except InvalidItem as error:
            rows.append((source.name_of(index), error.code))
    return rows


def test_bad_rows_are_quarantined_with_their_line_and_reason(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text(MESSY)
    source = TableSource(table, types={"city": "categorical", "score": "numeric"}, missing="drop")
    assert [(e.name, e.field.type_name, e.classes) for e in source.schema()] == [
        ("age", "int", None),
        ("city", "int", ["Oslo", "Rome"]),
        ("score", "float", None),
        ("note", "text", None),
        ("label", "int", ["no", "yes"]),
    ]
    assert outcomes(source) == [
        ("t.csv line 2", [30, 0, 1.5, "hi", 1]),
        ("t.csv line 3", "missing_value"),
        ("t.csv line 4", "invalid_value"),
        ("t.csv line 6", [61, 1, 3.0, "two\nlines", 0]),
        ("t.csv line 8", "invalid_row"),
        ("t.csv line 9", "invalid_value"),
        ("t.csv line 10", "missing_value"),
        ("t.csv line 11", [40, 0, 6.0, "b", 1]),
    ]
    with pytest.raises(InvalidItem, match=r"column 'score' holds 'x', which is not a number"):
        source.read(2)
    with pytest.raises(InvalidItem, match="not a finite number"):
        source.read(5)
    with pytest.raises(InvalidItem, match="the row has 3 columns, the header 5"):
        source.read(4)
    assert (source.num_invalid, source.num_dropped) == (3, 2)


def test_pack_records_policies_fills_counts_and_statistics_in_the_manifest(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text(MESSY)
    source = TableSource(
        table, types={"city": "categorical", "score": "numeric"}, missing="mean", missing_columns={"note": "drop"}
    )
    result = stoke.pack(source, tmp_path / "ds", progress=False, workers=1, max_quarantined=1.0)  # 5 of 8
    assert [(q["source"], q["code"]) for q in result.quarantine] == [
        ("t.csv line 3", "missing_value"),  # note is empty and its own policy is drop
        ("t.csv line 4", "invalid_value"),
        ("t.csv line 8", "invalid_row"),
        ("t.csv line 9", "invalid_value"),
        ("t.csv line 10", "missing_value"),  # a missing label is always dropped
    ]
    manifest = Manifest.read(tmp_path / "ds")  # strict JSON: every statistic is a finite number
    columns = {c["name"]: c for c in manifest.source["columns"]}
    assert manifest.source["kind"] == "table" and manifest.source["num_dropped"] == 2
    ages = np.array([30, 61, 40])
    assert columns["age"]["stats"] == {
        "count": 3,
        "missing": 0,
        "mean": pytest.approx(ages.mean()),
        "std": pytest.approx(ages.std()),
        "min": 30,
        "max": 61,
    }
    assert columns["note"]["missing"] == {"policy": "drop", "dropped": 1, "filled": 0}
    assert columns["city"]["categories"] == {"Oslo": 2, "Rome": 1} and columns["city"]["unknown_id"] == 2
    assert columns["label"]["missing"]["policy"] == "drop"
    assert stoke.open(tmp_path / "ds")[2] == {"age": 40, "city": 0, "score": 6.0, "note": "b", "label": 1}
    shown = format_summary(summarize(stoke.open(tmp_path / "ds"))).splitlines()  # stoke inspect shows them
    age = next(line for line in shown if line.split()[:1] == ["age"] and "missing:" in line)
    assert f"mean {ages.mean():.4g} std {ages.std():.4g} range 30..61" in age and "missing: mean" in age
    city = next(line for line in shown if line.split()[:1] == ["city"] and "missing:" in line)
    assert "2 categories, unknown id 2" in city


@pytest.mark.parametrize(
    ("policy", "expected_age"),
    [("mean", (30 + 61 + 9 + 40) / 4), ("median", 35.0), ("mode", 9), (("constant", -1), -1)],
)
def test_each_fill_policy_fills_the_gap_with_its_value(tmp_path, policy, expected_age):
    table = tmp_path / "t.csv"
    table.write_text("age,label\n30,a\n,b\n61,a\n9,b\n40,a\n")
    source = TableSource(table, missing=policy)
    assert source.read(1)[0] == expected_age
    record = source.describe()["columns"][0]["missing"]
    assert record["fill"] == expected_age and record["filled"] == 1


def test_knn_fills_from_neighbours_and_records_its_features(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("a,b,label\n0,1,x\n0.1,1.1,x\n0.05,,x\n10,50,y\n10.1,51,y\n9.9,49,y\n")
    source = TableSource(table, missing="knn", neighbors=2)
    assert source.read(2)[1] == pytest.approx(1.05)
    assert source.describe()["columns"][1]["missing"] == {
        "policy": "knn",
        "dropped": 0,
        "filled": 1,
        "neighbors": 2,
        "features": ["a", "b"],
    }


def test_unseen_categories_map_to_the_unknown_id(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("colour,size,label\nred,1,0\nblue,2,1\nred,3,0\n")
    stoke.pack(TableSource(table, types={"colour": "categorical"}), tmp_path / "ds", progress=False, workers=1)
    dataset = stoke.open(tmp_path / "ds")
    assert dataset.manifest.field_entry("colour").classes == ["blue", "red"]
    assert encode_categories(dataset, "colour", ["red", "mauve", " blue ", "Red"]).tolist() == [1, 2, 0, 2]
    with pytest.raises(ConfigError, match="not categorical"):
        encode_categories(dataset, "size", ["1"])


def test_types_are_inferred_and_overridable(tmp_path):
    table = tmp_path / "t.csv"
    rows = [f"{i},{i * 0.5},{'abc'[i % 3]},word{i},{'+7' if i == 3 else '007'}" for i in range(40)]
    table.write_text("n,x,grade,free,code\n" + "\n".join(rows) + "\n")
    inferred = {e.name: (e.field.type_name, e.classes) for e in TableSource(table).schema()}
    assert inferred == {
        "n": ("int", None),
        "x": ("float", None),
        "grade": ("int", ["a", "b", "c"]),  # few distinct values: categorical
        "free": ("text", None),  # every value distinct: text
        "code": ("int", None),
    }
    overridden = TableSource(table, types={"n": "numeric", "code": "text", "grade": "text", "free": "categorical"})
    assert [e.field.type_name for e in overridden.schema()] == ["float", "float", "text", "int", "text"]
    assert overridden.read(3) == [3.0, 1.5, "a", 23, "+7"]
    with pytest.raises(ConfigError, match="type 'date'"):
        TableSource(table, types={"n": "date"})
    with pytest.raises(ConfigError, match="no column 'nope'"):
        TableSource(table, types={"nope": "text"})


def test_a_few_unparseable_values_keep_a_column_numeric_many_make_it_text(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("v\n" + "\n".join(["1.5"] * 39 + ["oops"]) + "\n")
    source = TableSource(table)
    assert source.schema()[0].field.type_name == "float"
    assert outcomes(source)[-1] == ("t.csv line 41", "invalid_value")
    table.write_text("v\n" + "\n".join([f"{i}.5" for i in range(30)] + [f"oops{i}" for i in range(10)]) + "\n")
    assert TableSource(table).schema()[0].field.type_name == "text"  # 25% are not numbers; all distinct


def test_explicit_policies_that_cannot_apply_are_refused(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("city,label\nOslo,a\n,b\nOslo,a\n")
    with pytest.raises(ConfigError, match="categorical, which has no mean"):
        TableSource(table, types={"city": "categorical"}, missing_columns={"city": "mean"})
    with pytest.raises(ConfigError, match="label column"):
        TableSource(table, missing_columns={"label": "mode"})
    source = TableSource(table, types={"city": "categorical"}, missing="median")  # a default falls back to mode
    assert source.read(1) == [0, 1]


def test_unreadable_tables_are_one_sentence_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SourceError, match="empty"):
        TableSource(tmp_path / "empty.csv")
    (tmp_path / "dup.csv").write_text("a,a\n1,2\n")
    with pytest.raises(SourceError, match="repeated column names"):
        TableSource(tmp_path / "dup.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(SourceError, match="cannot be read as Parquet"):
        TableSource(tmp_path / "bad.parquet")
    pq.write_table(pa.table({"when": pa.array([1, 2], pa.timestamp("s"))}), tmp_path / "time.parquet")
    with pytest.raises(SourceError, match=r"'when'.*timestamp"):
        TableSource(tmp_path / "time.parquet")


cells = st.one_of(st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False), st.none())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(cells, st.one_of(st.integers(-1000, 1000), st.none()), st.sampled_from(["a", "b", None])),
        min_size=2,
        max_size=25,
    ),
    st.sampled_from(["drop", "mean", "median", "mode", "knn"]),
)
def test_csv_and_parquet_of_the_same_data_pack_to_the_same_samples(tmp_path_factory, rows, policy):
    folder = tmp_path_factory.mktemp("same")
    x, n, kind = zip(*rows)
    if all(v is None for v in x) or all(v is None for v in n) or all(v is None for v in kind):
        return  # a column with no values at all has no mean, mode or neighbours (tested elsewhere)
    label = [i % 2 for i in range(len(rows))]
    pq.write_table(
        pa.table({"x": pa.array(x, pa.float64()), "n": pa.array(n, pa.int64()), "kind": kind, "label": label}),
        folder / "t.parquet",
    )
    lines = ["x,n,kind,label"] + [
        ",".join("" if v is None else repr(v) if isinstance(v, float) else str(v) for v in (*row, y))
        for row, y in zip(rows, label)
    ]
    (folder / "t.csv").write_text("\n".join(lines) + "\n")
    types = {"kind": "categorical"}
    from_csv = TableSource(folder / "t.csv", types=types, missing=policy)
    from_parquet = TableSource(folder / "t.parquet", types=types, missing=policy)
    assert from_csv.schema() == from_parquet.schema()
    assert [o[1] for o in outcomes(from_csv)] == [o[1] for o in outcomes(from_parquet)]
    assert from_csv.describe()["columns"] == from_parquet.describe()["columns"]


def test_parquet_nan_is_missing_and_rows_are_named_by_position(tmp_path):
    pq.write_table(pa.table({"x": [1.0, float("nan"), None, 4.0], "label": ["a", "b", "a", "b"]}), tmp_path / "t.pq")
    source = TableSource(tmp_path / "t.pq", missing="drop")
    assert outcomes(source) == [
        ("t.pq row 0", [1.0, 0]),
        ("t.pq row 1", "missing_value"),
        ("t.pq row 2", "missing_value"),
        ("t.pq row 3", [4.0, 1]),
    ]


def test_record_lines_follow_quotes_blank_lines_and_crlf():
    data = b'h\r\n\r\n"a\nb"\n\nc\n"d""\ne"\nlast'
    assert _record_lines(data).tolist() == [1, 3, 6, 7, 9]


def test_routing_sends_plain_tables_to_tablesource_and_image_listings_to_listingsource(tmp_path):
    (tmp_path / "plain.csv").write_text("x,label\n1,a\n")
    (tmp_path / "plain.tsv").write_text("x\tlabel\n1\ta\n")
    (tmp_path / "images.csv").write_text("path,label\na.png,x\n")
    (tmp_path / "rows.jsonl").write_text('{"x": 1}\n')
    pq.write_table(pa.table({"x": [1]}), tmp_path / "t.parquet")
    kinds = {
        name: type(resolve_source(tmp_path / name)).__name__
        for name in ("plain.csv", "plain.tsv", "images.csv", "rows.jsonl", "t.parquet")
    }
    assert kinds == {
        "plain.csv": "TableSource",
        "plain.tsv": "TableSource",
        "images.csv": "ListingSource",
        "rows.jsonl": "ListingSource",
        "t.parquet": "TableSource",
    }
    assert isinstance(resolve_source(tmp_path / "plain.csv", path_column="x"), ListingSource)


def test_cli_pack_takes_missing_value_policies_and_types(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("age,zip,label\n30,0101,a\n,0202,b\n50,,a\n")
    out = tmp_path / "ds"
    runner = CliRunner()
    args = ["pack", str(table), str(out), "--missing", "mean", "--missing-col", "zip=constant=none"]
    result = runner.invoke(main, [*args, "--type", "zip=categorical", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["num_samples"] == 3
    dataset = stoke.open(out)
    assert dataset.manifest.field_entry("zip").classes == ["0101", "0202", "none"]
    assert [dataset[i]["age"] for i in range(3)] == [30.0, 40.0, 50.0]
    assert [dataset[i]["zip"] for i in range(3)] == [0, 1, 2]
    refused = runner.invoke(main, ["pack", str(tmp_path), str(tmp_path / "x"), "--missing", "mean"])
    assert refused.exit_code == 2 and "apply to tables" in refused.output
    malformed = runner.invoke(main, ["pack", str(table), str(tmp_path / "y"), "--type", "zip"])
    assert malformed.exit_code == 2 and "COLUMN=VALUE" in malformed.output


def write_with_gaps(path, loader, rate=0.05, seed=0, label_gaps=0):
    """One of scikit-learn's bundled tables as CSV, ``rate`` of its feature cells blanked (seeded).

    ``label_gaps`` labels are blanked too. Returns which feature cells are blank.
    """
    data = loader()
    names = [name.replace(" ", "_").replace("/", "_") for name in data.feature_names]
    rng = np.random.default_rng(seed)
    blank = rng.random(data.data.shape) < rate
    labels = np.asarray(data.target_names)[data.target].astype(object)
    labels[rng.choice(labels.size, label_gaps, replace=False)] = ""
    lines = [",".join([*names, "label"])]
    for row, gaps, label in zip(data.data, blank, labels):
        lines.append(",".join(["" if gap else repr(float(v)) for v, gap in zip(row, gaps)] + [label]))
    path.write_text("\n".join(lines) + "\n")
    return blank


@pytest.mark.parametrize("name", ["wine", "breast_cancer"])
def test_real_tables_with_scattered_gaps_keep_every_row_by_default_and_say_what_was_filled(tmp_path, name):
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    table = tmp_path / f"{name}.csv"
    blank = write_with_gaps(table, loader)
    blanks, rows_with_gaps = int(blank.sum()), int(blank.any(axis=1).sum())
    rows, features = blank.shape
    assert rows_with_gaps > rows // 3  # what the old default (drop) quarantined: 49% and 80%
    assert blank.any(axis=0).all()  # 5% of 178 or 569 rows leaves no column whole
    runner = CliRunner()
    packed = runner.invoke(main, ["pack", str(table), str(tmp_path / "ds"), "--no-progress"])
    assert packed.exit_code == 0, packed.output
    assert f"packed {rows:,} samples" in packed.output
    note = next(line for line in packed.output.splitlines() if line.startswith("filled"))
    assert note.startswith(f"filled {blanks:,} missing values in {features} columns (the median for numbers); ")
    assert "--missing drop" in note and 'missing="drop"' in note  # the knob, spelled for the CLI and Python
    dataset = stoke.open(tmp_path / "ds")
    assert len(dataset) == rows and dataset.manifest.num_quarantined == 0
    columns = {c["name"]: c for c in dataset.manifest.source["columns"]}
    assert sum(c["missing"]["filled"] for c in columns.values()) == blanks
    assert dataset.manifest.source["num_filled"] == blanks
    first = loader().feature_names[0].replace(" ", "_")
    present = loader().data[~blank[:, 0], 0]
    assert columns[first]["missing"] == {
        "policy": "median",
        "dropped": 0,
        "filled": int(blank[:, 0].sum()),
        "fill": float(np.median(present)),
    }

    dropped = runner.invoke(main, ["pack", str(table), str(tmp_path / "dropped"), "--missing", "drop"])
    assert dropped.exit_code == 2
    assert f"quarantined {rows_with_gaps:,} of {rows:,} items" in dropped.output
    assert "more than --max-quarantined 0.01 allows" in dropped.output
    resumed = runner.invoke(
        main,
        ["pack", str(table), str(tmp_path / "dropped"), "--missing", "drop", "--resume", "--max-quarantined", "0.9"],
    )
    assert resumed.exit_code == 0, resumed.output
    assert len(stoke.open(tmp_path / "dropped")) == rows - rows_with_gaps


def test_rows_without_a_label_stay_quarantined_and_count_toward_the_limit(tmp_path):
    from sklearn.datasets import load_wine

    table = tmp_path / "wine.csv"
    write_with_gaps(table, load_wine, label_gaps=4)
    with pytest.raises(QuarantineLimitError, match=r"quarantined 4 of 178 items of \S*wine\.csv \(2%\)"):
        stoke.pack(table, tmp_path / "ds", progress=False, workers=1)
    result = stoke.pack(table, tmp_path / "ds", progress=False, workers=1, resume=True, max_quarantined=0.05)
    assert result.num_samples == 174 and {q["code"] for q in result.quarantine} == {"missing_value"}
    reason = result.quarantine[0]["reason"]
    assert reason.startswith("the label column 'label' has no value") and "fill policy" not in reason


def test_the_default_fills_categories_with_their_most_frequent_value_and_text_with_empty_text(tmp_path):
    table = tmp_path / "t.csv"
    rows = [f"{i},{'Oslo' if i % 3 else 'Rome'},note {i},{i % 2}" for i in range(12)]
    rows[1], rows[2] = "1,,note 1,1", ",Rome,,0"
    table.write_text("n,city,note,label\n" + "\n".join(rows) + "\n")
    source = TableSource(table, types={"note": "text"})
    assert source.read(1)[1] == 0 and source.read(2) == [6.0, 1, "", 0]  # Oslo: 6 of 11; the median of 0, 1, 3..11
    result = stoke.pack(source, tmp_path / "ds", progress=False, workers=1)
    assert result.num_samples == 12
    assert result.notes == [
        "filled 3 missing values in 3 columns (the median for numbers, the most frequent value for categories, "
        'empty text for text); pass --missing drop (missing="drop" in Python) to leave rows with missing numbers '
        "or categories out instead"
    ]
    assert result.notes[0] in str(result)
    explicit = TableSource(table, types={"note": "text"}, missing="mean")
    assert explicit.notes() == [
        "filled 3 missing values in 3 columns (the mean for numbers, the most frequent value for categories, "
        "empty text for text)"
    ]


def test_hints_name_the_flag_and_the_argument(tmp_path):
    table = tmp_path / "t.csv"
    rows = [f"{i},{i / 2},{'ab'[i % 2]}" for i in range(40)]
    rows[1], rows[2] = ",3,b", "2,x,a"  # a gap; one score in 40 that is not a number
    table.write_text("age,score,label\n" + "\n".join(rows) + "\n")
    source = TableSource(table, missing="drop")
    with pytest.raises(InvalidItem) as dropped:
        source.read(1)
    assert '(--missing median, or missing="median" in Python)' in str(dropped.value)
    with pytest.raises(InvalidItem) as invalid:
        source.read(2)
    assert "--type score=text" in str(invalid.value) and "types={'score': 'text'}" in str(invalid.value)
    per_column = TableSource(table, missing_columns={"age": "drop"})
    with pytest.raises(InvalidItem) as column:
        per_column.read(1)
    assert "--missing-col age=median" in str(column.value) and "missing_columns={'age': 'median'}" in str(column.value)


def test_a_column_with_no_values_at_all_is_refused_by_the_default_naming_the_column_and_the_flag(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("x,empty,label\n1,,a\n2,,b\n")
    with pytest.raises(ConfigError) as caught:
        TableSource(table)
    message = str(caught.value)
    assert "column 'empty' of" in message and "no values at all" in message
    assert "--missing-col empty=constant=" in message and "missing_columns={'empty':" in message
    assert TableSource(table, missing_columns={"empty": ("constant", "none")}).read(0) == [1, 0, 0]
