"""Fixed filter banks as image models (`image_models` registry): no training, no weights.

* ``v1_gabor`` -- the classic hand-built model of V1 (Jones & Palmer 1987; Adelson & Bergen 1985):
  even and odd Gabor filters at `N_ORIENT` orientations and `len(WAVELENGTHS)` octave-spaced scales
  (wavelengths 4, 8, 16, 32 px; Gaussian envelope sigma = 0.56 wavelengths, about one octave of
  spatial-frequency bandwidth), each output half-wave rectified in both signs and squared. These are
  simple cells; a sum of the four squared half-waves of one quadrature pair is the local energy of a
  complex cell, so a linear readout of the pooled outputs reaches both. Coarser scales are computed on
  a blurred, down-sampled copy of the image (a Gaussian pyramid, so every scale costs the same small
  kernel); all scales are resampled to half the input resolution and stacked:
  `(B, 4 * N_ORIENT * n_scales, H/2, W/2)`.
* ``random_rectified`` -- `N_RANDOM` fixed random zero-mean `RANDOM_SIZE`x`RANDOM_SIZE` filters (seed 0),
  valid convolution, both signs half-wave rectified and raised to 1.5, on a pyramid of the image:
  stage s applies the filters to the image block-averaged `2^(s-1)` x `2^(s-1)` (stage 1: the image
  itself, `(B, 2 * N_RANDOM, H-8, W-8)`; stage 2: half the resolution, so each filter spans 18 px;
  stage 3: a quarter, 36 px), one block each. Stage 1 is exactly the bank of the baseline
  `evaluation.baselines.random_rectified_features`, which pools it 4x4 and fits a ridge; as an image
  model the readout head pools every stage to its grid instead. Stage 2 was added on 2026-12-04 after
  it beat stage 1 on all three selection subjects' validation images (docs/RESULTS.md).

``v1_gabor`` has one stage with one block, so its layer is (1, 1).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neuroalign.models.image_models import ImageModelSpec, register_image_model

WAVELENGTHS = (4.0, 8.0, 16.0, 32.0)
N_ORIENT = 8
SIGMA_PER_WAVELENGTH = 0.56
N_RANDOM = 32
RANDOM_SIZE = 9
RANDOM_POWER = 1.5
RANDOM_STAGES = 3  # pyramid levels of random_rectified: the image block-averaged by 1, 2, 4


def random_filters(n_filters: int = N_RANDOM, in_chans: int = 1, size: int = RANDOM_SIZE, seed: int = 0) -> torch.Tensor:
    """`(n_filters, in_chans, size, size)` random normal filters, each zero-mean and unit-norm."""
    gen = torch.Generator().manual_seed(seed)
    filters = torch.randn(n_filters, in_chans, size, size, generator=gen)
    filters -= filters.mean(dim=(1, 2, 3), keepdim=True)
    filters /= filters.flatten(1).norm(dim=1)[:, None, None, None]
    return filters


def gabor_pair_kernels(wavelength: float, n_orient: int = N_ORIENT,
                       sigma_per_wavelength: float = SIGMA_PER_WAVELENGTH) -> torch.Tensor:
    """Even and odd Gabor kernels `(2 * n_orient, 1, k, k)` (even/odd interleaved per orientation),
    each zero-mean and unit-norm; k = odd size covering +-2.5 sigma."""
    sigma = sigma_per_wavelength * wavelength
    half = int(math.ceil(2.5 * sigma))
    coords = torch.arange(-half, half + 1, dtype=torch.float64)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    envelope = torch.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2))
    out = []
    for i in range(n_orient):
        theta = math.pi * i / n_orient
        u = x * math.cos(theta) + y * math.sin(theta)
        for phase in (0.0, math.pi / 2):
            k = envelope * torch.cos(2 * math.pi * u / wavelength - phase)
            k = k - envelope * (k.sum() / envelope.sum())  # zero-mean with the envelope's shape
            out.append(k / k.norm())
    return torch.stack(out)[:, None].float()


def rectified_power(z: torch.Tensor, power: float) -> torch.Tensor:
    """`cat([relu(z), relu(-z)], dim=1) ** power`, written into one output tensor in place (these maps
    are hundreds of MB per batch: every temporary is a pass over memory). `z` is overwritten."""
    c = z.shape[1]
    out = torch.empty((z.shape[0], 2 * c, *z.shape[2:]), dtype=z.dtype, device=z.device)
    torch.clamp(z, min=0, out=out[:, :c])
    torch.clamp(z.neg_(), min=0, out=out[:, c:])
    if power == 2:
        return out.square_()
    if power == 1.5:  # x * sqrt(x): the same to rounding, and several times faster than a general pow
        flat = out.view(-1)  # in slices: the square root's temporary stays small and is reused
        for lo in range(0, flat.numel(), 1 << 20):
            part = flat[lo:lo + (1 << 20)]
            part.mul_(part.sqrt())
        return out
    return out.pow_(power) if power != 1 else out


class _OneBlockModel(nn.Module):
    """Plumbing of a one-layer bank (the Gabor bank): the registry interface over `self._features(x)`."""

    depths = (1,)

    def __init__(self, in_chans: int, channels: int, min_side: int) -> None:
        super().__init__()
        self.in_chans, self.min_side = int(in_chans), int(min_side)
        self.stage_channels = (int(channels),)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence = ((1, 1),), stop_early: bool = True,
                              intermediates_only: bool = True):
        """Output of the one block for each requested index (only (1, 1) or flat 0 / -1 exist)."""
        for index in indices:
            if index not in ((1, 1), [1, 1], 0, -1):
                raise ValueError(f"{type(self).__name__} has one layer (stage 1, block 1), got {index!r}")
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_side:
            raise ValueError(f"images must be at least {self.min_side}x{self.min_side} px, got {tuple(x.shape[-2:])}")
        feats = self._features(x)
        out = [feats for _ in indices]
        return out if intermediates_only else (feats, out)

    def features_at(self, x: torch.Tensor, stage: int = 1, block: int = 1) -> torch.Tensor:
        return self.forward_intermediates(x, [(stage, block)])[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_at(x)


class GaborBank(_OneBlockModel):
    """The V1 Gabor quadrature bank (module docstring). Input `(B, C, H, W)`: channels are averaged."""

    def __init__(self, in_chans: int = 1, wavelengths: Sequence[float] = WAVELENGTHS, n_orient: int = N_ORIENT) -> None:
        self.wavelengths, self.n_orient = tuple(float(w) for w in wavelengths), int(n_orient)
        super().__init__(in_chans, 4 * self.n_orient * len(self.wavelengths), min_side=16)
        # every scale uses the finest kernel on a pyramid level (wavelength / 2^level == wavelengths[0])
        self.register_buffer("kernels", gabor_pair_kernels(self.wavelengths[0], self.n_orient), persistent=False)
        blur = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)
        blur = torch.outer(blur, blur)
        self.register_buffer("blur", (blur / blur.sum()).float()[None, None], persistent=False)

    def config(self) -> dict:
        return {"kind": "v1_gabor", "wavelengths": list(self.wavelengths), "n_orient": self.n_orient,
                "sigma_per_wavelength": SIGMA_PER_WAVELENGTH, "in_chans": self.in_chans}

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        img = x.float().mean(dim=1, keepdim=True)
        h, w = img.shape[-2:]
        target = (max(h // 2, 1), max(w // 2, 1))
        pad = self.kernels.shape[-1] // 2
        levels = []
        for level, wavelength in enumerate(self.wavelengths):
            if level:
                img = F.conv2d(F.pad(img, (2, 2, 2, 2), mode="replicate"), self.blur)[:, :, ::2, ::2]
            z = F.conv2d(F.pad(img, (pad, pad, pad, pad), mode="replicate"), self.kernels)
            z = rectified_power(z, 2)
            z = F.adaptive_avg_pool2d(z, target) if z.shape[-2] >= target[0] else \
                F.interpolate(z, size=target, mode="bilinear", align_corners=False)
            levels.append(z)
        return torch.cat(levels, dim=1)


class RandomRectifiedBank(nn.Module):
    """Fixed random zero-mean filters, both signs rectified, power 1.5, on a pyramid of the image: stage s
    reads it block-averaged by `2^(s-1)` (module docstring). Built with `n_stages` stages (a truncated
    model has no later ones); each stage has one block."""

    def __init__(self, in_chans: int = 1, n_filters: int = N_RANDOM, size: int = RANDOM_SIZE, seed: int = 0,
                 n_stages: int = RANDOM_STAGES) -> None:
        super().__init__()
        if not 1 <= n_stages <= RANDOM_STAGES:
            raise ValueError(f"random_rectified has stages 1..{RANDOM_STAGES}, got {n_stages}")
        self.in_chans, self.n_filters, self.size, self.seed = int(in_chans), int(n_filters), int(size), int(seed)
        self.depths = (1,) * int(n_stages)
        self.stage_channels = (2 * self.n_filters,) * int(n_stages)
        self.register_buffer("filters", random_filters(n_filters, in_chans, size, seed), persistent=False)

    def config(self) -> dict:
        # the stage count is not part of it: a layer's features do not depend on how many stages exist
        return {"kind": "random_rectified", "n_filters": self.n_filters, "size": self.size, "seed": self.seed,
                "power": RANDOM_POWER, "in_chans": self.in_chans, "pyramid": "block average 2^(stage-1)"}

    def min_side(self, stage: int) -> int:
        """The smallest image side stage `stage` can filter."""
        return self.size * 2 ** (int(stage) - 1)

    def _stage(self, index) -> int:
        if isinstance(index, int):
            stage = len(self.depths) if index == -1 else index + 1
        else:
            stage, block = (int(v) for v in index)
            if block != 1:
                stage = 0
        if not 1 <= stage <= len(self.depths):
            raise ValueError(f"random_rectified (built with {len(self.depths)} stage(s), one block each) has no "
                             f"layer {index!r}")
        return stage

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence = ((1, 1),), stop_early: bool = True,
                              intermediates_only: bool = True):
        """The requested stages' outputs (`(stage, 1)` pairs, or flat indices 0.. / -1)."""
        stages = [self._stage(i) for i in indices]
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        for stage in sorted(set(stages)):
            if min(x.shape[-2:]) < self.min_side(stage):
                raise ValueError(f"random_rectified stage {stage} filters the image block-averaged by "
                                 f"{2 ** (stage - 1)}: images must be at least {self.min_side(stage)}x"
                                 f"{self.min_side(stage)} px, got {tuple(x.shape[-2:])}")
        done: dict[int, torch.Tensor] = {}
        for stage in stages:
            if stage not in done:
                img = x.float() if stage == 1 else F.avg_pool2d(x.float(), 2 ** (stage - 1))
                done[stage] = rectified_power(F.conv2d(img, self.filters), RANDOM_POWER)
        out = [done[stage] for stage in stages]
        return out if intermediates_only else (done[max(stages)], out)

    def features_at(self, x: torch.Tensor, stage: int = 1, block: int = 1) -> torch.Tensor:
        return self.forward_intermediates(x, [(stage, block)])[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_at(x, len(self.depths), 1)


def _build_gabor(depths: Sequence[int], in_chans: int = 1, seed: int = 0) -> GaborBank:
    return GaborBank(in_chans=in_chans).eval()


def _build_random(depths: Sequence[int], in_chans: int = 1, seed: int = 0) -> RandomRectifiedBank:
    # The filters are those of the baseline (seed 0) whatever the tower's init seed: one fixed bank.
    return RandomRectifiedBank(in_chans=in_chans, n_stages=len(depths)).eval()


def _no_weights(model, path, stage, block):
    raise ValueError(f"{type(model).__name__} is a fixed filter bank and takes no weights file (got {path})")


register_image_model(ImageModelSpec(
    "v1_gabor", (1,), (4 * N_ORIENT * len(WAVELENGTHS),), _build_gabor,
    f"V1 Gabor bank: {N_ORIENT} orientations x {len(WAVELENGTHS)} scales, even/odd, rectified and squared",
    pretrained=False, transform="none", min_side=16, load_weights=_no_weights, layer_naming="single"))
register_image_model(ImageModelSpec(
    "random_rectified", (1,) * RANDOM_STAGES, (2 * N_RANDOM,) * RANDOM_STAGES, _build_random,
    f"{N_RANDOM} random zero-mean {RANDOM_SIZE}x{RANDOM_SIZE} filters, both signs rectified, power 1.5, on the "
    f"image (stage 1), at half (stage 2) and a quarter (stage 3) of its resolution",
    pretrained=False, transform="none", min_side=RANDOM_SIZE, load_weights=_no_weights, layer_naming="pyramid"))
