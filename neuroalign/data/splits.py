"""Train/val/test splits by image identity, and per-neuron normalisers fitted on train rows only.

The reference code fitted its MinMaxScaler on all trials before splitting (test leakage); here
`Normaliser.fit` is called with the training rows and merely applied to validation/test rows,
whose values may therefore fall slightly outside [0, 1] (no clipping: that would hide drift).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from neuroalign.config import NORMALISERS

logger = logging.getLogger(__name__)


def split_indices(n: int, val_fraction: float = 0.1, test_fraction: float = 0.1,
                  seed: int = 1234) -> dict[str, np.ndarray]:
    """Seeded random split of `n` images into sorted, disjoint int64 index arrays covering 0..n-1.

    Sizes are round(n * fraction), at least 1 for a positive fraction, leaving >= 1 train image.
    """
    if n < 1:
        raise ValueError(f"cannot split {n} images; expected at least 1")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val/test fractions must be in [0, 1) with a sum below 1, got {val_fraction}, {test_fraction}")
    n_test = max(1, int(round(n * test_fraction))) if test_fraction > 0 else 0
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    if n_test + n_val >= n:
        raise ValueError(f"{n} images are too few for a {val_fraction:g}/{test_fraction:g} val/test split "
                         "(no training images would remain)")
    perm = np.random.default_rng(seed).permutation(n)
    test = np.sort(perm[:n_test])
    val = np.sort(perm[n_test:n_test + n_val])
    train = np.sort(perm[n_test + n_val:])
    return {"train": train.astype(np.int64), "val": val.astype(np.int64), "test": test.astype(np.int64)}


class Normaliser:
    """Per-neuron (column) scaling fitted on training rows.

    kind="minmax": (x - min) / (max - min), the reference's MinMaxScaler to [0, 1] on train rows;
    kind="zscore": (x - mean) / std. Neurons constant over the training rows map to 0 (never NaN).
    """

    def __init__(self, kind: str = "minmax") -> None:
        if kind not in NORMALISERS:
            raise ValueError(f"normaliser must be one of {NORMALISERS}, got {kind!r}")
        self.kind = kind
        self.offset: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        return self.offset is not None

    def fit(self, x_train: np.ndarray) -> "Normaliser":
        """Fit on (n_train, K) rows; returns self."""
        x = np.asarray(x_train, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 1:
            raise ValueError(f"normaliser expects (n_train, K) rows with n_train >= 1, got shape {x.shape}")
        if self.kind == "minmax":
            offset = x.min(axis=0)
            spread = x.max(axis=0) - offset
        else:
            offset = x.mean(axis=0)
            spread = x.std(axis=0)
        constant = ~(spread > 1e-12 * np.maximum(1.0, np.abs(offset)))
        self.offset = offset
        self.scale = np.where(constant, 0.0, 1.0 / np.where(constant, 1.0, spread))
        if constant.any():
            logger.info("%d of %d neurons are constant on the training rows; they map to 0",
                        int(constant.sum()), constant.size)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(n, K) -> (n, K) float32 with the training-row statistics."""
        if not self.fitted:
            raise RuntimeError("Normaliser.transform called before fit")
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.offset.shape[0]:
            raise ValueError(f"normaliser was fitted on {self.offset.shape[0]} neurons, got {x.shape[-1]}")
        return ((x - self.offset) * self.scale).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: kind, offset and scale lists."""
        if not self.fitted:
            raise RuntimeError("Normaliser.state_dict called before fit")
        return {"kind": self.kind, "offset": self.offset.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> "Normaliser":
        try:
            norm = cls(d["kind"])
            norm.offset = np.asarray(d["offset"], dtype=np.float64)
            norm.scale = np.asarray(d["scale"], dtype=np.float64)
        except KeyError as exc:
            raise ValueError(f"normaliser state lacks {exc}; expected kind, offset, scale") from exc
        if norm.offset.shape != norm.scale.shape or norm.offset.ndim != 1:
            raise ValueError(f"normaliser state has offset {norm.offset.shape} and scale {norm.scale.shape}; expected equal (K,)")
        return norm
