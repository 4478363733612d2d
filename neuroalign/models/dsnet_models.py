"""DS-Net variants in the image-model registry (`image_models`): random init (seeded) or a local
weights file in the public DS-Net key format (`weights.load_backbone_weights`).

The random init is drawn stage by stage (`seeded_dsnet`): stage i's weights come from their own
seeded draw over the variant's *full* stage (all its blocks), and a build cut after block b keeps
that draw's first b blocks. So every truncated build is exactly the first part of the full
network (`feature_cache.shares_prefix`), and a profile computes all of a variant's layers in one
forward pass. The draw of a whole first stage equals what a network of that one stage drew before
(`torch.manual_seed(seed)`, then `DSNet`), so the `auto` default's DS-Net candidate (stage 1 block 3
of `ds_net_small`) reads the same features as when it was chosen.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
from torch import nn

from neuroalign.models.dsnet import (DIMS, GLOBAL_DOWNSAMPLE, HEADS, MIN_INPUT, MLP_RATIO, PATCH_STRIDES, VARIANTS,
                                     DSNet, MixBlock, PatchEmbed)
from neuroalign.models.image_models import ImageModelSpec, register_image_model
from neuroalign.models.weights import load_backbone_weights

STAGE_SEED_STEP = 7919  # stage i draws with seed + i * STAGE_SEED_STEP (stage 1: the seed itself)


class _StageDraw(nn.Module):
    """One whole stage built as `DSNet.__init__` builds it (patch embedding, then its blocks, then
    `DSNet._init_weights`), so it consumes the random stream in the same order."""

    def __init__(self, in_chans: int, i: int, depth: int) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, DIMS[i], PATCH_STRIDES[i])
        self.blocks = nn.ModuleList(MixBlock(DIMS[i], HEADS[i], GLOBAL_DOWNSAMPLE[i], MLP_RATIO) for _ in range(depth))
        self.apply(DSNet._init_weights)


def seeded_dsnet(depths: Sequence[int], full_depths: Sequence[int], in_chans: int = 1, seed: int = 0) -> DSNet:
    """A DS-Net built to `depths` (a prefix of `full_depths`, the last stage possibly cut short),
    each stage's weights from its own seeded draw over the full stage (module docstring); the global
    random stream is untouched."""
    depths, full_depths = tuple(int(d) for d in depths), tuple(int(d) for d in full_depths)
    if len(depths) > len(full_depths) or any(d > f for d, f in zip(depths, full_depths)) or \
            any(d != f for d, f in zip(depths[:-1], full_depths)):
        raise ValueError(f"depths {depths} are not a prefix of the variant's {full_depths}")
    with torch.random.fork_rng(devices=[]):
        model = DSNet(depths, in_chans=in_chans)  # the architecture; every weight is replaced below
        prev = in_chans
        for i, depth in enumerate(depths):
            torch.manual_seed(seed + STAGE_SEED_STEP * i)
            stage = _StageDraw(prev, i, full_depths[i])
            getattr(model, f"patch_embed{i + 1}").load_state_dict(stage.patch_embed.state_dict())
            for j, block in enumerate(getattr(model, f"blocks{i + 1}")):
                block.load_state_dict(stage.blocks[j].state_dict())
            prev = DIMS[i]
    return model


def _builder(depths: Sequence[int], in_chans: int = 1, seed: int = 0, *, full_depths: Sequence[int]) -> DSNet:
    return seeded_dsnet(depths, full_depths, in_chans=in_chans, seed=seed)


for _name, _variant in VARIANTS.items():
    register_image_model(ImageModelSpec(
        name=_name, depths=_variant.depths, channels=tuple(DIMS[: len(_variant.depths)]),
        build=partial(_builder, full_depths=_variant.depths),
        description=f"DS-Net ({'-'.join(map(str, _variant.depths))} blocks), random init unless --backbone-weights",
        pretrained=False, transform="square", min_side=MIN_INPUT, load_weights=load_backbone_weights))
