"""Baselines: ridge learns a linear image->response map, repeat/oracle decoders, split hygiene."""

import numpy as np
import pytest

from neuroalign.evaluation.baselines import downsample_pixels, oracle_baseline, repeat_baseline, ridge_baseline


def _toy(n=160, k=40, h=8, w=16, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, h, w)).astype(np.float32)
    weights = rng.normal(size=(h * w, k))
    rates = images.reshape(n, -1) @ weights
    repeats = np.stack([rates + noise * rates.std() * rng.normal(size=rates.shape) for _ in range(2)]).astype(np.float32)
    idx = rng.permutation(n)
    split = {"train": np.sort(idx[:100]), "val": np.sort(idx[100:130]), "test": np.sort(idx[130:])}
    return images, rates, repeats, split


def test_downsample_block_average():
    x = np.arange(2 * 1 * 4 * 6, dtype=np.float32).reshape(2, 1, 4, 6)
    d = downsample_pixels(x, 2)
    assert d.shape == (2, 6)
    assert d[0, 0] == pytest.approx(np.mean([0, 1, 6, 7]))
    with pytest.raises(ValueError):
        downsample_pixels(x, 0)


def test_ridge_identifies_linear_responses_far_above_chance():
    images, rates, repeats, split = _toy()
    r = ridge_baseline(images, repeats.mean(0), split, pool=1)
    assert r["n"] == 30
    assert r["image_to_neural"]["top1"] > 0.5
    assert r["neural_to_image"]["top1"] > 0.5
    assert 1e-5 <= r["alpha_relative"] <= 10


def test_ridge_on_unrelated_responses_is_near_chance():
    images, rates, _, split = _toy()
    rng = np.random.default_rng(5)
    r = ridge_baseline(images, rng.normal(size=rates.shape), split, pool=2)
    assert r["image_to_neural"]["mean_rank"] > 8  # chance mean rank is 15.5


def test_ridge_selects_alpha_without_test_rows():
    images, rates, repeats, split = _toy()
    responses = repeats.mean(0)
    a = ridge_baseline(images, responses, split, pool=2)
    scrambled = responses.copy()
    rng = np.random.default_rng(9)
    scrambled[split["test"]] = rng.normal(size=(len(split["test"]), responses.shape[1])) * 100
    b = ridge_baseline(images, scrambled, split, pool=2)
    # alpha and the val score depend on train/val rows only; the test score collapses to chance level
    assert b["alpha_relative"] == a["alpha_relative"]
    assert b["val_top1_mean"] == a["val_top1_mean"]
    assert b["image_to_neural"]["top1"] < a["image_to_neural"]["top1"]


def test_repeat_and_oracle():
    images, rates, repeats, split = _toy(noise=0.3)
    rep = repeat_baseline(repeats, split)
    orc = oracle_baseline(rates, repeats.mean(0), split)
    assert rep["image_to_neural"]["top1"] > 0.8
    assert orc["image_to_neural"]["top1"] >= rep["image_to_neural"]["top1"]
    assert repeat_baseline(None, split) is None
    assert repeat_baseline(repeats[:1], split) is None
    with pytest.raises(ValueError):
        oracle_baseline(rates[:, :3], repeats.mean(0), split)


def test_constant_neurons_do_not_produce_nan():
    images, rates, repeats, split = _toy()
    resp = repeats.mean(0).copy()
    resp[:, :5] = 3.0
    r = ridge_baseline(images, resp, split, pool=2)
    assert np.isfinite(r["image_to_neural"]["mean_rank"])
    rep = repeats.copy()
    rep[:, :, :5] = 0.0
    assert np.isfinite(repeat_baseline(rep, split)["image_to_neural"]["top1"])


def _energy_world(n=300, k=40, h=24, w=48, seed=0):
    """Complex-cell-like responses: squared outputs of random oriented filters (phase invariant), which
    no linear function of the pixels can predict but rectified filter outputs can."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    images = np.stack([gaussian_filter(rng.normal(size=(h, w)), 1.0) for _ in range(n)])[:, None].astype(np.float32)
    yy, xx = np.mgrid[:h, :w]
    rates = np.empty((n, k))
    for j in range(k):  # k = 40 filters in a test fixture, not a product code path
        cy, cx, th = rng.uniform(6, h - 6), rng.uniform(6, w - 6), rng.uniform(0, np.pi)
        env = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0 ** 2))
        phase = 0.8 * ((xx - cx) * np.cos(th) + (yy - cy) * np.sin(th))
        even, odd = env * np.cos(phase), env * np.sin(phase)
        rates[:, j] = (images[:, 0] * even).sum(axis=(1, 2)) ** 2 + (images[:, 0] * odd).sum(axis=(1, 2)) ** 2
    responses = rates + 0.2 * rates.std(axis=0) * rng.normal(size=rates.shape)
    idx = rng.permutation(n)
    split = {"train": np.sort(idx[:200]), "val": np.sort(idx[200:250]), "test": np.sort(idx[250:])}
    return images, responses, split


def test_random_rectified_features_beat_pixels_on_energy_cells():
    from neuroalign.evaluation.baselines import random_features_baseline, random_rectified_features

    images, responses, split = _energy_world()
    feats = random_rectified_features(images)
    assert feats.shape[0] == len(images) and (feats >= 0).all()  # rectified, then a power
    assert np.array_equal(feats, random_rectified_features(images))  # fixed filters for a seed
    pixels = ridge_baseline(images, responses, split, pool=1)
    rnd = random_features_baseline(images, responses, split)
    for d in ("image_to_neural", "neural_to_image"):
        assert rnd[d]["top1"] > pixels[d]["top1"] + 0.2, (d, rnd[d]["top1"], pixels[d]["top1"])
    assert "random rectified" in rnd["rows"]
    with pytest.raises(ValueError, match="smaller than"):
        random_rectified_features(images[:, :, :5, :5])


def test_ridge_identification_dual_form_matches_primal_ridge():
    from neuroalign.evaluation.baselines import _zscore_with, ridge_identification
    from neuroalign.evaluation.retrieval import correlation_matrix, retrieval_metrics

    images, rates, repeats, split = _toy()
    x = images.reshape(len(images), -1)
    r = ridge_identification(x, repeats.mean(0), split, alphas=np.array([0.1]))
    xz, yz = _zscore_with(x, split["train"]), _zscore_with(repeats.mean(0), split["train"])
    xt = xz[split["train"]]
    alpha = 0.1 * np.linalg.eigvalsh(xt @ xt.T).max()
    w = np.linalg.solve(xt.T @ xt + alpha * np.eye(xt.shape[1]), xt.T @ yz[split["train"]])
    primal = retrieval_metrics(correlation_matrix(xz[split["test"]] @ w, yz[split["test"]]))
    assert r["image_to_neural"]["mean_rank"] == pytest.approx(primal["image_to_neural"]["mean_rank"])
    assert r["neural_to_image"]["top1"] == pytest.approx(primal["neural_to_image"]["top1"])


def test_compare_with_linear_names_the_best_readout_per_direction():
    from neuroalign.evaluation.baselines import compare_with_linear

    def m(a, b):
        return {"image_to_neural": {"top1": a}, "neural_to_image": {"top1": b}}

    out = compare_with_linear(m(0.5, 0.3), {"ridge": m(0.2, 0.4), "ridge_random": m(0.6, 0.1), "repeat": m(0.9, 0.9)})
    assert out["image_to_neural"] == {"model": 0.5, "best_linear": 0.6, "best_name": "ridge_random", "beats": False,
                                      "verdict": "below"}  # no per-image hits: only the strict comparison
    assert out["neural_to_image"]["best_name"] == "ridge" and not out["neural_to_image"]["beats"]
    assert compare_with_linear(m(0.5, 0.5), {"repeat": m(0.9, 0.9)}) is None  # the repeat decoder is not linear readout


def test_compare_with_linear_pairs_the_test_images_when_hits_are_recorded():
    """With per-image hits the comparison is paired: a model that misses 3 images of 100 the ridge gets
    (and gets none the ridge misses) is below within noise; one that misses 20 of them is significantly
    below; the exact sign test's p is 2 * 0.5 ** discordant."""
    from neuroalign.evaluation.baselines import compare_with_linear

    def m(hits_i2n, hits_n2i):
        return {"image_to_neural": {"top1": float(np.mean(hits_i2n))}, "neural_to_image": {"top1": float(np.mean(hits_n2i))},
                "hits": {"image_to_neural": list(hits_i2n), "neural_to_image": list(hits_n2i)}}

    ridge = np.ones(100)
    ridge[60:] = 0.0  # right on 60 of 100 test images
    model_close, model_far = ridge.copy(), ridge.copy()
    model_close[:3] = 0.0
    model_far[:20] = 0.0
    out = compare_with_linear(m(model_close, model_far), {"ridge": m(ridge, ridge)})
    close, far = out["image_to_neural"], out["neural_to_image"]
    assert close["verdict"] == "below, within noise" and not close["beats"]
    assert close["difference"] == pytest.approx(-0.03) and close["p_value"] == pytest.approx(2 * 0.5 ** 3)
    assert close["linear_only"] == 3 and close["model_only"] == 0
    assert close["difference_ci"][0] < -0.03 < close["difference_ci"][1]
    assert far["verdict"] == "below" and far["p_value"] == pytest.approx(2 * 0.5 ** 20)
    better = compare_with_linear(m(ridge, ridge), {"ridge": m(model_far, model_far)})
    assert better["image_to_neural"]["verdict"] == "reaches" and better["image_to_neural"]["difference"] == pytest.approx(0.2)


def test_paired_difference_is_tighter_than_separate_intervals_and_symmetric():
    from neuroalign.evaluation.retrieval import paired_top1_difference, retrieval_metrics

    rng = np.random.default_rng(0)
    a = (rng.random(200) < 0.6).astype(float)
    b = a.copy()
    b[np.flatnonzero(a)[:8]] = 0.0  # b misses 8 images a gets: 0.04 lower, on the same hard images otherwise
    d = paired_top1_difference(a, b)
    assert d["difference"] == pytest.approx(0.04) and d["a_only"] == 8 and d["b_only"] == 0
    assert d["difference_ci"][0] > 0  # paired: clearly positive although the separate 95 % intervals overlap
    back = paired_top1_difference(b, a)
    assert back["difference"] == pytest.approx(-0.04) and back["p_value"] == pytest.approx(d["p_value"])
    same = paired_top1_difference(a, a)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="equal-length"):
        paired_top1_difference(a, a[:10])
    # the hits recorded by retrieval_metrics are the top-1 per query, ties shared
    s = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.2]])
    h = retrieval_metrics(s, hits=True)["hits"]
    assert h["image_to_neural"] == [1.0, 0.5, 0.0]
    assert np.mean(h["image_to_neural"]) == pytest.approx(retrieval_metrics(s)["image_to_neural"]["top1"])
    assert "hits" not in retrieval_metrics(s)


def test_wilson_interval_known_values():
    from neuroalign.evaluation.retrieval import retrieval_metrics, wilson_interval

    lo, hi = wilson_interval(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0.0, 20)[0] == 0.0 and wilson_interval(0.0, 20)[1] == pytest.approx(0.1611, abs=1e-3)
    m = retrieval_metrics(np.eye(10))
    assert m["image_to_neural"]["top1_ci"] == wilson_interval(1.0, 10)
