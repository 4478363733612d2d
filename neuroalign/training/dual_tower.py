"""Both towers and the loss in one module, so one DistributedDataParallel wrapper syncs every
trainable parameter (towers and the learnable temperature).

`forward(image_input, responses, total=None)` -> `(loss, parts, image_maps, neural_maps)`:
`image_input` is cached features `(B, C, h, w)` when `from_features`, else images `(B, 1, H, W)`.
With a `gather` (set under torchrun, `distributed.gather_rows`), both towers' maps of this rank's
slice are gathered to the global batch of `total` rows (None: every rank holds as many) before the (stateless) loss sees them, so the
loss is the one of the whole global batch; the returned maps are this rank's own.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from neuroalign.models import CombinedLoss, ImageTower

Gather = Callable[[torch.Tensor, int], torch.Tensor]


class DualTower(nn.Module):
    def __init__(self, image_tower: ImageTower, neural_tower: nn.Module, loss_fn: CombinedLoss,
                 from_features: bool, gather: Gather | None = None) -> None:
        super().__init__()
        self.image_tower, self.neural_tower, self.loss_fn = image_tower, neural_tower, loss_fn
        self.from_features = from_features
        self.gather = gather

    def maps(self, image_input: torch.Tensor, responses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.image_tower.project(image_input) if self.from_features else self.image_tower(image_input)
        return img.float(), self.neural_tower(responses).float()

    def forward(self, image_input: torch.Tensor, responses: torch.Tensor, total: int | None = None):
        img, neu = self.maps(image_input, responses)
        if self.gather is None:
            loss, parts = self.loss_fn(img, neu)
        else:
            loss, parts = self.loss_fn(self.gather(img, total), self.gather(neu, total))
        return loss, parts, img, neu
