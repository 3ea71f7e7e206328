"""Limits that protect the reader come from the caller, never from the file being read (issue 17, item 6).

A dataset's manifest may not raise ``max_pixels``: a 1.2 MB PNG record that decodes to 1.2 GB is refused by
the reader's documented limit (Pillow's 89,478,485) as a damaged sample, and so is a payload whose own
header claims more pixels than the record's header, before any decoder allocates.
"""

from __future__ import annotations

import json
import resource
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import stoke
from helpers import encode, photo, png_bomb, rewrite_manifest
from stoke.errors import ConfigError, SampleError
from stoke.format.fields import ImageField
from stoke.format.fields.image import HEADER as IMAGE_HEADER
from stoke.format.fields.image_codec import CODEC_JPEG, CODEC_PILLOW, CODEC_PNG, DEFAULT_MAX_PIXELS
from stoke.format.manifest import FieldEntry, Manifest, ShardEntry
from stoke.format.shard import ShardWriter
from stoke.ops import Resize
from stoke.verify import verify

HERE = Path(__file__).parent
BOMB_SIDE = 20_000  # 20000 x 20000 RGB: 1.2 GB of pixels from a 1.2 MB PNG


def jpeg_claiming(height: int, width: int) -> bytes:
    """A real 8x8 JPEG whose frame header (SOF0) is rewritten to claim ``height`` x ``width``."""
    data = bytearray(encode(photo(8, 8)))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def bmp_claiming(height: int, width: int) -> bytes:
    """A real 8x8 BMP whose header is rewritten to claim ``height`` x ``width`` (a Pillow-decoded record)."""
    data = bytearray(encode(photo(8, 8), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def record(codec: int, height: int, width: int, payload: bytes) -> bytes:
    return IMAGE_HEADER.pack(codec, 1, 3, 0, height, width) + payload


def hostile_dataset(out: Path, records: list[bytes], manifest_max_pixels: int) -> Path:
    """A dataset written by hand, as a hostile or buggy writer could: its manifest sets ``max_pixels``."""
    out.mkdir(parents=True)
    field = ImageField(mode="RGB", encoding="png", max_pixels=manifest_max_pixels)
    writer = ShardWriter(out / "shard-000000.stk", 1)
    for data in records:
        writer.add([data])
    info = writer.commit()
    heights = [IMAGE_HEADER.unpack_from(data)[4] for data in records]
    widths = [IMAGE_HEADER.unpack_from(data)[5] for data in records]
    stats = {"min_height": min(heights), "max_height": max(heights), "min_width": min(widths), "max_width": max(widths)}
    shard = ShardEntry("shard-000000.stk", info.num_samples, info.file_size, info.checksum)
    Manifest(fields=[FieldEntry("image", field, stats)], shards=[shard], num_samples=len(records)).write(out)
    (out / "quarantine.jsonl").write_text("")
    return out


def good_record(seed: int) -> bytes:
    return ImageField(encoding="png").encode(photo(8, 8, seed))


def test_a_manifest_cannot_raise_the_pixel_limit(tmp_path):
    bomb = record(CODEC_PNG, BOMB_SIDE, BOMB_SIDE, png_bomb(BOMB_SIDE, BOMB_SIDE))
    assert len(bomb) < 1_300_000  # the attack: about a megabyte on disk
    out = hostile_dataset(tmp_path / "ds", [good_record(0), bomb, good_record(2)], manifest_max_pixels=10**9)
    dataset = stoke.open(out)
    assert dataset.manifest.field_entry("image").field.max_pixels == 10**9  # what the file says ...
    assert dataset.fields["image"].max_pixels == DEFAULT_MAX_PIXELS  # ... is not what the reader uses
    with pytest.raises(
        SampleError,
        match=r"sample 1 .* 20000x20000 = 400,000,000 pixels, above the limit of "
        r"89,478,485 .*stoke.open\(path, max_pixels=N\)",
    ):
        dataset[1]
    assert dataset[0]["image"].shape == dataset[2]["image"].shape == (8, 8, 3)

    loader = stoke.Loader(dataset, batch_size=3, transforms={"image": [Resize((8, 8))]})
    batches = list(loader)
    assert [index for batch in batches for index in batch["index"].tolist()] == [0, 2]
    assert [entry["index"] for entry in loader.quarantine] == [1]
    loader.close()
    report = verify(out)
    assert report.damaged_indices == [1] and "above the limit of 89,478,485" in report.damaged[0]["reason"]


def test_the_caller_sets_the_limit_and_the_dataset_can_only_lower_it(tmp_path):
    out = hostile_dataset(tmp_path / "ds", [good_record(0), good_record(1)], manifest_max_pixels=10**9)
    assert stoke.open(out, max_pixels=10**9).fields["image"].max_pixels == 10**9
    strict = stoke.open(out, max_pixels=50)  # an 8x8 image is 64 pixels
    with pytest.raises(SampleError, match=r"8x8 = 64 pixels, above the limit of 50"):
        strict[0]
    assert verify(out, max_pixels=50).damaged_indices == [0, 1]
    with pytest.raises(ConfigError, match=r"max_pixels must be a positive integer"):
        stoke.open(out, max_pixels=0)
    low = hostile_dataset(tmp_path / "low", [good_record(0)], manifest_max_pixels=64)
    assert stoke.open(low).fields["image"].max_pixels == 64
    assert stoke.open(low, max_pixels=10**9).fields["image"].max_pixels == 64
    completed = subprocess.run(
        [sys.executable, "-m", "stoke", "verify", str(out), "--max-pixels", "50", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1 and json.loads(completed.stdout)["num_damaged"] == 2


# Each record's own header is small (8x8); its payload claims far more.
LYING = {
    "png": lambda: record(CODEC_PNG, 8, 8, png_bomb(BOMB_SIDE, BOMB_SIDE)),
    "jpeg": lambda: record(CODEC_JPEG, 8, 8, jpeg_claiming(12_000, 12_000)),
    "pillow": lambda: record(CODEC_PILLOW, 8, 8, bmp_claiming(12_000, 12_000)),
}


def read_lying_records(root: str) -> dict:
    """In a fresh process: read each lying record, and report the errors and the peak memory."""
    out = Path(root)
    errors = {}
    paths = {
        name: hostile_dataset(out / name, [good_record(number), make()], manifest_max_pixels=DEFAULT_MAX_PIXELS)
        for number, (name, make) in enumerate(LYING.items())
    }
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the imports and the packing
    for name, path in paths.items():
        try:
            stoke.open(path)[1]
        except SampleError as error:
            errors[name] = str(error)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"errors": errors, "peak_mb": peak, "grown_mb": peak - before}


def test_a_payload_claiming_more_than_its_record_header_is_refused_before_decoding(tmp_path):
    script = f"import json, sys; sys.path[:0] = {[str(HERE), str(HERE.parent)]!r}; import test_reader_limits as t; "
    script += f"print(json.dumps(t.read_lying_records({str(tmp_path)!r})))"
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    found = json.loads(completed.stdout)
    assert set(found["errors"]) == set(LYING)
    for name, claimed in (("png", "20000x20000"), ("jpeg", "12000x12000"), ("pillow", "12000x12000")):
        assert f"declares {claimed} pixels where its record header says 8x8" in found["errors"][name], name
    assert found["grown_mb"] < 100, found  # a decode would have taken 1.2 GB (PNG) or 432 MB (JPEG, BMP)


def test_the_loader_quarantines_a_lying_png_without_decoding_it(tmp_path):
    lying = LYING["png"]()
    out = hostile_dataset(tmp_path / "ds", [good_record(0), lying, good_record(2)], DEFAULT_MAX_PIXELS)
    loader = stoke.Loader(stoke.open(out), batch_size=3, transforms={"image": [Resize((4, 4))]}, verify="always")
    assert [index for batch in loader for index in batch["index"].tolist()] == [0, 2]
    assert [entry["index"] for entry in loader.quarantine] == [1]
    assert "declares 20000x20000" in loader.quarantine[0]["reason"]
    loader.close()


def test_image_stats_the_pixel_limit_cannot_allow_are_refused(tmp_path, image_folder):
    out = tmp_path / "ds"
    stoke.pack(image_folder, out, progress=False)
    # a buffer of 3e16 bytes, in a manifest sealed again
    rewrite_manifest(out, lambda document: document["fields"][0]["stats"].update(max_height=10**8, max_width=10**8))
    with pytest.raises(stoke.errors.FormatError, match=r"image stats .* are not sizes of images of at most"):
        stoke.open(out)


def test_a_manifest_nested_deeper_than_the_parser_can_go_is_damage_not_a_crash(tmp_path):
    out = tmp_path / "ds"
    stoke.pack([{"y": 1}], out, progress=False)
    (out / "manifest.json").write_text('{"format": "stoke", "source": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(stoke.errors.FormatError, match=r"manifest.json is damaged \(the JSON is nested too deeply\)"):
        stoke.open(out)
    completed = subprocess.run(
        [sys.executable, "-m", "stoke", "inspect", str(out)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 2 and len(completed.stderr.strip().splitlines()) == 1, completed.stderr


def test_a_remote_dataset_takes_the_limit_from_its_caller_too(tmp_path):
    fsspec = pytest.importorskip("fsspec", reason="remote datasets need the 'remote' extra")
    out = hostile_dataset(tmp_path / "ds", [good_record(0), good_record(1)], manifest_max_pixels=10**9)
    memory = fsspec.filesystem("memory")
    for path in out.iterdir():
        memory.pipe(f"/limits-{tmp_path.name}/{path.name}", path.read_bytes())
    url = f"memory://limits-{tmp_path.name}"
    default = stoke.open(url, cache_dir=tmp_path / "cache")
    assert default.fields["image"].max_pixels == DEFAULT_MAX_PIXELS
    default.close()
    strict = stoke.open(url, cache_dir=tmp_path / "cache", max_pixels=50)
    with pytest.raises(SampleError, match=r"8x8 = 64 pixels, above the limit of 50"):
        strict[1]
    strict.close()


def test_a_remote_manifest_listing_far_more_samples_than_exist_is_refused_before_any_allocation(tmp_path):
    """A re-sealed manifest that lists 10^11 samples in shards of plausible listed sizes: opening trusts the
    listed sizes (each fetch checks them), so the Loader checks an epoch's order fits before making it."""
    fsspec = pytest.importorskip("fsspec", reason="remote datasets need the 'remote' extra")
    stoke.pack([{"x": i} for i in range(10)], tmp_path / "ds", fields={"x": stoke.IntField()}, workers=1,
               progress=False)  # fmt: skip
    claimed = 10**11

    def lie(document: dict) -> None:
        document["shards"][0]["num_samples"] = document["num_samples"] = claimed
        document["shards"][0]["bytes"] = 64 + 8 * (claimed + 1) + 8 * claimed + 8 * claimed

    rewrite_manifest(tmp_path / "ds", lie)
    memory = fsspec.filesystem("memory")
    for path in (tmp_path / "ds").iterdir():
        memory.pipe(f"/liar-{tmp_path.name}/{path.name}", path.read_bytes())
    dataset = stoke.open(f"memory://liar-{tmp_path.name}", cache_dir=tmp_path / "cache", cache_bytes=10**14)
    assert len(dataset) == claimed
    with pytest.raises(ConfigError, match=r"lists 100,000,000,000 samples: an epoch's order of them takes .* "
                                          r"its manifest is wrong \(stoke verify"):  # fmt: skip
        stoke.Loader(dataset, batch_size=4, shuffle=True)
    dataset.close()
