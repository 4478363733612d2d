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
