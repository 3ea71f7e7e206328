"""stoke's crop-resize-flip kernel (``stoke.pipeline.resample``): its SIMD path against its scalar reference
(bit for bit), both against exact bilinear interpolation and OpenCV (within one grey level), its checks on
what it is given, and the image stage with and without it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import photo
from stoke.ops.base import Geometry
from stoke.pipeline import image as image_stage
from stoke.pipeline import resample

pytestmark = pytest.mark.skipif(
    not resample.compiled(), reason="stoke's resize kernel was not compiled on this machine (no C compiler at install)"
)
needs_simd = pytest.mark.skipif(
    resample.compiled() and resample.backend() == "opencv",
    reason="this CPU lacks AVX-512 VBMI (or STOKE_RESAMPLE=opencv): only the scalar reference runs here",
)


def exact_bilinear(source: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear interpolation in float64 with OpenCV's pixel-centre mapping and edge clamping."""

    def taps(size_out: int, size_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
        first = np.floor(f).astype(int)
        frac = f - first
        frac[first < 0], first[first < 0] = 0.0, 0
        frac[first >= size_in - 1], first[first >= size_in - 1] = 0.0, size_in - 1
        return first, np.minimum(first + 1, size_in - 1), frac

    y0, y1, fy = taps(height, source.shape[0])
    x0, x1, fx = taps(width, source.shape[1])
    s = source.astype(np.float64)
    fx = fx[None, :, None]
    top = s[y0][:, x0] * (1 - fx) + s[y0][:, x1] * fx
    bottom = s[y1][:, x0] * (1 - fx) + s[y1][:, x1] * fx
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def arrange(image: np.ndarray, planar: bool, flip_x: bool, flip_y: bool) -> np.ndarray:
    image = image[:, ::-1] if flip_x else image
    image = image[::-1] if flip_y else image
    return image.transpose(2, 0, 1) if planar else image


cases = st.tuples(
    st.integers(1, 4),  # channels
    st.integers(1, 260),  # source height
    st.integers(1, 260),  # source width
    st.integers(1, 130),  # target height
    st.integers(1, 130),  # target width
    st.booleans(),  # planar
    st.booleans(),  # flip_x
    st.booleans(),  # flip_y
    st.integers(0, 2**32 - 1),  # pixels
)


def source_and_shape(case: tuple) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The case's source, noise (the hardest case for rounding) as a strided view inside a larger image,
    and its target's shape."""
    channels, height, width, out_height, out_width, planar, _, _, seed = case
    rng = np.random.default_rng(seed)
    source = rng.integers(0, 256, (height + 3, width + 5, channels), np.uint8)[1 : 1 + height, 2 : 2 + width]
    return source, (channels, out_height, out_width) if planar else (out_height, out_width, channels)


@needs_simd
@settings(max_examples=150, deadline=None)
@given(cases)
def test_simd_path_equals_the_scalar_reference_bit_for_bit(case):
    _, _, _, _, _, planar, flip_x, flip_y, _ = case
    source, shape = source_and_shape(case)
    simd, scalar = np.full(shape, 7, np.uint8), np.full(shape, 9, np.uint8)
    resample.resize(source, simd, planar=planar, flip_x=flip_x, flip_y=flip_y)
    resample.resize(source, scalar, planar=planar, flip_x=flip_x, flip_y=flip_y, simd=False)
    np.testing.assert_array_equal(simd, scalar)


@settings(max_examples=120, deadline=None)
@given(cases)
def test_within_one_grey_level_of_exact_bilinear(case):
    _, _, _, out_height, out_width, planar, flip_x, flip_y, _ = case
    source, shape = source_and_shape(case)
    out = np.empty(shape, np.uint8)
    resample.resize(source, out, planar=planar, flip_x=flip_x, flip_y=flip_y, simd=resample.available())
    expected = arrange(exact_bilinear(source, out_height, out_width), planar, flip_x, flip_y)
    assert np.abs(out - expected).max() < 1.0


def test_close_to_opencv_on_photographs():
    """The crops the benchmark makes (300 px to 224, up and down), against OpenCV's INTER_LINEAR."""
    image = photo(375, 500, seed=3)
    for box in [(20, 40, 320, 340), (100, 100, 250, 250), (0, 0, 375, 430), (5, 7, 90, 400)]:
        region = image[box[0] : box[2], box[1] : box[3]]
        ours = np.empty((224, 224, 3), np.uint8)
        resample.resize(region, ours, planar=False, flip_x=False, flip_y=False, simd=resample.available())
        theirs = cv2.resize(region, (224, 224), interpolation=cv2.INTER_LINEAR)
        difference = np.abs(ours.astype(np.int16) - theirs)
        assert difference.max() <= 1 and difference.mean() < 0.2, (box, difference.max(), difference.mean())


def test_rejects_what_it_cannot_read_or_write():
    source = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="channels"):
        resample.resize(source, np.empty((4, 4, 2), np.uint8), planar=False, flip_x=False, flip_y=False)
    with pytest.raises(ValueError, match="3-D uint8"):
        resample.resize(
            source.astype(np.float32), np.empty((4, 4, 3), np.uint8), planar=False, flip_x=False, flip_y=False
        )
    with pytest.raises(ValueError, match="packed"):
        resample.resize(source[:, ::-1], np.empty((4, 4, 3), np.uint8), planar=False, flip_x=False, flip_y=False)
    with pytest.raises(ValueError, match="packed"):
        resample.resize(
            np.zeros((10, 10, 5), np.uint8), np.empty((4, 4, 5), np.uint8), planar=False, flip_x=False, flip_y=False
        )
    with pytest.raises(ValueError, match="contiguous"):  # the target must be one contiguous row of the batch
        resample.resize(source, np.empty((4, 8, 3), np.uint8)[:, ::2], planar=False, flip_x=False, flip_y=False)
    with pytest.raises(ValueError, match="pixels on each side"):
        resample.resize(
            np.zeros((0, 10, 3), np.uint8), np.empty((4, 4, 3), np.uint8), planar=False, flip_x=False, flip_y=False
        )


@needs_simd
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("with_pixel_op", [False, True])
def test_image_stage_render_matches_the_opencv_route(monkeypatch, channels_last, with_pixel_op):
    """render() with the kernel (flip and CHW split folded in) against render() with OpenCV's resize, flip
    and split, over random crops; pixel ops still see the flipped HWC image."""
    rng = np.random.default_rng(5)
    image = photo(333, 481, seed=5)
    seen: list[np.ndarray] = []

    def finish(hwc: np.ndarray) -> None:
        seen.append(hwc.copy())
        hwc[:2] = 255  # a pixel op that changes the image in place

    for _ in range(40):
        crop_height, crop_width = int(rng.integers(40, 333)), int(rng.integers(40, 481))
        top, left = int(rng.integers(0, 334 - crop_height)), int(rng.integers(0, 482 - crop_width))
        geometry = Geometry.identity(333, 481).crop(top, left, crop_height, crop_width).resize(64, 80)
        if rng.random() < 0.5:
            geometry = geometry.flip_horizontal()
        shape = (64, 80, 3) if channels_last else (3, 64, 80)
        outputs = []
        for use in (True, False):
            monkeypatch.setattr(resample, "_USE", use)
            out = np.empty(shape, np.uint8)
            work = np.empty((64, 80, 3), np.uint8)
            image_stage.render(image, 333, 481, geometry, out, channels_last, work, finish if with_pixel_op else None)
            outputs.append(out.astype(np.int16))
        assert np.abs(outputs[0] - outputs[1]).max() <= 1
        if with_pixel_op:
            assert np.abs(seen[-2].astype(np.int16) - seen[-1]).max() <= 1  # same flipped HWC image
            rows = outputs[0][:2] if channels_last else outputs[0][:, :2]
            assert (rows == 255).all()


@needs_simd
def test_benchmark_script_compares_the_two_routes():
    """``benchmarks/resize_kernel.py`` runs and reports each crop's timings and the two routes' agreement
    (the timings themselves are not judged)."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "resize_kernel.py"
    run = subprocess.run(
        [sys.executable, str(script), "--rounds", "1", "--calls", "2", "--json"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["backend"] == resample.backend()
    assert len(result["crops"]) == 4
    for row in result["crops"].values():
        assert row["max_grey_level_difference"] <= 1
        assert row["opencv_chw_us"] > 0 and row["stoke_chw_us"] > 0 and row["stoke_hwc_us"] > 0
