"""Helpers shared by both towers: the 16x64 output map size and per-sample min-max scaling."""

from __future__ import annotations

import torch

MAP_SIZE: tuple[int, int] = (16, 64)
MINMAX_EPS = 1e-8
MINMAX_REL_EPS = 1e-5  # ranges below this fraction of the magnitude are rounding noise, not signal


def minmax_per_sample(x: torch.Tensor, eps: float = MINMAX_EPS, rel_eps: float = MINMAX_REL_EPS) -> torch.Tensor:
    """Scale each sample of `x (B, ...)` to [0, 1] by its own min and max (half/bfloat16 inputs,
    e.g. under autocast, are computed and returned in float32).

    Never NaN: the range is clamped to `eps + rel_eps * max|x|`, so a constant sample maps to
    zeros and a sample that is constant up to float rounding stays near zero instead of having
    its rounding noise stretched to [0, 1].
    """
    flat = x.flatten(1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    floor = eps + rel_eps * torch.maximum(lo.abs(), hi.abs()).detach()
    out = (flat - lo) / torch.maximum(hi - lo, floor)
    return out.view(x.shape)


def dct_basis(n_components: int, size: tuple[int, int] = MAP_SIZE) -> torch.Tensor:
    """Orthonormal 2-D DCT-II images `(n_components, H*W)` on the map grid, lowest spatial frequency
    first, the constant image left out (so every basis map has mean 0).

    A `(B, q)` embedding times this basis is a smooth `(B, H*W)` map whose plain and centred cosine
    similarities both equal the cosine of the embeddings: the readout towers' 16x64 maps are an
    exact, viewable picture of their shared space.
    """
    h, w = size
    if not 1 <= n_components < h * w:
        raise ValueError(f"n_components must be in 1..{h * w - 1} for a {h}x{w} map, got {n_components}")
    ys, xs = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    u, v = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    cy = torch.cos(torch.pi * (2 * ys[None, :] + 1) * u[:, None] / (2 * h))  # (H freq, H)
    cx = torch.cos(torch.pi * (2 * xs[None, :] + 1) * v[:, None] / (2 * w))  # (W freq, W)
    cy[0] /= 2 ** 0.5
    cx[0] /= 2 ** 0.5
    cy *= (2 / h) ** 0.5
    cx *= (2 / w) ** 0.5
    freq = (u[:, None] / h) ** 2 + (v[None, :] / w) ** 2  # normalised squared frequency of (u, v)
    order = torch.argsort(freq.flatten(), stable=True)[1:n_components + 1]  # skip the constant (0, 0)
    basis = (cy[:, None, :, None] * cx[None, :, None, :]).reshape(h * w, h * w)[order]
    return basis.float()


def synthesise_maps(embedding: torch.Tensor, basis: torch.Tensor, size: tuple[int, int] = MAP_SIZE) -> torch.Tensor:
    """Embeddings `(B, q)` and a basis `(q, H*W)` -> maps `(B, 1, H, W)`."""
    return (embedding.to(basis.dtype) @ basis).view(-1, 1, *size)
