"""Format version 2: every byte that decides what a sample's fields are is covered by a check that runs
before the sample is used (issue 17, item 1), damage stays confined to the samples it touches, and
version-1 datasets are still read, with a note from verify on how to upgrade them."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stoke
from stoke.errors import FormatError, SampleError
from stoke.format.manifest import FORMAT_VERSION, MANIFEST_NAME
from stoke.format.shard import HEADER, ShardReader, ShardWriter
from stoke.pipeline.blocks import TokenBlocks
from stoke.verify import verify

V1_DATASET = Path(__file__).parent / "data" / "v1-records"  # written by stoke 0.1.0 at format version 1
V1_SAMPLES = [{"name": f"user{i:03d}", "comment": f"comment {i}", "label": i % 2} for i in range(6)]


def records(count: int) -> list[dict]:
    return [{"name": f"user{i:03d}", "comment": f"comment {i}"} for i in range(count)]


def pack(out: Path, items: list, **options) -> Path:
    stoke.pack(items, out, progress=False, workers=1, **options)
    return out


def offset_entry(dataset: stoke.Dataset, shard: int, entry: int) -> tuple[Path, int]:
    """(shard file, absolute byte position) of entry ``entry`` of shard ``shard``'s offsets table."""
    reader = dataset.shard_reader(shard)
    where = reader.path, reader.layout.offsets_start + 8 * entry
    dataset.close()
    return where


def flip(path: Path, position: int, mask: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[position] ^= mask
    path.write_bytes(bytes(raw))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stoke", *args], capture_output=True, text=True, timeout=120)


# ---- the attack of the issue -----------------------------------------------------------------------------


def test_a_flipped_offset_bit_between_two_text_fields_is_a_damaged_sample(tmp_path):
    out = pack(tmp_path / "ds", records(12))
    dataset = stoke.open(out)
    width = len(dataset.fields)
    path, position = offset_entry(dataset, 0, 7 * width + 1)  # sample 7's boundary between name and comment
    flip(path, position, 0x04)  # 7 -> 3: "use" | "r007comment 7"

    dataset = stoke.open(out)
    moved = [bytes(part) for part in dataset.read_fields(7)]  # unchecked, the bytes really moved
    assert moved == [b"use", b"r007comment 7"]
    with pytest.raises(SampleError, match=r"sample 7 .* its bytes or field boundaries do not match their checksum"):
        dataset[7]
    assert [dataset[i] for i in range(12) if i != 7] == [item for i, item in enumerate(records(12)) if i != 7]

    for verify_mode in ("always", "once"):
        loader = stoke.Loader(stoke.open(out), batch_size=4, verify=verify_mode)
        names = [name for batch in loader for name in batch["name"]]
        assert names == [f"user{i:03d}" for i in range(12) if i != 7], verify_mode
        assert [record["index"] for record in loader.quarantine] == [7], verify_mode
        loader.close()

    report = verify(out)
    assert report.damaged_indices == [7]
    assert "field boundaries" in report.damaged[0]["reason"]
    assert any("offsets table" in problem["reason"] for problem in report.shard_problems)
    completed = run_cli("verify", str(out), "--json")
    assert completed.returncode == 1 and [entry["index"] for entry in json.loads(completed.stdout)["damaged"]] == [7]


def test_a_boundary_two_samples_share_damages_only_those_two(tmp_path):
    out = pack(tmp_path / "ds", records(10))
    dataset = stoke.open(out)
    path, position = offset_entry(dataset, 0, 4 * len(dataset.fields))  # end of sample 3 = start of sample 4
    flip(path, position, 0x01)
    dataset = stoke.open(out)
    failed = []
    for index in range(10):
        try:
            assert dataset[index] == records(10)[index]
        except SampleError:
            failed.append(index)
    assert failed == [3, 4]
    assert verify(out).damaged_indices == [3, 4]


@pytest.fixture(scope="module")
def shard_bytes(tmp_path_factory) -> tuple[bytes, list[list[bytes]]]:
    samples = [[b"x" * (i % 5), b"yy" * i, bytes([i]) * 3] for i in range(9)]
    path = tmp_path_factory.mktemp("shard") / "s.stk"
    writer = ShardWriter(path, 3)
    for fields in samples:
        writer.add(fields)
    writer.commit()
    return path.read_bytes(), samples


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_no_flipped_offset_bit_changes_what_a_checked_read_returns(tmp_path_factory, shard_bytes, data):
    raw, samples = shard_bytes
    table_bytes = 8 * (3 * len(samples) + 1)
    table_start = len(raw) - 8 * len(samples) - table_bytes
    bit = data.draw(st.integers(0, 8 * table_bytes - 1))
    damaged = bytearray(raw)
    damaged[table_start + bit // 8] ^= 1 << (bit % 8)
    path = tmp_path_factory.getbasetemp() / "flipped.stk"
    path.write_bytes(bytes(damaged))
    reader = ShardReader(path, 3, len(samples), len(raw))
    assert reader.offsets_intact() is False
    for index, fields in enumerate(samples):
        try:
            got = [bytes(part) for part in reader.fields_checked(index)]
        except FormatError:
            assert not reader.is_intact(index)
            continue
        assert got == fields  # a checked read never returns moved bytes
        assert reader.is_intact(index)
    for position in range(3):
        starts, stops, suspect = reader.field_spans(position)
        for index, fields in enumerate(samples):
            if index not in suspect:
                assert raw[64 + starts[index] : 64 + stops[index]] == fields[position]
    reader.close()


def test_a_damaged_offsets_checksum_alone_loses_no_sample(tmp_path):
    out = pack(tmp_path / "ds", [{"label": i, "name": f"n{i}"} for i in range(8)])
    dataset = stoke.open(out)
    path = dataset.shard_reader(0).path
    dataset.close()
    flip(path, HEADER.size - 1, 0x80)  # the header's offsets checksum
    dataset = stoke.open(out)
    assert dataset.shard_reader(0).offsets_intact() is False
    assert dataset.column("label").tolist() == list(range(8))  # every sample checked on its own, all intact
    report = verify(out)
    assert report.damaged == [] and any("offsets table" in problem["reason"] for problem in report.shard_problems)


# ---- readers of many offsets at once ---------------------------------------------------------------------


def test_column_names_the_samples_whose_offsets_are_damaged_and_a_view_without_them_reads(tmp_path):
    items = [{"label": i, "name": f"user{i:03d}"} for i in range(30)]
    out = pack(tmp_path / "ds", items, shard_items=10)
    dataset = stoke.open(out)
    path, position = offset_entry(dataset, 1, 5 * len(dataset.fields) + 1)  # the end of sample 15's label
    flip(path, position, 0x02)
    dataset = stoke.open(out)
    with pytest.raises(
        FormatError,
        match=r"field 'label' cannot be read for 1 damaged samples of shard-000001.stk "
        r"\(samples 15\); run `stoke verify",
    ):
        dataset.column("label")
    keep = [i for i in range(30) if i != 15]
    assert dataset.select(keep).column("label").tolist() == keep
    assert dataset.column("label", np.array([29, 3, 16])).tolist() == [29, 3, 16]


def test_token_counts_never_come_from_damaged_offsets(tmp_path):
    docs = [{"tokens": np.arange(3 + i, dtype=np.uint16)} for i in range(8)]
    field = stoke.NDArrayField("uint16", (None,))
    out = pack(tmp_path / "ds", docs, fields={"tokens": field})
    dataset = stoke.open(out)
    path, position = offset_entry(dataset, 0, 5)  # the end of document 4 = the start of document 5
    flip(path, position, 0x02)  # two bytes: still a whole number of uint16 tokens
    dataset = stoke.open(out)
    damaged = r"the token count of field 'tokens' cannot be read for 2 damaged samples of shard-000000.stk"
    with pytest.raises(FormatError, match=damaged + r" \(samples 4, 5\)"):
        TokenBlocks(dataset, block_size=4)
    blocks = TokenBlocks(dataset.select([0, 1, 2, 3, 6, 7]), block_size=4)
    assert blocks.counts.tolist() == [3, 4, 5, 6, 9, 10]


# ---- versions --------------------------------------------------------------------------------------------


def test_a_new_pack_is_format_version_2(tmp_path):
    out = pack(tmp_path / "ds", records(3))
    assert FORMAT_VERSION == 2
    assert json.loads((out / MANIFEST_NAME).read_text())["format_version"] == 2
    header = HEADER.unpack_from((out / "shard-000000.stk").read_bytes())
    assert header[1] == 2  # the shard header's version


def test_version_1_datasets_are_still_read_and_verify_says_how_to_upgrade(tmp_path):
    old = tmp_path / "v1"
    shutil.copytree(V1_DATASET, old)
    dataset = stoke.open(old)
    assert dataset.manifest.format_version == 1
    assert [dataset[i] for i in range(6)] == V1_SAMPLES
    assert dataset.column("label").tolist() == [0, 1, 0, 1, 0, 1]
    assert dataset.shard_reader(0).header_ok and dataset.shard_reader(0).offsets_intact() is None
    report = verify(old)
    assert report.ok and report.damaged == [] and report.shard_problems == []
    assert len(report.notes) == 1 and "do not cover the field boundaries" in report.notes[0]
    assert f"stoke pack SOURCE {old} --overwrite" in report.notes[0]
    completed = run_cli("verify", str(old))
    assert completed.returncode == 0 and "note: format version 1" in completed.stdout
    # Damage a version-1 reader can see is still found: a flipped data byte.
    flip(old / "shard-000001.stk", 64 + 2, 0x01)
    assert verify(old).damaged_indices == [3]


# ---- which shard, which manifest ----------------------------------------------------------------------------
def test_another_shards_file_under_a_shards_name_fails_every_sample(tmp_path):
    # Shards of equal-sized records have identical offset tables: only the sample_seed tells them apart.
    rows = np.arange(12 * 6, dtype=np.uint8).reshape(12, 6)
    root = pack(tmp_path / "ds", [{"row": row} for row in rows], shard_items=4)
    shards = sorted(root.glob("shard-*.stk"))
    assert shards[0].stat().st_size == shards[1].stat().st_size
    shutil.copyfile(shards[2], shards[1])  # a restore from the wrong copy: a valid shard, the wrong one
    dataset = stoke.open(root)
    for index in range(4, 8):
        with pytest.raises(SampleError, match=rf"sample {index} "):
            dataset[index]
    assert [dataset[i]["row"].tolist() for i in (0, 11)] == [rows[0].tolist(), rows[11].tolist()]
    assert verify(root).damaged_indices == [4, 5, 6, 7]
    loader = stoke.Loader(dataset, batch_size=4, verify="once", max_bad_fraction=1.0)
    delivered = [i for batch in loader for i in batch["index"].tolist()]
    assert delivered == [0, 1, 2, 3, 8, 9, 10, 11]
    assert sorted(record["index"] for record in loader.quarantine) == [4, 5, 6, 7]


def test_a_changed_manifest_is_refused_and_a_reindented_one_is_not(tmp_path):
    root = pack(tmp_path / "ds", records(6), shard_items=3)
    path = root / MANIFEST_NAME
    original = path.read_text()
    document = json.loads(original)
    path.write_text(json.dumps(document, indent=4, sort_keys=True))  # the same content, laid out anew
    assert stoke.open(root)[1]["name"] == "user001"
    for change in (
        original.replace('"name": "name"', '"name": "nbme"'),  # a field renamed: one flipped bit
        original.replace('"num_samples": 3', '"num_samples": 2', 1),
        original.replace('"type": "text"', '"type": "json"', 1),
    ):
        assert change != original
        path.write_text(change)
        with pytest.raises(FormatError, match=r"does not match its manifest_checksum: it was changed after packing"):
            stoke.open(root)


# ---- the spec's own examples -----------------------------------------------------------------------------

FORMAT_MD = Path(__file__).resolve().parents[2] / "docs" / "format.md"


def spec_section(title: str) -> str:
    text = FORMAT_MD.read_text(encoding="utf-8")
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start : end if end > 0 else len(text)]


def test_the_annotated_hexdump_is_what_the_writer_writes(tmp_path):
    from stoke.format.fields import IntField, TextField

    dump = spec_section("### 4.5 Annotated hexdump").split("```")[1]
    expected = bytes.fromhex("".join("".join(line.split(":")[1].split()[:8]) for line in dump.strip().splitlines()))
    writer = ShardWriter(tmp_path / "s.stk", 2)
    for number, text in ((7, "hi"), (-1, "abc")):
        writer.add([IntField().encode(number), TextField().encode(text)])
    info = writer.commit()
    assert (tmp_path / "s.stk").read_bytes() == expected
    vectors = spec_section("## 6. Checksums")
    assert f"| that whole file | `{info.checksum}` |" in vectors


def test_the_checksum_test_vectors(tmp_path):
    import xxhash

    from stoke.format.checksum import bounds_seed, format_digest, sample_checksum

    vectors = spec_section("## 6. Checksums")
    seed = bounds_seed(struct.pack("<3Q", 0, 8, 10))
    assert format_digest(sample_checksum(b"")) in vectors and format_digest(sample_checksum(b"hello")) in vectors
    assert f"as that shard was written | `{format_digest(seed)}` |" in vectors
    sample = struct.pack("<q", 7) + b"hi"
    assert f"the sample checksum | `{format_digest(sample_checksum(sample, seed))}` |" in vectors
    table = struct.pack("<5Q", 0, 8, 10, 18, 21)
    assert f"the offsets checksum | `{format_digest(xxhash.xxh3_64_intdigest(table))}` |" in vectors


def test_the_minimal_reader_of_the_spec_reads_both_versions_byte_for_byte(tmp_path):
    code = spec_section("## 12. A minimal reader").split("```python")[1].split("```")[0]
    namespace: dict = {}
    exec(compile(code, str(FORMAT_MD), "exec"), namespace)
    read_fields = namespace["read_fields"]
    new = pack(tmp_path / "ds", records(12), shard_items=5)
    old = tmp_path / "v1"
    shutil.copytree(V1_DATASET, old)
    for root, size in ((new, 12), (old, 6)):
        dataset = stoke.open(root)
        for index in range(size):
            assert read_fields(str(root), index) == [bytes(part) for part in dataset.read_fields(index, verify=True)]
    dataset = stoke.open(new)
    path, position = offset_entry(dataset, 1, 2 * len(dataset.fields) + 1)  # the attack, on sample 7
    flip(path, position, 0x04)
    with pytest.raises(ValueError, match="checksum mismatch"):
        read_fields(str(new), 7)
    assert read_fields(str(new), 6) == [b"user006", b"comment 6"]
