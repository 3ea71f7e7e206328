"""Stored splits: index views inside the dataset, stratified, leak-checked, validated when opened."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import stoke
from stoke.errors import FormatError
from stoke.prepare.split import make_splits


@pytest.fixture
def labelled(tmp_path):
    # 60 samples in 3 unequal classes; samples 50-59 repeat the content of samples 0-9 (label aside).
    records = [{"x": np.full(4, i % 50, np.int32), "label": (i % 50) % 3 if i % 50 < 30 else 2} for i in range(60)]
    stoke.pack(records, tmp_path / "ds", shard_items=16, progress=False)
    return tmp_path / "ds"


def test_splits_are_disjoint_stratified_deterministic_views(labelled):
    dataset = stoke.open(labelled)
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    report = make_splits(dataset, fractions, seed=7, stratify="label")
    parts = dataset.splits().parts
    together = np.concatenate(list(parts.values()))
    assert np.array_equal(np.sort(together), np.arange(60))  # every sample once, none twice
    labels = dataset.column("label")
    for name, part in parts.items():
        for value, total in zip(*np.unique(labels, return_counts=True)):
            assert abs(int((labels[part] == value).sum()) - fractions[name] * total) < 1  # class shares kept
        assert report.counts[name] == part.size
    view = stoke.open(labelled, split="val")
    assert len(view) == parts["val"].size
    assert [view[i]["x"][0] for i in range(len(view))] == [int(i) % 50 for i in parts["val"]]  # no copy: a view
    again = make_splits(dataset, fractions, seed=7, stratify="label")
    assert again.counts == report.counts and all(np.array_equal(dataset.splits().parts[n], parts[n]) for n in parts)
    other = make_splits(dataset, fractions, seed=8, stratify="label")
    assert other.counts == report.counts
    assert not np.array_equal(dataset.splits().parts["train"], parts["train"])


def test_leaks_are_reported_and_dedupe_removes_them(labelled):
    dataset = stoke.open(labelled)
    report = make_splits(dataset, {"train": 0.5, "val": 0.5}, seed=0)
    assert report.leaks, "ten duplicated contents over two halves must leak somewhere"
    for leak in report.leaks:
        members = sorted(i for indices in leak["samples"].values() for i in indices)
        assert len(leak["samples"]) == 2 and members[1] - members[0] == 50
    deduped = make_splits(dataset, {"train": 0.5, "val": 0.5}, seed=0, dedupe=True)
    assert deduped.leaks == [] and deduped.dropped == list(range(50, 60))
    assert sum(deduped.counts.values()) == 50
    assert dataset.splits().info["dropped"] == 10


def test_damaged_or_foreign_splits_are_refused(labelled):
    dataset = stoke.open(labelled)
    make_splits(dataset, {"train": 0.8, "val": 0.2}, seed=0)
    index_file = labelled / "splits" / "val.idx"
    data = bytearray(index_file.read_bytes())
    data[0] ^= 1
    index_file.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="does not match its checksum"):
        stoke.open(labelled, split="val")
    make_splits(dataset, {"train": 0.8, "val": 0.2}, seed=0)
    document = json.loads((labelled / "splits.json").read_text())
    document["splits"][0]["name"] = "../../escape"
    (labelled / "splits.json").write_text(json.dumps(document))
    with pytest.raises(FormatError, match="split name"):
        stoke.open(labelled, split="train")
    make_splits(dataset, {"train": 0.8, "val": 0.2}, seed=0)
    with pytest.raises(FormatError, match="no split 'test'; its splits are"):
        stoke.open(labelled, split="test")
    manifest = labelled / "manifest.json"
    manifest.write_text(manifest.read_text() + " ")  # a different packing (same bytes would be the same one)
    with pytest.raises(FormatError, match="another packing"):
        stoke.open(labelled, split="train")


def test_cli_split_and_inspect(labelled):
    run = [sys.executable, "-m", "stoke"]
    result = subprocess.run(
        [*run, "split", str(labelled), "--train", "0.7", "--val", "0.3", "--test", "0", "--stratify", "label"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "groups of identical samples span splits" in result.stdout
    shown = subprocess.run([*run, "inspect", str(labelled), "--json"], capture_output=True, text=True, check=True)
    splits = json.loads(shown.stdout)["splits"]
    assert splits["stratify"] == "label"
    assert {name: part["count"] for name, part in splits["parts"].items()} == {"train": 42, "val": 18}
    assert sum(sum(part["classes"].values()) for part in splits["parts"].values()) == 60
    bad = subprocess.run([*run, "split", str(labelled), "--train", "0.9"], capture_output=True, text=True)
    assert bad.returncode != 0 and "must add up to 1" in bad.stderr and "Traceback" not in bad.stderr
