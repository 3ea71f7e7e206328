"""The Loader: exactly once per epoch, identical across thread counts, safe buffers, clear errors."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import stoke
from helpers import photo
from stoke.errors import ConfigError, SampleError
from stoke.ops import CenterCrop, Normalize, RandomHorizontalFlip, RandomResizedCrop, Resize


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.integers(0, 70),
    batch_size=st.integers(1, 16),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    threads=st.integers(1, 3),
)
def test_each_index_exactly_once_per_epoch(size, batch_size, drop_last, shuffle, threads):
    loader = stoke.Loader(
        {"x": np.arange(size, dtype=np.float64)}, batch_size, shuffle=shuffle, drop_last=drop_last, num_threads=threads
    )
    expected_batches = size // batch_size if drop_last else -(-size // batch_size)
    assert len(loader) == expected_batches
    orders = []
    for _ in range(3):
        batches = list(loader)
        assert len(batches) == expected_batches
        assert all(len(b["index"]) == batch_size for b in (batches if drop_last else batches[:-1]))
        seen = np.concatenate([b["index"].numpy() for b in batches]) if batches else np.empty(0, np.int64)
        assert len(set(seen.tolist())) == len(seen)  # nothing repeated
        if drop_last:
            assert len(seen) == expected_batches * batch_size
        else:
            assert sorted(seen.tolist()) == list(range(size))  # nothing lost
        for batch in batches:
            np.testing.assert_array_equal(batch["x"].numpy(), batch["index"].numpy().astype(np.float64))
        orders.append(seen.tolist())
    if shuffle and len(orders[0]) > 3:
        assert orders[0] != orders[1] or orders[1] != orders[2]  # a new order each epoch
    loader.close()


def batches_of(dataset, threads, seed, epochs=2):
    transforms = {"image": [RandomResizedCrop(24), RandomHorizontalFlip()]}
    loader = stoke.Loader(
        dataset, batch_size=5, shuffle=True, seed=seed, num_threads=threads, transforms=transforms, prefetch=2
    )
    out = [[{k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()} for b in loader] for _ in range(epochs)]
    loader.close()
    return out


def test_identical_batches_whatever_the_thread_count(photos):
    reference = batches_of(photos, threads=1, seed=3)
    for threads in (2, 4):
        other = batches_of(photos, threads=threads, seed=3)
        for epoch_a, epoch_b in zip(reference, other):
            for a, b in zip(epoch_a, epoch_b):
                assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])
                assert torch.equal(a["label"], b["label"]) and a["path"] == b["path"]
    assert not torch.equal(reference[0][0]["image"], reference[1][0]["image"])  # epochs differ
    assert not torch.equal(batches_of(photos, threads=2, seed=4)[0][0]["index"], reference[0][0]["index"])


def test_batches_match_the_dataset(photos):
    loader = stoke.Loader(photos, batch_size=4, shuffle=False, transforms={"image": [Resize((20, 30))]})
    for batch in loader:
        assert batch["image"].shape[1:] == (3, 20, 30) and batch["image"].dtype == torch.uint8
        for row, index in enumerate(batch["index"].tolist()):
            sample = photos[index]
            assert batch["label"][row] == sample["label"] and batch["path"][row] == sample["path"]
            expected = np.asarray(Image.fromarray(sample["image"]).resize((30, 20), Image.BILINEAR))
            got = batch["image"][row].permute(1, 2, 0).numpy()
            assert np.abs(got.astype(int) - expected).mean() < 5  # another resampler; a wrong sample is ~50 off


def test_held_batches_are_never_overwritten():
    data = {"x": np.arange(200, dtype=np.int64), "v": np.arange(400, dtype=np.float32).reshape(200, 2)}
    loader = stoke.Loader(data, batch_size=8, shuffle=True, prefetch=2, num_threads=2)
    kept = list(loader)  # every batch held at once
    for batch in kept:
        np.testing.assert_array_equal(batch["x"].numpy(), batch["index"].numpy())
        np.testing.assert_array_equal(batch["v"].numpy()[:, 0], 2 * batch["index"].numpy())
    labels_only = [batch["x"] for batch in loader]  # holding one field keeps exactly that field safe
    assert sorted(torch.cat(labels_only).tolist()) == list(range(200))


def test_a_training_loop_reuses_its_buffers():
    loader = stoke.Loader({"x": np.zeros((64, 3, 8, 8), np.float32)}, batch_size=4, prefetch=2, num_threads=2)
    for _ in range(3):
        for batch in loader:
            batch = None  # noqa: F841 - the loop drops each batch, as training does
    stats = loader.stats()
    assert stats["buffer_sets"] <= loader.prefetch + 2
    assert stats["buffer_allocations"] == stats["buffer_sets"] * 2  # 'x' and 'index', allocated once per set
    assert stats["batches"] == 48 and stats["samples"] == 192


class Photos(torch.utils.data.Dataset):
    """A user's own Dataset returning (PIL image, label) pairs."""

    def __init__(self, size: int, fail_at: int | None = None) -> None:
        self.size, self.fail_at = size, fail_at

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):
        if index == self.fail_at:
            raise RuntimeError(f"cannot read record {index}")
        return Image.fromarray(photo(30 + index, 40, seed=index)), index % 3


def test_a_users_own_dataset(tmp_path):
    loader = stoke.Loader(Photos(10), batch_size=4, shuffle=False, transforms={"image": [CenterCrop(16)]})
    batches = list(loader)
    assert [b.index.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    images, labels = batches[0]  # (image, label) items give (images, labels) batches
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 1, 2, 0]
    expected = photo(31, 40, seed=1)[8:24, 12:28]  # torchvision: top = round((31 - 16) / 2) = round(7.5) = 8
    np.testing.assert_array_equal(images[1].permute(1, 2, 0).numpy(), expected)


def test_an_exception_reaches_the_loop_with_the_index_and_traceback():
    threads_before = threading.active_count()
    loader = stoke.Loader(
        Photos(20, fail_at=13),
        batch_size=4,
        num_threads=2,
        transforms={"image": [CenterCrop(8)]},
        on_error="raise",
    )
    for _ in range(2):  # the failure is reported the same way in every epoch, and never hangs the loop
        iterator = iter(loader)
        delivered = [next(iterator).index.tolist() for _ in range(3)]
        assert delivered == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
        with pytest.raises(
            SampleError, match=r"sample 13: dataset.13. raised RuntimeError: cannot read record 13"
        ) as caught:
            next(iterator)
        assert caught.value.index == 13
        cause = caught.value.__cause__
        assert isinstance(cause, RuntimeError)
        frame = cause.__traceback__
        while frame.tb_next is not None:
            frame = frame.tb_next
        assert frame.tb_frame.f_code.co_name == "__getitem__"  # the user's own line, with its traceback
        with pytest.raises(StopIteration):
            next(iterator)  # the failed epoch is over
    loader.close()
    assert threading.active_count() <= threads_before


def test_variable_length_fields_are_padded_with_lengths():
    records = [{"tokens": np.arange(n), "blob": bytes(range(n)), "text": "x" * n, "meta": {"n": n}} for n in (3, 1, 4)]
    batch = next(iter(stoke.Loader(records, batch_size=3, shuffle=False)))
    assert batch["tokens"].tolist() == [[0, 1, 2, 0], [0, 0, 0, 0], [0, 1, 2, 3]]
    assert batch["tokens_lengths"].tolist() == [3, 1, 4]
    assert batch["blob"].dtype == torch.uint8 and batch["blob_lengths"].tolist() == [3, 1, 4]
    assert batch["text"] == ["xxx", "x", "xxxx"] and batch["meta"] == [{"n": 3}, {"n": 1}, {"n": 4}]


def test_variable_length_fields_from_a_packed_dataset(tmp_path):
    records = [{"grid": np.ones((n, 2), np.float32) * n} for n in (1, 3, 2)]
    stoke.pack(records, tmp_path / "ds", fields={"grid": stoke.NDArrayField("float32", (None, 2))}, progress=False)
    batch = next(iter(stoke.Loader(stoke.open(tmp_path / "ds"), batch_size=3, shuffle=False)))
    assert batch["grid"].shape == (3, 3, 2)
    assert batch["grid_lengths"].tolist() == [[1, 2], [3, 2], [2, 2]]


def test_normalize_and_channels_last(photos):
    transforms = {"image": [RandomResizedCrop(16), Normalize([0.5] * 3, [0.5] * 3)]}
    batch = next(iter(stoke.Loader(photos, batch_size=4, transforms=transforms, channels_last=True)))
    image = batch["image"]
    assert image.shape == (4, 3, 16, 16) and image.dtype == torch.float32
    assert image.is_contiguous(memory_format=torch.channels_last)
    assert float(image.min()) >= -1.0 and float(image.max()) <= 1.0


def test_device_and_field_selection(photos):
    loader = stoke.Loader(
        photos, batch_size=3, device="cpu", fields=["image", "label"], transforms={"image": [CenterCrop(8)]}
    )
    batch = next(iter(loader))
    assert set(batch) == {"image", "label", "index"}


def test_configuration_errors_are_clear(photos):
    with pytest.raises(ConfigError, match=r"different sizes .* stoke.ops.RandomResizedCrop"):
        stoke.Loader(photos, batch_size=2)
    with pytest.raises(ConfigError, match=r"not loaded"):
        stoke.Loader(photos, batch_size=2, transforms={"imgae": [CenterCrop(8)]})
    with pytest.raises(ConfigError, match=r"per-image ops come first"):
        stoke.Loader(photos, batch_size=2, transforms={"image": [Normalize([0.5] * 3, [0.5] * 3), CenterCrop(8)]})
    with pytest.raises(ConfigError, match=r"no field 'caption'"):
        stoke.Loader(photos, batch_size=2, fields=["caption"])
    with pytest.raises(ConfigError, match=r"batch_size"):
        stoke.Loader(photos, batch_size=0)
    with pytest.raises(ConfigError, match=r"num_threads"):
        stoke.Loader(photos, batch_size=2, num_threads=0, transforms={"image": [CenterCrop(8)]})


def test_breaking_an_epoch_then_starting_the_next(photos):
    loader = stoke.Loader(photos, batch_size=2, shuffle=True, transforms={"image": [CenterCrop(8)]}, prefetch=3)
    peeked = next(iter(loader))["index"].tolist()  # leave epoch 0 after one batch
    rest = [i for b in loader for i in b["index"].tolist()]  # a new iter() continues epoch 0: nothing skipped
    assert sorted(peeked + rest) == list(range(len(photos)))
    assert loader.epoch == 1
    second = list(loader)  # epoch 0 is finished: this is epoch 1, whole
    assert sorted(torch.cat([b["index"] for b in second]).tolist()) == list(range(len(photos)))
    assert loader.epoch == 2
    loader.close()
    gc.collect()


def test_same_size_images_from_a_users_dataset_need_no_resize():
    class Squares:
        def __len__(self):
            return 5

        def __getitem__(self, index):
            return {"image": Image.fromarray(photo(12, 12, seed=index)), "tag": np.str_(f"t{index}")}

    batch = next(iter(stoke.Loader(Squares(), batch_size=5, shuffle=False)))
    assert batch["image"].shape == (5, 3, 12, 12)
    assert batch["tag"] == ["t0", "t1", "t2", "t3", "t4"] and type(batch["tag"][0]) is str


def test_zero_dimensional_arrays():
    values = np.arange(4) + 1j
    batch = next(iter(stoke.Loader({"z": values}, batch_size=4, shuffle=False)))
    assert batch["z"].tolist() == values.tolist()


def test_batch_keys_cannot_collide():
    records = [{"tokens": np.arange(n), "tokens_lengths": n} for n in (1, 2)]
    with pytest.raises(ConfigError, match=r"batch key 'tokens_lengths' would hold two things"):
        stoke.Loader(records, batch_size=2)
    batch = next(iter(stoke.Loader(records, batch_size=2, fields=["tokens"], shuffle=False)))
    assert batch["tokens_lengths"].tolist() == [1, 2]
