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

import stoke
from stoke.errors import ErrorBudgetExceeded, SampleError
from stoke.verify import verify


class Flaky(torch.utils.data.Dataset):
    """Items ``{"x": index}``; reading the indices in ``bad`` raises."""

    def __init__(self, size: int, bad: set[int]) -> None:
        self.size, self.bad = size, bad

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        if index in self.bad:
            raise OSError(f"record {index} is unreadable")
        return {"x": float(index), "word": "w" * (index % 3 + 1)}


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
    loader = stoke.Loader(Flaky(100, set(range(0, 100, 3))), batch_size=10, shuffle=False, max_bad_fraction=0.05)
    with pytest.raises(ErrorBudgetExceeded, match=r"6 samples failed in epoch 0, more than max_bad_fraction=0.05") as e:
        list(loader)
    assert "sample 0: dataset[0] raised OSError" in str(e.value) and "sample 3:" in str(e.value)
    assert isinstance(e.value.__cause__, OSError)  # the first failure's own traceback


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
