"""Shard files: records round-trip, the layout is derivable, damage is confined to what it touches."""

from __future__ import annotations

import os
import struct

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from stoke.errors import FormatError
from stoke.format.checksum import file_checksum
from stoke.format.shard import DATA_START, HEADER, MAGIC, ShardReader, ShardWriter


def reference_checksum(fields: list[bytes], start: int) -> int:
    """docs/format.md §6, written out: the record hashed with the hash of its F + 1 offsets as its seed."""
    bounds = [start]
    for part in fields:
        bounds.append(bounds[-1] + len(part))
    seed = xxhash.xxh3_64_intdigest(struct.pack(f"<{len(bounds)}Q", *bounds))
    return xxhash.xxh3_64_intdigest(b"".join(fields), seed)


def write(path, samples, num_fields):
    writer = ShardWriter(path, num_fields)
    for fields in samples:
        writer.add(fields)
    return writer.commit()


@settings(max_examples=60, deadline=None)
@given(
    num_fields=st.integers(1, 4),
    data=st.data(),
)
def test_records_roundtrip(tmp_path_factory, num_fields, data):
    samples = data.draw(
        st.lists(st.lists(st.binary(max_size=40), min_size=num_fields, max_size=num_fields), max_size=30)
    )
    path = tmp_path_factory.mktemp("shard") / "shard-000000.stk"
    info = write(path, samples, num_fields)
    assert info.num_samples == len(samples)
    assert info.file_size == os.path.getsize(path) and info.checksum == file_checksum(path)
    reader = ShardReader(path, num_fields, len(samples), info.file_size)
    assert reader.header_ok and reader.offsets_intact()
    start = 0
    for index, fields in enumerate(samples):
        assert [bytes(part) for part in reader.fields(index)] == fields
        assert [bytes(part) for part in reader.fields_checked(index)] == fields
        assert bytes(reader.record(index)) == b"".join(fields)
        assert reader.is_intact(index)
        assert int(reader.checksums[index]) == reference_checksum(fields, start)
        start += sum(map(len, fields))
    reader.close()


def test_header_layout(tmp_path):
    path = tmp_path / "s.stk"
    info = write(path, [[b"abc", b"de"], [b"", b"f"]], 2)
    raw = path.read_bytes()
    magic, version, fields, samples, data_start, offsets_start, checksums_start, size, table = HEADER.unpack_from(raw)
    assert (magic, version, fields, samples, data_start) == (MAGIC, 2, 2, 2, 64)
    assert offsets_start == 64 + 8  # 6 data bytes padded to 8
    assert checksums_start == offsets_start + 8 * (2 * 2 + 1)
    assert size == checksums_start + 8 * 2 == info.file_size == len(raw)
    assert struct.unpack_from("<5Q", raw, offsets_start) == (0, 3, 5, 5, 6)
    assert table == xxhash.xxh3_64_intdigest(raw[offsets_start:checksums_start])  # the offsets table's checksum


def test_writing_is_atomic(tmp_path):
    path = tmp_path / "s.stk"
    writer = ShardWriter(path, 1)
    writer.add([b"x"])
    assert not path.exists()  # only a temporary file until commit
    assert any(name.startswith(".s.stk.tmp-") for name in os.listdir(tmp_path))
    writer.abort()
    assert os.listdir(tmp_path) == []


def test_wrong_size_is_refused_with_the_file_named(tmp_path):
    path = tmp_path / "shard-000003.stk"
    info = write(path, [[b"abc"]], 1)
    with pytest.raises(FormatError, match=r"shard-000003.stk is .* manifest says"):
        ShardReader(path, 1, 1, info.file_size + 1)
    with pytest.raises(FormatError, match=r"too small"):
        ShardReader(path, 1, 1000, info.file_size)


def test_damaged_header_loses_no_sample(tmp_path):
    path = tmp_path / "s.stk"
    info = write(path, [[b"hello"], [b"world"]], 1)
    raw = bytearray(path.read_bytes())
    raw[0:8] = b"XXXXXXXX"
    raw[16] ^= 0xFF  # num_samples
    path.write_bytes(bytes(raw))
    reader = ShardReader(path, 1, 2, info.file_size)
    assert not reader.header_ok
    assert [bytes(reader.fields(i)[0]) for i in range(2)] == [b"hello", b"world"]
    assert reader.is_intact(0) and reader.is_intact(1)


def test_damaged_offsets_affect_only_their_samples(tmp_path):
    path = tmp_path / "s.stk"
    samples = [[bytes([i]) * 10] for i in range(5)]
    info = write(path, samples, 1)
    reader = ShardReader(path, 1, 5, info.file_size)
    offsets_start = reader.layout.offsets_start
    reader.close()
    raw = bytearray(path.read_bytes())
    struct.pack_into("<Q", raw, offsets_start + 8 * 2, 10**12)  # boundary between samples 1 and 2
    path.write_bytes(bytes(raw))
    reader = ShardReader(path, 1, 5, info.file_size)
    for index in (1, 2):
        with pytest.raises(FormatError, match=f"sample {index} .* damaged offsets"):
            reader.fields(index)
        assert not reader.is_intact(index)
    assert [bytes(reader.fields(i)[0]) for i in (0, 3, 4)] == [samples[i][0] for i in (0, 3, 4)]


def test_flipped_data_byte_is_caught_by_that_samples_checksum(tmp_path):
    path = tmp_path / "s.stk"
    info = write(path, [[b"a" * 100], [b"b" * 100], [b"c" * 100]], 1)
    raw = bytearray(path.read_bytes())
    raw[DATA_START + 150] ^= 0x01  # inside sample 1
    path.write_bytes(bytes(raw))
    reader = ShardReader(path, 1, 3, info.file_size)
    assert [reader.is_intact(i) for i in range(3)] == [True, False, True]
    assert file_checksum(path) != info.checksum


def test_empty_shard(tmp_path):
    path = tmp_path / "s.stk"
    info = write(path, [], 3)
    assert info.file_size == DATA_START + 8
    reader = ShardReader(path, 3, 0, info.file_size)
    with pytest.raises(IndexError):
        reader.fields(0)
