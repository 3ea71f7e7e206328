"""One shard file: write it once (atomically), then read any sample in O(1) through mmap.

Layout (little-endian; ``docs/format.md`` is the normative description)::

    0    64-byte header: magic "STOKESHD", u32 version, u32 num_fields F, u64 num_samples N,
         u64 data_start (= 64), u64 offsets_start, u64 checksums_start, u64 file_size, u64 zero
    64   sample records back to back; record i is its F field encodings back to back
    ...  zero padding to a multiple of 8
         offsets: u64[N*F + 1], relative to data_start; field j of sample i spans
         [offsets[i*F + j], offsets[i*F + j + 1]), sample i spans [offsets[i*F], offsets[(i+1)*F])
         checksums: u64[N], xxh3-64 of each sample's record bytes

Samples are written in one streaming pass: the tables go after the data because the count of good
samples is known only at the end. Everything in the header can be derived from N, F (from the manifest)
and the file size, so the reader derives the layout and uses the header only as a cross-check: a damaged
header marks the shard as damaged without making its intact samples unreadable. Every offset is checked
against the data region before it is used.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "shard-000000.stk"
    >>> writer = ShardWriter(path, num_fields=2)
    >>> writer.add([b"ab", b"c"])
    >>> info = writer.commit()
    >>> reader = ShardReader(path, num_fields=2, num_samples=info.num_samples, file_size=info.file_size)
    >>> [bytes(part) for part in reader.fields(0)]
    [b'ab', b'c']
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from stoke.errors import FormatError
from stoke.format.atomic import fsync_directory, temporary_name
from stoke.format.checksum import file_checksum, sample_checksum

MAGIC = b"STOKESHD"
SHARD_VERSION = 1
HEADER = struct.Struct("<8sIIQQQQQQ")
DATA_START = HEADER.size  # 64


@dataclass(frozen=True)
class ShardInfo:
    """What the manifest records of a finished shard."""

    num_samples: int
    file_size: int
    checksum: str


@dataclass(frozen=True)
class ShardLayout:
    """Where the regions of a shard lie, derived from N, F and the file size."""

    num_samples: int
    num_fields: int
    offsets_start: int
    checksums_start: int
    file_size: int

    @classmethod
    def derive(cls, num_samples: int, num_fields: int, file_size: int) -> ShardLayout | None:
        """The layout a valid shard of this size must have, or None if no valid shard has this size."""
        checksums_start = file_size - 8 * num_samples
        offsets_start = checksums_start - 8 * (num_samples * num_fields + 1)
        if offsets_start < DATA_START or offsets_start % 8:
            return None
        return cls(num_samples, num_fields, offsets_start, checksums_start, file_size)

    def header(self) -> bytes:
        return HEADER.pack(
            MAGIC,
            SHARD_VERSION,
            self.num_fields,
            self.num_samples,
            DATA_START,
            self.offsets_start,
            self.checksums_start,
            self.file_size,
            0,
        )


class ShardWriter:
    """Streams samples into a temporary file; ``commit`` renames it into place, ``abort`` removes it."""

    def __init__(self, path: str | Path, num_fields: int) -> None:
        self.path = Path(path)
        self.num_fields = num_fields
        self._temporary = temporary_name(self.path)
        self._stream = open(self._temporary, "wb")  # noqa: SIM115 - open until commit() or abort()
        self._stream.write(bytes(DATA_START))
        self._offsets = array("Q", [0])
        self._checksums = array("Q")
        self._position = 0

    def __len__(self) -> int:
        return len(self._checksums)

    def add(self, encoded_fields: Sequence[bytes]) -> None:
        """Append one sample: its fields' encoded bytes, in schema order."""
        if len(encoded_fields) != self.num_fields:
            raise ValueError(f"expected {self.num_fields} encoded fields, got {len(encoded_fields)}")
        digest = xxhash.xxh3_64()
        for part in encoded_fields:
            self._stream.write(part)
            digest.update(part)
            self._position += len(part)
            self._offsets.append(self._position)
        self._checksums.append(digest.intdigest())

    def commit(self) -> ShardInfo:
        """Write the tables and header, fsync, and atomically rename the file to its final name."""
        padding = -(DATA_START + self._position) % 8
        self._stream.write(bytes(padding))
        offsets = np.frombuffer(self._offsets, np.uint64).astype("<u8")
        checksums = np.frombuffer(self._checksums, np.uint64).astype("<u8")
        self._stream.write(offsets.tobytes())
        self._stream.write(checksums.tobytes())
        file_size = self._stream.tell()
        layout = ShardLayout.derive(len(self._checksums), self.num_fields, file_size)
        assert layout is not None and layout.offsets_start == DATA_START + self._position + padding
        self._stream.seek(0)
        self._stream.write(layout.header())
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        checksum = file_checksum(self._temporary)
        os.replace(self._temporary, self.path)
        fsync_directory(self.path.parent)
        return ShardInfo(len(self._checksums), file_size, checksum)

    def abort(self) -> None:
        """Discard the temporary file (after an error or an interrupt)."""
        with contextlib.suppress(OSError):
            self._stream.close()
        with contextlib.suppress(FileNotFoundError):
            self._temporary.unlink()


class ShardReader:
    """Read-only, memory-mapped access to the samples of one shard; safe to share between threads.

    Raises :class:`FormatError` at open when the file's size cannot hold ``num_samples`` samples, and
    for a sample whose offsets are damaged; ``header_ok`` tells whether the header matched its layout.
    """

    def __init__(self, path: str | Path, num_fields: int, num_samples: int, file_size: int) -> None:
        self.path = Path(path)
        self.num_fields = num_fields
        self.num_samples = num_samples
        with open(self.path, "rb") as stream:
            actual = os.fstat(stream.fileno()).st_size
            if actual != file_size:
                raise FormatError(
                    f"shard {self.path.name} is {actual:,} bytes but the manifest says {file_size:,}: the file is "
                    f"truncated or was replaced; restore it or re-pack the dataset"
                )
            layout = ShardLayout.derive(num_samples, num_fields, file_size)
            if layout is None:
                raise FormatError(
                    f"shard {self.path.name} is too small ({file_size:,} bytes) for the {num_samples:,} samples the "
                    f"manifest lists; restore it or re-pack the dataset"
                )
            self._map = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        self.layout = layout
        self.mapping = self._map
        self._view = memoryview(self._map)
        self.header_ok = bytes(self._view[:DATA_START]) == layout.header()
        self.offsets = np.frombuffer(self._map, "<u8", num_samples * num_fields + 1, layout.offsets_start)
        # Records end where the last offset says, unless that offset is damaged: then at the padding.
        region = layout.offsets_start - DATA_START
        recorded_end = int(self.offsets[-1])
        self._data_size = recorded_end if region - 8 < recorded_end <= region else region
        self.checksums = np.frombuffer(self._map, "<u8", num_samples, layout.checksums_start)

    def _bounds(self, index: int) -> list[int]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} is outside shard {self.path.name} of {self.num_samples} samples")
        bounds = self.offsets[index * self.num_fields : (index + 1) * self.num_fields + 1].tolist()
        previous = 0 if index == 0 else bounds[0]
        for bound in bounds:
            if bound < previous or bound > self._data_size:
                raise FormatError(f"sample {index} of shard {self.path.name} has damaged offsets")
            previous = bound
        return bounds

    def record(self, index: int) -> memoryview:
        """The whole record of sample ``index`` (all its fields), without copying."""
        bounds = self._bounds(index)
        return self._view[DATA_START + bounds[0] : DATA_START + bounds[-1]]

    def fields(self, index: int) -> list[memoryview]:
        """The encoded bytes of each field of sample ``index``, without copying."""
        bounds = self._bounds(index)
        view = self._view
        return [view[DATA_START + start : DATA_START + stop] for start, stop in itertools.pairwise(bounds)]

    def fields_checked(self, index: int) -> list[memoryview]:
        """:meth:`fields`, after checking the sample against its checksum (one bounds check for both)."""
        bounds = self._bounds(index)
        view = self._view
        if sample_checksum(view[DATA_START + bounds[0] : DATA_START + bounds[-1]]) != int(self.checksums[index]):
            raise FormatError(f"sample {index} of shard {self.path.name}: its bytes do not match their checksum")
        return [view[DATA_START + start : DATA_START + stop] for start, stop in itertools.pairwise(bounds)]

    def is_intact(self, index: int) -> bool:
        """Whether sample ``index`` still has the checksum it was written with."""
        try:
            record = self.record(index)
        except FormatError:
            return False
        return sample_checksum(record) == int(self.checksums[index])

    def close(self) -> None:
        """Release the mapping; views still held elsewhere keep it alive until they are dropped."""
        self.offsets = self.checksums = None  # type: ignore[assignment]
        self._view.release()
        with contextlib.suppress(BufferError):
            self._map.close()
