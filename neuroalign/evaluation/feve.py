"""The field's standard encoding metric: fraction of explainable variance explained (FEVE).

Cadena et al. 2019 (PLoS Comput Biol), the Sensorium benchmark and the minimodel work score how much
of each neuron a model predicts against what the repeats say can be predicted at all. For neuron j,
test images i = 1..n and presentations r = 1..R of each (single trials y_irj) and a prediction
p_ij of its mean response:

* total variance  V_j = variance of y_irj over all images and presentations;
* noise variance  s2_j = mean over images of the variance across presentations (ddof 1);
* FEV_j  = (V_j - s2_j) / V_j                      -- fraction of the variance that is explainable;
* FEVE_j = 1 - (MSE_j - s2_j) / (V_j - s2_j),      MSE_j = mean over i, r of (y_irj - p_ij)^2.

FEVE is 1 for a prediction equal to the true mean response, 0 for a constant prediction equal to the
mean, and can be negative. It is unstable where FEV is tiny (the denominator is noise), so the
median is taken over the neurons with FEV >= `MIN_FEV` (Cadena et al. exclude unreliable cells
likewise); every neuron's value is kept. Scale-free per neuron: any per-neuron affine normalisation
applied to both predictions and trials leaves it unchanged.

`linear_feve(features, responses, repeats, split)` fits the encoding model used throughout:
ridge (dual form) from features to each neuron on the train images, strength chosen on the val
images by mean squared error, FEVE of its test predictions against the test repeats.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from neuroalign.linalg import eigh, standardised_gram, standardiser

MIN_FEV = 0.15


def fev_feve(predictions: np.ndarray, trials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron `(FEV (K,), FEVE (K,))` of `predictions (n, K)` against single `trials (R, n, K)`
    (R >= 2 presentations of the same n images). Neurons without variance get NaN."""
    p = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(trials, dtype=np.float64)
    if y.ndim != 3 or y.shape[0] < 2:
        raise ValueError(f"FEVE needs trials (R >= 2, n, K), got shape {y.shape}")
    if p.shape != y.shape[1:]:
        raise ValueError(f"predictions {p.shape} and trials {y.shape} disagree; expected (n, K) and (R, n, K)")
    total = y.reshape(-1, y.shape[2]).var(axis=0)
    noise = y.var(axis=0, ddof=1).mean(axis=0)
    mse = ((y - p[None]) ** 2).mean(axis=(0, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        fev = np.where(total > 0, (total - noise) / total, np.nan)
        explainable = total - noise
        feve = np.where((total > 0) & (explainable != 0), 1.0 - (mse - noise) / explainable, np.nan)
    return fev, feve


def summarise(fev: np.ndarray, feve: np.ndarray, min_fev: float = MIN_FEV) -> dict[str, Any]:
    """Median, quartiles and count over the neurons with FEV >= `min_fev` (json-able; None when none)."""
    use = np.isfinite(feve) & np.isfinite(fev) & (fev >= min_fev)
    vals = feve[use]
    q = (lambda x: float(np.percentile(vals, x))) if len(vals) else (lambda x: None)
    return {"median": q(50), "q25": q(25), "q75": q(75), "n_included": int(use.sum()), "n_neurons": int(len(feve)),
            "min_fev": float(min_fev), "median_fev": float(np.nanmedian(fev)) if np.isfinite(fev).any() else None}


def _split(split: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.asarray(split[k], dtype=np.int64) for k in ("train", "val", "test"))  # type: ignore[return-value]


def ridge_predictions(features: np.ndarray, responses: np.ndarray, split: Mapping[str, np.ndarray],
                      alphas: np.ndarray | None = None, gram: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Ridge from `features (N, D)` to `responses (N, K)` fitted on train (features standardised with
    train statistics, `linalg.standardiser`; responses centred on the train mean), strength (relative
    to the largest eigenvalue of the train Gram matrix) chosen on val by mean squared error. Returns
    the predictions for ALL N rows and the chosen relative strength. `gram (N, n_train)`: the
    standardised products of all rows with the train rows when the caller has them already
    (`linalg.standardised_gram(features, *standardiser(features, train), b_rows=train)`); then
    `features` is not read."""
    train, val, _ = _split(split)
    if gram is None:
        mean, scale = standardiser(features, rows=train)
        gram = standardised_gram(features, mean, scale, b_rows=train)
    y = np.asarray(responses, dtype=np.float64)
    if gram.shape != (len(y), len(train)):
        raise ValueError(f"Gram matrix {gram.shape} does not match {len(y)} images with {len(train)} train images")
    y_mean = y[train].mean(axis=0)
    s2, u = eigh(gram[train])
    keep = s2 > 1e-10 * max(float(s2.max()), 1e-300)
    s2, u = s2[keep], u[:, keep]
    uty = u.T @ (y[train] - y_mean)
    k_all = gram @ u
    grid = np.logspace(-5, 1, 13) if alphas is None else np.asarray(alphas, dtype=np.float64)
    best = None
    for rel in grid:
        pred_val = (k_all[val] / (s2 + rel * s2.max())) @ uty + y_mean
        err = float(((pred_val - y[val]) ** 2).mean())
        if best is None or err < best[0]:
            best = (err, rel)
    rel = best[1]
    return (k_all / (s2 + rel * s2.max())) @ uty + y_mean, float(rel)


def linear_feve(features: np.ndarray | None, responses: np.ndarray, repeats: np.ndarray | None,
                split: Mapping[str, np.ndarray], min_fev: float = MIN_FEV,
                gram: np.ndarray | None = None) -> dict[str, Any] | None:
    """FEVE on the test images of a ridge from `features` to `responses` (module docstring), or None
    without at least two repeats. `repeats (R, N, K)` in the same units as `responses`; `gram` as in
    `ridge_predictions`."""
    if repeats is None or np.asarray(repeats).ndim != 3 or np.asarray(repeats).shape[0] < 2:
        return None
    test = _split(split)[2]
    pred, rel = ridge_predictions(features, responses, split, gram=gram)
    fev, feve = fev_feve(pred[test], np.asarray(repeats)[:, test])
    out = summarise(fev, feve, min_fev)
    out.update({"alpha_relative": rel, "per_neuron": [None if not np.isfinite(v) else round(float(v), 5) for v in feve]})
    return out
