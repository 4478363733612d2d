"""Image tower: DS-Net features at (stage, block) -> a head -> 16x64 map.

Heads:

* ``conv1x1`` (the reference): 1x1 conv -> bilinear 16x64 -> per-sample min-max to [0, 1].
* ``readout``: the multi-channel features, optionally passed through a fixed pointwise nonlinearity
  (`transform`: ``square`` -- pooled squares are local energies, the phase-invariant inputs
  complex cells need --, ``abs``, or ``rectify`` = both signs half-wave rectified and raised to 1.5), average-pooled to a fixed grid (`grid`, e.g. 8x32, so any
  image size gives the same `C * gh * gw` inputs), standardised with train-split statistics
  (buffers `feat_mean`, `feat_scale`; subtracting the mean removes image-independent structure
  such as the zero-padding border frame), then a learnable linear readout to `n_components`
  shared dimensions, drawn as a smooth 16x64 map through a fixed orthonormal DCT basis
  (`maps.dct_basis`). The readout learns where the recorded neurons look and which channels
  they prefer; `neuroalign.training.linear_start` can set it in closed form.

The backbone is built truncated after the requested block (later blocks and stages do not exist),
so neither compute nor parameters are spent on them. Modes:

* ``frozen`` (default, as in the reference): the backbone is in eval mode with
  `requires_grad=False`, features are computed under `no_grad` and are a pure function of the
  image (so `feature_cache.cached_features` can compute them once per subject); only the 1x1 conv
  learns. `tower.train()` keeps the backbone in eval mode.
* ``finetune``: gradients flow into every backbone block up to the chosen one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from neuroalign.config import BACKBONE_MODES, FEATURE_TRANSFORMS, IMAGE_HEADS, ImageTowerConfig
from neuroalign.models.image_models import (RECTIFY_POWER, CombinedModel, apply_transform,  # noqa: F401
                                          build_image_model, parse_combination)
from neuroalign.models.maps import MAP_SIZE, dct_basis, minmax_per_sample, synthesise_maps

logger = logging.getLogger(__name__)


class ImageTower(nn.Module):
    """Images `(B, 1, H, W)` -> maps `(B, 1, 16, 64)` in [0, 1]."""

    def __init__(self, backbone: str = "ds_net_small", stage: int = 2, block: int = 4, mode: str = "frozen",
                 weights: str | Path | None = None, init_seed: int = 0, in_chans: int = 1, head: str = "conv1x1",
                 grid: tuple[int, int] = (8, 32), n_components: int = 256, transform: str = "none") -> None:
        super().__init__()
        if mode not in BACKBONE_MODES:
            raise ValueError(f"backbone mode must be one of {BACKBONE_MODES}, got {mode!r}")
        if head not in IMAGE_HEADS:
            raise ValueError(f"image head must be one of {IMAGE_HEADS}, got {head!r}")
        if transform not in FEATURE_TRANSFORMS:
            raise ValueError(f"feature transform must be one of {FEATURE_TRANSFORMS}, got {transform!r}")
        if transform != "none" and head != "readout":
            raise ValueError(f"a feature transform ({transform!r}) needs the readout head, got head {head!r}")
        self.head, self.transform = head, transform
        self.grid = (int(grid[0]), int(grid[1]))
        self.backbone_name, self.stage, self.block, self.mode = backbone, int(stage), int(block), mode
        self.init_seed = int(init_seed)
        combination = parse_combination(backbone)
        if combination is not None:  # several registered models side by side (each pooled to the grid)
            if head != "readout" or (self.stage, self.block) != (1, 1) or weights:
                raise ValueError(f"a combination of image models ({backbone!r}) needs the readout head, stage 1 "
                                 f"block 1 and no weights file; got head {head!r}, stage {self.stage} block "
                                 f"{self.block}{', a weights file' if weights else ''}")
            self.backbone = CombinedModel(combination, self.grid, in_chans=in_chans, seed=self.init_seed)
            self.weights_report = None
        else:
            # the registered image model (or a user's factory), built only up to (stage, block), its init
            # seeded without touching the global RNG, a local weights file loaded when given
            self.backbone, self.weights_report = build_image_model(backbone, self.stage, self.block,
                                                                   in_chans=in_chans, seed=self.init_seed,
                                                                   weights=weights)
        # channels-last: ~1.5x faster convolutions on CPU (oneDNN) and tensor cores on GPU
        self.backbone.to(memory_format=torch.channels_last)
        self.channels = self.backbone.stage_channels[self.stage - 1] * (2 if transform == "rectify" else 1)
        if head == "conv1x1":
            self.proj = nn.Conv2d(self.channels, 1, kernel_size=1)  # init from the global RNG (training seed)
        else:
            if min(self.grid) < 1:
                raise ValueError(f"readout grid must be positive, got {self.grid}")
            self.n_inputs = self.channels * self.grid[0] * self.grid[1]
            self.n_components = int(n_components)
            self.register_buffer("basis", dct_basis(self.n_components), persistent=False)
            self.register_buffer("feat_mean", torch.zeros(self.n_inputs))
            self.register_buffer("feat_scale", torch.ones(self.n_inputs))
            self.readout = nn.Linear(self.n_inputs, self.n_components)
        self.weights_path = str(weights) if weights else None
        if self.weights_report is not None:
            logger.info("backbone weights: %s", self.weights_report.summary())
        if self.frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    @classmethod
    def from_config(cls, config: ImageTowerConfig | None = None, n_components: int = 256) -> "ImageTower":
        c = config or ImageTowerConfig()
        return cls(backbone=c.backbone, stage=c.stage, block=c.block, mode=c.mode, weights=c.weights,
                   init_seed=c.init_seed, head=c.head, grid=tuple(c.grid), n_components=n_components, transform=c.transform)

    @property
    def frozen(self) -> bool:
        return self.mode == "frozen"

    def train(self, mode: bool = True) -> "ImageTower":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """What the head reads (gradients as the caller's context decides): backbone output at
        (stage, block) `(B, C, h, w)`, average-pooled to `(B, C, gh, gw)` for the readout head."""
        feats = self.backbone.features_at(images.contiguous(memory_format=torch.channels_last),
                                          self.stage, self.block)
        feats = apply_transform(feats, self.transform)
        if self.head == "readout":
            feats = F.adaptive_avg_pool2d(feats, self.grid)
        return feats

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """`extract(images)`, under no_grad in frozen mode (what the feature cache stores)."""
        if self.frozen:
            with torch.no_grad():
                return self.extract(images)
        return self.extract(images)

    def flat_inputs(self, features: torch.Tensor) -> torch.Tensor:
        """Readout head: pooled features `(B, C, gh, gw)` -> standardised inputs `(B, C*gh*gw)`."""
        return (features.flatten(1).to(self.feat_mean.dtype) - self.feat_mean) / self.feat_scale

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Readout head: features -> shared-space embedding `(B, n_components)`."""
        return self.readout(self.flat_inputs(features))

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Features -> maps `(B, 1, 16, 64)`. conv1x1: 1x1 conv, bilinear resize, min-max; readout:
        standardise, linear readout, DCT synthesis."""
        if features.dim() != 4 or features.shape[1] != self.channels:
            raise ValueError(f"expected features (B, {self.channels}, h, w), got {tuple(features.shape)}")
        if self.head == "readout":
            if tuple(features.shape[2:]) != self.grid:
                raise ValueError(f"expected pooled features (B, {self.channels}, {self.grid[0]}, {self.grid[1]}), "
                                 f"got {tuple(features.shape)}")
            return synthesise_maps(self.embed(features), self.basis)
        z = self.proj(features.to(self.proj.weight.dtype))
        z = F.interpolate(z, size=MAP_SIZE, mode="bilinear", align_corners=False)
        return minmax_per_sample(z)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(images))

    def backbone_fingerprint(self) -> str:
        """sha256 of the backbone config (name, depths, stage, block) and all its weights/buffers."""
        h = hashlib.sha256()
        cfg = {"name": self.backbone_name, "stage": self.stage, "block": self.block, **self.backbone.config()}
        if self.head == "readout":  # the cached features are pooled: the grid is part of their identity
            cfg["grid"] = list(self.grid)
            cfg["transform"] = self.transform
        h.update(json.dumps(cfg, sort_keys=True).encode())
        for key, tensor in sorted(self.backbone.state_dict().items()):
            h.update(key.encode())
            t = tensor.detach().to("cpu").contiguous().reshape(-1)
            h.update(str(t.dtype).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()
