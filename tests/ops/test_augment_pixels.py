"""Image augmentations: the CPU path (one uint8 HWC image) against the batched torch path, and properties.

Both paths derive their parameters from the same uniforms with the same function, so they must agree image
by image. Tolerance: one grey level (OpenCV quantises warp positions to 1/32 pixel and rounds its own way;
float arithmetic differs in the last bits), with at most 1% of pixels off by that one level, except where
stated exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import photo
from stoke.ops import ColorJitter, Cutout, GaussianBlur, Grayscale, RandomGrayscale, RandomRotation
from stoke.rng import sample_uniforms

OPS = [
    RandomRotation(45),
    RandomRotation((-180, 180), fill=(10, 200, 30)),
    ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
    ColorJitter(hue=0.5),
    ColorJitter(contrast=(0.0, 3.0), saturation=(0.0, 3.0)),
    RandomGrayscale(p=0.5),
    Grayscale(),
    GaussianBlur(5, sigma=(0.1, 3.0)),
    GaussianBlur((3, 7), sigma=(0.5, 1.5)),
    Cutout(size=(7, 5), count=3, fill=(1, 2, 3)),
    Cutout(scale=(0.05, 0.3), count=2, fill=128),
]
EXACT = (Cutout, RandomGrayscale)  # integer boxes; OpenCV's own fixed-point grey weights


def images(count=12, height=33, width=47, channels=3):
    stack = np.stack([photo(height, width, seed=seed) for seed in range(count)])
    return np.ascontiguousarray(stack[..., :channels])


def on_cpu(op, stack, uniforms):
    """The reference: apply_pixels on each image alone, as the Loader's workers do."""
    out = []
    for image, row in zip(stack, uniforms):
        image = image.copy()
        result = op.apply_pixels(image, row)
        out.append(image if result is None else result)
    return np.stack(out)


def on_batch(op, stack, uniforms, dtype=torch.uint8, channels_last=False):
    batch = torch.from_numpy(stack).permute(0, 3, 1, 2)
    batch = batch if channels_last else batch.contiguous()
    if dtype.is_floating_point:
        batch = batch.to(dtype) / 255
    out = op.apply_batch(batch, torch.from_numpy(uniforms))
    assert out.dtype == dtype and out.shape == batch.shape
    return out


def assert_close(cpu, batched, op):
    difference = np.abs(cpu.astype(np.int16) - batched.astype(np.int16))
    if isinstance(op, EXACT):
        assert difference.max() == 0, f"{op!r}: the two paths differ"
    else:
        assert difference.max() <= 1, f"{op!r}: the paths differ by {difference.max()} grey levels"
        assert (difference > 0).mean() <= 0.01, f"{op!r}: {(difference > 0).mean():.2%} of pixels differ"


@pytest.mark.parametrize("op", OPS, ids=repr)
@pytest.mark.parametrize("seed", [0, 1])
def test_cpu_and_batched_paths_agree_image_by_image(op, seed):
    stack = images()
    uniforms = sample_uniforms(seed, 0, 3, np.arange(len(stack)), op.draws)
    cpu = on_cpu(op, stack, uniforms)
    batched = on_batch(op, stack, uniforms).permute(0, 2, 3, 1).numpy()
    assert_close(cpu, batched, op)
    assert not np.array_equal(cpu, stack)  # the op did something


@pytest.mark.parametrize("op", [op for op in OPS if not isinstance(op, (ColorJitter, RandomGrayscale))], ids=repr)
def test_one_channel_images_agree_too(op):
    stack = images(channels=1)
    if isinstance(op, (RandomRotation, Cutout)) and len(op.fill) > 1:
        with pytest.raises(ValueError, match=r"3 fill values for a 1-channel image"):
            on_cpu(op, stack, sample_uniforms(0, 0, 3, np.arange(len(stack)), op.draws))
        return
    uniforms = sample_uniforms(0, 0, 3, np.arange(len(stack)), op.draws)
    assert_close(on_cpu(op, stack, uniforms), on_batch(op, stack, uniforms).permute(0, 2, 3, 1).numpy(), op)


def test_jitter_and_grayscale_leave_the_colour_of_one_channel_images_alone():
    stack = images(channels=1)
    uniforms = sample_uniforms(0, 0, 3, np.arange(len(stack)), 4)
    for op in (ColorJitter(saturation=(0.0, 0.0), hue=0.5), Grayscale()):
        rows = uniforms[:, : op.draws]
        assert np.array_equal(on_cpu(op, stack, rows), stack)
        assert np.array_equal(on_batch(op, stack, rows).permute(0, 2, 3, 1).numpy(), stack)


@pytest.mark.parametrize("op", OPS, ids=repr)
def test_float_batches_follow_the_uint8_semantics_and_memory_format_is_kept(op):
    stack = images(count=4)
    uniforms = sample_uniforms(5, 1, 9, np.arange(4), op.draws)
    as_uint8 = on_batch(op, stack, uniforms, channels_last=True)
    as_float = on_batch(op, stack, uniforms, dtype=torch.float32, channels_last=True)
    assert as_uint8.is_contiguous(memory_format=torch.channels_last)
    assert as_float.is_contiguous(memory_format=torch.channels_last)
    # uint8 rounds to whole grey levels, floats do not: half a level apart (plus float and fixed-point error).
    assert (as_float * 255 - as_uint8.float()).abs().max() <= 0.5 + 1e-2


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_batched_ops_run_where_the_batch_is(device):
    stack = images(count=4)
    for op in OPS:
        uniforms = sample_uniforms(0, 0, 1, np.arange(4), op.draws)
        batch = torch.from_numpy(stack).permute(0, 3, 1, 2).to(device)
        out = op.apply_batch(batch, uniforms)
        assert out.device.type == device
        assert_close(on_cpu(op, stack, uniforms), out.permute(0, 2, 3, 1).cpu().numpy(), op)


# ---- properties --------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(height=st.integers(2, 40), width=st.integers(2, 40), channels=st.sampled_from([1, 3]))
def test_rotation_by_zero_is_the_identity_and_by_a_half_turn_is_rot90_twice(height, width, channels):
    stack = images(count=2, height=height, width=width, channels=channels)
    for degrees, expected in ((0, stack), (180, np.rot90(stack, 2, axes=(1, 2)))):
        op = RandomRotation((degrees, degrees))
        uniforms = np.full((2, 1), 0.5)
        assert np.array_equal(on_cpu(op, stack, uniforms), expected)
        assert np.array_equal(on_batch(op, stack, uniforms).permute(0, 2, 3, 1).numpy(), expected)


def test_quarter_turn_is_counter_clockwise_and_corners_take_the_fill():
    square = images(count=1, height=9, width=9)
    op = RandomRotation((90, 90))
    assert np.array_equal(on_cpu(op, square, np.full((1, 1), 0.5)), np.rot90(square, 1, axes=(1, 2)))
    tilted = RandomRotation((45, 45), fill=(10, 200, 30))
    wide = images(count=1, height=20, width=40)
    uniforms = np.full((1, 1), 0.5)
    for pixels in (on_cpu(tilted, wide, uniforms), on_batch(tilted, wide, uniforms).permute(0, 2, 3, 1).numpy()):
        assert pixels[0, 0, 0].tolist() == [10, 200, 30] and pixels[0, -1, -1].tolist() == [10, 200, 30]


@settings(max_examples=30, deadline=None)
@given(value=st.integers(0, 255), sigma=st.floats(0.1, 5.0), size=st.sampled_from([3, 5, (3, 9)]))
def test_blur_keeps_a_constant_image_constant(value, sigma, size):
    op = GaussianBlur(size, sigma=(sigma, sigma))
    stack = np.full((2, 11, 13, 3), value, np.uint8)
    uniforms = np.zeros((2, 1))
    assert np.array_equal(on_cpu(op, stack, uniforms), stack)
    assert np.array_equal(on_batch(op, stack, uniforms).permute(0, 2, 3, 1).numpy(), stack)


def test_blur_kernel_is_torchvisions_and_small_images_are_refused():
    kernel = GaussianBlur(5, sigma=(1.5, 1.5)).kernels(np.zeros((1, 1)), 5)[0]
    x = np.arange(5) - 2.0
    expected = np.exp(-(x**2) / (2 * 1.5**2))
    assert np.allclose(kernel, expected / expected.sum(), atol=1e-7)
    with pytest.raises(ValueError, match=r"a 2x9 image is too small for GaussianBlur's 5x5 kernel"):
        GaussianBlur(5).apply_pixels(np.zeros((2, 9, 3), np.uint8), np.array([0.5]))


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 30),
    width=st.integers(1, 30),
    count=st.integers(1, 3),
    by_scale=st.booleans(),
    seed=st.integers(0, 10**6),
)
def test_cutout_fills_exactly_the_drawn_boxes(height, width, count, by_scale, seed):
    op = Cutout(scale=(0.0, 0.5), count=count, fill=(7, 8, 9)) if by_scale else Cutout(size=(5, 3), count=count)
    stack = np.full((3, height, width, 3), 200, np.uint8)
    uniforms = sample_uniforms(seed, 0, 0, np.arange(3), op.draws)
    boxes = op.boxes(uniforms, height, width)
    expected = stack.copy()
    for row, sample_boxes in enumerate(boxes):
        for top, left, bottom, right in sample_boxes:
            assert 0 <= top <= bottom <= height and 0 <= left <= right <= width
            expected[row, top:bottom, left:right] = op.fill if by_scale else 0
    assert np.array_equal(on_cpu(op, stack, uniforms), expected)
    assert np.array_equal(on_batch(op, stack, uniforms).permute(0, 2, 3, 1).numpy(), expected)


def test_cutout_box_is_centred_on_the_drawn_pixel_and_clipped():
    op = Cutout(size=(4, 6))
    assert op.boxes(np.array([[0.5, 0.5]]), 10, 10).tolist() == [[[3, 2, 7, 8]]]
    assert op.boxes(np.array([[0.0, 0.999]]), 10, 10).tolist() == [[[0, 6, 2, 10]]]


def test_grayscale_makes_equal_channels_and_random_grayscale_picks_by_p():
    stack = images(count=8)
    uniforms = np.linspace(0, 0.99, 8)[:, None]
    op = RandomGrayscale(p=0.5)
    for out in (on_cpu(op, stack, uniforms), on_batch(op, stack, uniforms).permute(0, 2, 3, 1).numpy()):
        grey = (out[..., 0] == out[..., 1]).all(axis=(1, 2)) & (out[..., 1] == out[..., 2]).all(axis=(1, 2))
        assert grey.tolist() == (uniforms[:, 0] < 0.5).tolist()
        assert np.array_equal(out[~grey], stack[~grey])
    expected = np.rint(stack.astype(np.float64) @ [0.299, 0.587, 0.114])
    assert np.abs(on_cpu(Grayscale(), stack, np.empty((8, 0)))[..., 0] - expected).max() <= 1


def test_color_jitter_semantics_on_known_colours():
    red = np.zeros((1, 2, 2, 3), np.uint8)
    red[..., 0] = 255
    third_turn = ColorJitter(hue=(1 / 3, 1 / 3))  # red -> green
    half_brightness = ColorJitter(brightness=(0.5, 0.5))
    no_saturation = ColorJitter(saturation=(0.0, 0.0))  # -> grey
    no_contrast = ColorJitter(contrast=(0.0, 0.0))  # -> the mean grey level everywhere
    mixed = images(count=1, height=5, width=6)
    mean_grey = np.rint((mixed[0].astype(np.float64) @ [0.299, 0.587, 0.114]).mean())
    cases = [
        (third_turn, red, [0, 255, 0]),
        (half_brightness, red, [128, 0, 0]),  # 127.5: within the one-level tolerance either way
        (no_saturation, red, [76, 76, 76]),
        (no_contrast, mixed, [mean_grey] * 3),
    ]
    for op, stack, pixel in cases:
        uniforms = np.full((1, 4), 0.5)
        for out in (on_cpu(op, stack, uniforms), on_batch(op, stack, uniforms).permute(0, 2, 3, 1).numpy()):
            assert np.abs(out.reshape(-1, 3).astype(int) - np.array(pixel)).max() <= 1, (op, out[0, 0, 0])


def test_factors_follow_torchvisions_ranges():
    op = ColorJitter(brightness=0.4, contrast=(0.2, 0.5), saturation=2.0, hue=0.1)
    low, high = op.factors(np.zeros((1, 4)))[0], op.factors(np.full((1, 4), 1.0))[0]
    assert np.allclose(low, [0.6, 0.2, 0.0, -0.1]) and np.allclose(high, [1.4, 0.5, 3.0, 0.1])
    assert np.allclose(ColorJitter().factors(np.full((2, 4), 0.3)), [[1, 1, 1, 0]] * 2)


def test_bad_settings_are_refused_with_a_sentence():
    for make, message in [
        (lambda: RandomRotation(-1), "non-negative"),
        (lambda: RandomRotation(10, fill=300), "grey level 0-255"),
        (lambda: ColorJitter(brightness=-0.1), "brightness must be"),
        (lambda: ColorJitter(hue=0.7), "hue must be in"),
        (lambda: RandomGrayscale(p=2), "between 0 and 1"),
        (lambda: GaussianBlur(4), "must be odd"),
        (lambda: GaussianBlur(3, sigma=(2, 1)), "0 < low <= high"),
        (lambda: Cutout(), "either size="),
        (lambda: Cutout(size=4, scale=(0.1, 0.2)), "either size="),
        (lambda: Cutout(scale=(0.5, 2)), "0 <= low <= high <= 1"),
        (lambda: Cutout(size=4, count=0), "positive integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            make()
    with pytest.raises(ValueError, match=r"expects an image batch \[B, C, H, W\]"):
        GaussianBlur(3).apply_batch(torch.zeros(3, 4, 4, dtype=torch.uint8), np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"uniforms for 2 samples for a batch of 3"):
        GaussianBlur(3).apply_batch(torch.zeros(3, 3, 4, 4, dtype=torch.uint8), np.zeros((2, 1)))
