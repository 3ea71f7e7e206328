"""A Loader dropped without close() is freed at once (no reference cycle) and stops its workers, and a
forked copy of a Loader (inherited by a worker process) never blocks in its clean-up."""

from __future__ import annotations

import gc
import multiprocessing
import threading
import time
import weakref

import psutil
import pytest
import torch

import stoke


class Slow(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 400

    def __getitem__(self, index: int):
        time.sleep(0.002)
        return {"x": float(index)}


@pytest.mark.parametrize(("workers", "profile"), [("thread", False), ("process", False), ("thread", True)])
def test_a_loader_dropped_mid_epoch_is_freed_without_the_cyclic_gc(workers, profile):
    threads_before = threading.active_count()
    children_before = {child.pid for child in psutil.Process().children()}
    gc.disable()
    try:
        # (a Loader profiled into a directory is kept until its report is written: at steps= or at exit)
        loader = stoke.Loader(Slow(), batch_size=8, workers=workers, num_threads=2, prefetch=3, profile=profile)
        iterator = iter(loader)
        next(iterator)
        freed = weakref.ref(loader)
        del loader, iterator
        assert freed() is None  # reference counting freed it: nothing kept it in a cycle
    finally:
        gc.enable()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (
        threading.active_count() > threads_before
        or {child.pid for child in psutil.Process().children()} - children_before
    ):
        time.sleep(0.05)
    assert threading.active_count() <= threads_before  # its worker threads ended
    assert not {child.pid for child in psutil.Process().children()} - children_before  # and its processes


def _close_inherited_copy(loader: stoke.Loader, done) -> None:
    loader.close()  # a copy of a Loader with batches in flight: the batches are the parent's
    del loader
    gc.collect()
    done.set()


def test_a_forked_copy_of_a_loader_never_waits_for_the_parents_batches():
    loader = stoke.Loader(Slow(), batch_size=8, num_threads=2, prefetch=4)
    iterator = iter(loader)
    next(iterator)  # batches are in flight in this process's threads, which a fork does not copy
    context = multiprocessing.get_context("fork")
    done = context.Event()
    child = context.Process(target=_close_inherited_copy, args=(loader, done))
    child.start()
    child.join(10)
    alive = child.is_alive()
    if alive:
        child.kill()
        child.join()
    assert not alive and done.is_set() and child.exitcode == 0
    assert next(iterator)["index"].tolist() == list(range(8, 16))  # the parent's epoch goes on untouched
    loader.close()


def test_a_process_loader_after_a_dropped_one_delivers(photos):
    # Issue 17: a dropped Loader lived on as garbage; the next process Loader forked it into its workers,
    # whose cyclic GC then ran its clean-up there and waited for ever.
    first = stoke.Loader(photos, batch_size=4, fields=["label"], workers="process", num_threads=2)
    next(iter(first))
    del first
    second = stoke.Loader(photos, batch_size=4, fields=["label"], workers="process", num_threads=2, timeout=20)
    labels = [label for batch in second for label in batch["label"].tolist()]
    assert len(labels) == len(photos)
    second.close()
