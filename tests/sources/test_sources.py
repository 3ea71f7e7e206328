"""Sources: what each kind of input becomes, and how bad items are named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers import encode, photo
from stoke.errors import InvalidItem, SourceError
from stoke.format.fields import ImageField
from stoke.sources import ArraysSource, DatasetSource, ImageFolderSource, ListingSource, resolve_source


def test_imagefolder_classes_labels_paths(tmp_path):
    for name in ("zebra", "ant"):
        (tmp_path / name / "deeper").mkdir(parents=True)
        (tmp_path / name / "b.jpg").write_bytes(b"1")
        (tmp_path / name / "deeper" / "a.PNG").write_bytes(b"2")
        (tmp_path / name / "notes.txt").write_text("not an image")
        (tmp_path / name / ".DS_Store").write_bytes(b"")
    source = ImageFolderSource(tmp_path)
    assert source.classes == ["ant", "zebra"]
    assert source.paths == ["ant/b.jpg", "ant/deeper/a.PNG", "zebra/b.jpg", "zebra/deeper/a.PNG"]
    assert source.read(3) == [b"2", 1, "zebra/deeper/a.PNG"]
    assert source.ignored() == ["ant/notes.txt", "zebra/notes.txt"]
    assert [entry.name for entry in source.schema()] == ["image", "label", "path"]
    assert source.schema()[1].classes == ["ant", "zebra"]


def test_imagefolder_without_classes_is_refused(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(SourceError, match=r"no class subfolders"):
        ImageFolderSource(tmp_path)


def test_csv_listing_types_labels_and_bad_rows(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(encode(photo(8, 8), "PNG"))
    listing = tmp_path / "rows.csv"
    listing.write_text(
        "path,label,weight,count,note\n"
        "img/a.png,cat,0.5,3,hello\n"
        "img/missing.png,dog,1,4,x\n"
        "img/a.png,dog,2.5\n"
        "img/a.png,cat,,5,empty weight\n"
    )
    source = ListingSource(listing)
    schema = {entry.name: entry for entry in source.schema()}
    assert list(schema) == ["image", "label", "weight", "count", "note", "path"]
    assert [schema[n].field.type_name for n in schema] == ["image", "int", "float", "int", "text", "text"]
    assert schema["label"].classes == ["cat", "dog"]
    values = source.read(0)
    assert values[1:] == [0, 0.5, 3, "hello", "img/a.png"]
    with pytest.raises(InvalidItem) as missing:
        source.read(1)
    assert missing.value.code == "missing_file"
    with pytest.raises(InvalidItem) as short_row:
        source.read(2)
    assert short_row.value.code == "invalid_row" and "3 columns" in str(short_row.value)
    assert source.name_of(2) == "rows.csv line 4"
    with pytest.raises(InvalidItem) as empty:
        source.read(3)
    assert empty.value.code == "missing_value" and "weight" in str(empty.value)
    assert source.name_of(1) == "img/missing.png (rows.csv line 3)"


def test_jsonl_listing_without_paths_is_a_table(tmp_path):
    listing = tmp_path / "rows.jsonl"
    listing.write_text(
        '{"a": 1, "b": [1, 2], "c": "x"}\n\n{"a": 2.5, "b": {"k": 1}, "c": "y"}\nnot json\n[1]\n{"b": 1, "c": "z"}\n'
    )
    source = ListingSource(listing)
    assert source.path_column is None
    assert [(e.name, e.field.type_name) for e in source.schema()] == [("a", "float"), ("b", "json"), ("c", "text")]
    assert source.read(1) == [2.5, {"k": 1}, "y"]
    codes = []
    for index in (2, 3, 4):
        with pytest.raises(InvalidItem) as caught:
            source.read(index)
        codes.append(caught.value.code)
    assert codes == ["invalid_row", "invalid_row", "missing_value"]
    assert source.name_of(2) == "rows.jsonl line 4"


def test_listing_path_column_must_exist(tmp_path):
    listing = tmp_path / "rows.csv"
    listing.write_text("file,y\na.jpg,1\n")
    assert ListingSource(listing).path_column == "file"
    with pytest.raises(SourceError, match=r"no column 'picture'"):
        ListingSource(listing, path_column="picture")


def test_dataset_source_dicts_tuples_and_single_values():
    pixels = photo(6, 6)
    pairs = DatasetSource([(Image.fromarray(pixels), 3)] * 2)
    assert pairs.names == ["image", "label"]
    assert [e.field.type_name for e in pairs.schema()] == ["image", "int"]
    triples = DatasetSource([(1.0, "a", np.zeros(3))])
    assert triples.names == ["f0", "f1", "f2"]
    single = DatasetSource([np.zeros((2, 2))], names=["grid"])
    assert single.names == ["grid"] and single.read(0)[0].shape == (2, 2)


def test_dataset_source_widens_array_shapes_over_the_first_items():
    source = DatasetSource([{"tokens": np.arange(n)} for n in (3, 5, 4)])
    assert source.fields["tokens"].shape == (None,)


def test_dataset_source_quarantines_user_errors_with_the_location():
    class Flaky:
        def __len__(self):
            return 3

        def __getitem__(self, index):
            if index == 1:
                raise ValueError("corrupt record")
            return {"x": index}

    source = DatasetSource(Flaky())
    with pytest.raises(InvalidItem) as caught:
        source.read(1)
    assert caught.value.code == "source_error"
    assert "dataset[1] raised ValueError: corrupt record" in str(caught.value)
    assert "test_sources.py" in str(caught.value)


def test_dataset_source_refuses_inconsistent_items_and_reserved_names():
    source = DatasetSource([{"x": 1}, {"x": 1, "y": 2}])
    with pytest.raises(InvalidItem, match=r"keys"):
        source.read(1)
    with pytest.raises(SourceError, match=r"reserves"):
        DatasetSource([{"index": 1}])
    with pytest.raises(SourceError, match=r"holds object values, which stoke cannot store"):
        DatasetSource([{"x": object()}] * 2)

    class Broken:
        def __len__(self):
            return 40

        def __getitem__(self, index):
            raise OSError("disk gone")

    with pytest.raises(SourceError, match=r"none of the first 16 items .* disk gone"):
        DatasetSource(Broken())


def test_arrays_source_types():
    source = ArraysSource(
        {"x": np.zeros((4, 2, 2), np.float32), "y": np.arange(4), "w": np.ones(4), "s": np.array(list("abcd"))}
    )
    assert [(e.name, e.field.type_name) for e in source.schema()] == [
        ("x", "ndarray"), ("y", "int"), ("w", "float"), ("s", "text")
    ]  # fmt: skip
    assert ArraysSource((np.zeros((3, 1)), np.zeros(3))).fields.keys() == {"x", "y"}
    with pytest.raises(SourceError, match=r"share their first dimension"):
        ArraysSource({"a": np.zeros(3), "b": np.zeros(4)})
    images = ArraysSource({"img": np.zeros((2, 4, 4, 3), np.uint8)}, fields={"img": ImageField()})
    assert images.schema()[0].field.type_name == "image"


def test_resolve_source(tmp_path, image_folder):
    assert isinstance(resolve_source(image_folder), ImageFolderSource)
    assert isinstance(resolve_source({"a": np.zeros(2)}), ArraysSource)
    assert isinstance(resolve_source([{"a": 1}]), DatasetSource)
    with pytest.raises(SourceError, match=r"does not exist"):
        resolve_source(tmp_path / "nothing")
    with pytest.raises(SourceError, match=r"cannot pack a int"):
        resolve_source(3)


def test_names_must_fit_the_items():
    with pytest.raises(SourceError, match=r"2 arrays were given but 1 names"):
        ArraysSource((np.zeros(3), np.zeros(3)), names=["x"])
    with pytest.raises(SourceError, match=r"dict items are named by their keys"):
        DatasetSource([{"a": 1}], names=["b"])
    with pytest.raises(SourceError, match=r"3-tuples but names= gives 2"):
        DatasetSource([(1, 2, 3)], names=["a", "b"])


def test_only_csv_text_that_spells_a_number_becomes_one(tmp_path):
    csv_listing = tmp_path / "rows.csv"
    csv_listing.write_text("code,count,size\n007,1,1e3\n1_000,2,-.5\n")
    assert [e.field.type_name for e in ListingSource(csv_listing).schema()] == ["text", "int", "float"]
    assert ListingSource(csv_listing).read(0) == ["007", 1, 1000.0]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"code": "007", "n": 1}\n{"code": "12", "n": 2}\n')
    assert ListingSource(jsonl).read(0) == ["007", 1]  # JSON strings stay strings


def test_files_beside_the_class_folders_are_reported(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.jpg").write_bytes(b"x")
    (tmp_path / "stray.jpg").write_bytes(b"x")
    (tmp_path / ".hidden.jpg").write_bytes(b"x")
    assert ImageFolderSource(tmp_path).ignored() == ["stray.jpg"]
