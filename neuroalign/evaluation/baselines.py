"""Baselines on the same train/val/test split as the model, so users see what the deep model buys.

All of them identify test images by correlation across neurons between a *predicted* (or second)
response vector and the observed one, then score the resulting similarity matrix with
`retrieval_metrics` (rows = prediction, columns = observed responses):

* `ridge_baseline`: ridge regression from down-sampled pixels to responses, fitted on the train
  split, the regularisation strength chosen on the val split (mean top-1 of both directions).
* `random_features_baseline`: the same ridge from random rectified conv features (32 fixed random
  zero-mean 9x9 filters, both signs half-wave rectified, power 1.5, 4x4 average pooling) -- the
  strongest simple encoding model a neuroscientist would write.
* `backbone_features_baseline`: the same ridge from the run's own frozen backbone features (the
  linear encoding model on the features the image tower reads).
* `compare_with_linear`: does the model reach the best of these linear readouts?
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

from neuroalign.evaluation.retrieval import correlation_matrix, paired_top1_difference, retrieval_metrics
from neuroalign.linalg import eigh, standardised_gram, standardiser

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


def ridge_identification(features: np.ndarray, responses: np.ndarray, split: Mapping[str, np.ndarray],
                         alphas: np.ndarray | None = None) -> dict[str, Any]:
    """Ridge regression from `features (N, D)` to `responses (N, K)`, fitted on train, alpha chosen on
    val (mean top-1 of both directions; ties: lower mean rank), identification of the test images by
    correlation across neurons between predicted and observed responses.

    Solved in the dual form (n_train x n_train Gram matrix), so D can be large (tens of thousands of
    features) and no D x K matrix is formed. `alphas` are relative to the largest eigenvalue of the
    Gram matrix (default 1e-5 .. 10, 13 values). Features and responses are z-scored with train
    statistics."""
    train, val, test = _split(split)
    if len(train) < 2 or len(val) < 2 or len(test) < 2:
        raise ValueError(f"ridge needs >= 2 train/val/test items, got {len(train)}/{len(val)}/{len(test)}")
    x = np.asarray(features).reshape(len(features), -1)
    y = _zscore_with(responses, train)
    # the standardised Gram rows of train, val and test against train, a block of columns at a time:
    # no z-scored float64 copy of features that can be 10^5 wide (a column constant on train adds 0)
    mean, scale = standardiser(x, rows=train)
    gram = standardised_gram(x, mean, scale, b_rows=train, rows=np.concatenate([train, val, test]))
    n_tr, n_va = len(train), len(val)
    s2, u = eigh(gram[:n_tr])
    keep = s2 > 1e-10 * max(float(s2.max()), 1e-300)
    s2, u = s2[keep], u[:, keep]
    uty = u.T @ y[train]  # (r, K)
    kv, kt = gram[n_tr:n_tr + n_va] @ u, gram[n_tr + n_va:] @ u  # (n, r) each
    grid = float(s2.max()) * (np.logspace(-5, 1, 13) if alphas is None else np.asarray(alphas, dtype=np.float64))
    best: tuple[float, float, int] | None = None
    for i, alpha in enumerate(grid):
        m = retrieval_metrics(correlation_matrix((kv / (s2 + alpha)) @ uty, y[val]))
        key = (_mean_top1(m), -0.5 * (m["image_to_neural"]["mean_rank"] + m["neural_to_image"]["mean_rank"]), -i)
        if best is None or key > best:
            best, best_i, best_val = key, i, m
    alpha = grid[best_i]
    result = retrieval_metrics(correlation_matrix((kt / (s2 + alpha)) @ uty, y[test]), hits=True)
    result.update({"columns": "observed responses", "n_features": int(x.shape[1]),
                   "alpha_relative": float(alpha / s2.max()), "val_top1_mean": float(_mean_top1(best_val))})
    return result


def ridge_baseline(images: np.ndarray, responses: np.ndarray, split: Mapping[str, np.ndarray],
                   pool: int | None = None, alphas: np.ndarray | None = None, max_features: int = 2048) -> dict[str, Any]:
    """Ridge from block-averaged pixels to responses (`ridge_identification`).

    `images (N, C, H, W)`, `responses (N, K)`. `pool` defaults to the smallest block size giving at
    most `max_features` pixels."""
    images = np.asarray(images)
    if pool is None:
        c, h, w = images.shape[1:]
        pool = 1
        while c * (h // pool) * (w // pool) > max_features and pool < min(h, w):
            pool += 1
    result = ridge_identification(downsample_pixels(images, pool), responses, split, alphas)
    result.update({"rows": "ridge prediction from pixels", "pool": int(pool)})
    logger.info("ridge baseline (pixels): pool %d, test top1 %.3f", pool, result["image_to_neural"]["top1"])
    return result


RANDOM_FILTERS = 32
RANDOM_FILTER_SIZE = 9
RANDOM_POWER = 1.5
RANDOM_POOL = 4


def random_rectified_features(images: np.ndarray, n_filters: int = RANDOM_FILTERS, size: int = RANDOM_FILTER_SIZE,
                              power: float = RANDOM_POWER, pool: int = RANDOM_POOL, seed: int = 0,
                              max_features: int = 65536, batch: int = 256) -> np.ndarray:
    """The feature set a neuroscientist writes in twenty lines: `n_filters` fixed random zero-mean
    `size x size` filters (valid convolution), each output half-wave rectified in both signs and
    raised to `power`, average-pooled in `pool x pool` blocks (coarser when the result would exceed
    `max_features`) -> `(N, 2 * n_filters * h' * w')` float32."""
    import torch
    import torch.nn.functional as F

    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {x.shape}")
    n, c, h, w = x.shape
    if min(h, w) < size:
        raise ValueError(f"images of {h}x{w} px are smaller than the {size}x{size} random filters")
    from neuroalign.models.filter_banks import random_filters, rectified_power  # the registered bank's

    filters = random_filters(n_filters, c, size, seed)
    oh, ow = h - size + 1, w - size + 1
    while 2 * n_filters * (oh // pool) * (ow // pool) > max_features and pool < min(oh, ow):
        pool += 1
    out = []
    with torch.no_grad():
        for start in range(0, n, batch):
            z = rectified_power(F.conv2d(torch.from_numpy(x[start:start + batch]), filters), power)
            out.append(F.avg_pool2d(z, pool).flatten(1).numpy())
    return np.concatenate(out)


def random_features_baseline(images: np.ndarray, responses: np.ndarray, split: Mapping[str, np.ndarray],
                             seed: int = 0) -> dict[str, Any]:
    """Ridge from `random_rectified_features` of the images to responses (`ridge_identification`)."""
    feats = random_rectified_features(images, seed=seed)
    result = ridge_identification(feats, responses, split)
    result["rows"] = (f"ridge prediction from {RANDOM_FILTERS} random rectified {RANDOM_FILTER_SIZE}x"
                      f"{RANDOM_FILTER_SIZE} filters")
    logger.info("ridge baseline (random features, %d): test top1 %.3f", feats.shape[1], result["image_to_neural"]["top1"])
    return result


def backbone_features_baseline(features: np.ndarray, responses: np.ndarray, split: Mapping[str, np.ndarray],
                               description: str = "the run's frozen backbone features") -> dict[str, Any]:
    """Ridge from the run's own frozen backbone features `(N, ...)` to responses: the linear
    encoding model on the features the image tower reads."""
    result = ridge_identification(np.asarray(features).reshape(len(features), -1), responses, split)
    result["rows"] = f"ridge prediction from {description}"
    logger.info("ridge baseline (backbone features): test top1 %.3f", result["image_to_neural"]["top1"])
    return result


LINEAR_BASELINES = ("ridge", "ridge_random", "ridge_backbone")


SIGNIFICANCE = 0.05


def compare_with_linear(test: Mapping[str, Any], baselines: Mapping[str, Any]) -> dict[str, Any] | None:
    """Whether the model's test top-1 reaches the best linear readout in each direction:
    `{"best": name, "image_to_neural": {"model", "best_linear", "best_name", "beats", ...}, ...}`.

    When both carry per-image hits (`retrieval_metrics(..., hits=True)`: the model's test metrics and
    the ridge baselines'), the comparison is also *paired* -- the same test images -- with the
    difference's 95 % interval and the exact sign test's p (`paired_top1_difference`), and `verdict`
    says "reaches", "below, within noise" (p >= 0.05) or "below" (p < 0.05)."""
    present = {k: baselines[k] for k in LINEAR_BASELINES if isinstance(baselines.get(k), Mapping)}
    if not present:
        return None
    out: dict[str, Any] = {}
    for direction in ("image_to_neural", "neural_to_image"):
        name = max(present, key=lambda k: present[k][direction]["top1"])
        model, best = float(test[direction]["top1"]), float(present[name][direction]["top1"])
        row = {"model": model, "best_linear": best, "best_name": name, "beats": bool(model >= best)}
        model_hits = (test.get("hits") or {}).get(direction)
        other_hits = (present[name].get("hits") or {}).get(direction)
        if model_hits is not None and other_hits is not None and len(model_hits) == len(other_hits) >= 2:
            paired = paired_top1_difference(model_hits, other_hits)
            row.update({"difference": paired["difference"], "difference_ci": paired["difference_ci"],
                        "p_value": paired["p_value"], "model_only": paired["a_only"], "linear_only": paired["b_only"]})
        if row["beats"]:
            row["verdict"] = "reaches"
        elif "p_value" in row and row["p_value"] >= SIGNIFICANCE:
            row["verdict"] = "below, within noise"
        else:
            row["verdict"] = "below"
        out[direction] = row
    out["best"] = max(present, key=lambda k: _mean_top1(present[k]))
    return out


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
