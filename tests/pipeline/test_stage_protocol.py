"""The field-stage protocol (stoke.pipeline.stage), one suite run against every stage kind and both readers.

Every stage is built by ``stage_for`` for a field of a small dataset, packed (stored records) or live (the
same values from a user's dataset), and driven the way the Loader drives it: buffers from
``buffer_specs``/``list_names``, ``draw``, one ``run`` per sample, ``collect``, then the batch ops. The
checks: what comes out is what the stage declared; a sample comes out the same in any row (randomness keyed
by dataset index, no state carried between rows); stored and live values of the same data give the same
batch; a stored JPEG decodes only the region a crop needs, at a reduced scale, with the same pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image

import stoke
from helpers import encode, photo
from stoke.device import jpeg
from stoke.device.jpeg import CompressedImageStage
from stoke.format.fields import jpeg_region
from stoke.ops import CenterCrop, ColorJitter, RandomHorizontalFlip, RandomResizedCrop, RandomSwap, Resize, ToDevice
from stoke.ops.base import BatchContext
from stoke.pipeline.buffers import BufferPool
from stoke.pipeline.image import ImageStage
from stoke.pipeline.inputs import LiveImages, StoredImages
from stoke.pipeline.reader import LiveReader, reader_for
from stoke.pipeline.stage import FieldStage, stage_for
from stoke.pipeline.values import ValueStage
from stoke.sources import DatasetSource

COUNT = 7
FIELDS = {
    "photo": stoke.ImageField(encoding="png"),  # lossless: live pixels and stored pixels are the same
    "gray": stoke.ImageField(mode="L", encoding="raw"),
    "jpeg": stoke.ImageField(encoding="keep"),
    "vector": stoke.NDArrayField("float64", (4,)),
    "tokens": stoke.NDArrayField("int32", (None,)),
    "label": stoke.IntField(),
    "score": stoke.FloatField(),
    "blob": stoke.BytesField(),
    "caption": stoke.TextField(),
    "meta": stoke.JsonField(),
}
CROP = [RandomResizedCrop(12, scale=(0.3, 1.0)), RandomHorizontalFlip()]
# (field, ops, channels_last): the stage kinds, with and without random ops.
CASES = [
    ("photo", CROP, False),
    ("photo", [Resize((10, 14)), ColorJitter(0.4, 0.4)], True),  # a pixel op, HWC rows
    ("photo", [Resize((16, 16)), ToDevice("cpu"), RandomResizedCrop(8), RandomHorizontalFlip()], False),
    ("gray", [CenterCrop(12), RandomHorizontalFlip()], False),
    ("jpeg", CROP, False),
    ("vector", [], False),
    ("tokens", [], False),
    ("label", [], False),
    ("score", [], False),
    ("blob", [], False),
    ("caption", [RandomSwap(2)], False),
    ("meta", [], False),
]


def items() -> list[dict]:
    """The dataset's values, as a user's dataset would return them (images as Pillow images, JPEGs as bytes)."""
    values = []
    for index in range(COUNT):
        height, width = 20 + 3 * index, 30 - 2 * index
        values.append(
            {
                "photo": Image.fromarray(photo(height, width, seed=index)),
                "gray": Image.fromarray(photo(height + 1, width, seed=20 + index)[..., 0]),
                "jpeg": encode(photo(height, width + 4, seed=40 + index), quality=90),
                "vector": np.linspace(index, index + 1, 4),
                "tokens": np.arange(index % 4 + 1, dtype=np.int32) + index,
                "label": index % 3,
                "score": index / 4,
                "blob": bytes(range(index)),
                "caption": " ".join(f"word{k}" for k in range(index % 3 + 2)),
                "meta": {"index": index, "tags": ["a"] * (index % 2)},
            }
        )
    return values


@pytest.fixture(scope="module")
def readers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The same items behind both reader kinds: ``packed`` (stoke.open) and ``live`` (the user's dataset)."""
    root = tmp_path_factory.mktemp("stages") / "ds"
    stoke.pack(items(), root, fields=FIELDS, shard_items=3, progress=False)
    packed = reader_for(stoke.open(root), None, "always")
    return {"packed": packed, "live": LiveReader(DatasetSource(items(), fields=FIELDS))}


def cpu_decoder(payloads: list[torch.Tensor], mode: str, device: torch.device) -> list[torch.Tensor]:
    """nvJPEG's stand-in for the device stage: libjpeg-turbo, full size, CHW."""
    colorspace = "RGB" if mode == "RGB" else "GRAY"
    return [
        torch.from_numpy(simplejpeg.decode_jpeg(p.numpy().tobytes(), colorspace=colorspace)).permute(2, 0, 1)
        for p in payloads
    ]


def build(reader, name: str, ops, channels_last: bool = False, decode: str = "cpu") -> FieldStage:
    return stage_for(name, ops, reader, decode, torch.device("cpu"), channels_last, True)


def produce(stage: FieldStage, reader, positions, seed: int = 3, epoch: int = 1) -> dict[str, object]:
    """One batch of ``positions`` through ``stage``, the way the Loader drives it, batch ops included."""
    return drive(stage, reader, positions, seed, epoch)[1]


def drive(stage: FieldStage, reader, positions, seed: int = 3, epoch: int = 1) -> tuple[dict, dict]:
    """(what ``collect`` returned, the outputs after the batch ops) for one batch of ``positions``."""
    buffers = BufferPool(stage.buffer_specs(), len(positions), pin=False, list_names=tuple(stage.list_names()))
    batch = buffers.acquire()
    indices = reader.dataset_index(np.asarray(positions))
    params = stage.draw(seed, epoch, indices)
    column = list(reader.fields).index(stage.name)
    for row, position in enumerate(positions):
        stage.run(reader.read(position)[column], params, row, batch)
        reader.check_read(position)
    collected = stage.collect(batch, len(positions))
    assert set(collected) == set(stage.output_names())
    outputs = dict(collected)
    context = BatchContext(seed, epoch, indices)
    for op in stage.batch_ops:
        outputs[stage.name] = op.apply(outputs[stage.name], context)
    return collected, outputs


def rows(outputs: dict[str, object], order: list[int]) -> dict[str, object]:
    """Each output's rows put back in position order (``order[k]`` is the row holding position k)."""
    result = {}
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor):
            result[key] = value[order]
        else:
            result[key] = [value[k] for k in order]
    return result


def assert_same(first: dict[str, object], second: dict[str, object]) -> None:
    assert first.keys() == second.keys()
    for key in first:
        a, b = first[key], second[key]
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), key
        else:
            assert len(a) == len(b) and all(
                np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a, b)
            ), key


@pytest.fixture
def device_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """decode="device" runs here: nvJPEG "available", decoding with :func:`cpu_decoder`."""
    monkeypatch.setattr(jpeg, "nvjpeg_unavailable", lambda device: None)
    monkeypatch.setattr(jpeg, "torchvision_decoder", cpu_decoder)


def stage_cases() -> list:
    cases = [
        pytest.param(kind, name, ops, channels_last, "cpu", id=f"{kind}-{name}-{'-'.join(map(label, ops))}")
        for kind in ("packed", "live")
        for name, ops, channels_last in CASES
        # a live JPEG is decoded by Pillow, a stored one by libjpeg-turbo: the suite compares it stored only
        if not (name == "jpeg" and kind == "live")
    ]
    return [*cases, pytest.param("packed", "jpeg", CROP, False, "device", id="packed-jpeg-device")]


def label(op: object) -> str:
    return type(op).__name__


# ---- what a stage declares is what it fills ---------------------------------------------------------------
@pytest.mark.parametrize(("kind", "name", "ops", "channels_last", "decode"), stage_cases())
def test_a_stage_fills_what_it_declares(readers, device_decode, kind, name, ops, channels_last, decode):
    reader = readers[kind]
    stage = build(reader, name, ops, channels_last, decode)
    assert isinstance(stage, FieldStage)
    is_image = isinstance(reader.fields[name], stoke.ImageField)
    kind_built = CompressedImageStage if decode == "device" else ImageStage if is_image else ValueStage
    assert type(stage) is kind_built
    collected, outputs = drive(stage, reader, list(range(COUNT)))
    for key, (shape, dtype) in stage.buffer_specs().items():
        if key in collected:  # a batch array handed out as it is: one row per sample, as declared
            tensor = collected[key]
            assert tensor.dtype == torch.from_numpy(np.empty(0, dtype)).dtype, key
            expected = (COUNT, shape[2], shape[0], shape[1]) if channels_last else (COUNT, *shape)
            assert tuple(tensor.shape) == expected, key
    for key, value in outputs.items():
        assert len(value) == COUNT, key
    if isinstance(reader.fields[name], stoke.ImageField):  # NCHW uint8 at the size the ops end with
        size = None
        for op in ops:
            size = op.output_size(size) if hasattr(op, "output_size") and hasattr(op, "plan") else size
        image = outputs[name]
        assert image.dtype == torch.uint8 and tuple(image.shape) == (COUNT, stage.field.channels, *size)


@pytest.mark.parametrize(("kind", "name", "ops", "channels_last", "decode"), stage_cases())
def test_a_sample_comes_out_the_same_in_any_row(readers, device_decode, kind, name, ops, channels_last, decode):
    reader = readers[kind]
    stage = build(reader, name, ops, channels_last, decode)
    forward = produce(stage, reader, list(range(COUNT)))
    shuffled_positions = [4, 0, 6, 2, 5, 1, 3]
    shuffled = produce(stage, reader, shuffled_positions)
    order = [shuffled_positions.index(position) for position in range(COUNT)]
    assert_same(rows(shuffled, order), forward)


@pytest.mark.parametrize("name", ["photo", "jpeg", "caption"])
def test_random_ops_draw_from_the_seed_and_epoch(readers, device_decode, name):
    ops = [RandomSwap(2)] if name == "caption" else CROP
    stage = build(readers["packed"], name, ops)
    positions = list(range(COUNT))
    same = produce(stage, readers["packed"], positions, seed=3, epoch=1)
    assert_same(produce(stage, readers["packed"], positions, seed=3, epoch=1), same)
    other = produce(stage, readers["packed"], positions, seed=3, epoch=2)
    if name == "caption":
        assert other[name] != same[name]
    else:
        assert not torch.equal(other[name], same[name])


# ---- stored and live values: one code path, the same batch ------------------------------------------------
@pytest.mark.parametrize(("name", "ops", "channels_last"), [case for case in CASES if case[0] != "jpeg"])
def test_stored_and_live_values_give_the_same_batch(readers, name, ops, channels_last):
    packed, live = readers["packed"], readers["live"]
    stored_stage, live_stage = build(packed, name, ops, channels_last), build(live, name, ops, channels_last)
    assert type(stored_stage) is type(live_stage)
    positions = [3, 1, 6, 0]
    assert_same(produce(stored_stage, packed, positions), produce(live_stage, live, positions))


def test_a_live_image_is_coerced_once_per_sample(readers, monkeypatch):
    calls = []
    coerce = stoke.ImageField.coerce

    def counting(self, value):
        calls.append(value)
        return coerce(self, value)

    stage = build(readers["live"], "photo", CROP)
    assert isinstance(stage.images, LiveImages)
    monkeypatch.setattr(stoke.ImageField, "coerce", counting)
    produce(stage, readers["live"], [0, 1, 2])
    assert len(calls) == 3


# ---- a stored JPEG: only the region a crop needs, at a reduced scale, the same pixels -----------------------
@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory: pytest.TempPathFactory) -> stoke.Dataset:
    root = tmp_path_factory.mktemp("large") / "ds"
    records = [{"image": encode(photo(256, 320, seed=seed), quality=90)} for seed in range(3)]
    stoke.pack(records, root, fields={"image": stoke.ImageField()}, progress=False)
    return stoke.open(root)


def test_a_stored_jpeg_decodes_only_the_region_the_crop_needs(large_jpeg):
    assert jpeg_region.available(), "libturbojpeg 3 (the region decoder) is part of the default install"
    reader = reader_for(large_jpeg, None, "once")
    stage = build(reader, "image", [CenterCrop(128), Resize((24, 24))])
    images = stage.images
    assert isinstance(images, StoredImages)
    record = reader.read(0)[0]
    height, width, header = images.open(record)
    assert (height, width) == (256, 320)
    geometry = stage.plan(height, width, stage.draw(0, 0, np.array([0])), 0)
    pixels, origin, decoded = images.pixels(record, header, geometry, True, True)
    assert decoded == (64, 80)  # 1/4 scale: the 128-pixel crop still has more than 24 pixels a side
    assert pixels.shape[0] < decoded[0] and pixels.shape[1] < decoded[1] and origin != (0, 0)
    region = pixels.copy()
    whole, whole_origin, whole_decoded = images.pixels(record, header, geometry, True, False)
    assert whole.shape[:2] == (64, 80) and whole_origin == (0, 0) and whole_decoded is None
    assert np.shares_memory(pixels, whole)  # both decoded into the thread's one buffer: nothing allocated
    top, left = origin
    assert np.array_equal(whole[top : top + region.shape[0], left : left + region.shape[1]], region)
    region_rows = produce(stage, reader, [0, 1, 2])["image"]
    stage.region_decode = False
    assert torch.equal(produce(stage, reader, [0, 1, 2])["image"], region_rows)
