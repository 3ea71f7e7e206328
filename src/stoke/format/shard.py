"""One shard file: write it once (atomically), then read any sample in O(1) through mmap.

Layout (little-endian; ``docs/format.md`` is the normative description)::

    0    64-byte header: magic "STOKESHD", u32 version, u32 num_fields F, u64 num_samples N,
         u64 data_start (= 64), u64 offsets_start, u64 checksums_start, u64 file_size,
         u64 offsets checksum (version 2: xxh3-64 of the offsets table; version 1: zero)
    64   sample records back to back; record i is its F field encodings back to back
    ...  zero padding to a multiple of 8
         offsets: u64[N*F + 1], relative to data_start; field j of sample i spans
         [offsets[i*F + j], offsets[i*F + j + 1]), sample i spans [offsets[i*F], offsets[(i+1)*F])
         checksums: u64[N], xxh3-64 of each sample's record bytes, seeded (version 2) with the xxh3-64
         of the sample's F + 1 offset entries, so that its field boundaries are covered too

Samples are written in one streaming pass: the tables go after the data because the count of good
samples is known only at the end. Everything in the header but the offsets checksum can be derived from
N, F (from the manifest) and the file size, so the reader derives the layout and uses the header only as
a cross-check: a damaged header marks the shard as damaged without making its intact samples unreadable.
Every offset is checked against the data region before it is used, and a sample's offsets are covered
by its checksum. Readers of many offsets at once (``Dataset.column``, token counts) check the whole
table against the header's offsets checksum once, and fall back to checking each sample when it does not
match, so damage stays confined to the samples it touches.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "shard-000000.stk"
    >>> writer = ShardWriter(path, num_fields=2)
    >>> writer.add([b"ab", b"c"])
    >>> info = writer.commit()
    >>> reader = ShardReader(path, num_fields=2, num_samples=info.num_samples, file_size=info.file_size)
    >>> [bytes(part) for part in reader.fields_checked(0)], reader.offsets_intact()
    ([b'ab', b'c'], True)
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

from stoke.errors import ConfigError, FormatError
from stoke.format.atomic import AtomicFile
from stoke.format.checksum import bounds_seed, file_checksum, sample_checksum
from stoke.format.mapguard import MappingGuard

MAGIC = b"STOKESHD"
SHARD_VERSION = 2  # what the writer writes; the manifest's format_version decides how a shard is read
HEADER = struct.Struct("<8sIIQQQQQQ")
DATA_START = HEADER.size  # 64
DERIVED_HEADER_BYTES = 56  # what follows from N, F and the size; version 2 keeps the offsets checksum after it


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

    @staticmethod
    def smallest(num_samples: int, num_fields: int) -> int:
        """The size of the smallest valid shard of ``num_samples`` samples (all records empty)."""
        return DATA_START + 8 * (num_samples * num_fields + 1) + 8 * num_samples

    def header(self, version: int = SHARD_VERSION, offsets_checksum: int = 0) -> bytes:
        return HEADER.pack(
            MAGIC,
            version,
            self.num_fields,
            self.num_samples,
            DATA_START,
            self.offsets_start,
            self.checksums_start,
            self.file_size,
            offsets_checksum,
        )


class ShardWriter:
    """Streams samples into a temporary file; ``commit`` renames it into place, ``abort`` removes it.

    It writes shard version 2 (format version 2): sample checksums cover the field boundaries, and the
    header holds the offsets table's checksum.
    """

    def __init__(self, path: str | Path, num_fields: int, seed: int = 0) -> None:
        self.path = Path(path)
        self.num_fields = num_fields
        self.seed = seed  # the shard's sample_seed (the manifest lists it): binds each checksum to this shard
        self._bounds = struct.Struct(f"<{num_fields + 1}Q")
        self._file = AtomicFile(self.path)  # under a temporary name until commit()
        self._stream = self._file.stream
        self._stream.write(bytes(DATA_START))
        self._offsets = array("Q", [0])
        self._checksums = array("Q")
        self._position = 0

    def __len__(self) -> int:
        return len(self._checksums)

    def add(self, encoded_fields: Sequence[bytes]) -> None:
        """Append one sample: its fields' encoded bytes, in schema order."""
        if len(encoded_fields) != self.num_fields:
            raise ConfigError(
                f"a sample takes one encoded value per field ({self.num_fields}), got {len(encoded_fields)}"
            )
        first = len(self._offsets) - 1
        for part in encoded_fields:
            self._stream.write(part)
            self._position += len(part)
            self._offsets.append(self._position)
        digest = xxhash.xxh3_64(seed=bounds_seed(self._bounds.pack(*self._offsets[first:]), self.seed))
        for part in encoded_fields:
            digest.update(part)
        self._checksums.append(digest.intdigest())

    def commit(self) -> ShardInfo:
        """Write the tables and header, fsync, and atomically rename the file to its final name."""
        padding = -(DATA_START + self._position) % 8
        self._stream.write(bytes(padding))
        offsets = np.frombuffer(self._offsets, np.uint64).astype("<u8").tobytes()
        checksums = np.frombuffer(self._checksums, np.uint64).astype("<u8")
        self._stream.write(offsets)
        self._stream.write(checksums.tobytes())
        file_size = self._stream.tell()
        layout = ShardLayout.derive(len(self._checksums), self.num_fields, file_size)
        assert layout is not None and layout.offsets_start == DATA_START + self._position + padding
        self._stream.seek(0)
        self._stream.write(layout.header(SHARD_VERSION, xxhash.xxh3_64_intdigest(offsets)))
        self._file.commit()
        return ShardInfo(len(self._checksums), file_size, file_checksum(self.path))

    def abort(self) -> None:
        """Discard the temporary file (after an error or an interrupt)."""
        self._file.abort()


class ShardReader:
    """Read-only, memory-mapped access to the samples of one shard; safe to share between threads.

    Raises :class:`FormatError` at open when the file's size cannot hold ``num_samples`` samples, and
    for a sample whose offsets are damaged; ``header_ok`` tells whether the header matched its layout.
    ``version`` is the dataset's format version (the manifest's): version 1 shards have sample checksums
    of the record bytes alone and no offsets checksum.
    """

    def __init__(
        self,
        path: str | Path,
        num_fields: int,
        num_samples: int,
        file_size: int,
        version: int = SHARD_VERSION,
        seed: int = 0,
    ) -> None:
        self.path = Path(path)
        self.num_fields = num_fields
        self.num_samples = num_samples
        self.version = version
        self.seed = seed  # the manifest's sample_seed for this shard (version 2)
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
            self._guard = MappingGuard(self._map, self.path.name, file_size)  # shrinks: an error, not SIGBUS
        self.layout = layout
        self.mapping = self._map
        self._view = memoryview(self._map)
        header = bytes(self._view[:DATA_START])
        self.header_ok = header_matches(header, layout, version)
        self._offsets_checksum = int.from_bytes(header[DERIVED_HEADER_BYTES:], "little") if version >= 2 else None
        self._offsets_ok: bool | None = None
        self.offsets = np.frombuffer(self._map, "<u8", num_samples * num_fields + 1, layout.offsets_start)
        self._data_size = data_size(self.offsets, layout)
        self.checksums = np.frombuffer(self._map, "<u8", num_samples, layout.checksums_start)

    def _bounds(self, index: int) -> list[int]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} is outside shard {self.path.name} of {self.num_samples} samples")
        self._guard.check()  # the file shrank since it was mapped: fail fast, naming the shard
        bounds = self.offsets[index * self.num_fields : (index + 1) * self.num_fields + 1].tolist()
        previous = 0 if index == 0 else bounds[0]
        for bound in bounds:
            if bound < previous or bound > self._data_size:
                raise FormatError(
                    f"sample {index} of shard {self.path.name} has damaged offsets", reason="its offsets are damaged"
                )
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
        """:meth:`fields`, after checking the sample against its checksum (one bounds check for both).

        From version 2 the checksum covers the sample's field boundaries too, so damaged offsets that
        still look plausible (a boundary moved inside the record) fail here as well.
        """
        bounds = self._bounds(index)
        view = self._view
        record = view[DATA_START + bounds[0] : DATA_START + bounds[-1]]
        if sample_checksum(record, self._seed(index)) != int(self.checksums[index]):
            self._guard.check(thorough=True)  # zeros read from a truncated file: say that instead
            covered = "bytes or field boundaries" if self.version >= 2 else "bytes"
            reason = f"its {covered} do not match their checksum"
            raise FormatError(f"sample {index} of shard {self.path.name}: {reason}", reason=reason)
        return [view[DATA_START + start : DATA_START + stop] for start, stop in itertools.pairwise(bounds)]

    def check_mapping(self, thorough: bool = False) -> None:
        """Raise FormatError naming the shard if its file was truncated while mapped (``stoke.format.mapguard``);
        call it after using a sample's bytes, whose lost pages then read as zeros."""
        self._guard.check(thorough)

    def is_intact(self, index: int) -> bool:
        """Whether sample ``index`` still has the checksum it was written with (bytes and, from version 2,
        field boundaries)."""
        try:
            record = self.record(index)
        except FormatError:
            return False
        return sample_checksum(record, self._seed(index)) == int(self.checksums[index])

    def _seed(self, index: int) -> int:
        """The seed of sample ``index``'s checksum: the hash of its F + 1 offset entries (0 in version 1)."""
        if self.version < 2:
            return 0
        first = self.layout.offsets_start + 8 * index * self.num_fields
        return bounds_seed(self._view[first : first + 8 * (self.num_fields + 1)], self.seed)

    def offsets_intact(self) -> bool | None:
        """Whether the whole offsets table matches the header's offsets checksum (computed once); None for a
        version-1 shard, which has no such checksum."""
        if self._offsets_checksum is None:
            return None
        if self._offsets_ok is None:
            self._guard.check()  # a file cut since it was mapped has lost its tables: say so before touching them
            table = self._view[self.layout.offsets_start : self.layout.checksums_start]
            intact = xxhash.xxh3_64_intdigest(table) == self._offsets_checksum
            self._guard.check()  # zeros from pages lost meanwhile are not a verdict on the table
            self._offsets_ok = intact
        return self._offsets_ok

    def field_spans(
        self, position: int, samples: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where field ``position`` of each sample lies, for readers of a whole column at once.

        Returns ``(starts, stops, damaged)``: int64 arrays of the spans (relative to the data region) of the
        local ``samples`` (default: all, in order), and the local indices among them whose spans cannot be
        trusted. When the offsets table matches its checksum, only the spans' ranges are checked; when it
        does not, each sample is checked against its own checksum, so that only damaged samples are lost.
        A version-1 shard has nothing that covers its offsets: only their order and range are checked.
        """
        self._guard.check()  # the file shrank since it was mapped: fail fast, naming the shard
        starts, stops, local, suspect = column_spans(self.offsets, self.num_fields, self._data_size, position, samples)
        if self.offsets_intact() is False:
            suspect |= ~np.fromiter((self.is_intact(int(i)) for i in local), bool, local.size)
        return starts, stops, local[suspect]

    def close(self) -> None:
        """Release the mapping; views still held elsewhere keep it alive until they are dropped."""
        self.offsets = self.checksums = None  # type: ignore[assignment]
        self._view.release()
        with contextlib.suppress(BufferError):
            self._map.close()
            self._guard.release()  # unmapped now; while views hold it, it stays guarded


class ShardTable:
    """A shard's offsets table read on its own, without its records: what readers of a whole column that
    need no record bytes use (token counts), for a remote shard read by range instead of fetched whole.

    :meth:`checked` trusts it only when the header is the one its layout derives and the table matches
    the header's offsets checksum (format version 2); otherwise it returns None and the caller opens
    the whole shard, whose per-sample checks confine damage to the samples it touches.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "shard-000000.stk"
        >>> writer = ShardWriter(path, num_fields=1)
        >>> writer.add([b"abc"]); writer.add([b"de"])
        >>> info = writer.commit()
        >>> layout = ShardLayout.derive(info.num_samples, 1, info.file_size)
        >>> data = path.read_bytes()
        >>> table = ShardTable.checked(data[:DATA_START], data[layout.offsets_start : layout.checksums_start], layout)
        >>> starts, stops, damaged = table.field_spans(0)
        >>> (stops - starts).tolist(), damaged.tolist()
        ([3, 2], [])
    """

    def __init__(self, offsets: np.ndarray, layout: ShardLayout) -> None:
        self.offsets, self.layout = offsets, layout
        self.num_samples, self.num_fields = layout.num_samples, layout.num_fields
        self._data_size = data_size(offsets, layout)

    @classmethod
    def checked(
        cls, header: bytes, table: bytes, layout: ShardLayout, version: int = SHARD_VERSION
    ) -> ShardTable | None:
        """The table, if ``header`` (the shard's first 64 bytes) is what ``layout`` derives and ``table``
        (its offsets region) matches the header's offsets checksum; None otherwise, or for version 1."""
        if version < 2 or len(table) != layout.checksums_start - layout.offsets_start:
            return None
        if len(header) != DATA_START or not header_matches(header, layout, version):
            return None
        if xxhash.xxh3_64_intdigest(table) != int.from_bytes(header[DERIVED_HEADER_BYTES:], "little"):
            return None
        return cls(np.frombuffer(table, "<u8"), layout)

    def field_spans(
        self, position: int, samples: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`ShardReader.field_spans`: ``(starts, stops, damaged)`` of field ``position``."""
        starts, stops, local, suspect = column_spans(self.offsets, self.num_fields, self._data_size, position, samples)
        return starts, stops, local[suspect]


def header_matches(header: bytes, layout: ShardLayout, version: int) -> bool:
    """Whether a shard's 64-byte ``header`` is the one ``layout`` derives (from version 2, all but the
    offsets checksum, which only the table can confirm)."""
    covered = DERIVED_HEADER_BYTES if version >= 2 else DATA_START
    return header[:covered] == layout.header(min(version, SHARD_VERSION))[:covered]


def data_size(offsets: np.ndarray, layout: ShardLayout) -> int:
    """Where a shard's records end: where the last offset says, unless that offset is damaged (then at
    the padding before the tables)."""
    region = layout.offsets_start - DATA_START
    recorded_end = int(offsets[-1])
    return recorded_end if region - 8 < recorded_end <= region else region


def column_spans(
    offsets: np.ndarray, num_fields: int, data_size: int, position: int, samples: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Field ``position``'s spans of the local ``samples`` (default: all) from an offsets table:
    ``(starts, stops, samples, suspect)``, suspect where a span is out of order or past the data."""
    count = (len(offsets) - 1) // num_fields
    if samples is None:
        starts = offsets[position : count * num_fields : num_fields].astype(np.int64)
        stops = offsets[position + 1 : count * num_fields + 1 : num_fields].astype(np.int64)
        local = np.arange(count, dtype=np.int64)
    else:
        local = np.asarray(samples, dtype=np.int64).reshape(-1)
        starts = offsets[local * num_fields + position].astype(np.int64)
        stops = offsets[local * num_fields + position + 1].astype(np.int64)
    # uint64 offsets beyond int64 turn negative here: out of range like any other damaged offset.
    return starts, stops, local, (starts < 0) | (stops < starts) | (stops > data_size)
