"""Packing: every field type round-trips, the result does not depend on workers, the directory rules hold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import stoke
from helpers import photo
from stoke.errors import ConfigError, PackError
from stoke.format.fields import ImageField, NDArrayField
from stoke.format.manifest import MANIFEST_NAME, PACK_STATE_DIR

SAMPLE = st.fixed_dictionaries(
    {
        "image": hnp.arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9), st.just(3))),
        "label": st.integers(-(2**63), 2**63 - 1),
        "score": st.floats(allow_nan=False),
        "vector": hnp.arrays(np.float32, st.tuples(st.integers(0, 6)), elements=st.floats(-1e6, 1e6, width=32)),
        "blob": st.binary(max_size=50),
        "caption": st.text(max_size=30),
        "meta": st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
    }
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(samples=st.lists(SAMPLE, min_size=1, max_size=12), shard_items=st.integers(1, 5))
def test_every_field_type_roundtrips_through_pack_and_open(tmp_path_factory, samples, shard_items):
    out = tmp_path_factory.mktemp("pack") / "ds"
    fields = {"image": ImageField(encoding="png"), "vector": NDArrayField("float32", (None,))}
    result = stoke.pack(samples, out, fields=fields, shard_items=shard_items, workers=1, progress=False)
    assert result.num_samples == len(samples) and result.num_quarantined == 0
    dataset = stoke.open(out)
    assert {entry.name: entry.field.type_name for entry in dataset.manifest.fields} == {
        "image": "image", "label": "int", "score": "float", "vector": "ndarray", "blob": "bytes", "caption": "text",
        "meta": "json",
    }  # fmt: skip
    for index, sample in enumerate(samples):
        loaded = dataset[index]
        np.testing.assert_array_equal(loaded["image"], sample["image"])
        assert loaded["label"] == sample["label"] and loaded["score"] == sample["score"]
        np.testing.assert_array_equal(loaded["vector"], sample["vector"])
        assert (loaded["blob"], loaded["caption"], loaded["meta"]) == (
            sample["blob"],
            sample["caption"],
            sample["meta"],
        )


def test_result_is_independent_of_worker_count(tmp_path, image_folder):
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"ds{workers}"
        stoke.pack(image_folder, out, workers=workers, shard_items=3, progress=False)
        outputs.append(out)
    manifests = [json.loads((out / MANIFEST_NAME).read_text()) for out in outputs]
    assert manifests[0] == manifests[1]
    for shard in manifests[0]["shards"]:
        assert (outputs[0] / shard["file"]).read_bytes() == (outputs[1] / shard["file"]).read_bytes()
    assert not (outputs[0] / PACK_STATE_DIR).exists()


def test_manifest_records_schema_stats_classes_and_source(tmp_path, image_folder):
    stoke.pack(image_folder, tmp_path / "ds", max_side=40, image_mode="jpeg", quality=80, progress=False)
    manifest = stoke.open(tmp_path / "ds").manifest
    image = manifest.field_entry("image")
    assert image.field == ImageField(encoding="jpeg", quality=80, max_side=40)
    assert max(image.stats["max_height"], image.stats["max_width"]) == 40
    assert manifest.field_entry("label").classes == ["class_0", "class_1"]
    assert manifest.source["kind"] == "imagefolder" and manifest.source["num_items"] == 12
    assert manifest.pack["shard_items"] >= 1


def test_shard_size_target(tmp_path):
    data = {"x": np.zeros((1000, 256), np.float32)}  # 1 KiB per sample
    result = stoke.pack(data, tmp_path / "ds", shard_bytes=100_000, progress=False)
    counts = [shard.num_samples for shard in stoke.open(tmp_path / "ds").manifest.shards]
    assert result.num_shards == len(counts) > 5
    assert all(abs(count - 96) <= 1 for count in counts[:-1])  # 100,000 // (1024 + 16)


def test_directory_rules(tmp_path, image_folder):
    out = tmp_path / "ds"
    stoke.pack(image_folder, out, progress=False)
    with pytest.raises(PackError, match=r"already holds a dataset"):
        stoke.pack(image_folder, out, progress=False)
    again = stoke.pack(image_folder, out, resume=True, progress=False)  # resuming a finished pack: nothing to do
    assert again.num_samples == 12 and again.reused_shards == again.num_shards
    (out / "keep-me.txt").write_text("the user's own file")
    stoke.pack({"y": np.arange(3)}, out, overwrite=True, progress=False)
    assert (out / "keep-me.txt").exists()
    assert len(stoke.open(out)) == 3
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("")
    with pytest.raises(PackError, match=r"not empty"):
        stoke.pack(image_folder, other, progress=False)
    (tmp_path / "unfinished" / PACK_STATE_DIR).mkdir(parents=True)
    with pytest.raises(PackError, match=r"unfinished pack; continue it with --resume"):
        stoke.pack(image_folder, tmp_path / "unfinished", progress=False)


def test_bad_settings_are_config_errors(tmp_path):
    for options in ({"image_mode": "webp"}, {"color_mode": "CMYK"}, {"quality": 0}, {"workers": 0}, {"shard_items": 0}):
        with pytest.raises(ConfigError):
            stoke.pack({"y": np.arange(3)}, tmp_path / "ds", progress=False, **options)


def test_grayscale_pack_of_color_images(tmp_path):
    pixels = photo(10, 12)
    stoke.pack([{"image": Image.fromarray(pixels), "raw": pixels}], tmp_path / "ds", color_mode="L", progress=False)
    dataset = stoke.open(tmp_path / "ds")
    assert dataset.fields["image"].type_name == "image" and dataset.fields["raw"].type_name == "ndarray"
    expected = np.asarray(Image.fromarray(pixels).convert("L"))
    np.testing.assert_array_equal(dataset[0]["image"][:, :, 0], expected)
    np.testing.assert_array_equal(dataset[0]["raw"], pixels)
