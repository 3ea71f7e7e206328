"""stoke.open: lazy, random access, views, columns, and a plain torch DataLoader over it."""

from __future__ import annotations

import pickle
from unittest import mock

import numpy as np
import pytest
import torch

import stoke
from stoke.errors import ConfigError, SampleError
from stoke.format.shard import DATA_START


@pytest.fixture
def numbers(tmp_path):
    out = tmp_path / "ds"
    stoke.pack(
        {"x": np.arange(40.0).reshape(20, 2), "y": np.arange(20) * 3, "w": np.linspace(0, 1, 20)},
        out,
        shard_items=6,
        progress=False,
    )
    return out


def test_open_reads_the_manifest_and_no_shard(numbers):
    real_open = open
    opened = []

    def spy(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    with mock.patch("builtins.open", spy), mock.patch("stoke.format.shard.open", spy, create=True):
        dataset = stoke.open(numbers)
        assert len(dataset) == 20
        assert not any(path.endswith(".stk") for path in opened)
        assert dataset[13]["y"] == 39
        assert sum(path.endswith(".stk") for path in opened) == 1  # only the shard holding sample 13


def test_random_access_and_negative_indices(numbers):
    dataset = stoke.open(numbers)
    for index in np.random.default_rng(0).permutation(20):
        sample = dataset[int(index)]
        assert sample["y"] == 3 * index and sample["x"].tolist() == [2.0 * index, 2.0 * index + 1]
    assert dataset[-1]["y"] == 57
    with pytest.raises(IndexError):
        dataset[20]
    with pytest.raises(TypeError):
        dataset["0"]
    assert "20 samples" in repr(dataset)


def test_views_select_without_copying(numbers):
    dataset = stoke.open(numbers)
    view = dataset.select([5, 1, 19])
    assert [sample["y"] for sample in view] == [15, 3, 57]
    nested = view.select([2, 0])
    assert [sample["y"] for sample in nested] == [57, 15]
    assert nested.dataset_index(np.array([0, 1])).tolist() == [19, 5]
    with pytest.raises(IndexError):
        dataset.select([20])


def test_column_reads_scalars_without_decoding(numbers):
    dataset = stoke.open(numbers)
    np.testing.assert_array_equal(dataset.column("y"), np.arange(20) * 3)
    np.testing.assert_allclose(dataset.column("w"), np.linspace(0, 1, 20))
    np.testing.assert_array_equal(dataset.select([3, 2]).column("y"), [9, 6])
    with pytest.raises(ConfigError, match=r"int and float"):
        dataset.column("x")


def test_pickles_without_its_mappings(numbers):
    dataset = stoke.open(numbers)
    dataset[0]
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy[7]["y"] == 21 and len(pickle.dumps(dataset)) < 10_000


def test_inside_a_plain_torch_dataloader_with_worker_processes(numbers):
    dataset = stoke.open(numbers)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=2, shuffle=False)
    labels = torch.cat([batch["y"] for batch in loader])
    assert labels.tolist() == (np.arange(20) * 3).tolist()


def test_damaged_sample_names_index_and_shard(numbers):
    dataset = stoke.open(numbers)
    shard = dataset.manifest.shards[1]
    path = numbers / shard.file
    raw = bytearray(path.read_bytes())
    raw[DATA_START + 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    damaged = stoke.open(numbers)
    assert not damaged.is_intact(6) and damaged.is_intact(7)
    reason = "its bytes or field boundaries do not match"
    with pytest.raises(SampleError, match=f"sample 6 in .*{shard.file} is damaged: {reason}"):
        damaged.read_fields(6, verify=True)


def test_getitem_refuses_a_damaged_sample(numbers):
    dataset = stoke.open(numbers)
    path = numbers / dataset.manifest.shards[0].file
    raw = bytearray(path.read_bytes())
    raw[DATA_START + 1] ^= 0x01  # a float of sample 0: still decodes, so only the checksum can tell
    path.write_bytes(bytes(raw))
    damaged = stoke.open(numbers)
    with pytest.raises(SampleError, match=r"sample 0 .* do not match their checksum"):
        damaged[0]
    assert damaged[1]["y"] == 3
