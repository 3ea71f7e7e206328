"""Stored splits: index views inside the dataset, stratified, leak-checked, validated when opened."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import stoke
from stoke.errors import ConfigError, FormatError
from stoke.prepare.split import content_fields, make_splits


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
    bad = subprocess.run(
        [*run, "split", str(labelled), "--train", "0.9", "--val", "0.2"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "add up to 1.1, more than 1" in bad.stderr and "Traceback" not in bad.stderr


# ---- content: what makes two samples the same ----------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_copies(tmp_path_factory):
    """Crops of scikit-learn's two real photos as JPEGs in 3 class folders, plus byte-identical copies of two of
    them under other file names, one in another class; and a CSV listing of the same files with captions."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("copies") / "photos"
    classes = ["beach", "city", "garden"]
    for name in classes:
        (root / name).mkdir(parents=True)
    written = []
    for number, (photo, (top, left)) in enumerate(
        (photo, corner) for photo in load_sample_images().images for corner in [(0, 0), (150, 250), (300, 500)]
    ):
        path = root / classes[number % 3] / f"photo_{number}.jpg"
        Image.fromarray(photo[top : top + 64, left : left + 96]).save(path, quality=90)
        written.append(path)
    (root / "garden" / "copy_of_0.jpg").write_bytes(written[0].read_bytes())  # another class, another name
    (root / "beach" / "photo_0_again.jpg").write_bytes(written[0].read_bytes())  # the same class
    (root / "beach" / "holiday.jpg").write_bytes(written[4].read_bytes())
    rows = [
        f"{path.relative_to(root.parent).as_posix()},a photo named {path.stem},{path.parent.name}"
        for path in root.rglob("*.jpg")
    ]
    (root.parent / "photos.csv").write_text("path,caption,label\n" + "\n".join(sorted(rows)) + "\n")
    return root


def identical_groups(dataset, folder):
    """Reference: groups (of 2 or more) of sample indices whose image files hold the same bytes."""
    groups: dict[bytes, list[int]] = {}
    for index in range(len(dataset)):
        groups.setdefault((folder / dataset[index]["path"]).read_bytes(), []).append(index)
    return [sorted(group) for group in groups.values() if len(group) > 1]


@pytest.mark.parametrize("kind", ["imagefolder", "listing"])
def test_byte_identical_images_leak_whatever_their_name_label_or_caption(photo_copies, tmp_path, kind):
    source = photo_copies if kind == "imagefolder" else photo_copies.parent / "photos.csv"
    stoke.pack(source, tmp_path / "ds", progress=False, workers=1)
    dataset = stoke.open(tmp_path / "ds")
    assert content_fields(dataset) == ["image"]  # path, label and caption say nothing about a leak
    groups = identical_groups(dataset, photo_copies if kind == "imagefolder" else photo_copies.parent)
    assert dataset.manifest.num_quarantined == 0 and len(dataset) == 9
    assert sorted(len(group) for group in groups) == [2, 3]
    seen_leaks = 0
    for seed in range(6):
        for stratify in (None, "label"):
            report = make_splits(dataset, {"train": 0.5, "val": 0.5}, seed=seed, stratify=stratify)
            parts = dataset.splits().parts
            spanning = [g for g in groups if len({name for name, p in parts.items() for i in g if i in p}) > 1]
            found = [sorted(i for indices in leak["samples"].values() for i in indices) for leak in report.leaks]
            assert sorted(found) == sorted(spanning)
            seen_leaks += len(found)
    assert seen_leaks, "over 12 splits the copies must land in different halves at least once"
    deduped = make_splits(dataset, {"train": 0.5, "val": 0.5}, seed=0, stratify="label", dedupe=True)
    assert deduped.leaks == [] and deduped.dropped == sorted(i for group in groups for i in group[1:])
    assert sum(deduped.counts.values()) == len(dataset) - 3
    assert deduped.content == ["image"] and dataset.splits().info["content"] == ["image"]


def test_table_content_is_every_feature_but_label_and_id(tmp_path):
    table = tmp_path / "people.csv"
    table.write_text("id,age,city,label\n1,30,Oslo,yes\n2,41,Rome,no\n3,30,Oslo,no\n4,55,Oslo,yes\n5,30,Rome,yes\n")
    stoke.pack(table, tmp_path / "ds", progress=False, workers=1)
    dataset = stoke.open(tmp_path / "ds")
    assert content_fields(dataset) == ["age", "city"]
    report = make_splits(dataset, {"train": 0.6, "val": 0.4}, seed=0, dedupe=True)
    assert report.dropped == [2]  # rows 0 and 2 hold the same features under two ids and two labels
    by_age = make_splits(dataset, {"train": 0.6, "val": 0.4}, seed=0, dedupe=True, content=["age"])
    assert by_age.dropped == [2, 4] and by_age.content == ["age"]
    with pytest.raises(ConfigError, match=r"content names 'height', which is not a field"):
        make_splits(dataset, {"train": 0.6, "val": 0.4}, content=["height"])


def test_dedupe_refuses_a_dataset_with_nothing_to_compare(tmp_path):
    stoke.pack({"label": np.arange(8) % 2}, tmp_path / "ds", progress=False)
    dataset = stoke.open(tmp_path / "ds")
    assert content_fields(dataset) == []
    report = make_splits(dataset, {"train": 0.5, "val": 0.5})
    assert report.leaks == [] and report.content == []  # nothing compared, and said so, not 8 "identical" samples
    with pytest.raises(ConfigError, match=r"no field to compare"):
        make_splits(dataset, {"train": 0.5, "val": 0.5}, dedupe=True)


# ---- what --stratify accepts --------------------------------------------------------------------------------


def test_stratify_on_a_text_field_keeps_each_value_in_share(tmp_path):
    languages = ["en"] * 30 + ["fr"] * 20 + ["de"] * 10
    stoke.pack(
        [{"x": np.full(2, i), "language": language} for i, language in enumerate(languages)],
        tmp_path / "ds",
        progress=False,
    )
    dataset = stoke.open(tmp_path / "ds")
    report = make_splits(dataset, {"train": 0.5, "val": 0.5}, seed=3, stratify="language")
    parts = dataset.splits().parts
    values = np.array(languages)
    for name, part in parts.items():
        assert report.balance_by_name()[name] == {
            lang: int((values[part] == lang).sum()) for lang in ("de", "en", "fr")
        }
        assert {lang: int((values[part] == lang).sum()) for lang in ("de", "en", "fr")} == {"de": 5, "en": 15, "fr": 10}
    assert report.to_dict()["balance_by_name"]["val"] == {"de": 5, "en": 15, "fr": 10}


def test_stratify_on_a_float_field_is_refused_unless_binned(tmp_path):
    prices = np.random.default_rng(0).lognormal(3, 1, 200)
    stoke.pack({"x": np.arange(200), "price": prices, "grade": np.arange(200.0) % 3}, tmp_path / "ds", progress=False)
    dataset = stoke.open(tmp_path / "ds")
    with pytest.raises(ConfigError, match=r"'price' is a float field.*stratify_bins"):
        make_splits(dataset, {"train": 0.8, "val": 0.2}, stratify="price")
    report = make_splits(dataset, {"train": 0.8, "val": 0.2}, seed=1, stratify="price", stratify_bins=4)
    parts = dataset.splits().parts
    edges = np.quantile(prices, [0.25, 0.5, 0.75])
    bins = np.searchsorted(edges, prices, side="right")
    for name, share in (("train", 0.8), ("val", 0.2)):
        assert [int((bins[parts[name]] == b).sum()) for b in range(4)] == [round(share * 50)] * 4  # 50 per quartile
    assert len(report.class_names) == 4 and all(".." in name for name in report.class_names.values())
    assert dataset.splits().info["stratify_bins"] == 4
    graded = make_splits(dataset, {"train": 0.8, "val": 0.2}, stratify="grade")  # whole numbers: classes
    assert graded.class_names == {0: "0", 1: "1", 2: "2"}
    with pytest.raises(ConfigError, match=r"200 distinct values among 200 samples"):
        make_splits(dataset, {"train": 0.8, "val": 0.2}, stratify="x")


def test_stratify_refuses_fields_that_cannot_be_classes(tmp_path, image_folder):
    stoke.pack(image_folder, tmp_path / "ds", progress=False, workers=1)
    dataset = stoke.open(tmp_path / "ds")
    with pytest.raises(ConfigError, match=r"'image' is an image field"):
        make_splits(dataset, {"train": 0.5, "val": 0.5}, stratify="image")
    with pytest.raises(ConfigError, match=r"'colour', which is not a field of .*; its fields are image, label, path"):
        make_splits(dataset, {"train": 0.5, "val": 0.5}, stratify="colour")
    with pytest.raises(ConfigError, match=r"stratify_bins bins a number; 'path' is a text field"):
        make_splits(dataset, {"train": 0.5, "val": 0.5}, stratify="path", stratify_bins=3)
    report = make_splits(dataset, {"train": 0.5, "val": 0.5}, stratify="label")
    assert report.class_names == {0: "class_0", 1: "class_1"}  # the manifest's class names
    assert report.to_dict()["balance"]["train"] == {"0": 3, "1": 3}  # unchanged: ids
    assert report.to_dict()["balance_by_name"]["train"] == {"class_0": 3, "class_1": 3}
