"""Retrieval metrics against hand-computed values on toy similarity matrices."""

import numpy as np
import pytest

from neuroalign.evaluation.retrieval import correlation_matrix, n_way_metrics, retrieval_metrics


def test_identity_is_perfect():
    m = retrieval_metrics(np.eye(4))
    for d in ("image_to_neural", "neural_to_image"):
        assert m[d]["top1"] == 1.0
        assert m[d]["mean_rank"] == 1.0
        assert m[d]["median_rank"] == 1.0
    assert m["n"] == 4
    assert m["chance_top1"] == 0.25
    assert m["chance_mean_rank"] == 2.5


def test_hand_computed_toy_matrix():
    # rows = images, columns = neural items; the correct match is the diagonal.
    s = np.array([
        [0.9, 0.1, 0.2],   # row 0: correct 0.9 is best -> rank 1
        [0.8, 0.5, 0.1],   # row 1: correct 0.5, one larger (0.8) -> rank 2
        [0.7, 0.6, 0.3],   # row 2: correct 0.3, two larger -> rank 3
    ])
    m = retrieval_metrics(s)
    i2n = m["image_to_neural"]
    assert i2n["top1"] == pytest.approx(1 / 3)
    assert i2n["top5"] == 1.0
    assert i2n["mean_rank"] == pytest.approx(2.0)
    assert i2n["median_rank"] == 2.0
    # columns: col 0 correct 0.9 best -> 1; col 1: correct 0.5, 0.6 larger -> 2; col 2: correct 0.3, 0 larger -> 1
    n2i = m["neural_to_image"]
    assert n2i["top1"] == pytest.approx(2 / 3)
    assert n2i["mean_rank"] == pytest.approx(4 / 3)
    assert n2i["mrr"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_directions_are_not_swapped():
    # row 1: correct 0.5 < 0.9 -> image_to_neural misses item 1; columns: both correct entries are the largest
    s = np.array([[1.0, 0.0], [0.9, 0.5]])
    m = retrieval_metrics(s)
    assert m["image_to_neural"]["top1"] == 0.5
    assert m["neural_to_image"]["top1"] == 1.0
    m = retrieval_metrics(s.T)
    assert m["image_to_neural"]["top1"] == 1.0
    assert m["neural_to_image"]["top1"] == 0.5


def test_constant_matrix_scores_exactly_chance():
    n = 20
    m = retrieval_metrics(np.ones((n, n)))
    for d in ("image_to_neural", "neural_to_image"):
        assert m[d]["top1"] == pytest.approx(1 / n)
        assert m[d]["top5"] == pytest.approx(5 / n)
        assert m[d]["mean_rank"] == pytest.approx((n + 1) / 2)


def test_random_matrix_near_chance():
    rng = np.random.default_rng(0)
    m = retrieval_metrics(rng.normal(size=(400, 400)))
    assert abs(m["image_to_neural"]["mean_rank"] - 200.5) < 15
    assert m["image_to_neural"]["top1"] < 0.02


@pytest.mark.parametrize("bad", [np.ones((3, 4)), np.ones((1, 1)), np.array([[1.0, np.nan], [0, 1]])])
def test_bad_input_raises_valueerror(bad):
    with pytest.raises(ValueError):
        retrieval_metrics(bad)


def test_n_way_subsets():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(350, 350)) + 3 * np.eye(350)
    assert n_way_metrics(s[:100, :100], n_way=300) is None
    m = n_way_metrics(s, n_way=300, draws=5, seed=0)
    assert m["n_way"] == 300 and m["draws"] == 5
    assert m["chance_top1"] == pytest.approx(1 / 300)
    # smaller pool than the full set -> at least as good as full-set ranking
    full = retrieval_metrics(s)
    assert m["image_to_neural"]["mean_rank"] <= full["image_to_neural"]["mean_rank"]
    # exactly n_way items: one draw equals the full-set metrics
    exact = n_way_metrics(s[:300, :300], n_way=300, draws=10)
    assert exact["draws"] == 1
    assert exact["image_to_neural"]["top1"] == retrieval_metrics(s[:300, :300])["image_to_neural"]["top1"]


def test_correlation_matrix_matches_numpy_and_handles_constant_rows():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(4, 7))
    ref = np.corrcoef(np.vstack([a, b]))[:5, 5:]
    np.testing.assert_allclose(correlation_matrix(a, b), ref, atol=1e-12)
    c = correlation_matrix(np.ones((2, 7)), b)
    assert np.all(c == 0)


def test_wilson_interval_always_contains_the_proportion():
    """Every interval holds its own proportion, also at 0 and 1 where rounding once put lo = 3e-17 > 0."""
    from neuroalign.evaluation.retrieval import wilson_interval

    for n in (1, 3, 7, 10, 49, 100, 150, 1000):
        for k in range(0, n + 1, max(1, n // 20)):
            p = k / n
            lo, hi = wilson_interval(p, n)
            assert 0.0 <= lo <= p <= hi <= 1.0, (k, n, lo, hi)
    assert wilson_interval(0.0, 10)[0] == 0.0 and wilson_interval(1.0, 10)[1] == 1.0
    lo, hi = wilson_interval(0.5, 100)
    assert 0.40 < lo < 0.41 and 0.59 < hi < 0.60  # the textbook 95 % interval for 50/100
