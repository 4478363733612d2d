"""Baselines on the same train/val/test split as the model, so users see what the deep model buys.

All three identify test images by correlation across neurons between a *predicted* (or second)
response vector and the observed one, then score the resulting similarity matrix with
`retrieval_metrics` (rows = prediction, columns = observed responses):

* `ridge_baseline`: ridge regression from down-sampled pixels to responses, fitted on the train
  split, the regularisation strength chosen on the val split (mean top-1 of both directions).
* `repeat_baseline`: the repeat-to-repeat decoder of Stringer et al. 2019 -- single-trial
  responses of repeat 1 of the test images correlated with those of repeat 2.
* `oracle_baseline`: for simulated subjects, the noiseless rates correlated with the observed
  responses: the best identification any image model could reach on this data.

Neurons are z-scored with statistics of the train rows only; constant neurons become 0.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from neuroalign.evaluation.retrieval import correlation_matrix, retrieval_metrics

logger = logging.getLogger(__name__)


def _zscore_with(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Z-score the columns of `x (N, D)` with mean/std of `x[rows]`; zero-variance columns -> 0."""
    x = np.asarray(x, dtype=np.float64)
    mean = x[rows].mean(axis=0)
    std = x[rows].std(axis=0)
    safe = np.where(std > 0, std, 1.0)
    z = (x - mean) / safe
    z[:, std == 0] = 0.0
    return z


def downsample_pixels(images: np.ndarray, pool: int) -> np.ndarray:
    """Block-average `images (N, C, H, W)` by `pool` (trailing rows/columns that do not fill a block
    are dropped) -> `(N, C * H//pool * W//pool)`."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {x.shape}")
    n, c, h, w = x.shape
    if pool < 1 or pool > min(h, w):
        raise ValueError(f"pool must be in 1..{min(h, w)} for {h}x{w} images, got {pool}")
    hh, ww = h // pool, w // pool
    x = x[:, :, : hh * pool, : ww * pool].reshape(n, c, hh, pool, ww, pool).mean(axis=(3, 5))
    return x.reshape(n, -1)


def _split(split: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        return (np.asarray(split["train"], dtype=np.int64), np.asarray(split["val"], dtype=np.int64),
                np.asarray(split["test"], dtype=np.int64))
    except KeyError as exc:
        raise ValueError(f"split must have train/val/test index arrays, missing {exc}") from None


def _mean_top1(metrics: Mapping[str, Any]) -> float:
    return 0.5 * (metrics["image_to_neural"]["top1"] + metrics["neural_to_image"]["top1"])


def ridge_baseline(images: np.ndarray, responses: np.ndarray, split: Mapping[str, np.ndarray],
                   pool: int | None = None, alphas: np.ndarray | None = None, max_features: int = 2048) -> dict[str, Any]:
    """Ridge from pixels to responses; identification of test images by correlation.

    `images (N, C, H, W)`, `responses (N, K)`. `pool` defaults to the smallest block size giving at
    most `max_features` pixels. `alphas` are relative to the largest squared singular value of the
    train design matrix (default 1e-5 .. 10, 13 values); the one with the best val mean top-1
    (ties: lower mean rank) is used on test.
    """
    train, val, test = _split(split)
    if len(train) < 2 or len(val) < 2 or len(test) < 2:
        raise ValueError(f"ridge baseline needs >= 2 train/val/test items, got {len(train)}/{len(val)}/{len(test)}")
    images = np.asarray(images)
    if pool is None:
        c, h, w = images.shape[1:]
        pool = 1
        while c * (h // pool) * (w // pool) > max_features and pool < min(h, w):
            pool += 1
    x = _zscore_with(downsample_pixels(images, pool), train)
    y = _zscore_with(responses, train)
    u, s, vt = np.linalg.svd(x[train], full_matrices=False)
    uty = u.T @ y[train]  # (r, K)
    xv_val, xv_test = x[val] @ vt.T, x[test] @ vt.T  # projections on the right singular vectors
    grid = (s.max() ** 2) * (np.logspace(-5, 1, 13) if alphas is None else np.asarray(alphas, dtype=np.float64))
    best: tuple[float, float, int] | None = None
    for i, alpha in enumerate(grid):
        shrink = s / (s**2 + alpha)
        pred_val = (xv_val * shrink) @ uty
        m = retrieval_metrics(correlation_matrix(pred_val, y[val]))
        key = (_mean_top1(m), -0.5 * (m["image_to_neural"]["mean_rank"] + m["neural_to_image"]["mean_rank"]), -i)
        if best is None or key > best:
            best = key
            best_i, best_val = i, m
    alpha = grid[best_i]
    pred_test = (xv_test * (s / (s**2 + alpha))) @ uty
    result = retrieval_metrics(correlation_matrix(pred_test, y[test]))
    result.update({
        "rows": "ridge prediction from pixels", "columns": "observed responses",
        "pool": int(pool), "n_features": int(x.shape[1]), "alpha_relative": float(alpha / s.max() ** 2),
        "val_top1_mean": float(_mean_top1(best_val)),
    })
    logger.info("ridge baseline: pool %d, alpha %.3g, test top1 %.3f", pool, alpha, result["image_to_neural"]["top1"])
    return result


def repeat_baseline(repeats: np.ndarray, split: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
    """Stringer et al. 2019: correlate repeat 1 of each test image with repeat 2 of all test images.

    `repeats (R, N, K)` single-trial responses. Returns None when there are fewer than 2 repeats.
    """
    if repeats is None:
        return None
    repeats = np.asarray(repeats)
    if repeats.ndim != 3:
        raise ValueError(f"repeats must be (R, N, K), got shape {repeats.shape}")
    if repeats.shape[0] < 2:
        return None
    train, _, test = _split(split)
    r1 = _zscore_with(repeats[0], train)
    r2 = _zscore_with(repeats[1], train)
    result = retrieval_metrics(correlation_matrix(r1[test], r2[test]))
    result.update({"rows": "repeat 1 (single trials)", "columns": "repeat 2 (single trials)"})
    return result


def oracle_baseline(rates: np.ndarray, responses: np.ndarray, split: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Identification from the noiseless rates `(N, K)` against the observed responses `(N, K)`."""
    rates = np.asarray(rates)
    responses = np.asarray(responses)
    if rates.shape != responses.shape:
        raise ValueError(f"rates {rates.shape} and responses {responses.shape} must have the same shape")
    train, _, test = _split(split)
    result = retrieval_metrics(correlation_matrix(_zscore_with(rates, train)[test], _zscore_with(responses, train)[test]))
    result.update({"rows": "noiseless rates", "columns": "observed responses"})
    return result
