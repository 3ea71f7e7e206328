"""Op semantics (torchvision's definitions) and the fused image path against a slow reference."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

import stoke
from helpers import encode, photo
from stoke.ops import CenterCrop, Geometry, Normalize, RandomHorizontalFlip, RandomResizedCrop, Resize, ToDevice
from stoke.rng import sample_uniforms, stream_id


@settings(max_examples=300)
@given(height=st.integers(1, 600), width=st.integers(1, 600), seed=st.integers(0, 10**6))
def test_random_resized_crop_box_obeys_scale_and_ratio(height, width, seed):
    op = RandomResizedCrop(32, scale=(0.25, 1.0), ratio=(0.75, 4 / 3))
    uniforms = sample_uniforms(seed, 0, 0, np.array([0]), op.draws)[0]
    top, left, crop_height, crop_width = op.crop_box(height, width, uniforms)
    assert top >= 0 and top + crop_height <= height and left >= 0 and left + crop_width <= width
    assert crop_height >= 1 and crop_width >= 1
    attempts_fit = any(
        0 < round(math.sqrt(t * r)) <= width and 0 < round(math.sqrt(t / r)) <= height
        for t, r in (
            (
                height * width * (0.25 + 0.75 * uniforms[4 * a]),
                math.exp(math.log(0.75) + math.log(16 / 9) * uniforms[4 * a + 1]),
            )
            for a in range(10)
        )
    )
    if attempts_fit:  # then the first fitting attempt is the crop, as in torchvision
        area = crop_height * crop_width / (height * width)
        assert 0.25 * 0.9 - 2 / min(height, width) <= area <= 1.0
    else:  # the fallback: the whole image, clamped to the ratio range, centred
        assert top == (height - crop_height) // 2 and left == (width - crop_width) // 2


def test_center_crop_matches_torchvision_including_padding():
    for extent, crop, expected in [(10, 4, 3), (11, 4, 4), (5, 8, -1), (6, 9, -1), (7, 7, 0)]:
        geometry = CenterCrop((crop, crop)).plan(Geometry.identity(extent, extent), np.empty(0))
        assert geometry.source_box()[:2] == (expected, expected)


def test_resize_shorter_side_like_torchvision():
    assert Resize(256).target(480, 640) == (256, 341)
    assert Resize(256).target(640, 480) == (341, 256)
    assert Resize((10, 20)).target(480, 640) == (10, 20)
    assert Resize(256).output_size(None) is None and Resize((3, 4)).output_size(None) == (3, 4)


def test_geometry_composition_maps_back_to_source_pixels():
    flipped = RandomHorizontalFlip(p=1.0).plan(Geometry.identity(10, 20), np.array([0.0]))
    cropped = flipped.crop(2, 3, 4, 5)  # columns 3..8 of the mirrored image are source columns 12..17
    assert cropped.source_box() == (2.0, 12.0, 6.0, 17.0, False, True)
    doubled = Geometry.identity(10, 20).crop(0, 0, 5, 10).resize(10, 20).crop(2, 4, 2, 2)
    assert doubled.source_box()[:4] == (1.0, 2.0, 2.0, 3.0)


def test_normalize_uint8_float_and_memory_format():
    op = Normalize(mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 1.0])
    batch = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    expected = (batch.float() / 255 - torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)) / torch.tensor(
        [0.5, 0.25, 1.0]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(op.apply(batch, None), expected)
    torch.testing.assert_close(op.apply(batch.float() / 255, None), expected)
    channels_last = op.apply(batch.contiguous(memory_format=torch.channels_last), None)
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    assert Normalize([0.5], [0.5], dtype=torch.bfloat16).apply(batch[:, :1], None).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"3 channels"):
        op.apply(batch[:, :1], None)


def test_to_device_and_bad_arguments():
    assert ToDevice("cpu").apply(torch.ones(2), None).device.type == "cpu"
    with pytest.raises(ValueError):
        RandomResizedCrop(0)
    with pytest.raises(ValueError):
        RandomHorizontalFlip(1.5)
    with pytest.raises(ValueError):
        Normalize([0.5], [0.0])


def reference_crop(data: bytes, mode: str, op, flip, uniforms_crop, uniforms_flip) -> np.ndarray:
    """Decode in full with Pillow (EXIF applied), crop, resize with Pillow's antialiased bilinear, flip."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert(mode)
    top, left, height, width = op.crop_box(image.height, image.width, uniforms_crop)
    region = image.crop((left, top, left + width, top + height)).resize(op.size[::-1], Image.BILINEAR)
    array = np.asarray(region)
    array = array[:, :, None] if array.ndim == 2 else array
    return array[:, ::-1] if uniforms_flip[0] < flip.p else array


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_fused_image_path_matches_the_reference(tmp_path, mode):
    rng = np.random.default_rng(1)
    records = []
    for index in range(24):
        height, width = int(rng.integers(31, 400)), int(rng.integers(31, 400))
        pixels = photo(height, width, seed=index)
        if index % 4 == 1:  # CMYK JPEG
            buffer = io.BytesIO()
            Image.fromarray(pixels).convert("CMYK").save(buffer, "JPEG", quality=92)
            data = buffer.getvalue()
        elif index % 4 == 2:  # EXIF-rotated
            exif = Image.Exif()
            exif[0x0112] = int(rng.integers(2, 9))
            data = encode(pixels, quality=92, exif=exif.tobytes())
        elif index % 4 == 3:  # grayscale PNG
            data = encode(pixels[:, :, 1], "PNG")
        else:
            data = encode(pixels, quality=92)
        records.append({"image": data})
    stoke.pack(records, tmp_path / "ds", fields={"image": stoke.ImageField(mode=mode)}, color_mode=mode, progress=False)
    dataset = stoke.open(tmp_path / "ds")
    crop, flip = RandomResizedCrop((48, 40), scale=(0.05, 1.0)), RandomHorizontalFlip()
    errors = []
    for seed in range(3):
        loader = stoke.Loader(dataset, batch_size=8, seed=seed, transforms={"image": [crop, flip]}, num_threads=2)
        for batch in loader:
            indices = batch["index"].numpy()
            crop_draws = sample_uniforms(seed, loader.epoch - 1, stream_id("image", 0), indices, crop.draws)
            flip_draws = sample_uniforms(seed, loader.epoch - 1, stream_id("image", 1), indices, flip.draws)
            for row, index in enumerate(indices):
                data = records[index]["image"]
                expected = reference_crop(data, mode, crop, flip, crop_draws[row], flip_draws[row])
                got = batch["image"][row].permute(1, 2, 0).numpy()
                assert got.shape == expected.shape
                errors.append(np.abs(got.astype(np.int16) - expected).mean())
    assert np.median(errors) < 2.5 and max(errors) < 6, (np.median(errors), max(errors))
