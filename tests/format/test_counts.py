"""Counts are cross-checked against the sizes they imply before anything is allocated from them
(issue 17, item 7): a manifest claiming 200,000,000 samples whose shards hold 40 is refused in one
sentence by every entry point, never a MemoryError or a reshape error, while a dataset that lost a shard
still opens and reports exactly the samples it lost."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stoke
from helpers import rewrite_manifest
from stoke.errors import FormatError
from stoke.verify import verify

CLAIMED = 200_000_000


def smallest_shard(samples: int, fields: int) -> int:
    """docs/format.md §4.1: the header, the offsets and the checksums of a shard whose records are empty."""
    return 64 + 8 * (samples * fields + 1) + 8 * samples


@pytest.fixture
def forty(tmp_path) -> Path:
    """40 real samples (an int label, a float, a name) in two shards."""
    items = [{"label": i % 4, "score": i / 10, "name": f"s{i}"} for i in range(40)]
    stoke.pack(items, tmp_path / "ds", shard_items=20, workers=1, progress=False)
    return tmp_path / "ds"


def rewrite(root: Path, change) -> None:
    rewrite_manifest(root, change)  # sealed again, as a consistent liar would


def claim(root: Path, sizes_too: bool) -> None:
    """Make the manifest claim 200,000,000 samples; with ``sizes_too`` its listed sizes agree with that."""

    def change(document):
        fields = len(document["fields"])
        shard = document["shards"][0]
        shard["num_samples"] = CLAIMED - document["shards"][1]["num_samples"]
        document["num_samples"] = CLAIMED
        if sizes_too:  # the smallest size a shard of that many samples can have, plus 8 bytes per sample of data
            shard["bytes"] = smallest_shard(shard["num_samples"], fields) + 3 * 8 * shard["num_samples"]

    rewrite(root, change)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stoke", *args], capture_output=True, text=True, timeout=120)


def assert_one_line_refusal(completed: subprocess.CompletedProcess, words: str) -> None:
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2, completed
    assert len(lines) == 1 and lines[0].startswith("stoke: error: ") and words in lines[0], completed.stderr
    assert "MemoryError" not in completed.stderr and "bug in stoke" not in completed.stderr


@pytest.mark.parametrize(
    ("sizes_too", "words"),
    [
        (False, "lists 199,999,980 samples, which take at least"),
        (True, "lists 200,000,000 samples, but 199,999,980 of them are in shards that are missing or differ in size"),
    ],
    ids=["counts", "counts-and-sizes"],
)
def test_a_manifest_claiming_200_million_samples_over_40_is_refused_everywhere(forty, sizes_too, words):
    claim(forty, sizes_too)
    with pytest.raises(FormatError, match=words):
        stoke.open(forty)
    with pytest.raises(FormatError, match=words):
        stoke.open(forty, split="train")
    with pytest.raises(FormatError, match=words):
        verify(forty)
    for command in (
        ("verify", str(forty)),
        ("verify", str(forty), "--json"),
        ("split", str(forty), "--train", "0.8", "--val", "0.2", "--stratify", "label"),
        ("inspect", str(forty)),
    ):
        assert_one_line_refusal(run_cli(*command), words)


def open_and_load_the_claiming_dataset(root: str) -> dict:
    """In a fresh process: every way in to the dataset, and the peak memory they took."""
    import torch.utils.data

    refused = {}
    attempts = {
        "open": lambda: stoke.open(root),
        "loader": lambda: stoke.Loader(stoke.open(root), batch_size=8, shuffle=True),
        "dataloader": lambda: torch.utils.data.DataLoader(stoke.open(root), shuffle=True),
        "getitem": lambda: stoke.open(root)[150_000_000],
        "column": lambda: stoke.open(root).column("label"),
        "verify": lambda: verify(root),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
        except FormatError as error:
            refused[name] = str(error)
    return {"refused": refused, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def test_nothing_is_allocated_from_the_claimed_count(forty):
    claim(forty, sizes_too=True)
    here = Path(__file__).parent
    script = f"import json, sys; sys.path[:0] = {[str(here), str(here.parent)]!r}; import test_counts as t; "
    script += f"print(json.dumps(t.open_and_load_the_claiming_dataset({str(forty)!r})))"
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    found = json.loads(completed.stdout)
    assert set(found["refused"]) == {"open", "loader", "dataloader", "getitem", "column", "verify"}
    assert all("does not describe these files" in reason for reason in found["refused"].values()), found
    assert found["peak_mb"] < 1000, found  # an order of 200,000,000 positions alone is 1.6 GB


def test_a_dataset_missing_a_shard_still_opens_and_verify_lists_its_samples(forty):
    (forty / "shard-000001.stk").unlink()
    dataset = stoke.open(forty)
    assert len(dataset) == 40 and dataset[3]["name"] == "s3"
    report = verify(forty)
    assert report.damaged_indices == list(range(20, 40))
    assert "shard-000001.stk is missing" in report.shard_problems[0]["reason"]


def test_a_shard_of_another_size_is_damage_up_to_what_the_other_shards_confirm(tmp_path):
    big = tmp_path / "big"
    stoke.pack([{"label": i} for i in range(60)], big, shard_items=20, workers=1, progress=False)
    (big / "shard-000002.stk").write_bytes(b"")  # 20 samples lost, 40 confirmed: damage, reported
    assert verify(big).damaged_indices == list(range(40, 60))
    # When the lost samples outnumber the confirmed ones by more than 2**20, the manifest is not these files'.
    lost = 2**20 + 41

    def change(document):
        document["shards"][2].update(num_samples=lost, bytes=smallest_shard(lost, 1) + 8 * lost)
        document["num_samples"] = 40 + lost

    rewrite(big, change)
    with pytest.raises(
        FormatError,
        match=r"1,048,617 of them are in shards that are missing or differ in size "
        r"from what it lists \(shard-000002.stk is 0 bytes, not [\d,]+\)",
    ):
        stoke.open(big)


def test_a_fixed_shape_larger_than_the_shards_is_refused(tmp_path):
    arrays = tmp_path / "arrays"
    stoke.pack({"x": np.zeros((3, 2), np.float32), "y": np.arange(3)}, arrays, progress=False)
    rewrite(arrays, lambda d: d["fields"][0].update(shape=[100_000, 100_000]))  # 40 GB per sample, say
    with pytest.raises(FormatError, match=r"lists 3 samples, which take at least 120,000,000,\d{3} bytes"):
        stoke.open(arrays)


def test_counts_too_large_for_any_file_are_refused(forty):
    rewrite(forty, lambda d: d["shards"][0].update(bytes=2**70))
    with pytest.raises(FormatError, match=r"shards\[0\] is damaged: bytes is 1180591620717411303424"):
        stoke.open(forty)
