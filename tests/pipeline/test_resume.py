"""Exactly-once resume: state_dict mid-epoch, a new Loader in a new world size, the same batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import stoke
from stoke.errors import ConfigError
from stoke.ops import Map, RandomHorizontalFlip, RandomResizedCrop


def copied(batch: dict) -> dict:
    return {key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def make(photos, workers="thread", **options):
    transforms = {"image": [RandomResizedCrop(16), RandomHorizontalFlip(), Map(lambda image: image // 2)]}
    return stoke.Loader(photos, batch_size=3, shuffle=True, seed=5, transforms=transforms, workers=workers, **options)


@pytest.mark.parametrize("workers", ["thread", "process"])
def test_resume_mid_epoch_continues_with_exactly_the_batches_not_delivered(photos, workers):
    reference = make(photos, workers)
    expected = [[copied(b) for b in reference] for _ in range(3)]
    reference.close()

    first = make(photos, workers, prefetch=4)
    list(first)  # epoch 0
    iterator = iter(first)
    delivered = [copied(next(iterator)) for _ in range(2)]  # 4 more batches are prefetched: they do not count
    state = json.loads(json.dumps(first.state_dict()))  # it goes into a JSON checkpoint
    first.close()
    assert state["epoch"] == 1 and state["samples_consumed"] == 6

    resumed = make(photos, workers)
    resumed.load_state_dict(state)
    rest = [copied(b) for b in resumed]
    after = [copied(b) for b in resumed]
    resumed.close()
    for got, want in zip(delivered + rest, expected[1], strict=True):
        assert torch.equal(got["index"], want["index"]) and torch.equal(got["image"], want["image"])
    for got, want in zip(after, expected[2], strict=True):  # and the epoch after is the one it would have been
        assert torch.equal(got["index"], want["index"]) and torch.equal(got["image"], want["image"])


def test_state_at_an_epoch_boundary_and_before_any_batch():
    loader = stoke.Loader({"x": np.arange(10.0)}, batch_size=4)
    assert (loader.state_dict()["epoch"], loader.state_dict()["samples_consumed"]) == (0, 0)
    list(loader)
    assert (loader.state_dict()["epoch"], loader.state_dict()["samples_consumed"]) == (1, 0)
    iterator = iter(loader)
    next(iterator)
    assert (loader.state_dict()["epoch"], loader.state_dict()["samples_consumed"]) == (1, 4)


def test_elastic_world_sizes_2_3_1_consume_each_sample_once_per_epoch():
    """Ranks as Loaders in one process, global batch 12: world size 2, then 3, then 1, within an epoch."""
    data = {"x": np.arange(100.0)}
    seen: list[int] = []
    state = None
    for world_size, steps in ((2, 2), (3, 3), (1, None)):
        ranks = [
            stoke.Loader(data, batch_size=12 // world_size, shuffle=True, seed=9, rank=rank, world_size=world_size)
            for rank in range(world_size)
        ]
        for loader in ranks:
            if state is not None:
                loader.load_state_dict(state)
        iterators = [iter(loader) for loader in ranks]
        step = 0
        while steps is None or step < steps:
            try:
                batches = [next(iterator) for iterator in iterators]
            except StopIteration:
                break
            assert len({len(batch["index"]) for batch in batches}) == 1  # same batch size on every rank
            for batch in batches:
                real = ~batch["is_padding"] if "is_padding" in batch else torch.ones(len(batch["index"]), dtype=bool)
                seen.extend(batch["index"][real].tolist())
            step += 1
        states = [loader.state_dict() for loader in ranks]
        assert all(other == states[0] | {"batch_size": other["batch_size"]} for other in states)  # ranks agree
        state = states[0]
    assert sorted(seen) == list(range(100))
    assert state["epoch"] == 1 and state["samples_consumed"] == 0


def test_distributed_evaluation_pads_and_flags_duplicates():
    ranks = [stoke.Loader({"x": np.arange(10.0)}, batch_size=2, shuffle=False, rank=r, world_size=4) for r in range(4)]
    epochs = [list(loader) for loader in ranks]
    assert {len(batches) for batches in epochs} == {2}  # ceil(10 / 4) = 3 samples per rank: batches of 2 and 1
    real = [i for batches in epochs for b in batches for i, pad in zip(b["index"].tolist(), b["is_padding"]) if not pad]
    padded = [i for batches in epochs for b in batches for i, pad in zip(b["index"].tolist(), b["is_padding"]) if pad]
    assert sorted(real) == list(range(10)) and len(padded) == 2


def test_rank_and_world_size_come_from_torch_distributed(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loader = stoke.Loader({"x": np.arange(5.0)}, batch_size=2)
        assert (loader.rank, loader.world_size) == (0, 1)
    finally:
        dist.destroy_process_group()
    with pytest.raises(ConfigError, match=r"rank must be an integer in \[0, 2\), got 2"):
        stoke.Loader({"x": np.arange(5.0)}, batch_size=2, rank=2, world_size=2)


def test_weighted_and_balanced_sampling_resume_and_partition(photos):
    loader = stoke.Loader(photos, batch_size=4, balance_by="label", fields=["label"], seed=2)
    full = [b["index"].tolist() for b in loader]
    again = stoke.Loader(photos, batch_size=4, balance_by="label", fields=["label"], seed=2)
    iterator = iter(again)
    head = [next(iterator)["index"].tolist()]
    resumed = stoke.Loader(photos, batch_size=4, balance_by="label", fields=["label"], seed=2)
    resumed.load_state_dict(again.state_dict())
    assert head + [b["index"].tolist() for b in resumed] == full
    ranks = [
        stoke.Loader(photos, batch_size=2, weights=np.arange(len(photos)) + 1.0, rank=r, world_size=2, fields=["label"])
        for r in range(2)
    ]
    draws = [i for loader in ranks for b in loader for i in b["index"][~b["is_padding"]].tolist()]
    single = stoke.Loader(photos, batch_size=4, weights=np.arange(len(photos)) + 1.0, fields=["label"])
    assert sorted(draws) == sorted(i for b in single for i in b["index"].tolist())  # the same draws, split


def test_a_state_from_another_dataset_or_seed_is_refused(photos):
    state = stoke.Loader(photos, batch_size=4, shuffle=True, seed=1, fields=["label"]).state_dict()
    with pytest.raises(ConfigError, match=r"saved with seed 1, this Loader has seed 0"):
        stoke.Loader(photos, batch_size=4, shuffle=True, fields=["label"]).load_state_dict(state)
    with pytest.raises(ConfigError, match=r"RandomOrder of 21 samples per epoch, this Loader has a RandomOrder of 5"):
        loader = stoke.Loader(photos.select(range(5)), batch_size=4, shuffle=True, seed=1, fields=["label"])
        loader.load_state_dict(state)
    with pytest.raises(ConfigError, match=r"not a stoke loader state"):
        stoke.Loader(photos, batch_size=4, fields=["label"]).load_state_dict({"epoch": 3})
    with pytest.raises(ConfigError, match=r"'samples_consumed' must be a non-negative integer"):
        stoke.Loader(photos, batch_size=4, seed=1, fields=["label"]).load_state_dict(state | {"samples_consumed": -2})


def test_a_state_without_its_order_is_refused_in_a_sentence():
    loader = stoke.Loader({"x": np.arange(8.0)}, batch_size=4)
    state = loader.state_dict()
    del state["order"]
    with pytest.raises(ConfigError, match=r"'order' must name the order it was saved with .*, got None"):
        loader.load_state_dict(state)
