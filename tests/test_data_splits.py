"""Splits by image identity and train-only normalisers (no leakage from val/test rows)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neuroalign.data import Normaliser, split_indices


def test_split_is_disjoint_covering_sorted_and_seeded():
    s = split_indices(1000, seed=1234)
    assert [len(s[k]) for k in ("train", "val", "test")] == [800, 100, 100]
    allidx = np.concatenate([s["train"], s["val"], s["test"]])
    assert np.array_equal(np.sort(allidx), np.arange(1000))
    assert all(np.all(np.diff(s[k]) > 0) and s[k].dtype == np.int64 for k in s)
    again = split_indices(1000, seed=1234)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    other = split_indices(1000, seed=1)
    assert not np.array_equal(s["test"], other["test"])


def test_split_small_and_invalid():
    s = split_indices(5, 0.1, 0.1)
    assert len(s["val"]) == 1 and len(s["test"]) == 1 and len(s["train"]) == 3
    with pytest.raises(ValueError, match="too few"):
        split_indices(2)
    with pytest.raises(ValueError, match="fractions"):
        split_indices(100, 0.6, 0.5)


def test_minmax_is_fitted_on_train_rows_only():
    rng = np.random.default_rng(0)
    x = rng.random((100, 5))
    s = split_indices(100, seed=0)
    x[s["test"], 0] = 50.0  # an outlier only in test rows must not change the scaling
    norm = Normaliser("minmax").fit(x[s["train"]])
    train = norm.transform(x[s["train"]])
    np.testing.assert_allclose(train.min(0), 0, atol=1e-6)
    np.testing.assert_allclose(train.max(0), 1, atol=1e-6)
    test = norm.transform(x[s["test"]])
    assert test[:, 0].max() > 10  # not clipped, not refitted
    ref = Normaliser("minmax").fit(x[s["train"]][:, 1:]).transform(x[s["test"]][:, 1:])
    np.testing.assert_allclose(test[:, 1:], ref, rtol=1e-6)


def test_zscore_and_constant_neurons_map_to_zero():
    x = np.random.default_rng(1).normal(3, 2, (200, 4))
    x[:, 2] = 7.0
    norm = Normaliser("zscore").fit(x)
    z = norm.transform(x)
    assert np.isfinite(z).all() and z.dtype == np.float32
    np.testing.assert_allclose(z[:, [0, 1, 3]].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, [0, 1, 3]].std(0), 1, atol=1e-4)
    assert np.all(z[:, 2] == 0)
    mm = Normaliser("minmax").fit(x).transform(np.full((3, 4), 9.0))
    assert np.isfinite(mm).all() and np.all(mm[:, 2] == 0)


def test_state_dict_round_trip_through_json():
    x = np.random.default_rng(2).random((30, 6))
    norm = Normaliser("minmax").fit(x[:20])
    back = Normaliser.from_state_dict(json.loads(json.dumps(norm.state_dict())))
    np.testing.assert_array_equal(back.transform(x[20:]), norm.transform(x[20:]))
    with pytest.raises(ValueError, match="normaliser must be one of"):
        Normaliser("robust")
    with pytest.raises(ValueError, match="fitted on 6 neurons, got 5"):
        norm.transform(x[:, :5])
