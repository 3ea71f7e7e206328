"""Rank shares: disjoint, equal in batches, exactly once across any resume point and world-size change."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stoke.order import WeightedOrder, batches_in_share, class_balance, rank_share


def shares(order, start, batch_size, world_size, drop_last):
    return [rank_share(order, start, batch_size, rank, world_size, drop_last) for rank in range(world_size)]


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(0, 200),
    batch_size=st.integers(1, 12),
    world_size=st.integers(1, 7),
    drop_last=st.booleans(),
    seed=st.integers(0, 1000),
    data=st.data(),
)
def test_ranks_are_disjoint_equal_and_cover_the_rest_once(size, batch_size, world_size, drop_last, seed, data):
    order = np.random.default_rng(seed).permutation(size)
    start = data.draw(st.integers(0, size))
    parts = shares(order, start, batch_size, world_size, drop_last)
    batches = [-(-len(positions) // batch_size) for positions, _ in parts]
    assert len(set(batches)) == 1  # every rank the same number of batches
    assert batches[0] == batches_in_share(size, start, batch_size, world_size, drop_last)
    assert len({len(positions) for positions, _ in parts}) == 1  # and the same batch sizes
    real = np.concatenate([positions[~padding] for positions, padding in parts])
    assert len(set(real.tolist())) == len(real)  # disjoint: nothing twice
    rest = order[start:].tolist()
    if drop_last:
        global_batch = batch_size * world_size
        assert sorted(real.tolist()) == sorted(rest[: len(rest) // global_batch * global_batch])
        assert not any(padding.any() for _, padding in parts)
    else:
        assert sorted(real.tolist()) == sorted(rest)  # nothing lost
        padded = sum(int(padding.sum()) for _, padding in parts)
        assert padded == (-len(rest)) % world_size  # padding only to a multiple of the world size


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 300),
    global_batch=st.sampled_from([6, 12, 24]),
    worlds=st.lists(st.sampled_from([1, 2, 3, 6]), min_size=1, max_size=4),
    steps=st.lists(st.integers(0, 8), min_size=4, max_size=4),
)
def test_resizing_the_world_mid_epoch_consumes_each_sample_once(size, global_batch, worlds, steps):
    """The job consumes whole global batches; the consumed count carries over to any world size."""
    order = np.random.default_rng(size).permutation(size)
    consumed, seen = 0, []
    for world_size, count in zip(worlds, steps):
        batch_size = global_batch // world_size
        parts = shares(order, consumed, batch_size, world_size, drop_last=False)
        taken = min(count, -(-len(parts[0][0]) // batch_size))
        for positions, padding in parts:
            chunk = slice(0, taken * batch_size)
            seen.extend(positions[chunk][~padding[chunk]].tolist())
        consumed = min(consumed + taken * global_batch, size)
    parts = shares(order, consumed, global_batch, 1, drop_last=False)  # finish on one rank
    seen.extend(parts[0][0].tolist())
    assert sorted(seen) == list(range(size))


def test_weighted_order_follows_the_weights_and_is_reproducible():
    labels = np.array([0] * 90 + [1] * 10)
    order = WeightedOrder(class_balance(labels), seed=4, num_samples=20_000)
    drawn = order.indices(0)
    share_of_rare = float(np.mean(labels[drawn] == 1))
    assert 0.47 < share_of_rare < 0.53  # balanced, up to sampling noise (sd 0.0035)
    assert np.array_equal(drawn, order.indices(0)) and not np.array_equal(drawn, order.indices(1))
    assert order.length == 20_000
