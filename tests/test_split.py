"""Splits: disjoint, covering, deterministic, stratified."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stoke.errors import ConfigError
from stoke.prepare.split import fill_fractions, split_indices


@given(
    labels=st.lists(st.integers(0, 4), min_size=0, max_size=300),
    train=st.floats(0.0, 1.0),
    seed=st.integers(0, 100),
)
def test_disjoint_covering_deterministic(labels, train, seed):
    labels = np.array(labels, dtype=np.int64)
    fractions = {"train": train, "val": 1.0 - train}
    parts = split_indices(len(labels), fractions, seed, labels)
    together = np.concatenate(list(parts.values()))
    assert sorted(together.tolist()) == list(range(len(labels)))
    again = split_indices(len(labels), fractions, seed, labels)
    assert all(np.array_equal(parts[name], again[name]) for name in parts)
    for value in np.unique(labels):  # each class is split in proportion, to within one sample
        members = np.flatnonzero(labels == value)
        assert abs(np.isin(members, parts["train"]).sum() - train * len(members)) <= 1


def test_unstratified_and_three_way():
    parts = split_indices(10, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    assert [len(part) for part in parts.values()] == [8, 1, 1]
    assert not np.array_equal(parts["train"], split_indices(10, {"train": 0.8, "val": 0.2}, seed=2)["train"])


def test_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match=r"sum to 1"):
        split_indices(10, {"train": 0.8, "val": 0.1})


@given(
    shares=st.tuples(*[st.one_of(st.none(), st.floats(0.0, 1.0)) for _ in range(3)]),
)
def test_filled_fractions_keep_what_was_given_and_add_up_to_one(shares):
    given = dict(zip(("train", "val", "test"), shares))
    chosen = {name: share for name, share in given.items() if share is not None}
    try:
        filled = fill_fractions(given)
    except ConfigError as error:
        assert chosen and (sum(chosen.values()) > 1 + 1e-9 or len(chosen) == 3), error
        return
    assert sum(filled.values()) == pytest.approx(1.0) and all(share > 0 for share in filled.values())
    assert all(filled.get(name, 0.0) == share for name, share in chosen.items())  # never changed
    if not chosen:
        assert filled == {"train": 0.8, "val": 0.1, "test": 0.1}
    else:
        others = [name for name in given if name not in chosen and name in filled]
        assert len(others) <= 1 and (not others or others[0] == next(n for n in given if n not in chosen))
