"""Neural tower entry point with keyword options: `make_neural_tower(n_neurons, kind=..., ...)`
builds the registered tower class of that kind (`neuroalign.models.neural`, where the classes
live); `models.build_neural_tower(n, NeuralTowerConfig)` is the same from a config.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from neuroalign.config import NeuralTowerConfig
from neuroalign.models.neural import (BLOCK_CLASSES, NEURAL_TOWER_CLASSES, LatentTower, ReferenceAttentionTower,
                                      TransformerTower, build, neural_block, neural_tower_class, register)
from neuroalign.models.neural.parts import GRID, MLP_WIDTHS, MultiHeadAttention, TransformerBlock

__all__ = ["make_neural_tower", "NeuralTower", "ReferenceAttentionTower", "TransformerTower", "LatentTower",
           "NEURAL_TOWER_CLASSES", "neural_tower_class", "BLOCK_CLASSES", "build", "neural_block", "register", "MultiHeadAttention", "TransformerBlock", "MLP_WIDTHS", "GRID"]


def make_neural_tower(n_neurons: int, kind: str | None = None, n_components: int = 256, *,
                      block: str | None = None, **options: Any) -> nn.Module:
    """The registered tower of `kind` (default "reference") built from
    `NeuralTowerConfig(kind=kind, **options)` (d_model, n_heads, n_layers, mlp_activation, dropout,
    n_latents, folded): a `ReferenceAttentionTower`, `TransformerTower`, `LatentTower` or
    `LinearNeuralTower` (`n_components`: the linear tower's embedding size). `block` is the old name
    of `kind`, still accepted; giving both with different values is a ValueError."""
    if block is not None:
        if kind is not None and kind != block:
            raise ValueError(f"make_neural_tower got kind={kind!r} and its old name block={block!r}; give kind only")
        kind = block
    return build(n_neurons, NeuralTowerConfig(kind=kind or "reference", **options), n_components)


# The old name: a class whose __new__ returned another class's instance. No checkpoint or
# config.json stores it; kept so that code written against it still runs.
NeuralTower = make_neural_tower
