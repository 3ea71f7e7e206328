"""Region JPEG decoding: the pixels a crop needs are bit-identical to a full decode's, in every orientation."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import simplejpeg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import stoke
from helpers import encode, photo
from stoke.errors import FormatError
from stoke.format.fields import jpeg_region
from stoke.ops import RandomHorizontalFlip, RandomResizedCrop, Resize

SUBSAMPLINGS = ["444", "422", "420", "440", "411", "Gray"]


def test_the_install_has_region_decoding():
    # The Makefile installs stoke[turbo]: the fast path under test here must be the one the tests run.
    assert jpeg_region.available(), "no libturbojpeg 3 found: install stoke[turbo] or set STOKE_TURBOJPEG"
    assert "turbojpeg" in jpeg_region.library_path()


@settings(max_examples=150, deadline=None)
@given(
    height=st.integers(8, 260),
    width=st.integers(8, 260),
    subsampling=st.sampled_from(SUBSAMPLINGS),
    factor=st.sampled_from([1, 2, 4, 8]),
    fast=st.booleans(),
    corners=st.tuples(*[st.floats(-0.2, 1.2)] * 4),
    seed=st.integers(0, 1000),
)
def test_a_region_matches_the_full_decode(height, width, subsampling, factor, fast, corners, seed):
    pixels = photo(height, width, seed=seed)
    gray = subsampling == "Gray"
    data = simplejpeg.encode_jpeg(
        np.ascontiguousarray(pixels[:, :, :1] if gray else pixels),
        quality=90,
        colorspace="GRAY" if gray else "RGB",
        colorsubsampling=subsampling,
    )
    mode = "L" if gray else "RGB"
    scaled = (-(-height // factor), -(-width // factor))
    full = simplejpeg.decode_jpeg(
        data,
        colorspace="GRAY" if gray else "RGB",
        min_height=scaled[0] if factor > 1 else 0,
        min_width=scaled[1] if factor > 1 else 0,
        fastdct=fast,
        fastupsample=fast,
    )
    assert full.shape[:2] == scaled
    y0, y1 = sorted(round(c * scaled[0]) for c in corners[:2])
    x0, x1 = sorted(round(c * scaled[1]) for c in corners[2:])
    box = (y0, x0, max(y1, y0 + 1), max(x1, x0 + 1))
    window = jpeg_region.decode_region(data, mode, height, width, factor, box, fast)
    assert window.scaled == scaled
    top, left = window.origin
    rows, columns = window.pixels.shape[:2]
    # The window holds every pixel of the box that lies inside the image...
    inside = (max(box[0], 0), max(box[1], 0), min(box[2], scaled[0]), min(box[3], scaled[1]))
    if inside[0] < inside[2] and inside[1] < inside[3]:
        assert top <= inside[0] and left <= inside[1] and top + rows >= inside[2] and left + columns >= inside[3]
        # ...and those pixels are exactly the full decode's.
        want = full[inside[0] : inside[2], inside[1] : inside[3]]
        got = window.pixels[inside[0] - top : inside[2] - top, inside[1] - left : inside[3] - left]
        np.testing.assert_array_equal(got, want)


FRESH_MEMORY_CHECK = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image
sys.path.insert(0, sys.argv[1])
from helpers import write_image_folder
from stoke.format.fields import jpeg_region
files = sorted(write_image_folder(Path(sys.argv[2]), classes=3, per_class=7).rglob("*.jpg"))
datas = [f.read_bytes() for f in files]
sizes = [Image.open(f).size[::-1] for f in files]
rng = np.random.default_rng(0)
wrong = 0
def random_region(rng, height, width, factor):
    scaled_height, scaled_width = -(-height // factor), -(-width // factor)
    top, left = int(rng.integers(0, scaled_height)), int(rng.integers(0, scaled_width))
    return top, left, int(rng.integers(top + 1, scaled_height + 1)), int(rng.integers(left + 1, scaled_width + 1))
for case in range(8000):
    i = int(rng.integers(len(datas)))
    height, width = sizes[i]
    factor = int(rng.choice([1, 2, 4, 8]))
    box = random_region(rng, height, width, factor)
    fast = bool(rng.integers(2))
    jpeg_region._local.handle = None
    fresh = jpeg_region.decode_region(datas[i], "RGB", height, width, factor, box, fast).pixels.copy()
    for _ in range(int(rng.integers(1, 4))):  # other decodes through the same handle first
        j = int(rng.integers(len(datas)))
        other_factor = int(rng.choice([1, 2, 4, 8]))
        other_box = random_region(rng, *sizes[j], other_factor)
        jpeg_region.decode_region(datas[j], "RGB", *sizes[j], other_factor, other_box, bool(rng.integers(2)))
    again = jpeg_region.decode_region(datas[i], "RGB", height, width, factor, box, fast).pixels
    wrong += not np.array_equal(fresh, again)
print(wrong)
"""


def test_fast_full_scale_regions_never_show_stale_memory(tmp_path):
    # libjpeg-turbo's merged (fast) upsampler, started mid iMCU row, emits a few pixels from a buffer it
    # never filled, so the same region decoded twice could differ (a Loader's batches did, once in a while).
    # glibc's malloc checks and MALLOC_PERTURB_ make that memory's contents vary between decodes here.
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "MALLOC_PERTURB_": "165", "MALLOC_CHECK_": "3", "GLIBC_TUNABLES": "glibc.malloc.check=3"}
    command = [sys.executable, "-c", FRESH_MEMORY_CHECK, tests, str(tmp_path / "images")]
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "0", f"{run.stdout.strip()} of 8000 regions decoded differently the second time"


def test_scratch_is_reused_when_large_enough():
    data = encode(photo(120, 90), quality=90)
    scratch = np.empty(120 * 90 * 3, np.uint8)
    window = jpeg_region.decode_region(data, "RGB", 120, 90, 1, (10, 10, 50, 50), False, scratch)
    assert np.shares_memory(window.pixels, scratch)
    small = jpeg_region.decode_region(data, "RGB", 120, 90, 1, (10, 10, 50, 50), False, scratch[:10])
    assert not np.shares_memory(small.pixels, scratch)
    np.testing.assert_array_equal(small.pixels, window.pixels)


def test_damaged_and_mismatched_jpegs_are_refused():
    data = encode(photo(200, 160), quality=90)
    with pytest.raises(FormatError, match="record header says 100x160"):
        jpeg_region.decode_region(data, "RGB", 100, 160, 1, (0, 0, 50, 50), False)
    whole = jpeg_region.decode_region(data, "RGB", 200, 160, 1, (0, 0, 200, 160), False)  # the handle still works
    np.testing.assert_array_equal(whole.pixels, simplejpeg.decode_jpeg(data))
    truncated = data[: len(data) // 2]
    with pytest.raises(FormatError, match="damaged"):
        jpeg_region.decode_region(truncated, "RGB", 200, 160, 1, (0, 0, 200, 160), False)
    with pytest.raises(FormatError, match="header"):
        jpeg_region.decode_region(b"\xff\xd8\xff" + b"\x00" * 40, "RGB", 200, 160, 1, (0, 0, 5, 5), False)
    # A damaged image never spoils the next one (libjpeg-turbo 3.0 left its decompressor failing).
    window = jpeg_region.decode_region(data, "RGB", 200, 160, 1, (0, 0, 200, 160), False)
    np.testing.assert_array_equal(window.pixels, simplejpeg.decode_jpeg(data))


def _pack_orientations(root):
    records = []
    for index in range(16):
        height, width = 90 + 13 * index, 200 - 7 * index
        pixels = photo(height, width, seed=index)
        exif = Image.Exif()
        exif[0x0112] = 1 + index % 8
        source = pixels[:, :, 0] if index % 5 == 4 else pixels
        records.append({"image": encode(source, quality=92, exif=exif.tobytes()), "label": index})
    stoke.pack(records, root, fields={"image": stoke.ImageField(), "label": stoke.IntField()}, progress=False)
    return stoke.open(root)


@pytest.mark.parametrize("channels_last", [False, True])
def test_loader_batches_are_identical_with_and_without_region_decoding(tmp_path, monkeypatch, channels_last):
    dataset = _pack_orientations(tmp_path / "ds")
    transforms = {"image": [RandomResizedCrop((40, 56), scale=(0.02, 1.0)), RandomHorizontalFlip()]}

    def epoch_batches():
        loader = stoke.Loader(
            dataset, batch_size=8, seed=3, transforms=transforms, num_threads=2, channels_last=channels_last
        )
        return [batch["image"].clone() for _ in range(3) for batch in loader]

    decoded_regions = []
    real = jpeg_region.decode_region

    def counting(*args, **kwargs):
        decoded_regions.append(args[5])
        return real(*args, **kwargs)

    monkeypatch.setattr(jpeg_region, "decode_region", counting)
    with_regions = epoch_batches()
    assert len(decoded_regions) == 3 * len(dataset)  # the region path really ran, for every image
    monkeypatch.setattr(jpeg_region, "available", lambda: False)
    whole = epoch_batches()
    assert len(decoded_regions) == 3 * len(dataset)
    for got, want in zip(with_regions, whole, strict=True):
        assert torch.equal(got, want)


def test_an_enlarging_resize_asks_for_the_whole_image(tmp_path, monkeypatch):
    dataset = _pack_orientations(tmp_path / "ds")
    windows = []
    real = jpeg_region.decode_region

    def recording(*args, **kwargs):
        window = real(*args, **kwargs)
        windows.append((args[2], args[3], window))
        return window

    monkeypatch.setattr(jpeg_region, "decode_region", recording)
    loader = stoke.Loader(dataset, batch_size=4, transforms={"image": [Resize((300, 300))]}, shuffle=False)
    assert next(iter(loader))["image"].shape == (4, 3, 300, 300)
    assert len(windows) >= 4
    for height, width, window in windows:  # nothing to crop away: full scale, every pixel
        assert window.origin == (0, 0) and window.scaled == (height, width)
        assert window.pixels.shape[:2] == (height, width)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("off", "False None"), ("/nonexistent/libturbojpeg.so", "ConfigError: STOKE_TURBOJPEG='/nonexistent")],
)
def test_the_library_is_chosen_by_environment(setting, expected):
    code = (
        "from stoke.errors import ConfigError\n"
        "from stoke.format.fields import jpeg_region as j\n"
        "try:\n    print(j.available(), j.library_path())\n"
        "except ConfigError as e:\n    print('ConfigError:', e)\n"
    )
    env = {**os.environ, "STOKE_TURBOJPEG": setting}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.startswith(expected), result.stdout
