"""Crops, resizes and flips on the batch tensor (stoke.ops.geometry_batch) against the CPU image stage's render."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import stoke
from helpers import photo
from stoke.errors import ConfigError, SampleError
from stoke.ops import (
    CenterCrop,
    ColorJitter,
    GeometryOnBatch,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToDevice,
    render_batch,
)
from stoke.ops import geometry_batch as geometry_batch_module
from stoke.ops.base import BatchContext, Geometry
from stoke.ops.batched import OnBatch
from stoke.ops.geometry import plan_geometries
from stoke.ops.placement import split_ops
from stoke.pipeline.image import render
from stoke.rng import stream_id

# OpenCV resamples uint8 with 11-bit fixed-point weights, the batch in float: at most one grey level apart,
# a third of a level on average at worst (on noise; about a tenth on photos). Area averages agree exactly
# but for rounding.
MAX_LEVELS, MEAN_LEVELS = 1, 0.5


def cpu_render(image: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The CPU image stage's rendering of one HWC uint8 image, as CHW."""
    out = np.empty((image.shape[2], geometry.height, geometry.width), np.uint8)
    render(image, image.shape[0], image.shape[1], geometry, out, channels_last=False)
    return out


def as_batch(images: np.ndarray, dtype: torch.dtype = torch.uint8, channels_last: bool = False) -> torch.Tensor:
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    batch = batch.to(dtype) / 255.0 if dtype.is_floating_point else batch.contiguous()
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch.contiguous()


def assert_close_to_cpu(device: np.ndarray, cpu: np.ndarray) -> None:
    difference = np.abs(device.astype(np.float64) - cpu.astype(np.float64))
    assert difference.max() <= MAX_LEVELS, difference.max()
    # An average of a handful of pixels says nothing, nor one of outputs a row or a column thin: they sample
    # their source along one line, where interpolated values can fall halfway between two levels together
    # (hypothesis found a 1x20 output from a 4x39 image, every pixel 1 level off: a mean of 0.6).
    height, width = device.shape[-2:]  # (..., C, H, W)
    if difference.size >= 100 and min(height, width) >= 2:
        assert difference.mean() <= MEAN_LEVELS, difference.mean()


@settings(max_examples=60, deadline=None)
@given(
    size=st.tuples(st.integers(4, 70), st.integers(4, 70)),
    out=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    scale=st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0)).map(sorted),
    ratio=st.tuples(st.floats(0.3, 3.0), st.floats(0.3, 3.0)).map(sorted),
    flip=st.sampled_from([0.0, 0.5, 1.0]),
    dtype=st.sampled_from([torch.uint8, torch.float32, torch.float64]),
    channels=st.sampled_from([1, 3]),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_batch_render_matches_the_cpu_render_of_each_image(
    size, out, scale, ratio, flip, dtype, channels, channels_last, seed
):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (5, *size, channels), dtype=np.uint8)
    ops = [RandomResizedCrop(out, scale=tuple(scale), ratio=tuple(ratio)), RandomHorizontalFlip(flip)]
    geometries = plan_geometries(ops, *size, [rng.random((5, op.draws)) for op in ops], 5)
    batch = as_batch(images, dtype, channels_last)
    rendered = render_batch(batch, geometries)
    assert rendered.dtype == dtype and rendered.shape == (5, channels, *out)
    if channels_last and channels > 1 and out != (1, 1):
        assert rendered.is_contiguous(memory_format=torch.channels_last)
    scale_to_levels = 255.0 if dtype.is_floating_point else 1.0
    cpu = np.stack([cpu_render(image, geometry) for image, geometry in zip(images, geometries)])
    assert_close_to_cpu(rendered.numpy() * scale_to_levels, cpu)


@pytest.mark.parametrize("box", [(-3, -5, 20, 30), (4, 2, 10, 9), (-2, 10, 26, 8)])
def test_boxes_past_the_edges_are_zero_padded_as_on_the_cpu(box):
    images = np.stack([photo(18, 24, seed=s) for s in range(2)])
    geometries = [Geometry.identity(18, 24).crop(*box).resize(12, 15), Geometry.identity(18, 24).crop(*box)]
    geometries[1] = geometries[1].flip_horizontal()
    for geometry in geometries:
        rendered = render_batch(as_batch(images), [geometry, geometry])
        for image, device in zip(images, rendered):
            assert_close_to_cpu(device.numpy(), cpu_render(image, geometry))


def test_centre_crop_bigger_than_the_image_pads_black():
    images = np.full((1, 6, 6, 3), 200, np.uint8)
    rendered = render_batch(as_batch(images), plan_geometries([CenterCrop(10)], 6, 6, [None], 1))[0]
    assert rendered[:, 2:8, 2:8].eq(200).all() and rendered[:, :2].eq(0).all() and rendered[:, :, 8:].eq(0).all()


def test_strong_shrinks_average_areas_exactly_like_the_cpu_path():
    """A 4x shrink of a checkerboard: bilinear sampling would alias to black or white, area gives grey."""
    board = ((np.indices((32, 32)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)[None]
    geometry = Geometry.identity(32, 32).resize(8, 8)
    rendered = render_batch(as_batch(board), [geometry])[0].numpy()
    assert (rendered == cpu_render(board[0], geometry)).all()
    assert (np.abs(rendered.astype(int) - 128) <= 1).all()


class Counter:
    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


@pytest.mark.parametrize("count", [2, 64])
def test_a_batch_takes_a_fixed_number_of_resampling_calls_whatever_its_size(monkeypatch, count):
    grid_sample, box_means = Counter(F.grid_sample), Counter(geometry_batch_module._box_means)
    monkeypatch.setattr(F, "grid_sample", grid_sample)
    monkeypatch.setattr(geometry_batch_module, "_box_means", box_means)
    images = torch.zeros((count, 3, 40, 40), dtype=torch.uint8)
    # Half enlarge or barely shrink (bilinear), half shrink 4x (area averages).
    geometries = [
        Geometry.identity(40, 40).crop(0, 0, 12 if row % 2 else 40, 40).resize(10, 10) for row in range(count)
    ]
    rendered = render_batch(images, geometries)
    assert rendered.shape == (count, 3, 10, 10)
    assert grid_sample.calls == 1 and box_means.calls == 2  # one for columns, one for rows


def test_geometry_on_the_batch_depends_on_seed_epoch_and_index_only():
    images = as_batch(np.stack([photo(30, 40, seed=s) for s in range(6)]))
    op = GeometryOnBatch(
        [RandomResizedCrop(16), RandomHorizontalFlip()], [stream_id("image", 0), stream_id("image", 1)]
    )
    first = op.apply(images, BatchContext(0, 1, np.arange(6)))
    assert torch.equal(first, op.apply(images, BatchContext(0, 1, np.arange(6))))
    assert torch.equal(first[2:4], op.apply(images[2:4], BatchContext(0, 1, np.arange(2, 4))))
    assert not torch.equal(first, op.apply(images, BatchContext(1, 1, np.arange(6))))
    assert not torch.equal(first, op.apply(images, BatchContext(0, 2, np.arange(6))))


def test_sample_ops_after_a_batch_op_keep_the_streams_of_their_cpu_positions():
    crop, flip, jitter = RandomResizedCrop(8), RandomHorizontalFlip(), ColorJitter(0.2)
    _, _, moved = split_ops("image", [ToDevice("cpu"), crop, flip, jitter])
    assert isinstance(moved[1], GeometryOnBatch) and moved[1].ops == [crop, flip]
    assert moved[1].streams == [stream_id("image", 0), stream_id("image", 1)]
    assert isinstance(moved[2], OnBatch) and moved[2].stream == stream_id("image", 2)
    _, _, split = split_ops("image", [Resize((20, 20)), ToDevice("cpu"), crop])
    assert split[1].streams == [stream_id("image", 1)]


def test_orders_the_cpu_path_would_not_have_are_refused():
    with pytest.raises(ConfigError, match=r"geometric op RandomResizedCrop.* after ColorJitter"):
        split_ops("image", [ToDevice("cpu"), ColorJitter(0.2), RandomResizedCrop(8)])
    with pytest.raises(ConfigError, match=r"geometric op RandomHorizontalFlip.* after ColorJitter"):
        split_ops("image", [ColorJitter(0.2), ToDevice("cpu"), RandomHorizontalFlip()])
    with pytest.raises(ConfigError, match=r"after Normalize.*0-255"):
        split_ops("image", [ToDevice("cpu"), Normalize([0.5], [0.5]), CenterCrop(8)])


def test_bad_batches_are_refused_with_a_clear_message():
    geometry = Geometry.identity(8, 8).crop(0, 0, 4, 4)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        render_batch(torch.zeros((8, 8, 3), dtype=torch.uint8), [geometry])
    with pytest.raises(ValueError, match=r"2 geometries for a batch of 1"):
        render_batch(torch.zeros((1, 3, 8, 8)), [geometry, geometry])
    with pytest.raises(ValueError, match=r"uint8 or floating-point"):
        render_batch(torch.zeros((1, 3, 8, 8), dtype=torch.int32), [geometry])
    with pytest.raises(SampleError, match=r"2 sizes"):
        render_batch(torch.zeros((2, 3, 8, 8)), [geometry, geometry.resize(3, 3)])


@pytest.fixture(scope="module")
def fixed_size(tmp_path_factory: pytest.TempPathFactory) -> stoke.Dataset:
    """20 raw-stored 72x60 photos: a crop of one is at most 3x the 20-pixel output (bilinear and area)."""
    root = tmp_path_factory.mktemp("fixed")
    records = [{"image": Image.fromarray(photo(72, 60, seed=index)), "label": index % 2} for index in range(20)]
    stoke.pack(records, root / "ds", fields={"image": stoke.ImageField(encoding="raw")}, progress=False)
    return stoke.open(root / "ds")


def batches(dataset, ops, **options):
    with stoke.Loader(dataset, batch_size=8, seed=3, transforms={"image": ops}, num_threads=2, **options) as loader:
        return list(loader)


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_loader_crops_the_same_on_the_cpu_and_after_to_device(fixed_size, channels_last):
    geometry = [RandomResizedCrop(20, scale=(0.08, 1.0)), RandomHorizontalFlip()]
    per_image = batches(fixed_size, [*geometry, ColorJitter(0.3, 0.3)], channels_last=channels_last)
    on_batch = batches(fixed_size, [ToDevice("cpu"), *geometry, ColorJitter(0.3, 0.3)], channels_last=channels_last)
    uncropped = batches(fixed_size, [ToDevice("cpu")])
    assert len(per_image) == len(on_batch) == 3
    for cpu, device, plain in zip(per_image, on_batch, uncropped):
        assert torch.equal(cpu["index"], device["index"]) and device["image"].shape == (len(cpu["index"]), 3, 20, 20)
        assert device["image"].is_contiguous(memory_format=torch.channels_last) == channels_last
        difference = (cpu["image"].int() - device["image"].int()).abs().float()
        assert difference.max() <= MAX_LEVELS + 1 and difference.mean() <= MEAN_LEVELS  # + the jitter's level
        assert plain["image"].shape[-2:] == (72, 60)


def test_a_crop_after_to_device_needs_images_of_one_size(photos):
    with pytest.raises(ConfigError, match=r"different sizes.*before the batch ops.*a crop after ToDevice"):
        stoke.Loader(photos, batch_size=2, transforms={"image": [ToDevice("cpu"), RandomResizedCrop(8)]})
