"""Test helpers: small natural-looking images made on the fly (no downloads)."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like RGB uint8 image: gradients plus low-frequency blobs and a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for channel in range(3):
        fy, fx, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.28)
        image[..., channel] = 128 + 90 * np.sin(fy * y / height * 3.14 + phase) * np.cos(fx * x / width * 3.14)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str = "JPEG", **options) -> bytes:
    """``array`` saved by Pillow in ``fmt``; 2-D arrays are grayscale."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_image_folder(root: Path, classes: int = 2, per_class: int = 6, size: tuple[int, int] = (48, 64)) -> Path:
    """An ImageFolder tree of JPEGs with varying sizes: ``root/class_k/img_i.jpg``."""
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            height, width = size[0] + 3 * index, size[1] - 2 * index
            (folder / f"img_{index:02d}.jpg").write_bytes(
                encode(photo(height, width, seed=label * 100 + index), quality=92)
            )
    return root


class SlowRecords:
    """A map-style dataset of images and labels that takes ``delay`` seconds per item (to be killed midway)."""

    def __init__(self, size: int, delay: float = 0.0) -> None:
        self.size = size
        self.delay = delay

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        import time

        time.sleep(self.delay)
        if index % 17 == 5:
            raise ValueError(f"record {index} is corrupt")  # some items are quarantined, in every run
        return {"image": Image.fromarray(photo(12 + index % 5, 16, seed=index)), "label": index % 4}


def running(processes: list[Any], grace: float = 1.0) -> list[Any]:
    """The psutil processes still running (not gone, not zombies) ``grace`` seconds from now at the latest;
    those left are killed, so that they do not outlive the test."""
    import psutil

    deadline = time.monotonic() + grace
    while True:
        left = []
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    left.append(process)
            except psutil.Error:
                continue
        if not left or time.monotonic() > deadline:
            for process in left:  # do not leave them to the next test
                with contextlib.suppress(psutil.Error):
                    process.kill()
            return left
        time.sleep(0.05)
