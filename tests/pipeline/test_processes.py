"""Process workers: the same batches as threads, through shared memory; failures reported, never hung."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

import stoke
from helpers import photo
from stoke.errors import SampleError
from stoke.ops import Map, RandomHorizontalFlip, RandomResizedCrop
from stoke.pipeline.processes import RemoteTraceback


def jitter(image: np.ndarray, rng: np.random.Generator) -> None:
    """A pure-Python-ish augmentation with randomness: add a random offset to each row, in place."""
    offsets = rng.integers(0, 4, image.shape[0], dtype=np.uint8)
    for row, offset in enumerate(offsets):
        image[row] += offset


def epochs_of(loader: stoke.Loader, epochs: int = 2) -> list[list[dict]]:
    """Every batch of a few epochs, copied out of the loader's buffers."""
    result = [
        [{key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in b.items()} for b in loader]
        for _ in range(epochs)
    ]
    loader.close()
    return result


def assert_same(left: list[list[dict]], right: list[list[dict]]) -> None:
    assert len(left) == len(right)
    for epoch_left, epoch_right in zip(left, right):
        assert len(epoch_left) == len(epoch_right)
        for a, b in zip(epoch_left, epoch_right):
            assert a.keys() == b.keys()
            for key in a:
                if isinstance(a[key], torch.Tensor):
                    assert torch.equal(a[key], b[key]), key
                else:
                    assert a[key] == b[key], key


def test_packed_images_come_out_identical_to_threads(photos):
    transforms = {"image": [RandomResizedCrop(24), RandomHorizontalFlip(), Map(jitter, random=True)]}
    make = lambda workers: stoke.Loader(  # noqa: E731
        photos, batch_size=5, shuffle=True, seed=3, transforms=transforms, workers=workers, num_threads=2, prefetch=2
    )
    threads, processes = epochs_of(make("thread")), epochs_of(make("process"))
    assert_same(threads, processes)
    assert sorted(torch.cat([b["index"] for b in processes[0]]).tolist()) == list(range(len(photos)))
    assert not torch.equal(processes[0][0]["image"], processes[1][0]["image"])  # new draws each epoch


def test_a_users_dataset_with_every_kind_of_field(tmp_path):
    records = [
        {"x": float(i), "tokens": np.arange(i % 4 + 1), "text": "t" * (i % 3), "meta": {"i": i}, "grid": np.eye(2) * i}
        for i in range(23)
    ]
    make = lambda workers: stoke.Loader(records, batch_size=4, shuffle=True, seed=1, workers=workers, num_threads=3)  # noqa: E731
    threads, processes = epochs_of(make("thread")), epochs_of(make("process"))
    assert_same(threads, processes)
    batch = processes[0][0]
    assert batch["meta"] == [{"i": i} for i in batch["index"].tolist()]
    assert batch["tokens_lengths"].tolist() == [i % 4 + 1 for i in batch["index"].tolist()]


def test_held_batches_are_never_overwritten(photos):
    transforms = {"image": [RandomResizedCrop(16)]}
    reference = epochs_of(stoke.Loader(photos, batch_size=3, transforms=transforms, num_threads=1), epochs=1)[0]
    loader = stoke.Loader(photos, batch_size=3, transforms=transforms, workers="process", num_threads=2, prefetch=2)
    held = list(loader)  # every batch kept, not copied: later batches must land in other memory
    for kept, expected in zip(held, reference):
        assert torch.equal(kept["image"], expected["image"]) and torch.equal(kept["index"], expected["index"])
    again = list(loader)  # the held sets are still held: the next epoch gets fresh arrays for them
    assert torch.equal(held[0]["image"], reference[0]["image"])
    assert len(again) == len(held)
    loader.close()


class SlowPhotos(torch.utils.data.Dataset):
    """A user's Dataset that takes a while per item (so that workers are busy when one is killed)."""

    def __init__(self, size: int, delay: float = 0.0, fail_at: int | None = None) -> None:
        self.size, self.delay, self.fail_at = size, delay, fail_at

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        if index == self.fail_at:
            raise RuntimeError(f"cannot read record {index}")
        time.sleep(self.delay)
        return Image.fromarray(photo(20, 20, seed=index)), index % 3


def test_an_error_in_a_worker_names_the_sample_and_carries_its_traceback():
    loader = stoke.Loader(SlowPhotos(12, fail_at=9), batch_size=4, workers="process", num_threads=2, on_error="raise")
    for _ in range(2):  # reported the same way every epoch, then the epoch is over
        iterator = iter(loader)
        assert [next(iterator).index.tolist() for _ in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
        expected = r"sample 9: dataset.9. raised RuntimeError: cannot read record 9"
        with pytest.raises(SampleError, match=expected) as caught:
            next(iterator)
        assert caught.value.index == 9
        assert isinstance(caught.value.__cause__, RemoteTraceback)
        assert "__getitem__" in str(caught.value.__cause__)  # the user's own frame, from the worker
        with pytest.raises(StopIteration):
            next(iterator)
    loader.close()


def test_a_map_that_returns_the_wrong_shape_is_named(photos):
    bad = Map(lambda image: image[:4])
    loader = stoke.Loader(photos, batch_size=4, transforms={"image": [RandomResizedCrop(8), bad]}, workers="process")
    with pytest.raises(SampleError, match=r"returned uint8 \(4, 8, 3\); it must return a uint8 array of shape"):
        next(iter(loader))
    loader.close()


def test_a_killed_worker_fails_the_epoch_clearly_and_the_next_epoch_runs():
    loader = stoke.Loader(
        SlowPhotos(40, delay=0.05), batch_size=4, shuffle=False, workers="process", num_threads=2, prefetch=4
    )
    iterator = iter(loader)
    next(iterator)
    victim = loader._line.executor.pids[0]
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(SampleError, match=rf"worker process {victim} was killed by SIGKILL"):
        for _ in iterator:  # never hangs: the dead worker's batches fail, the others finish
            pass
    survivors = torch.cat([b.index for b in loader])  # a fresh pool for the next epoch
    assert survivors.tolist() == list(range(40))
    assert victim not in loader._line.executor.pids
    loader.close()


def test_close_stops_the_processes_and_the_collector():
    threads_before = threading.active_count()
    loader = stoke.Loader({"x": np.arange(50.0)}, batch_size=8, workers="process", num_threads=2)
    list(loader)
    pids = loader._line.executor.pids
    assert all(psutil.pid_exists(pid) for pid in pids)
    loader.close()
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert threading.active_count() <= threads_before
    assert sorted(torch.cat([b["x"] for b in loader]).tolist()) == list(np.arange(50.0))  # iterating restarts it
    loader.close()


def test_close_stops_busy_workers_at_once_and_the_epoch_goes_on_after():
    dataset = SlowPhotos(40)
    loader = stoke.Loader(dataset, batch_size=4, shuffle=False, workers="process", num_threads=2, prefetch=8)
    dataset.delay = 0.25  # for the workers, forked by iter()
    iterator = iter(loader)
    first = next(iterator).index.tolist()
    pids = loader._line.executor.pids
    started = time.monotonic()
    loader.close()  # 8 batches in flight, 4 s of work: dropped, not waited for (Ctrl-C, the exit hook)
    assert time.monotonic() - started < 2.0
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    dataset.delay = 0.0  # for the next workers
    rest = torch.cat([batch.index for batch in loader]).tolist()  # the unfinished epoch continues
    assert first + rest == list(range(40))
    loader.close()


def test_workers_must_be_a_known_kind():
    known = r"workers must be 'thread' or 'process' or 'inline', got 'fibers'"
    with pytest.raises(stoke.errors.ConfigError, match=known):
        stoke.Loader({"x": np.arange(3.0)}, batch_size=2, workers="fibers")


def test_workers_forked_while_another_thread_holds_the_dataset_lock_still_read(tmp_path):
    stoke.pack({"x": np.arange(40)}, tmp_path / "ds", shard_items=8, progress=False)
    dataset = stoke.open(tmp_path / "ds")
    loader = stoke.Loader(dataset, batch_size=8, shuffle=False, workers="process", num_threads=2, timeout=20)
    with dataset.store._lock:  # held, as by a thread Loader's worker opening a shard of the same dataset
        batches = iter(loader)  # the workers fork now
        first = next(batches)
    rest = list(batches)
    assert torch.cat([first["x"], *(batch["x"] for batch in rest)]).tolist() == list(range(40))
    loader.close()
