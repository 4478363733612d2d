"""Small, vectorised summaries that exist only to be drawn: EMA smoothing, ranks of the true match,
the k best candidates of a query, per-neuron split-half reliability (`neuroalign.evaluation.reliability`),
a display order for rasters."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from neuroalign.evaluation.reliability import neuron_reliability

__all__ = ["ema_smooth", "neuron_reliability", "raster_order", "top_k", "true_match_ranks"]


def ema_smooth(values: Sequence[float], weight: float) -> np.ndarray:
    """Exponential moving average with debiasing (TensorBoard-style); `weight` in [0, 1).

    NaNs are skipped (they keep the running average) and stay NaN in the output.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    x = np.asarray(values, dtype=np.float64)
    if weight == 0.0 or x.size == 0:
        return x.copy()
    out = np.full_like(x, np.nan)
    avg, norm = 0.0, 0.0
    for i, v in enumerate(x):  # one pass over logged points (hundreds), not over neurons
        if not np.isfinite(v):
            continue
        avg = weight * avg + (1.0 - weight) * v
        norm = weight * norm + (1.0 - weight)
        out[i] = avg / norm
    return out


def true_match_ranks(similarity: np.ndarray) -> dict[str, np.ndarray]:
    """Rank (1 = best) of the true match for every query, both directions.

    `similarity` is (n, n) with image rows × neural columns and the true pairs on the diagonal.
    Ties are split evenly (rank = 1 + #better + #tied / 2), as in `evaluation.retrieval`, so the
    mean of these ranks is the reported mean rank.
    """
    s = np.asarray(similarity, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"similarity must be a square (n, n) matrix, got shape {s.shape}")
    diag = np.diag(s)
    others = ~np.eye(len(s), dtype=bool)
    i2n = 1 + (s > diag[:, None]).sum(axis=1) + ((s == diag[:, None]) & others).sum(axis=1) / 2
    n2i = 1 + (s > diag[None, :]).sum(axis=0) + ((s == diag[None, :]) & others).sum(axis=0) / 2
    return {"image_to_neural": i2n.astype(np.float64), "neural_to_image": n2i.astype(np.float64)}


def top_k(similarity: np.ndarray, query: int, k: int, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best candidates for one query.

    direction "image_to_neural": query is an image row, candidates are neural columns;
    "neural_to_image": query is a neural column, candidates are image rows.
    """
    s = np.asarray(similarity)
    if direction == "image_to_neural":
        scores = s[query, :]
    elif direction == "neural_to_image":
        scores = s[:, query]
    else:
        raise ValueError(f"direction must be image_to_neural or neural_to_image, got {direction!r}")
    k = max(1, min(int(k), scores.size))
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]


def raster_order(responses: np.ndarray, max_images: int = 300, max_neurons: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """A display ordering for a response raster: (image_idx, neuron_idx).

    Keeps at most `max_images` images (even spread) and the `max_neurons` most variable neurons;
    images sorted by mean population response, neurons sorted by the position of their
    preferred image in that order, so tuning shows up as a diagonal band.
    """
    x = np.asarray(responses)
    n, k = x.shape
    img = np.unique(np.linspace(0, n - 1, num=min(n, max_images)).round().astype(np.int64))
    var = x[img].var(axis=0, dtype=np.float64)
    neu = np.argsort(-var, kind="stable")[: min(k, max_neurons)]
    sub = x[np.ix_(img, neu)].astype(np.float64)
    img_sort = np.argsort(-sub.mean(axis=1), kind="stable")
    sub = sub[img_sort]
    pref = np.argmax(sub, axis=0)
    neu_sort = np.argsort(pref, kind="stable")
    return img[img_sort], neu[neu_sort]
