"""The built-in benchmark set: natural-looking JPEGs made from scikit-learn's two bundled photographs.

Each image is a random crop (10-100% of the photo's area, aspect 3:4 to 4:3) of one of the two
427x640 photographs, rescaled to a width of 330-500 px, with a per-channel colour shift, a brightness
change and Gaussian noise, saved as JPEG at quality 90 into ten class folders (ImageFolder layout).
The content is real photographic texture, so decoders and resamplers do realistic work; no download
is needed. Generation is deterministic in (count, seed) and cached: the folder is written under a
temporary name and renamed when complete.

Example:
    >>> import tempfile, pathlib
    >>> folder = bench_images(pathlib.Path(tempfile.mkdtemp()), count=3)
    >>> sorted(path.name for path in folder.rglob("*.jpg"))
    ['000000.jpg', '000001.jpg', '000002.jpg']
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from stoke.extras import require

CLASSES = 10
QUALITY = 90
WIDTHS = (330, 500)
VERSION = 1


def bench_images(cache: Path, count: int = 5000, seed: int = 0) -> Path:
    """The folder of ``count`` benchmark JPEGs under ``cache``, generating it if it is not there yet."""
    folder = cache / f"images-v{VERSION}-{count}-seed{seed}"
    if folder.is_dir():
        return folder
    what = "stoke bench without a SOURCE (its built-in images are made from scikit-learn's photographs)"
    require("sklearn.datasets", extra="demo", what=what)
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(image) for image in load_sample_images().images]
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for label in range(CLASSES):
        (partial / f"class_{label}").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = _variation(photos[int(rng.integers(len(photos)))], rng)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=QUALITY)
        (partial / f"class_{index % CLASSES}" / f"{index:06d}.jpg").write_bytes(buffer.getvalue())
    partial.rename(folder)
    return folder


def _variation(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = photo.shape[:2]
    area = height * width * rng.uniform(0.1, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    crop_width = int(min(width, round(np.sqrt(area * aspect))))
    crop_height = int(min(height, round(np.sqrt(area / aspect))))
    top = int(rng.integers(0, height - crop_height + 1))
    left = int(rng.integers(0, width - crop_width + 1))
    crop = photo[top : top + crop_height, left : left + crop_width]
    out_width = int(rng.integers(WIDTHS[0], WIDTHS[1] + 1))
    out_height = max(1, round(crop_height * out_width / crop_width))
    interpolation = cv2.INTER_AREA if out_width < crop_width else cv2.INTER_CUBIC
    resized = cv2.resize(crop, (out_width, out_height), interpolation=interpolation).astype(np.float32)
    resized = resized * rng.uniform(0.85, 1.15, size=3) + rng.uniform(-20, 20, size=3)  # colour shift
    resized = resized * rng.uniform(0.8, 1.2) + rng.normal(0, rng.uniform(1, 6), resized.shape)  # light, noise
    if rng.random() < 0.5:
        resized = resized[:, ::-1]
    return np.clip(resized, 0, 255).astype(np.uint8)
