"""DS-Net variants in the image-model registry (`image_models`): random init (seeded) or a local
weights file in the public DS-Net key format (`weights.load_backbone_weights`)."""

from __future__ import annotations

from typing import Sequence

import torch

from neuroalign.models.dsnet import DIMS, MIN_INPUT, VARIANTS, DSNet
from neuroalign.models.image_models import ImageModelSpec, register_image_model
from neuroalign.models.weights import load_backbone_weights


def _builder(depths: Sequence[int], in_chans: int = 1, seed: int = 0) -> DSNet:
    with torch.random.fork_rng(devices=[]):  # deterministic init, global RNG untouched
        torch.manual_seed(seed)
        return DSNet(depths, in_chans=in_chans)


for _name, _variant in VARIANTS.items():
    register_image_model(ImageModelSpec(
        name=_name, depths=_variant.depths, channels=tuple(DIMS[: len(_variant.depths)]), build=_builder,
        description=f"DS-Net ({'-'.join(map(str, _variant.depths))} blocks), random init unless --backbone-weights",
        pretrained=False, transform="square", min_side=MIN_INPUT, load_weights=load_backbone_weights))
