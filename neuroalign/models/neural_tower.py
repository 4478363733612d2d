"""Neural tower entry point with keyword options: `make_neural_tower(n_neurons, block=..., ...)`
builds the registered tower class of that block (`neuroalign.models.neural`, where the classes
live); `models.build_neural_tower(n, NeuralTowerConfig)` is the same from a config.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from neuroalign.config import NeuralTowerConfig
from neuroalign.models.neural import (BLOCK_CLASSES, LatentTower, ReferenceAttentionTower, TransformerTower,
                                      build, neural_block, register)
from neuroalign.models.neural.parts import GRID, MLP_WIDTHS, MultiHeadAttention, TransformerBlock

__all__ = ["make_neural_tower", "NeuralTower", "ReferenceAttentionTower", "TransformerTower", "LatentTower", "BLOCK_CLASSES", "build",
           "neural_block", "register", "MultiHeadAttention", "TransformerBlock", "MLP_WIDTHS", "GRID"]


def make_neural_tower(n_neurons: int, block: str = "reference", n_components: int = 256,
                      **options: Any) -> nn.Module:
    """The registered tower of `block` built from `NeuralTowerConfig(block=block, **options)`
    (d_model, n_heads, n_layers, mlp_activation, dropout, n_latents, folded): a
    `ReferenceAttentionTower`, `TransformerTower`, `LatentTower` or `LinearNeuralTower`
    (`n_components`: the linear block's embedding size)."""
    return build(n_neurons, NeuralTowerConfig(block=block, **options), n_components)


# The old name: a class whose __new__ returned another class's instance. No checkpoint or
# config.json stores it; kept so that code written against it still runs.
NeuralTower = make_neural_tower
