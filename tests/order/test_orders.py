"""Orders visit every position exactly once per epoch, reproducibly from (seed, epoch)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from stoke.order import RandomOrder, SequentialOrder


@given(size=st.integers(0, 500), seed=st.integers(-(2**40), 2**40), epoch=st.integers(0, 10**6))
def test_random_order_is_a_reproducible_permutation(size, seed, epoch):
    order = RandomOrder(size, seed)
    indices = order.indices(epoch)
    assert indices.dtype == np.int64
    assert sorted(indices.tolist()) == list(range(size))
    np.testing.assert_array_equal(indices, RandomOrder(size, seed).indices(epoch))


def test_epochs_and_seeds_give_different_orders():
    orders = {tuple(RandomOrder(50, seed).indices(epoch)) for seed in range(3) for epoch in range(3)}
    assert len(orders) == 9


def test_random_order_is_uniform_over_positions():
    counts = np.zeros((5, 5))
    for epoch in range(4000):
        counts[np.arange(5), RandomOrder(5, seed=1).indices(epoch)] += 1
    assert np.abs(counts / 4000 - 0.2).max() < 0.03  # every index equally likely in every position


@given(size=st.integers(0, 100), epoch=st.integers(0, 100))
def test_sequential_order(size, epoch):
    assert SequentialOrder(size).indices(epoch).tolist() == list(range(size))
