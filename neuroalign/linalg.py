"""Linear algebra the closed-form start, the ridge baselines and FEVE share: symmetric
eigendecompositions of the small (n_train x n_train) Gram matrices, on one BLAS thread (`eigh`), and
per-feature statistics of wide feature matrices without a feature-sized temporary (`column_stats`,
`standardiser`), and the standardised Gram products those fits share (`standardised_gram`,
`standardised_t_product`), computed a block of feature columns at a time.

Multi-threaded OpenBLAS gains little on these sizes but loses badly when the CPU is shared: measured
on the 2-core machine with other work running, `scipy.linalg.eigh` of an 800 x 800 matrix (top 256
eigenpairs) took 8.7 s with the default thread pool and 0.42 s on one thread; numpy's full `eigh`
2.3 s vs 0.27 s. The large Gram products (n x D x n) keep every thread.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits


def eigh(a: np.ndarray, top: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric `a`; only the `top` largest when given."""
    with threadpool_limits(limits=1, user_api="blas"):
        if top is None or top >= len(a):
            return np.linalg.eigh(a)
        return scipy.linalg.eigh(a, subset_by_index=[len(a) - top, len(a) - 1])


def column_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column of `x (n, D)`; the spread `chunk` columns at a time,
    so no temporary as large as `x` (features can be 10^5 wide)."""
    mean = x.mean(axis=0)
    std = np.empty_like(mean)
    for lo in range(0, x.shape[1], chunk):
        std[lo:lo + chunk] = x[:, lo:lo + chunk].std(axis=0)
    return mean, std


def standardiser(features: np.ndarray, rows: np.ndarray | None = None,
                 chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale `(D,)` (float64) of `features (n, D)`, or of its `rows` only (the train images),
    `chunk` columns at a time: no float64 copy of a wide matrix. Constant inputs (spread at most 1e-6
    of the largest) get scale 1, so they stay 0 after standardising instead of turning rounding noise
    into a feature."""
    x = np.asarray(features).reshape(len(features), -1)
    d = x.shape[1]
    mean, std = np.empty(d), np.empty(d)
    for lo in range(0, d, chunk):
        block = x[:, lo:lo + chunk] if rows is None else x[rows, lo:lo + chunk]
        mean[lo:lo + chunk], std[lo:lo + chunk] = column_stats(np.asarray(block, dtype=np.float64), chunk=chunk)
    floor = 1e-6 * max(float(std.max(initial=0.0)), 1e-12)
    return mean, np.where(std > floor, std, 1.0)


def _standardised(x: np.ndarray, lo: int, hi: int, mean: np.ndarray, scale: np.ndarray,
                  rows: np.ndarray | None = None) -> np.ndarray:
    z = np.array(x[:, lo:hi] if rows is None else x[rows, lo:hi], dtype=np.float64)
    z -= mean[lo:hi]
    z /= scale[lo:hi]
    return z


def standardised_gram(a: np.ndarray, mean: np.ndarray, scale: np.ndarray, b: np.ndarray | None = None,
                      b_rows: np.ndarray | None = None, chunk: int = 2048, rows: np.ndarray | None = None) -> np.ndarray:
    """`Z_a @ Z_b.T` in float64 with `Z = (x - mean) / scale`, `chunk` feature columns at a time (the
    features are float32 and up to ~10^5 wide: never a standardised float64 copy of them). `b` is
    another feature matrix, or `b_rows` picks rows of `a`, or neither (`Z_a @ Z_a.T`); `rows` limits
    the result's rows to those rows of `a` (indices into `a`, as `b_rows` are). This is the one large
    product (n x D x n) of the closed-form start, the ridge baselines and FEVE: they all work in the
    dual form on it."""
    x = np.asarray(a).reshape(len(a), -1)
    other = None if b is None else np.asarray(b).reshape(len(b), -1)
    n_b = len(other) if other is not None else (len(b_rows) if b_rows is not None else len(x))
    out = np.zeros((len(x) if rows is None else len(rows), n_b))
    for lo in range(0, x.shape[1], chunk):
        za = _standardised(x, lo, lo + chunk, mean, scale, rows)
        if other is not None:
            zb = _standardised(other, lo, lo + chunk, mean, scale)
        elif rows is not None:
            zb = _standardised(x, lo, lo + chunk, mean, scale, b_rows)
        else:
            zb = za if b_rows is None else za[b_rows]
        out += za @ zb.T
    return out


def standardised_t_product(a: np.ndarray, mean: np.ndarray, scale: np.ndarray, c: np.ndarray,
                           chunk: int = 2048) -> np.ndarray:
    """`Z_a.T @ c` `(D, q)` with `Z_a` standardised as in `standardised_gram`: primal weights from
    dual coefficients `c (n, q)`, chunk by chunk."""
    x = np.asarray(a).reshape(len(a), -1)
    c = np.asarray(c, dtype=np.float64)
    out = np.empty((x.shape[1], c.shape[1]))
    for lo in range(0, x.shape[1], chunk):
        out[lo:lo + chunk] = _standardised(x, lo, lo + chunk, mean, scale).T @ c
    return out
