"""The ceiling: decode-only throughput of the stored bytes, with the same threads and nothing else.

Every image of the packed dataset is decoded in full, with the decoder's default (accurate) settings,
by a pool of threads fed chunks of eight, into a per-thread buffer: no crop, no resize, no batching,
no checksums. This is what a perfect pipeline built on a full decode would reach. stoke can beat it
only by decoding less (DCT-scaled, faster IDCT), which is the point.

Example:
    >>> import numpy as np, stoke, tempfile
    >>> out = tempfile.mkdtemp() + "/ds"
    >>> images = {"image": np.zeros((3, 8, 8, 3), np.uint8)}
    >>> _ = stoke.pack(images, out, fields={"image": stoke.ImageField()}, progress=False)
    >>> decode_all(stoke.open(out), "image", threads=2)
    3
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from stoke.errors import ConfigError
from stoke.format.fields import ImageField
from stoke.lifecycle import completed
from stoke.read import Dataset

CHUNK = 8


def decode_all(dataset: Dataset, name: str, threads: int) -> int:
    """Decode image field ``name`` of every sample once; returns how many were decoded."""
    field = dataset.fields[name]
    if not isinstance(field, ImageField):
        raise ConfigError(f"field {name!r} is not an image field; name one of the dataset's image fields")
    stats = dataset.manifest.field_entry(name).stats or {}
    scratch_bytes = stats.get("max_height", 0) * stats.get("max_width", 0) * field.channels
    position = dataset.field_positions([name])
    local = threading.local()

    def decode_chunk(start: int) -> int:
        scratch = getattr(local, "scratch", None)
        if scratch is None and scratch_bytes:
            scratch = local.scratch = np.empty(scratch_bytes, np.uint8)
        stop = min(start + CHUNK, len(dataset))
        for index in range(start, stop):
            field.decode_pixels(dataset.read_fields(index, position)[0], scratch=scratch)
        return stop - start

    pool = ThreadPoolExecutor(threads)
    try:
        futures = [pool.submit(decode_chunk, start) for start in range(0, len(dataset), CHUNK)]
        return sum(future.result() for finished in completed(futures) for future in finished)
    finally:  # interrupted, the chunks not started are dropped; the running ones are eight images each
        pool.shutdown(wait=True, cancel_futures=True)
