"""The sample-reader protocol (stoke.pipeline.reader.SampleReader), one suite run against every reader kind.

The same items behind a packed dataset, a view of it, a user's list of dicts, a user's tuples and numpy
arrays. Each reader must give back every item's values through the inputs it hands the stages, number and
describe samples the way errors name them, and report what the stages size their buffers from.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import stoke
from helpers import photo
from stoke.errors import ConfigError, SampleError
from stoke.format.shard import DATA_START
from stoke.ops.base import Geometry
from stoke.pipeline.inputs import ImageInput, LiveImages, LiveValues, StoredImages, StoredValues, ValueInput
from stoke.pipeline.reader import SampleReader, reader_for

COUNT = 6


def image(index: int) -> np.ndarray:
    return photo(10 + 2 * index, 16 - index, seed=index)


def item(index: int) -> dict[str, Any]:
    return {
        "image": image(index),
        "vector": np.arange(3, dtype=np.float32) * index,
        "label": index % 4,
        "caption": f"item {index}",
    }


FIELDS = {
    "image": stoke.ImageField(encoding="png"),
    "vector": stoke.NDArrayField("float32", (3,)),
    "label": stoke.IntField(),
    "caption": stoke.TextField(),
}


@dataclass
class Case:
    """A reader, and what it should hand out: the item at each position, and each position's dataset index."""

    reader: SampleReader
    indices: list[int]
    layout: str
    stored: bool

    def expected(self, position: int) -> dict[str, Any]:
        values = item(self.indices[position])
        return {name: values[name] for name in self.reader.fields}


@pytest.fixture(scope="module")
def packed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readers") / "ds"
    stoke.pack([item(index) for index in range(COUNT)], root, fields=FIELDS, shard_items=4, progress=False)
    return root


def make(kind: str, root: Path) -> Case:
    everything = list(range(COUNT))
    if kind == "packed":
        return Case(reader_for(stoke.open(root), None, "always"), everything, "dict", True)
    if kind == "view":
        view = stoke.open(root).select([5, 1, 4])
        return Case(reader_for(view, ["label", "image"], "once"), [5, 1, 4], "dict", True)
    if kind == "dicts":
        live = [{**item(index), "image": Image.fromarray(item(index)["image"])} for index in everything]
        return Case(reader_for(live, None, "never"), everything, "dict", False)
    if kind == "tuples":
        pairs = [(Image.fromarray(image(index)), index % 4) for index in everything]
        return Case(reader_for(pairs, None, "never"), everything, "tuple", False)
    if kind == "arrays":
        arrays = {"vector": np.stack([item(index)["vector"] for index in everything]), "label": np.arange(COUNT) % 4}
        return Case(reader_for(arrays, None, "never"), everything, "dict", False)
    raise AssertionError(kind)


KINDS = ["packed", "view", "dicts", "tuples", "arrays"]


@pytest.fixture(params=KINDS)
def case(request, packed_root) -> Case:
    return make(request.param, packed_root)


def through_input(reader: SampleReader, name: str, value: Any) -> Any:
    """The value as the field's stage sees it: an image's whole pixels, anything else decoded."""
    field_input = reader.input_for(name)
    if isinstance(field_input, (StoredImages, LiveImages)):
        assert isinstance(field_input, ImageInput)
        height, width, handle = field_input.open(value)
        pixels, origin, decoded = field_input.pixels(value, handle, Geometry.identity(height, width), True, True)
        assert origin == (0, 0) and (decoded is None or decoded == (height, width))
        assert pixels.shape[:2] == (height, width)
        return np.array(pixels)
    assert isinstance(field_input, (StoredValues, LiveValues)) and isinstance(field_input, ValueInput)
    return field_input.decode(value)


# ---- the shared suite ------------------------------------------------------------------------------------
def test_a_reader_gives_back_every_items_values_through_its_inputs(case):
    reader = case.reader
    assert isinstance(reader, SampleReader)
    assert len(reader) == len(case.indices) and reader.layout == case.layout
    assert reader.packed == case.stored
    for position in range(len(reader)):
        values = reader.read(position)
        reader.check_read(position)
        assert len(values) == len(reader.fields)
        for (name, value), expected in zip(zip(reader.fields, values), case.expected(position).values()):
            got = through_input(reader, name, value)
            if isinstance(expected, np.ndarray):
                assert np.array_equal(np.asarray(got).reshape(expected.shape), expected), (position, name)
            else:
                assert got == expected, (position, name)


def test_inputs_are_of_the_readers_kind(case):
    for name, field in case.reader.fields.items():
        field_input = case.reader.input_for(name)
        assert field_input.field == field
        stored = isinstance(field_input, (StoredImages, StoredValues))
        assert stored == case.stored, name


def test_positions_map_to_dataset_indices_and_are_described(case):
    reader = case.reader
    positions = np.arange(len(reader))[::-1].copy()
    assert reader.dataset_index(positions).tolist() == [case.indices[p] for p in positions]
    assert reader.dataset_index(positions).dtype == np.int64
    for position in range(len(reader)):
        described = reader.describe(position)
        assert described.startswith(f"sample {case.indices[position]}")
        if case.stored:  # and the shard it lives in
            assert "shard-" in described
    reader.will_read(positions)  # an epoch's plan is accepted, and reading goes on as before
    assert len(reader.read(int(positions[0]))) == len(reader.fields)


def test_field_stats_give_the_sizes_that_fix_a_batch(case):
    reader = case.reader
    for name, field in reader.fields.items():
        stats = reader.field_stats(name)
        if not isinstance(field, stoke.ImageField):
            assert not stats or "min_height" not in stats
            continue
        shown = [image(index).shape[:2] for index in (range(COUNT) if case.stored else case.indices[:1])]
        assert stats == {
            "min_height": min(h for h, _ in shown),
            "max_height": max(h for h, _ in shown),
            "min_width": min(w for _, w in shown),
            "max_width": max(w for _, w in shown),
        }


def test_an_unknown_field_is_refused_with_the_fields_there_are(case, packed_root):
    with pytest.raises(ConfigError, match=r"no field 'nothing'.*label"):
        if case.stored:
            reader_for(stoke.open(packed_root), ["label", "nothing"], "never")
        else:
            reader_for([{"label": 1}, {"label": 2}], ["label", "nothing"], "never")


# ---- a bad sample is a SampleError naming it -------------------------------------------------------------
class Flaky:
    """A user's dataset whose item 3 raises."""

    def __len__(self) -> int:
        return COUNT

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index == 3:
            raise OSError("disk went away")
        return {"label": index}


def test_a_live_item_that_fails_is_a_sample_error_naming_it():
    reader = reader_for(Flaky(), None, "never")
    assert reader.read(2) == [2]
    with pytest.raises(SampleError, match=r"sample 3\b.*disk went away") as caught:
        reader.read(3)
    assert caught.value.index == 3


def test_a_damaged_stored_sample_is_a_sample_error_naming_it(packed_root, tmp_path):
    copy = Path(shutil.copytree(packed_root, tmp_path / "ds"))
    dataset = stoke.open(copy)
    shard = dataset.manifest.shards[0]
    path = copy / shard.file
    data = bytearray(path.read_bytes())
    start = int(dataset.shard_reader(0).offsets[len(FIELDS)])  # sample 1's first field (its image)
    dataset.close()
    data[DATA_START + start + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    reader = reader_for(stoke.open(copy), None, "always")
    reader.read(0)
    with pytest.raises(SampleError, match=r"sample 1\b") as caught:
        reader.read(1)
    assert caught.value.index == 1
