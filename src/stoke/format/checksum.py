"""Checksums of samples and of whole files.

stoke uses xxh3 (64-bit) from the ``xxhash`` package for both: it runs at tens of GB/s, releases the GIL
on large buffers, and its digest is an integer that fits a numpy ``uint64`` table. It detects damage (bit
rot, truncation, a partial download); it is not a defence against someone who can rewrite the manifest
too, which nothing stored beside the data could be.

Example:
    >>> format_digest(sample_checksum(b"hello"))
    '9555e8555c62dcfd'
"""

from __future__ import annotations

from pathlib import Path

import xxhash

ALGORITHM = "xxh3_64"
_CHUNK = 8 << 20


def sample_checksum(data: bytes | memoryview) -> int:
    """The xxh3-64 digest of one sample's record bytes, as an unsigned integer."""
    return xxhash.xxh3_64_intdigest(data)


def file_checksum(path: str | Path) -> str:
    """The xxh3-64 digest of a whole file as 16 hex digits, read in 8 MiB chunks."""
    digest = xxhash.xxh3_64()
    with open(path, "rb", buffering=0) as stream:
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        while True:
            count = stream.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
    return digest.hexdigest()


def format_digest(value: int) -> str:
    """An integer digest as the 16 hex digits the manifest stores."""
    return f"{value:016x}"
