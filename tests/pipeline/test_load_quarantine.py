"""Load-time quarantine: failed samples are listed with reasons, skipped or replaced, never zero-filled."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import stoke
from stoke.errors import ErrorBudgetExceeded, SampleError
from stoke.verify import verify


def scalar_item(index: int) -> dict:
    return {"x": float(index), "word": "w" * (index % 3 + 1)}


def ragged_item(index: int) -> dict:
    """A variable-length bytes field and a ragged array: the fields the padding code handles."""
    return {"blob": bytes([index]) * (index % 5 + 1), "ragged": np.arange(index % 4 + 1, dtype=np.float32)}


class Flaky(torch.utils.data.Dataset):
    """Items ``item(index)`` (``{"x": index, ...}`` by default); reading the indices in ``bad`` raises."""

    def __init__(self, size: int, bad: set[int], item=scalar_item) -> None:
        self.size, self.bad, self.item = size, bad, item

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        if index in self.bad:
            raise OSError(f"record {index} is unreadable")
        return self.item(index)


def test_skip_drops_the_failed_samples_and_lists_them(caplog):
    loader = stoke.Loader(Flaky(20, {3, 7}), batch_size=4, shuffle=False, on_error="skip", max_bad_fraction=0.2)
    with caplog.at_level(logging.WARNING, logger="stoke"):
        batches = list(loader)
    assert [b["index"].tolist() for b in batches][:2] == [[0, 1, 2], [4, 5, 6]]
    for batch in batches:  # every row is its own sample: nothing zero-filled, lists compacted alike
        assert batch["x"].tolist() == [float(i) for i in batch["index"].tolist()]
        assert batch["word"] == ["w" * (i % 3 + 1) for i in batch["index"].tolist()]
    assert [(r["index"], r["error"]) for r in loader.quarantine] == [(3, "OSError"), (7, "OSError")]
    assert "record 3 is unreadable" in loader.quarantine[0]["reason"]
    assert sum("quarantined" in message for message in caplog.messages) == 2
    list(loader)
    assert len(loader.quarantine) == 2  # one record per sample, not per epoch
    assert loader.stats()["quarantined"] == 2


@pytest.mark.parametrize("workers", ["thread", "process"])
def test_replace_keeps_batches_full_with_deterministic_stand_ins(workers):
    def run():
        loader = stoke.Loader(
            Flaky(30, {2, 11, 17}), batch_size=5, seed=1, on_error="replace", max_bad_fraction=0.2, workers=workers
        )
        epoch = [(b["index"].tolist(), b["x"].tolist()) for b in loader]
        loader.close()
        return epoch

    first, second = run(), run()
    assert first == second  # the same stand-ins every run, whatever the workers
    assert all(len(indices) == 5 for indices, _ in first)
    for indices, values in first:
        assert values == [float(i) for i in indices] and not {2, 11, 17} & set(indices)


def test_raise_stops_at_the_first_failure_with_its_traceback():
    loader = stoke.Loader(Flaky(20, {6}), batch_size=4, shuffle=False, on_error="raise")
    with pytest.raises(SampleError, match=r"sample 6: dataset\[6\] raised OSError: record 6 is unreadable") as caught:
        list(loader)
    assert caught.value.index == 6 and isinstance(caught.value.__cause__, OSError)


def test_a_flood_of_failures_is_one_error_naming_the_first_causes():
    loader = stoke.Loader(Flaky(400, set(range(0, 400, 3))), batch_size=10, shuffle=False, max_bad_fraction=0.05)
    expected = r"21 samples failed in epoch 0, more than max_bad_fraction=0.05"
    with pytest.raises(ErrorBudgetExceeded, match=expected) as e:
        list(loader)
    assert "allows (20 of 400)" in str(e.value)
    assert "sample 0: dataset[0] raised OSError" in str(e.value) and "sample 3:" in str(e.value)
    assert isinstance(e.value.__cause__, OSError)  # the first failure's own traceback


def test_skip_skips_on_a_small_dataset_with_the_default_budget():
    # 0.001 of 50 samples is 0: the floor of MIN_BAD_SAMPLES lets a few failures be skipped all the same
    loader = stoke.Loader(Flaky(50, {4, 30}), batch_size=8)
    delivered = [i for batch in loader for i in batch["index"].tolist()]
    assert delivered == [i for i in range(50) if i not in (4, 30)]
    assert [record["index"] for record in loader.quarantine] == [4, 30]
    flood = stoke.Loader(Flaky(50, set(range(0, 50, 4))), batch_size=8)  # 13 failures: over the floor of 10
    with pytest.raises(ErrorBudgetExceeded, match=r"11 samples failed in epoch 0.*allows \(10 of 50\)"):
        list(flood)
    strict = stoke.Loader(Flaky(50, {4}), batch_size=8, max_bad_fraction=0)  # 0 tolerates none
    with pytest.raises(ErrorBudgetExceeded, match=r"1 samples failed in epoch 0"):
        list(strict)


@pytest.mark.parametrize("workers", ["thread", "process"])
def test_a_batch_whose_samples_all_fail_is_skipped(workers):
    loader = stoke.Loader(Flaky(24, set(range(8, 16)), ragged_item), batch_size=8, workers=workers, num_threads=2)
    batches = list(loader)  # the second batch fails whole: skipped, not a reshape error from the padding
    assert [b["index"].tolist() for b in batches] == [list(range(8)), list(range(16, 24))]
    assert batches[1]["blob_lengths"].tolist() == [i % 5 + 1 for i in range(16, 24)]
    assert sorted(record["index"] for record in loader.quarantine) == list(range(8, 16))
    assert loader.state_dict()["epoch"] == 1  # and the epoch ended normally
    loader.close()


def test_an_epoch_whose_every_sample_fails_is_one_error():
    dataset = Flaky(6, set(), ragged_item)
    loader = stoke.Loader(dataset, batch_size=4)
    dataset.bad = set(range(6))  # readable when the Loader looked at the first items; none is now
    with pytest.raises(ErrorBudgetExceeded, match=r"every one of the 6 samples of epoch 0 failed"):
        list(loader)


class Numbered(torch.utils.data.Dataset):
    """8x8 images whose every pixel is the sample's index."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, index: int):
        return {"image": Image.fromarray(np.full((8, 8, 3), index, np.uint8))}


def fail_on_5_and_22(image):
    if image[0, 0, 0] in (5, 22):
        raise ValueError("this image is cursed")


def test_failures_are_kept_as_data_and_free_their_batch_buffers():
    # A pixel op fails while the image stage's frame holds a view of the batch buffer: kept as an exception
    # with its traceback, the failure would keep that buffer alive, and every epoch would allocate another.
    from stoke.ops import Map

    loader = stoke.Loader(
        Numbered(),
        batch_size=8,
        num_threads=2,
        prefetch=1,
        max_bad_fraction=0.2,
        transforms={"image": [Map(fail_on_5_and_22)]},
    )
    for _ in range(6):
        for batch in loader:
            del batch
    stats = loader.stats()
    assert len(loader.quarantine) == 2
    assert stats["buffer_allocations"] == stats["buffer_sets"] * 2  # 'image' and 'index', allocated once per set
    assert all(isinstance(value, (int, str, type(None))) for record in loader.quarantine for value in record.values())
    assert loader.quarantine_log.num_failed == 2
    loader.close()


@pytest.fixture(scope="module")
def packed_arrays(tmp_path_factory):
    root = tmp_path_factory.mktemp("arrays")
    values = np.arange(60 * 16, dtype=np.float32).reshape(60, 16)
    stoke.pack({"v": values, "y": np.arange(60)}, root / "ds", shard_items=10, progress=False)
    return root / "ds", values


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=6))
def test_flipped_bytes_are_quarantined_at_load_time_and_match_stoke_verify(packed_arrays, flips):
    source, values = packed_arrays
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "ds"
        shutil.copytree(source, copy)
        check_flips(copy, values, flips)


def check_flips(copy, values, flips):
    shards = sorted(copy.glob("shard-*"))
    for shard_number, offset, mask in flips:
        shard = shards[shard_number % len(shards)]
        data = bytearray(shard.read_bytes())
        data[offset % len(data)] ^= mask
        shard.write_bytes(bytes(data))
    damaged = set(verify(copy).damaged_indices)
    loader = stoke.Loader(stoke.open(copy), batch_size=8, on_error="skip", max_bad_fraction=1.0, num_threads=2)
    delivered = {}
    for batch in loader:
        for index, row in zip(batch["index"].tolist(), batch["v"].numpy()):
            delivered[index] = row
    quarantined = {record["index"] for record in loader.quarantine}
    assert quarantined == damaged  # the loader catches exactly what stoke verify reports
    assert set(delivered) == set(range(60)) - damaged
    for index, row in delivered.items():  # and every undamaged sample loads unchanged
        np.testing.assert_array_equal(row, values[index])
    loader.close()


@pytest.mark.parametrize("workers", ["thread", "process"])
def test_a_stuck_transform_is_reported_after_the_timeout(photos, workers):
    import time

    from stoke.ops import Map, RandomResizedCrop

    def hang_sometimes(image, rng):
        if rng.random() < 0.3:
            time.sleep(30)

    loader = stoke.Loader(
        photos,
        batch_size=21,
        transforms={"image": [RandomResizedCrop(8), Map(hang_sometimes, random=True)]},
        workers=workers,
        timeout=1.0,
    )
    started = time.monotonic()
    with pytest.raises(SampleError, match=r"did not finish in 1 s; samples still in work: \d+"):
        next(iter(loader))
    assert time.monotonic() - started < 10  # reported, not hung
    loader.close()
