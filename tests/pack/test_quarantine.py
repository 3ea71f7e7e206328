"""Bad inputs never stop a pack and are never dropped silently; odd-but-valid images are converted."""

from __future__ import annotations

import ctypes
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

import stoke
from helpers import encode, photo
from stoke.format.fields.image_codec import PNG_MAGIC

EXPECTED_QUARANTINE = {
    ("bad/corrupt.jpg", "undecodable"),
    ("bad/dangling.jpg", "broken_symlink"),
    ("bad/empty.jpg", "empty"),
    ("bad/huge.png", "decompression_bomb"),
    ("bad/locked.jpg", "unreadable"),
    ("bad/notes.jpg", "not_an_image"),
    ("bad/truncated.jpg", "truncated"),
}
EXPECTED_GOOD = {
    "good/a.jpg",
    "good/b.jpg",
    "odd/cmyk.jpg",
    "odd/gray.png",
    "odd/palette.png",
    "odd/png_named.jpg",
    "odd/rgba.png",
    "odd/sixteen_bit.png",
}


def _save(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_MAGIC + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 8)) + chunk(b"IEND", b"")


def build_bad_folder(root: Path) -> Path:
    for name in ("good", "bad", "odd"):
        (root / name).mkdir(parents=True)
    (root / "good" / "a.jpg").write_bytes(encode(photo(30, 40, 1), quality=90))
    (root / "good" / "b.jpg").write_bytes(encode(photo(41, 33, 2), quality=90))
    (root / "good" / "README.txt").write_text("not an image extension: ignored and listed, not quarantined")
    jpeg = encode(photo(64, 64, 3), quality=90)
    (root / "bad" / "empty.jpg").write_bytes(b"")
    (root / "bad" / "notes.jpg").write_text("a text file with an image name\n")
    (root / "bad" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "bad" / "corrupt.jpg").write_bytes(jpeg[:300] + bytes(range(256)) * 20)
    (root / "bad" / "huge.png").write_bytes(_bomb_png(50_000, 50_000))
    (root / "bad" / "locked.jpg").write_bytes(jpeg)
    os.chmod(root / "bad" / "locked.jpg", 0)
    os.symlink(root / "bad" / "gone.jpg", root / "bad" / "dangling.jpg")
    base = Image.fromarray(photo(20, 24, 4))
    (root / "odd" / "png_named.jpg").write_bytes(_save(base, "PNG"))
    (root / "odd" / "gray.png").write_bytes(_save(base.convert("L"), "PNG"))
    (root / "odd" / "cmyk.jpg").write_bytes(_save(base.convert("CMYK"), "JPEG"))
    (root / "odd" / "palette.png").write_bytes(_save(base.convert("P"), "PNG"))
    (root / "odd" / "rgba.png").write_bytes(_save(base.convert("RGBA"), "PNG"))
    (root / "odd" / "sixteen_bit.png").write_bytes(_save(Image.fromarray(np.full((20, 24), 40000, np.uint16)), "PNG"))
    return root


def _without_file_mode_override() -> None:
    """In the child before exec: drop root's power to read files regardless of their mode (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for capability in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run_pack_cli(source: Path, out: Path, *extra: str) -> dict:
    """Run `stoke pack --json`; as root, without the capabilities that make mode 000 files readable."""
    command = [sys.executable, "-m", "stoke", "pack", str(source), str(out), "--json", *extra]
    preexec = _without_file_mode_override if os.geteuid() == 0 else None
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, preexec_fn=preexec)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_every_bad_input_is_quarantined_and_every_good_one_packed(tmp_path):
    source = build_bad_folder(tmp_path / "photos")
    result = run_pack_cli(source, tmp_path / "ds", "--workers", "2", "--shard-items", "4", "--max-quarantined", "1")

    assert {(entry["source"], entry["code"]) for entry in result["quarantine"]} == EXPECTED_QUARANTINE
    assert all(entry["reason"] for entry in result["quarantine"])
    assert result["ignored"] == ["good/README.txt"]
    assert result["num_quarantined"] == len(EXPECTED_QUARANTINE)

    lines = (tmp_path / "ds" / "quarantine.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == result["quarantine"]

    dataset = stoke.open(tmp_path / "ds")
    assert dataset.manifest.num_quarantined == len(EXPECTED_QUARANTINE)
    samples = [dataset[i] for i in range(len(dataset))]
    assert {sample["path"] for sample in samples} == EXPECTED_GOOD
    for sample in samples:
        assert sample["image"].dtype == np.uint8 and sample["image"].shape[2] == 3  # all converted to RGB
    sixteen = next(s for s in samples if s["path"] == "odd/sixteen_bit.png")
    assert int(sixteen["image"].max()) == 40000 >> 8


def test_listing_rows_whose_file_is_missing_are_quarantined(tmp_path):
    (tmp_path / "a.jpg").write_bytes(encode(photo(10, 10), quality=90))
    (tmp_path / "list.csv").write_text("path,label\na.jpg,x\nb.jpg,y\na.jpg,y\n")
    result = stoke.pack(tmp_path / "list.csv", tmp_path / "ds", progress=False, workers=1, max_quarantined=0.5)
    assert [(q["source"], q["code"]) for q in result.quarantine] == [("b.jpg (list.csv line 3)", "missing_file")]
    dataset = stoke.open(tmp_path / "ds")
    assert [dataset[i]["label"] for i in range(len(dataset))] == [0, 1]
    assert dataset.manifest.field_entry("label").classes == ["x", "y"]


def test_user_dataset_errors_are_quarantined_not_fatal(tmp_path):
    class Records:
        def __len__(self):
            return 6

        def __getitem__(self, index):
            if index % 3 == 2:
                raise KeyError(f"record {index} lost")
            return {"value": float(index)}

    result = stoke.pack(Records(), tmp_path / "ds", progress=False, workers=2, shard_items=2, max_quarantined=0.5)
    assert [(q["item"], q["code"]) for q in result.quarantine] == [(2, "source_error"), (5, "source_error")]
    assert "record 2 lost" in result.quarantine[0]["reason"]
    dataset = stoke.open(tmp_path / "ds")
    assert [dataset[i]["value"] for i in range(len(dataset))] == [0.0, 1.0, 3.0, 4.0]
