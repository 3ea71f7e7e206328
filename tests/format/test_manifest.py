"""The manifest: validated before it is trusted, one clear sentence for every problem."""

from __future__ import annotations

import os

import numpy as np
import pytest

import stoke
from helpers import rewrite_manifest
from stoke.errors import FormatError, NotADatasetError, VersionError
from stoke.format.manifest import MANIFEST_NAME, PACK_STATE_DIR, Manifest, is_safe_file_name


@pytest.fixture
def dataset(tmp_path):
    out = tmp_path / "ds"
    stoke.pack({"x": np.arange(12.0).reshape(6, 2), "y": np.arange(6)}, out, shard_items=2, progress=False)
    return out


def rewrite(path, change):
    rewrite_manifest(path, change)  # sealed again: the change itself is what is refused


def test_roundtrip(dataset):
    manifest = Manifest.read(dataset)
    assert manifest.num_samples == 6 and len(manifest.shards) == 3
    assert Manifest.from_dict(manifest.to_dict(), where="m").to_dict() == manifest.to_dict()


def test_not_a_dataset_messages(tmp_path):
    with pytest.raises(NotADatasetError, match=r"does not exist"):
        stoke.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotADatasetError, match=r"not a stoke dataset .* `stoke pack SOURCE"):
        stoke.open(tmp_path / "empty")
    (tmp_path / "half" / PACK_STATE_DIR).mkdir(parents=True)
    with pytest.raises(NotADatasetError, match=r"unfinished pack .* --resume"):
        stoke.open(tmp_path / "half")


def test_newer_version_names_both_versions(dataset):
    rewrite(dataset, lambda d: d.update(format_version=7, created_by="stoke 9.0"))
    refusal = r"format version 7 by stoke 9.0; this stoke .* reads versions 1 to 2: upgrade"
    with pytest.raises(VersionError, match=refusal):
        stoke.open(dataset)


def test_truncated_manifest(dataset):
    path = dataset / MANIFEST_NAME
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FormatError, match=r"manifest.json is damaged .* re-pack"):
        stoke.open(dataset)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(num_samples=7), "hold 6 samples but num_samples is 7"),
        (lambda d: d.update(num_samples=-1), "num_samples"),
        (lambda d: d.update(format="other"), "not a stoke manifest"),
        (lambda d: d.update(checksum="md5"), "checksum"),
        (lambda d: d["shards"][0].update(file="../../etc/passwd"), "not a plain file name"),
        (lambda d: d["shards"][0].update(file="/etc/passwd"), "not a plain file name"),
        (lambda d: d["shards"][0].update(file=".hidden"), "not a plain file name"),
        (lambda d: d["shards"][1].update(file=d["shards"][0]["file"]), "repeats the shard"),
        (lambda d: d["shards"][0].update(xxh3_64="zz"), "checksum is invalid"),
        (lambda d: d["shards"][0].update(bytes=3), "bytes is 3, not a shard.s size"),
        (lambda d: d["fields"].append({"name": "index", "type": "int"}), "reserves the name 'index'"),
        (lambda d: d["fields"][0].update(type="pickle"), "does not know"),
        (lambda d: d.update(fields=[]), "non-empty list"),
    ],
)
def test_damaged_manifests_are_refused(dataset, change, message):
    rewrite(dataset, change)
    with pytest.raises(FormatError, match=message):
        stoke.open(dataset)


def test_a_link_out_of_the_dataset_is_not_followed(dataset, tmp_path):
    outside = tmp_path / "secret.stk"
    shard = dataset / Manifest.read(dataset).shards[0].file
    outside.write_bytes(shard.read_bytes())
    shard.unlink()
    os.symlink(outside, shard)
    ds = stoke.open(dataset)
    with pytest.raises(FormatError, match=r"outside the dataset directory"):
        ds[0]


def test_missing_shard_is_named(dataset):
    name = Manifest.read(dataset).shards[2].file
    (dataset / name).unlink()
    ds = stoke.open(dataset)
    assert ds[0]["y"] == 0  # other shards still read
    with pytest.raises(FormatError, match=f"shard {name} is missing"):
        ds[5]


@pytest.mark.parametrize("name", ["shard-000001.stk", "a", "A.b-c_d"])
def test_safe_names(name):
    assert is_safe_file_name(name)


@pytest.mark.parametrize("name", ["", "..", "a/b", ".x", "a\\b", "x" * 300, None, 3, "a..b"])
def test_unsafe_names(name):
    assert not is_safe_file_name(name)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["shards"][0].update(file=d["shards"][0]["file"] + "\n"), "not a plain file name"),
        (lambda d: d["shards"][0].update(xxh3_64=d["shards"][0]["xxh3_64"] + "\n"), "checksum is invalid"),
        (lambda d: d["fields"][0].update(dtype="<f16"), "invalid dtype"),
    ],
)
def test_near_misses_are_refused(dataset, change, message):
    rewrite(dataset, change)
    with pytest.raises(FormatError, match=message):
        stoke.open(dataset)


def test_nan_is_not_json(dataset):
    path = dataset / MANIFEST_NAME
    path.write_text(path.read_text().replace('"num_quarantined": 0', '"num_quarantined": NaN'))
    with pytest.raises(FormatError, match=r"NaN is not JSON"):
        stoke.open(dataset)


def test_a_linked_manifest_outside_the_dataset_is_refused(dataset, tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes((dataset / MANIFEST_NAME).read_bytes())
    (dataset / MANIFEST_NAME).unlink()
    os.symlink(outside, dataset / MANIFEST_NAME)
    with pytest.raises(FormatError, match=r"outside the dataset directory"):
        stoke.open(dataset)
