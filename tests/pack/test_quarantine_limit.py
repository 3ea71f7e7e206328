"""A pack that quarantines more than a small share of its items fails loudly and resumes once allowed;
a source with nothing to pack is an error that names it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stoke
from helpers import encode, photo
from stoke.errors import ConfigError, InvalidItem, PackError, QuarantineLimitError, SourceError
from stoke.format.fields import IntField
from stoke.format.manifest import MANIFEST_NAME, PACK_STATE_DIR, QUARANTINE_NAME, FieldEntry
from stoke.sources import Source


def half_corrupt_folder(root: Path) -> Path:
    """10 images in 2 classes; the 5 ``bad_*.jpg`` are not JPEGs past their first bytes."""
    for label in ("cats", "dogs"):
        (root / label).mkdir(parents=True)
    for index in range(10):
        jpeg = encode(photo(16, 20, seed=index), quality=90)
        name = f"bad_{index}.jpg" if index % 2 else f"good_{index}.jpg"
        data = jpeg[:200] + bytes(range(256)) * 4 if index % 2 else jpeg
        (root / ("cats" if index < 5 else "dogs") / name).write_bytes(data)
    return root


def shard_files(out: Path) -> dict[str, tuple[int, int]]:
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in sorted(out.glob("shard-*.stk"))}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stoke", *args], capture_output=True, text=True, timeout=120)


def test_too_many_quarantined_items_commit_nothing_and_a_resume_with_a_larger_limit_reencodes_nothing(tmp_path):
    folder = half_corrupt_folder(tmp_path / "photos")
    out = tmp_path / "ds"
    with pytest.raises(QuarantineLimitError) as caught:
        stoke.pack(folder, out, shard_items=2, workers=1, progress=False)
    message = str(caught.value)
    assert isinstance(caught.value, PackError) and "\n" not in message
    assert message.startswith("quarantined 5 of 10 items of ") and "(50%), more than max_quarantined=0.01" in message
    assert "cats/bad_1.jpg: " in message  # the first reasons, with their items
    assert f"all are listed in {out / QUARANTINE_NAME}" in message
    assert "resume=True, max_quarantined=0.5" in message and "--" not in message  # Python's spelling only
    assert (caught.value.num_quarantined, caught.value.num_items, caught.value.suggested) == (5, 10, 0.5)
    assert not (out / MANIFEST_NAME).exists()  # not a dataset: nothing committed
    listed = [json.loads(line) for line in (out / QUARANTINE_NAME).read_text().splitlines()]
    assert [(entry["source"], entry["code"]) for entry in listed] == [
        (f"{'cats' if i < 5 else 'dogs'}/bad_{i}.jpg", "undecodable") for i in (1, 3, 5, 7, 9)
    ]
    assert (out / PACK_STATE_DIR).is_dir()
    with pytest.raises(PackError, match="unfinished pack"):  # neither lost nor silently redone
        stoke.pack(folder, out, shard_items=2, workers=1, progress=False)
    finished = shard_files(out)
    assert len(finished) == 3  # shards 0 and 3 hold only bad images: no file

    result = stoke.pack(folder, out, shard_items=2, workers=1, progress=False, resume=True, max_quarantined=0.5)
    assert (result.num_samples, result.num_quarantined) == (5, 5)
    assert result.reused_shards == result.num_shards == 3
    assert shard_files(out) == finished  # the same files: not one was written again
    dataset = stoke.open(out)
    assert sorted(dataset[i]["path"] for i in range(len(dataset))) == [
        f"{'cats' if i < 5 else 'dogs'}/good_{i}.jpg" for i in (0, 2, 4, 6, 8)
    ]
    assert not (out / PACK_STATE_DIR).exists()


def test_the_cli_fails_in_one_line_naming_its_flags_then_resumes_with_them(tmp_path):
    folder = half_corrupt_folder(tmp_path / "photos")
    out = tmp_path / "ds"
    failed = run_cli("pack", str(folder), str(out), "--shard-items", "3", "--workers", "1", "--no-progress")
    assert failed.returncode == 2, failed
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stoke: error: quarantined 5 of 10 items"), failed.stderr
    assert "more than --max-quarantined 0.01 allows" in lines[0]
    assert "the same command with --resume --max-quarantined 0.5" in lines[0] and "max_quarantined=" not in lines[0]
    assert failed.stdout == "" and not (out / MANIFEST_NAME).exists()

    resumed = run_cli("pack", str(folder), str(out), "--shard-items", "3", "--resume", "--max-quarantined", "0.5")
    assert resumed.returncode == 0, resumed.stderr
    assert "packed 5 samples" in resumed.stdout and "reusing 4 finished shards" in resumed.stdout
    assert stoke.open(out).manifest.num_quarantined == 5


def test_an_overwriting_pack_that_fails_the_limit_says_to_resume_without_overwrite(tmp_path):
    folder = half_corrupt_folder(tmp_path / "photos")
    failed = run_cli("pack", str(folder), str(tmp_path / "ds"), "--overwrite", "--workers", "1", "--no-progress")
    assert failed.returncode == 2 and "--resume --max-quarantined 0.5 (without --overwrite)" in failed.stderr


class Flaky(Source):
    """``size`` integers; the items in ``bad`` cannot be read."""

    kind = "flaky"

    def __init__(self, size: int, bad: set[int]) -> None:
        self.size, self.bad = size, bad

    def __len__(self) -> int:
        return self.size

    def schema(self) -> list[FieldEntry]:
        return [FieldEntry("y", IntField())]

    def read(self, index: int) -> list:
        if index in self.bad:
            raise InvalidItem("source_error", f"item {index} is lost")
        return [index]

    def name_of(self, index: int) -> str:
        return f"item {index}"

    def describe(self) -> dict:
        return {"kind": self.kind, "num_items": self.size}

    def fingerprint(self) -> str:
        return f"{self.size}:{sorted(self.bad)}"


@pytest.mark.parametrize(
    ("size", "bad", "limit", "passes"),
    [
        (100, {7}, 0.01, True),  # 1% is the default's small share
        (100, {7, 8}, 0.01, False),
        (4, {1}, 0.25, True),  # exactly at the limit
        (4, {1}, 0.24, False),
        (29, set(range(0, 29, 3)), 10 / 29, True),  # a limit that is not exact in binary still allows its share
        (10, set(range(9)), 1.0, True),
        (10, {3}, 0.0, False),
    ],
)
def test_the_limit_is_a_share_of_the_source_items(tmp_path, size, bad, limit, passes):
    source = Flaky(size, bad)
    if passes:
        result = stoke.pack(source, tmp_path / "ds", progress=False, workers=1, max_quarantined=limit)
        assert (result.num_samples, result.num_quarantined) == (size - len(bad), len(bad))
    else:
        with pytest.raises(QuarantineLimitError, match=rf"quarantined {len(bad)} of {size} items"):
            stoke.pack(source, tmp_path / "ds", progress=False, workers=1, max_quarantined=limit)


@pytest.mark.parametrize("limit", [-0.1, 1.5, float("nan")])
def test_a_limit_outside_zero_to_one_is_refused(tmp_path, limit):
    with pytest.raises(ConfigError, match="max_quarantined"):
        stoke.pack({"y": np.arange(3)}, tmp_path / "ds", progress=False, max_quarantined=limit)
    assert not (tmp_path / "ds").exists()


def test_a_source_whose_every_item_is_quarantined_is_an_error_even_when_all_are_allowed(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(PackError, match=r"none of the 3 items of .* could be packed; all 3 were quarantined") as caught:
        stoke.pack(Flaky(3, {0, 1, 2}), out, progress=False, workers=1, max_quarantined=1.0)
    assert "item 0: item 0 is lost" in str(caught.value) and str(out / QUARANTINE_NAME) in str(caught.value)
    assert not (out / MANIFEST_NAME).exists() and len((out / QUARANTINE_NAME).read_text().splitlines()) == 3


def test_an_image_folder_whose_class_folders_are_empty_is_refused_before_anything_is_written(tmp_path):
    for name in ("dogs", "cats"):
        (tmp_path / "photos" / name).mkdir(parents=True)
    (tmp_path / "photos" / "dogs" / "notes.txt").write_text("not an image")
    with pytest.raises(SourceError) as caught:
        stoke.pack(tmp_path / "photos", tmp_path / "ds", progress=False)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'photos'} holds no images") and "cats/, dogs/" in message
    assert "notes.txt" in message  # what the class folders do hold, not being images
    assert not (tmp_path / "ds").exists()
    completed = run_cli("pack", str(tmp_path / "photos"), str(tmp_path / "ds"))
    assert completed.returncode == 2 and len(completed.stderr.strip().splitlines()) == 1
    assert "holds no images" in completed.stderr and "Traceback" not in completed.stderr


def test_a_failed_overwrite_of_an_empty_source_keeps_the_existing_dataset(tmp_path):
    stoke.pack({"y": np.arange(3)}, tmp_path / "ds", progress=False)
    (tmp_path / "photos" / "cats").mkdir(parents=True)
    with pytest.raises(SourceError, match="holds no images"):
        stoke.pack(tmp_path / "photos", tmp_path / "ds", overwrite=True, progress=False)
    assert len(stoke.open(tmp_path / "ds")) == 3


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "rows.csv", r"rows\.csv has a header but no rows"),
        (lambda tmp: tmp / "t.csv", r"t\.csv has a header but no rows"),
        (lambda tmp: [], r"the list has no items"),
        (lambda tmp: {"y": np.zeros(0)}, r"the arrays have no rows"),
        (lambda tmp: Flaky(0, set()), r"the flaky source holds no items"),
    ],
    ids=["listing", "table", "dataset", "arrays", "source"],
)
def test_sources_with_nothing_to_pack_are_refused_naming_them(tmp_path, make, message):
    (tmp_path / "rows.csv").write_text("path,label\n")
    (tmp_path / "t.csv").write_text("x,label\n\n")
    with pytest.raises(SourceError, match=message):
        stoke.pack(make(tmp_path), tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()
