"""Counter-based randomness: a value depends on (seed, epoch, stream, index, draw) and nothing else."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from stoke.rng import epoch_generator, sample_uniforms, stream_id


@given(
    indices=st.lists(st.integers(0, 2**40), min_size=1, max_size=50),
    seed=st.integers(-(2**63), 2**63 - 1),
    epoch=st.integers(0, 2**31),
)
def test_rows_depend_only_on_their_own_index(indices, seed, epoch):
    together = sample_uniforms(seed, epoch, 7, np.array(indices), draws=3)
    assert together.shape == (len(indices), 3)
    assert ((together >= 0) & (together < 1)).all()
    for row, index in zip(together, indices):
        np.testing.assert_array_equal(row, sample_uniforms(seed, epoch, 7, np.array([index]), draws=3)[0])


def test_every_counter_changes_the_values():
    base = sample_uniforms(0, 0, 0, np.arange(100), 4)
    for changed in (
        sample_uniforms(1, 0, 0, np.arange(100), 4),
        sample_uniforms(0, 1, 0, np.arange(100), 4),
        sample_uniforms(0, 0, 1, np.arange(100), 4),
        sample_uniforms(0, 0, 0, np.arange(1, 101), 4),
    ):
        assert not np.isclose(base, changed).any()


def test_uniform_and_uncorrelated():
    values = sample_uniforms(3, 2, stream_id("image", 0), np.arange(200_000), 2)
    histogram = np.histogram(values[:, 0], bins=20, range=(0, 1))[0] / len(values)
    assert np.abs(histogram - 0.05).max() < 0.003
    assert abs(np.corrcoef(values[:, 0], values[:, 1])[0, 1]) < 0.01
    neighbours = np.corrcoef(values[:-1, 0], values[1:, 0])[0, 1]
    assert abs(neighbours) < 0.01


def test_stream_ids_are_stable_names():
    assert stream_id("image", 0) == stream_id("image", 0) != stream_id("image", 1)
    assert epoch_generator(0, 1).integers(1 << 30) == epoch_generator(0, 1).integers(1 << 30)
