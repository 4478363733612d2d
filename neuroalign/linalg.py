"""Linear algebra the closed-form start, the ridge baselines and FEVE share: symmetric
eigendecompositions of the small (n_train x n_train) Gram matrices, on one BLAS thread (`eigh`), and
per-feature statistics of wide feature matrices without a feature-sized temporary (`column_stats`).

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
