"""The mixture order (stoke.order.mixture): proportions in every window, each source's permutations used up
before one repeats, a pure function of the epoch, and a saved epoch finished as it began under new weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stoke.errors import ConfigError
from stoke.order.mixture import MixtureOrder, shares

mixtures = st.tuples(
    st.lists(st.integers(1, 40), min_size=1, max_size=4),  # sizes
    st.lists(st.integers(0, 9), min_size=4, max_size=4),  # weights (the first len(sizes) are used)
    st.integers(1, 120),  # epoch_samples
    st.integers(0, 3),  # seed
    st.booleans(),  # shuffle
)


def build(sizes, weights, epoch_samples, seed, shuffle) -> MixtureOrder:
    weights = weights[: len(sizes)]
    if not any(weights):
        weights = [1, *weights[1:]]
    names = [f"s{k}" for k in range(len(sizes))]
    return MixtureOrder(names, sizes, weights, epoch_samples, seed, shuffle)


def sources_of(order: MixtureOrder, ids: np.ndarray) -> np.ndarray:
    return np.searchsorted(order.starts, ids, side="right") - 1


@settings(max_examples=150, deadline=None)
@given(mixtures, st.integers(0, 3))
def test_every_window_of_an_epoch_holds_the_proportions(mixture, epoch) -> None:
    order = build(*mixture)
    ids = order.indices(epoch)
    which = sources_of(order, ids)
    assert len(ids) == order.size
    assert np.bincount(which, minlength=len(order.names)).tolist() == order.counts.tolist()
    shares_ = order.counts / order.size
    prefix = np.zeros((len(order.names), order.size + 1), np.int64)
    for s in range(len(order.names)):
        prefix[s, 1:] = np.cumsum(which == s)
    for width in {1, 2, 3, 7, 16, order.size}:
        if width > order.size:
            continue
        counts = prefix[:, width:] - prefix[:, :-width]  # every window of this width
        bound = 1 + len(order.names) * shares_
        assert (np.abs(counts - width * shares_[:, None]) <= bound[:, None] + 1e-9).all()


@settings(max_examples=100, deadline=None)
@given(mixtures)
def test_no_sample_of_a_source_repeats_before_all_of_it_was_drawn(mixture) -> None:
    order = build(*mixture)
    draws: list[list[int]] = [[] for _ in order.names]
    for epoch in range(4):
        ids = order.indices(epoch)
        which = sources_of(order, ids)
        for s in range(len(order.names)):
            draws[s].extend((ids[which == s] - order.starts[s]).tolist())
    for s, size in enumerate(order.sizes.tolist()):
        for start in range(0, len(draws[s]) - size + 1, size):
            assert sorted(draws[s][start : start + size]) == list(range(size))  # each cycle a permutation
        tail = draws[s][len(draws[s]) // size * size :]
        assert len(set(tail)) == len(tail)


@settings(max_examples=60, deadline=None)
@given(mixtures, st.integers(0, 5))
def test_an_epoch_is_a_pure_function_of_its_number(mixture, epoch) -> None:
    assert np.array_equal(build(*mixture).indices(epoch), build(*mixture).indices(epoch))


def test_a_shuffled_mixture_changes_its_pattern_between_epochs_and_a_sequential_one_does_not() -> None:
    shuffled = MixtureOrder(["a", "b"], [50, 50], [1, 1], 100, seed=0, shuffle=True)
    assert not np.array_equal(shuffled.indices(0), shuffled.indices(1))
    sequential = MixtureOrder(["a", "b"], [50, 50], [1, 1], 100, seed=0, shuffle=False)
    assert np.array_equal(sequential.indices(0), sequential.indices(1))  # both sources cycle in full


@settings(max_examples=60, deadline=None)
@given(mixtures, st.lists(st.integers(0, 9), min_size=4, max_size=4), st.integers(0, 3))
def test_a_saved_epoch_finishes_as_it_began_and_new_weights_apply_next(mixture, new_weights, epoch) -> None:
    old = build(*mixture)
    saved = old.epoch_state(epoch)
    sizes, _, epoch_samples, seed, shuffle = mixture
    new = build(sizes, new_weights, epoch_samples, seed, shuffle)
    new.resume(epoch, saved)
    assert np.array_equal(new.indices(epoch), old.indices(epoch))
    # the next epoch: the new counts, each source's draws continuing where the saved epoch left them
    after = new.indices(epoch + 1)
    which = sources_of(new, after)
    assert np.bincount(which, minlength=len(sizes)).tolist() == new.counts.tolist()
    for s, name in enumerate(new.names):
        first = saved["draws"][name] + saved["counts"][name]
        expected = new.source_draws(s, first, int(new.counts[s]))
        assert (after[which == s] - new.starts[s]).tolist() == expected.tolist()
    if list(new.counts) == list(old.counts):  # same counts: identical to never having changed
        assert np.array_equal(after, old.indices(epoch + 1))


def test_largest_remainder_shares_add_up_and_follow_the_weights() -> None:
    assert shares([1, 1, 1], 10).tolist() == [4, 3, 3]
    assert shares([3, 1], 9).tolist() == [7, 2]
    assert shares([0, 5], 4).tolist() == [0, 4]


@pytest.mark.parametrize(
    ("weights", "message"),
    [([1, -1], "at least 0"), ([0, 0], "positive weight"), ([1, float("nan")], "finite"), ([1], "2 sources")],
)
def test_bad_weights_are_refused_in_a_sentence(weights, message) -> None:
    with pytest.raises(ConfigError, match=message):
        MixtureOrder(["a", "b"], [3, 3], weights, 6, 0)


def test_a_state_for_another_mixture_is_refused() -> None:
    order = MixtureOrder(["a", "b"], [3, 3], [1, 1], 6, seed=0)
    saved = order.epoch_state(0)
    with pytest.raises(ConfigError, match="seed 0"):
        MixtureOrder(["a", "b"], [3, 3], [1, 1], 6, seed=1).resume(0, saved)
    with pytest.raises(ConfigError, match="source 'b'"):
        MixtureOrder(["a", "c"], [3, 3], [1, 1], 6, seed=0).resume(0, saved)
    with pytest.raises(ConfigError, match="not one stoke wrote"):
        order.resume(0, {"seed": 0, "counts": 3})


def test_a_resized_source_is_refused_mid_epoch_and_welcome_at_an_epochs_start() -> None:
    saved = MixtureOrder(["a", "b"], [10, 4], [1, 1], 8, seed=0).epoch_state(2)
    grown = MixtureOrder(["a", "b"], [15, 4], [1, 1], 8, seed=0)
    with pytest.raises(ConfigError, match="source 'a' had 10 samples; it has 15 now"):
        grown.resume(2, saved, consumed=3)
    grown.resume(2, saved, consumed=0)
    which = sources_of(grown, grown.indices(2))
    assert np.bincount(which).tolist() == [4, 4]
