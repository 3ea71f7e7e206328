"""Standardize and MinMaxScale: fitted on the training split only, applied as batch ops by the Loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import stoke
from stoke.errors import ConfigError
from stoke.ops import MinMaxScale, Standardize
from stoke.prepare.split import make_splits


def packed(tmp_path, name, x, seed=0):
    root = tmp_path / name
    stoke.pack({"x": x, "label": np.arange(x.size) % 2}, root, progress=False, workers=1)
    make_splits(stoke.open(root), {"train": 0.6, "val": 0.2, "test": 0.2}, seed=seed)
    return root


def test_validation_and_test_values_do_not_influence_the_fitted_statistics(tmp_path):
    x = np.random.default_rng(0).normal(5.0, 2.0, 200)
    first = packed(tmp_path, "a", x)
    parts = stoke.open(first).splits().parts
    held_out = np.concatenate([parts["val"], parts["test"]])
    changed = x.copy()
    changed[held_out] = changed[held_out] * 1000 + 7  # only the held-out rows differ
    second = packed(tmp_path, "b", changed)
    assert all(np.array_equal(parts[k], stoke.open(second).splits().parts[k]) for k in parts)
    for op in (Standardize, MinMaxScale):
        fitted_first, fitted_second = op.fit(stoke.open(first), "x"), op.fit(stoke.open(second), "x")
        assert vars(fitted_first) == vars(fitted_second)
    train = x[parts["train"]]
    standardize = Standardize.fit(stoke.open(second), "x")
    assert (standardize.mean, standardize.std) == pytest.approx((train.mean(), train.std()), rel=1e-12)
    assert standardize.mean != pytest.approx(changed.mean())  # the whole column would have given another
    scale = MinMaxScale.fit(stoke.open(second, split="train"), "x")  # a view: exactly its rows
    assert (scale.minimum, scale.maximum) == (train.min(), train.max())


def test_fit_refuses_a_dataset_without_a_training_split_and_fields_it_cannot_scale(tmp_path):
    root = tmp_path / "ds"
    stoke.pack({"x": np.arange(5.0), "t": np.zeros((5, 2))}, root, progress=False, workers=1)
    with pytest.raises(ConfigError, match="no split 'train'"):
        Standardize.fit(stoke.open(root), "x")
    view = stoke.open(root).select([0, 1, 2])
    assert Standardize.fit(view, "x").mean == 1.0
    with pytest.raises(ConfigError, match="needs int or float"):
        Standardize.fit(view, "t")
    with pytest.raises(ConfigError, match="no field 'y'"):
        MinMaxScale.fit(view, "y")


def test_fit_refuses_missing_values_with_the_fix(tmp_path):
    root = tmp_path / "ds"
    stoke.pack({"x": np.array([1.0, np.nan, 3.0])}, root, progress=False, workers=1)
    with pytest.raises(ConfigError, match="missing-value policy"):
        Standardize.fit(stoke.open(root).select([0, 1, 2]), "x")


def test_a_constant_column_maps_to_zero_not_nan():
    op = Standardize(mean=3.0, std=0.0)
    assert op.apply(torch.tensor([3.0, 3.0]), None).tolist() == [0.0, 0.0]
    assert MinMaxScale(3, 3).apply(torch.tensor([3, 4]), None).tolist() == [0.0, 1.0]
    with pytest.raises(ConfigError):
        MinMaxScale(2, 1)
    with pytest.raises(ConfigError, match="floating-point"):
        Standardize(0.0, 1.0, dtype=torch.int64)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.integers(2, 30), elements=st.floats(-1e5, 1e5)), st.integers(0, 29))
def test_standardize_and_minmax_equal_the_reference_formula(values, cut):
    train = values[: max(1, cut % values.size)]
    mean, std = train.mean(), train.std()
    batch = torch.from_numpy(values)
    out = Standardize(mean, std, dtype=torch.float64).apply(batch, None).numpy()
    np.testing.assert_allclose(out, (values - mean) / (std if std > 0 else 1.0), rtol=1e-9, atol=1e-9)
    low, high = train.min(), train.max()
    scaled = MinMaxScale(low, high, dtype=torch.float64).apply(batch, None).numpy()
    np.testing.assert_allclose(scaled, (values - low) / ((high - low) or 1.0), rtol=1e-9, atol=1e-9)


def test_the_loader_applies_the_fitted_op_to_a_float_field(tmp_path):
    x = np.random.default_rng(1).uniform(-3, 9, 50)
    root = packed(tmp_path, "ds", x)
    train = stoke.open(root, split="train")
    op = Standardize.fit(stoke.open(root), "x")
    loader = stoke.Loader(train, batch_size=64, shuffle=False, transforms={"x": [op]}, num_threads=1)
    batch = next(iter(loader))
    assert batch["x"].dtype == torch.float32
    expected = (x[train.indices] - op.mean) / op.std
    np.testing.assert_allclose(batch["x"].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert abs(float(batch["x"].mean())) < 1e-5 and float(batch["x"].std(unbiased=False)) == pytest.approx(1, 1e-4)
    loader.close()
