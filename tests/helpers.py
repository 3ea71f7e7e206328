"""Test helpers: small natural-looking images made on the fly (no downloads)."""

from __future__ import annotations

import contextlib
import io
import struct
import time
import zlib
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


def rewrite_manifest(root: Path, change: Any) -> None:
    """Apply ``change(document)`` to ``root/manifest.json`` and seal it again, as a deliberate writer would:
    the manifest's own checksum then matches, so what the test checks is the validation of the change."""
    import json

    from stoke.format.manifest import MANIFEST_CHECKSUM, MANIFEST_NAME, manifest_digest

    path = Path(root) / MANIFEST_NAME
    document = json.loads(path.read_text())
    change(document)
    if MANIFEST_CHECKSUM in document:
        document[MANIFEST_CHECKSUM] = manifest_digest(document)
    path.write_text(json.dumps(document))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid all-black RGB PNG of ``width`` x ``height``, built in milliseconds without the pixels.

    Deflate blocks ended by a full flush are independent, so one compressed block of rows is repeated,
    and the Adler-32 of all-zero data is computed directly.
    """
    row = bytes(1 + 3 * width)  # filter byte 0, then black pixels
    per_block = max(1, (1 << 20) // len(row))
    blocks, rest = divmod(height, per_block)
    compressor = zlib.compressobj(9)
    head = compressor.compress(row * per_block) + compressor.flush(zlib.Z_FULL_FLUSH)
    body = compressor.compress(row * per_block) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.compress(row * rest) + compressor.flush(zlib.Z_FINISH)
    adler = ((len(row) * height % 65521) << 16) | 1
    stream = head + body * (blocks - 1) + tail[:-4] + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")
