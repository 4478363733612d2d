"""How reliable each neuron is: split-half reliability from recorded repeats, and for simulated
subjects the true signal-to-noise ratio from the simulator's noiseless rates.

Both are vectorised over neurons (one pass over the repeats, never a loop over neurons), work in
float32 for float32 recordings (the (N, K) halves stay small) and return `(K,)` float64 arrays
with NaN where a neuron is constant.
"""

from __future__ import annotations

import numpy as np


def neuron_reliability(repeats: np.ndarray) -> np.ndarray:
    """Per-neuron split-half reliability: correlation over images between the mean of even and
    odd repeats, Spearman-Brown corrected (2r / (1 + r), clipped to [-1, 1]). `repeats` is
    (R, N, K) with R >= 2; returns (K,) (NaN for neurons constant over images)."""
    r = np.asarray(repeats)
    if r.ndim != 3 or r.shape[0] < 2:
        raise ValueError(f"repeats must be (R>=2, N, K), got shape {r.shape}")
    work = np.float32 if r.dtype in (np.float16, np.float32) else np.float64
    a = r[0::2].mean(axis=0, dtype=work)
    b = r[1::2].mean(axis=0, dtype=work)
    a -= a.mean(axis=0, dtype=np.float64).astype(work)
    b -= b.mean(axis=0, dtype=np.float64).astype(work)
    denom = np.sqrt((a * a).sum(axis=0, dtype=np.float64) * (b * b).sum(axis=0, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (a * b).sum(axis=0, dtype=np.float64) / denom
        corr = np.where(denom > 0, corr, np.nan)
        return np.clip(2 * corr / (1 + corr), -1.0, 1.0)


def true_snr(rates: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    """Per-neuron SNR of a simulated subject's recorded response (the mean over its R repeats): the
    variance over images of the noiseless `rates (N, K)` divided by the trial-noise variance of
    that mean, `mean over trials of (repeat - rate)^2 / R`. `repeats` is (R, N, K); returns (K,)
    (NaN where the noise variance is 0)."""
    rates = np.asarray(rates)
    reps = np.asarray(repeats)
    if rates.ndim != 2 or reps.ndim != 3 or reps.shape[1:] != rates.shape:
        raise ValueError(f"expected rates (N, K) and repeats (R, N, K) of the same N, K; got {rates.shape} "
                         f"and {reps.shape}")
    signal = rates.var(axis=0, dtype=np.float64)
    noise = np.zeros(rates.shape[1], dtype=np.float64)
    for rep in reps:  # one pass per repeat (a handful), each vectorised over images and neurons
        d = rep.astype(np.float32) - rates.astype(np.float32)
        noise += (d * d).sum(axis=0, dtype=np.float64)
    noise /= reps.shape[0] * rates.shape[0] * reps.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(noise > 0, signal / noise, np.nan)
