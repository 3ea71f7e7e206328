"""Multimodal listings: image + caption + label + arrays per row, bad images quarantined, never misaligned;
and JSONL numeric lists as ndarray fields."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

import stoke
from stoke.format.fields import JsonField, NDArrayField
from stoke.sources import ListingSource


def jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 20, 3), value, np.uint8)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def write_listing(root, rows):
    with open(root / "records.jsonl", "w") as stream:
        for row in rows:
            stream.write(json.dumps(row) + "\n")
    return root / "records.jsonl"


def test_bad_images_are_quarantined_and_every_record_keeps_its_own_fields(tmp_path):
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(10):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(jpeg(20 * i + 10))
        rows.append(
            {
                "image": f"img/{i}.jpg",
                "caption": f"a grey square of level {20 * i + 10}",
                "label": "dark" if i < 5 else "light",
                "embedding": [i, i * 2.5, -i],
                "boxes": [[i, i, i + 1, i + 1]] * (i % 3 + 1),
            }
        )
    (tmp_path / "img" / "3.jpg").unlink()  # missing
    (tmp_path / "img" / "6.jpg").write_bytes(jpeg(130)[:200])  # corrupt: cut short
    listing = write_listing(tmp_path, rows)
    result = stoke.pack(listing, tmp_path / "ds", shard_items=3, workers=2, progress=False, max_quarantined=0.2)

    assert [(entry["item"], entry["source"], entry["code"]) for entry in result.quarantine] == [
        (3, "img/3.jpg (records.jsonl line 4)", "missing_file"),
        (6, "img/6.jpg (records.jsonl line 7)", "truncated"),
    ]
    dataset = stoke.open(tmp_path / "ds")
    assert {name: field.type_name for name, field in dataset.fields.items()} == {
        "image": "image",
        "caption": "text",
        "label": "int",
        "embedding": "ndarray",
        "boxes": "ndarray",
        "path": "text",
    }
    assert dataset.fields["embedding"] == NDArrayField("float64", (3,))
    assert dataset.fields["boxes"] == NDArrayField("int64", (None, 4))
    assert len(dataset) == 8
    for sample in dataset:
        i = int(sample["path"].removeprefix("img/").removesuffix(".jpg"))
        level = round(float(sample["image"].mean()))
        assert abs(level - (20 * i + 10)) <= 2  # the pixels are this row's image
        assert sample["caption"] == f"a grey square of level {20 * i + 10}"
        assert sample["label"] == (0 if i < 5 else 1)  # classes sorted: dark, light
        assert sample["embedding"].tolist() == [i, i * 2.5, -i]
        assert sample["boxes"].tolist() == [[i, i, i + 1, i + 1]] * (i % 3 + 1)

    loader = stoke.Loader(dataset, batch_size=4, shuffle=False)
    for batch in loader:
        for row, index in enumerate(batch["index"].tolist()):
            assert batch["caption"][row] == dataset[index]["caption"]
            assert batch["embedding"][row].tolist() == dataset[index]["embedding"].tolist()
            length = int(batch["boxes_lengths"][row][0])
            assert batch["boxes"][row][:length].tolist() == dataset[index]["boxes"].tolist()
    loader.close()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([[1, 2], [3, 4]], NDArrayField("int64", (2,))),
        ([[1, 2], [3.5, 4]], NDArrayField("float64", (2,))),
        ([[1, 2, 3], [], [4]], NDArrayField("int64", (None,))),
        ([[[1, 2]], [[3, 4], [5, 6]]], NDArrayField("int64", (None, 2))),
        ([[True, False], [1, 0]], NDArrayField("int64", (2,))),
        ([["sun"], []], JsonField()),  # strings stay json
        ([[], []], JsonField()),  # nothing says what the numbers would be
        ([[1, [2]], [3]], JsonField()),  # ragged
        ([[1, 2], [[3, 4]]], JsonField()),  # ranks differ
        ([[1, None]], JsonField()),
        ([[1, 2], 3], JsonField()),
        ([[2**70]], JsonField()),  # beyond int64
    ],
)
def test_numeric_jsonl_lists_become_ndarray_fields(tmp_path, values, expected):
    listing = write_listing(tmp_path, [{"x": value} for value in values])
    source = ListingSource(listing)
    assert source.schema()[0].field == expected
    for index, value in enumerate(values):
        read = source.read(index)[0]
        if isinstance(expected, NDArrayField):
            assert np.asarray(read).tolist() == np.asarray(value, dtype=expected.dtype).tolist()
        else:
            assert read == value


def test_a_row_with_no_array_is_quarantined(tmp_path):
    listing = write_listing(tmp_path, [{"x": [1, 2], "y": 1}, {"x": None, "y": 2}, {"y": 3}])
    result = stoke.pack(listing, tmp_path / "ds", workers=1, progress=False, max_quarantined=1.0)  # 2 of 3
    assert [(entry["item"], entry["code"]) for entry in result.quarantine] == [
        (1, "missing_value"),
        (2, "missing_value"),
    ]
    assert stoke.open(tmp_path / "ds")[0]["x"].tolist() == [1, 2]
