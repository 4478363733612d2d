"""Retrieval (identification) metrics from a similarity matrix.

`similarity[i, j]` compares image item `i` (rows, e.g. image-tower maps) with neural item `j`
(columns, e.g. neural-tower maps); the correct match of row `i` is column `i`.

* image_to_neural: for each row, where does the correct column rank among all columns?
* neural_to_image: for each column, where does the correct row rank among all rows?

Ranks start at 1 (best). Ties are resolved as a *random* tie-break would be on average: the
rank is `1 + #greater + #ties / 2`, and a top-k hit counts with the probability that the random
order puts the correct item within the first k. A constant similarity matrix therefore scores
exactly chance, never a perfect (optimistic) or zero (pessimistic) result.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

TOPK = (1, 5, 10)


def _check_square(similarity: np.ndarray) -> np.ndarray:
    s = np.asarray(similarity, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"similarity must be a square (n, n) matrix, got shape {s.shape}")
    if s.shape[0] < 2:
        raise ValueError(f"retrieval needs at least 2 items, got {s.shape[0]}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"similarity contains {int((~np.isfinite(s)).sum())} non-finite values; expected finite numbers")
    return s


def _direction(s: np.ndarray) -> dict[str, float]:
    """Metrics where row i's correct column is i (rows are the queries)."""
    correct = np.diag(s)[:, None]
    greater = (s > correct).sum(axis=1).astype(np.float64)
    ties = (s == correct).sum(axis=1).astype(np.float64) - 1.0  # others tied with the correct item
    rank = 1.0 + greater + ties / 2.0
    out: dict[str, float] = {}
    for k in TOPK:
        # P(correct lands in the first k | uniform position among the tied block).
        hit = np.clip((k - greater) / (ties + 1.0), 0.0, 1.0)
        out[f"top{k}"] = float(hit.mean())
    out["mean_rank"] = float(rank.mean())
    out["median_rank"] = float(np.median(rank))
    out["mrr"] = float((1.0 / rank).mean())
    return out


def chance_levels(n: int) -> dict[str, float]:
    """Expected metrics of a random ranking over `n` items."""
    out = {f"chance_top{k}": min(k, n) / n for k in TOPK}
    out["chance_mean_rank"] = (n + 1) / 2.0
    return out


Z95 = 1.959963984540054


def wilson_interval(p: float, n: int, z: float = Z95) -> list[float]:
    """95 % Wilson score interval `[lo, hi]` of a proportion `p` measured on `n` items."""
    if n < 1:
        raise ValueError(f"an interval needs n >= 1 items, got {n}")
    p = min(max(float(p), 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the interval contains p; rounding must not push an end past it (p = 0 gave lo = 3e-17 > p)
    return [float(min(p, max(0.0, centre - half))), float(max(p, min(1.0, centre + half)))]


def _top1_hits(s: np.ndarray) -> np.ndarray:
    """Per query (row): 1 when the correct column is first, 0 when not, 1/(ties+1) when tied first."""
    correct = np.diag(s)[:, None]
    greater = (s > correct).sum(axis=1).astype(np.float64)
    ties = (s == correct).sum(axis=1).astype(np.float64) - 1.0
    return np.clip((1.0 - greater) / (ties + 1.0), 0.0, 1.0)


def paired_top1_difference(hits_a, hits_b) -> dict[str, Any]:
    """Two methods scored on the SAME queries: per-query top-1 hits `hits_a`, `hits_b` (n,). Returns the
    difference of top-1 (a - b) with a paired 95 % interval (normal approximation of the mean per-query
    difference), the queries only one of them gets right, and the two-sided exact sign test
    (McNemar's exact test on the discordant queries) `p_value`. Pairing matters: two methods that
    fail on the same hard images have far tighter differences than their separate intervals say."""
    a = np.asarray(hits_a, dtype=np.float64).ravel()
    b = np.asarray(hits_b, dtype=np.float64).ravel()
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"paired hits need two equal-length vectors of >= 2 queries, got {a.shape} and {b.shape}")
    d = a - b
    n = len(d)
    mean = float(d.mean())
    half = Z95 * float(d.std(ddof=1)) / np.sqrt(n)
    a_only, b_only = int((d > 0).sum()), int((d < 0).sum())
    p_value = 1.0
    if a_only + b_only:
        from scipy.stats import binomtest

        p_value = float(binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return {"difference": mean, "difference_ci": [mean - half, mean + half], "p_value": p_value,
            "a_only": a_only, "b_only": b_only, "n": int(n)}


def retrieval_metrics(similarity: np.ndarray, hits: bool = False) -> dict[str, Any]:
    """Retrieval in both directions over all items of a square `(n, n)` similarity matrix.

    Returns `{"image_to_neural": {top1, top5, top10, mean_rank, median_rank, mrr, top1_ci},
    "neural_to_image": {...}, "n": n, "chance_top1": 1/n, "chance_top5", "chance_top10",
    "chance_mean_rank"}`; with `hits`, also `"hits": {direction: [per-query top-1 hit]}` (for paired
    comparisons of two methods on the same test images, `paired_top1_difference`).
    """
    s = _check_square(similarity)
    n = s.shape[0]
    result: dict[str, Any] = {
        "image_to_neural": _direction(s),
        "neural_to_image": _direction(s.T),
        "n": int(n),
    }
    for direction in ("image_to_neural", "neural_to_image"):
        result[direction]["top1_ci"] = wilson_interval(result[direction]["top1"], n)
    result.update(chance_levels(n))
    if hits:
        result["hits"] = {"image_to_neural": _top1_hits(s).tolist(), "neural_to_image": _top1_hits(s.T).tolist()}
    return result


def n_way_metrics(similarity: np.ndarray, n_way: int = 300, draws: int = 100, seed: int = 0) -> dict[str, Any] | None:
    """The n-way protocol of the decoding literature: average metrics over random `n_way`-item subsets.

    Each draw picks `n_way` distinct items and ranks only among them (both directions). Returns
    None when there are fewer than `n_way` items. With exactly `n_way` items every draw is the
    whole set, so one draw is used.
    """
    s = _check_square(similarity)
    n = s.shape[0]
    if n_way < 2:
        raise ValueError(f"n_way must be >= 2, got {n_way}")
    if n < n_way:
        return None
    if n == n_way:
        draws = 1
    rng = np.random.default_rng(seed)
    acc: dict[str, dict[str, list[float]]] = {"image_to_neural": {}, "neural_to_image": {}}
    for _ in range(draws):
        idx = rng.choice(n, size=n_way, replace=False)
        sub = s[np.ix_(idx, idx)]
        for name, mat in (("image_to_neural", sub), ("neural_to_image", sub.T)):
            for key, value in _direction(mat).items():
                acc[name].setdefault(key, []).append(value)
    result: dict[str, Any] = {
        name: {key: float(np.mean(values)) for key, values in parts.items()} for name, parts in acc.items()
    }
    result.update({"n": int(n), "n_way": int(n_way), "draws": int(draws)})
    result.update(chance_levels(n_way))
    return result


def correlation_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation between every row of `a (n, d)` and every row of `b (m, d)` -> `(n, m)`.

    Rows with zero variance give correlation 0 (never NaN).
    """
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"rows must have the same length, got {a.shape[1]} and {b.shape[1]}")
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    a = np.divide(a, na, out=np.zeros_like(a), where=na > 0)
    b = np.divide(b, nb, out=np.zeros_like(b), where=nb > 0)
    return a @ b.T
