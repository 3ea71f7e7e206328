"""Missing-value policies and column statistics against numpy's and scikit-learn's own answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.impute import KNNImputer, SimpleImputer

from stoke.errors import ConfigError
from stoke.prepare.impute import (
    check_policy_for,
    column_scaling,
    describe_fill,
    fill_numeric,
    impute_knn,
    parse_policy,
    policy_to_json,
)
from stoke.prepare.stats import category_counts, numeric_stats

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
with_gaps = arrays(np.float64, st.integers(1, 40), elements=st.one_of(finite, st.just(np.nan)))


@settings(max_examples=60, deadline=None)
@given(with_gaps)
def test_numeric_stats_equal_numpys_nan_aware_reference(values):
    stats = numeric_stats(values)
    present = ~np.isnan(values)
    assert stats["count"] == int(present.sum()) and stats["missing"] == int((~present).sum())
    if not present.any():
        assert [stats[k] for k in ("mean", "std", "min", "max")] == [None] * 4
        return
    assert stats["mean"] == pytest.approx(np.nanmean(values), rel=1e-9, abs=1e-6)
    assert stats["std"] == pytest.approx(np.nanstd(values), rel=1e-9, abs=1e-6)
    assert (stats["min"], stats["max"]) == (np.nanmin(values), np.nanmax(values))


def test_numeric_stats_of_integers_with_a_missing_mask_keep_integer_bounds():
    stats = numeric_stats(np.array([4, 0, 9]), missing=np.array([False, True, False]))
    assert stats == {"count": 2, "missing": 1, "mean": 6.5, "std": 2.5, "min": 4, "max": 9}
    assert isinstance(stats["min"], int)


def test_category_counts_skip_missing_codes_and_keep_unused_categories():
    assert category_counts(np.array([1, 1, -1, 0]), ["a", "b", "c"]) == {"a": 1, "b": 2, "c": 0}


@settings(max_examples=60, deadline=None)
@given(with_gaps.filter(lambda v: (~np.isnan(v)).any()), st.sampled_from(["mean", "median", "mode"]))
def test_each_fill_policy_matches_sklearns_simple_imputer(values, policy):
    filled, value = fill_numeric(values, parse_policy(policy))
    strategy = "most_frequent" if policy == "mode" else policy
    expected = SimpleImputer(strategy=strategy).fit_transform(values.reshape(-1, 1)).ravel()
    np.testing.assert_allclose(filled, expected, rtol=1e-9, atol=1e-6)
    assert np.all(filled[~np.isnan(values)] == values[~np.isnan(values)])  # present values untouched
    assert not np.isnan(filled).any()
    assert value == pytest.approx(expected[np.isnan(values)][0] if np.isnan(values).any() else value)


def test_constant_fill_and_its_validation():
    filled, value = fill_numeric(np.array([np.nan, 2.0]), parse_policy(("constant", -1)))
    assert filled.tolist() == [-1.0, 2.0] and value == -1
    assert parse_policy("constant=0.5") == ("constant", 0.5)
    assert parse_policy("constant=unknown") == ("constant", "unknown")
    with pytest.raises(ConfigError, match="give a number"):
        fill_numeric(np.array([np.nan]), ("constant", "x"))
    with pytest.raises(ConfigError, match="no values at all"):
        fill_numeric(np.array([np.nan, np.nan]), ("mean", None))


@pytest.mark.parametrize("bad", ["average", ("constant", float("nan")), ("constant", [1]), 3, ("fill", 1)])
def test_unknown_or_malformed_policies_are_refused_in_one_sentence(bad):
    with pytest.raises(ConfigError, match=r"policy|constant"):
        parse_policy(bad)


def test_policies_round_trip_to_the_manifests_spelling():
    assert policy_to_json(parse_policy("knn")) == "knn"
    assert policy_to_json(parse_policy(("constant", 3))) == ["constant", 3]


def test_numeric_only_defaults_fall_back_for_categories_and_text_but_explicit_ones_are_refused():
    assert check_policy_for("categorical", ("mean", None), "city", explicit=False) == ("mode", None)
    assert check_policy_for("text", ("knn", None), "note", explicit=False) == ("constant", "")
    assert check_policy_for("text", ("drop", None), "note", explicit=True) == ("drop", None)
    assert check_policy_for("numeric", ("knn", None), "age", explicit=True) == ("knn", None)
    with pytest.raises(ConfigError, match="categorical"):
        check_policy_for("categorical", ("median", None), "city", explicit=True)
    with pytest.raises(ConfigError, match="text"):
        check_policy_for("text", ("mode", None), "note", explicit=True)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_knn_equals_sklearns_knn_imputer_on_z_scored_columns(seed, neighbors):
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(30, 4)) * np.array([1.0, 100.0, 0.01, 5.0])
    matrix[rng.random(matrix.shape) < 0.2] = np.nan
    matrix[0] = rng.normal(size=4)  # every column keeps at least one value
    filled = impute_knn(matrix, neighbors)
    center, scale = column_scaling(matrix)
    reference = KNNImputer(n_neighbors=neighbors).fit_transform((matrix - center) / scale) * scale + center
    np.testing.assert_allclose(filled, reference, rtol=1e-9, atol=1e-9)
    present = ~np.isnan(matrix)
    assert np.array_equal(filled[present], matrix[present]) and not np.isnan(filled).any()


def test_knn_fills_from_the_nearest_rows_not_the_column_mean():
    # two clusters; the gap in the first cluster's row is filled from the first cluster
    matrix = np.array([[0.0, 1.0], [0.1, 1.1], [0.05, np.nan], [10.0, 50.0], [10.1, 51.0], [9.9, 49.0]])
    assert impute_knn(matrix, neighbors=2)[2, 1] == pytest.approx(1.05)


def test_knn_refuses_a_column_with_no_values():
    with pytest.raises(ConfigError, match="no values at all"):
        impute_knn(np.array([[1.0, np.nan], [2.0, np.nan]]))


@pytest.mark.parametrize(
    ("call", "where"),
    [
        (lambda: parse_policy("average"), "is 'average'"),
        (lambda: check_policy_for("categorical", ("mean", None), "city", explicit=True), "'city' is categorical"),
        (lambda: check_policy_for("text", ("median", None), "note", explicit=True), "'note' holds text"),
        (lambda: fill_numeric(np.array([np.nan]), ("median", None)), "no values at all"),
    ],
)
def test_refusals_spell_a_constant_for_the_command_line_and_for_python(call, where):
    with pytest.raises(ConfigError) as caught:
        call()
    message = str(caught.value)
    assert where in message and "constant=VALUE on the command line" in message
    assert "('constant', value) in Python" in message


def test_fills_are_described_in_words_for_the_pack_summary():
    assert [describe_fill(kind, policy) for kind, policy in [
        ("numeric", ("median", None)),
        ("numeric", ("mean", None)),
        ("numeric", ("knn", None)),
        ("numeric", ("constant", 0)),
        ("categorical", ("mode", None)),
        ("categorical", ("constant", "none")),
        ("text", ("constant", "")),
    ]] == [
        "the median",
        "the mean",
        "the nearest neighbours' mean",
        "the constant 0",
        "the most frequent value",
        "the constant 'none'",
        "empty text",
    ]  # fmt: skip
