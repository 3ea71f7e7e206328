"""Checksums of samples, of shard offset tables and of whole files.

stoke uses xxh3 (64-bit) from the ``xxhash`` package for all of them: it runs at tens of GB/s, releases
the GIL on large buffers, and its digest is an integer that fits a numpy ``uint64`` table. It detects
damage (bit rot, truncation, a partial download); it is not a defence against someone who can rewrite the
manifest too, which nothing stored beside the data could be.

A sample's checksum covers its record bytes and, from format version 2 on, the boundaries that split the
record into fields and the shard it belongs to: the record is hashed with a seed that is the hash of the
sample's ``F + 1`` offset table entries as stored, itself seeded with the shard's ``sample_seed`` from the
manifest (``docs/format.md`` §6). One flipped bit in an offset then fails the sample's check instead of
moving bytes from one field into its neighbour, and a shard file copied over another's name fails every
sample instead of delivering the wrong ones. The manifest has a checksum of its own (``manifest_digest``).

Example:
    >>> format_digest(sample_checksum(b"hello"))
    '9555e8555c62dcfd'
    >>> bounds = b"".join(n.to_bytes(8, "little") for n in (0, 8, 10))
    >>> format_digest(sample_checksum(b"\\x07" + bytes(7) + b"hi", bounds_seed(bounds)))
    '7e8cd414fab6878d'
    >>> format_digest(shard_seed("0123456789abcdef", 3))
    '10b80141f5b83409'
"""

from __future__ import annotations

import json
from pathlib import Path

import xxhash

ALGORITHM = "xxh3_64"
_CHUNK = 8 << 20


def sample_checksum(data: bytes | memoryview, seed: int = 0) -> int:
    """The xxh3-64 digest of one sample's record bytes (seeded, from format version 2), as an integer."""
    return xxhash.xxh3_64_intdigest(data, seed)


def bounds_seed(bounds: bytes | memoryview, shard: int = 0) -> int:
    """The seed of a version-2 sample checksum: the xxh3-64 of its ``F + 1`` offset entries as stored,
    seeded with its shard's ``sample_seed`` (``shard``)."""
    return xxhash.xxh3_64_intdigest(bounds, shard)


def shard_seed(pack_id: str, number: int) -> int:
    """The ``sample_seed`` stoke gives shard ``number`` of the pack ``pack_id``: distinct per shard and per
    source and settings, and the same on every run (packs stay byte-identical)."""
    return xxhash.xxh3_64_intdigest(f"{pack_id}/{number}".encode())


def canonical_json(document: object) -> bytes:
    """The bytes a manifest checksum covers: keys sorted, no whitespace, UTF-8, numbers as Python writes them."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


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
