"""Neural tower entry point: `NeuralTower(n_neurons, block=..., ...)` builds the registered tower
class of that block (`neuroalign.models.neural`); the classes themselves live there.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from neuroalign.config import NeuralTowerConfig
from neuroalign.models.neural import (BLOCK_CLASSES, LatentTower, ReferenceAttentionTower, TransformerTower,
                                      build, neural_block, register)
from neuroalign.models.neural.parts import GRID, MLP_WIDTHS, MultiHeadAttention, TransformerBlock

__all__ = ["NeuralTower", "ReferenceAttentionTower", "TransformerTower", "LatentTower", "BLOCK_CLASSES", "build",
           "neural_block", "register", "MultiHeadAttention", "TransformerBlock", "MLP_WIDTHS", "GRID"]


class NeuralTower:
    """Factory: `NeuralTower(n_neurons, block="reference", **options)` is the registered tower of
    `block` built from `NeuralTowerConfig(block=block, **options)` (d_model, n_heads, n_layers,
    mlp_activation, dropout, n_latents, folded). Not a base class: the towers are
    `ReferenceAttentionTower`, `TransformerTower`, `LatentTower` (and `LinearNeuralTower`)."""

    def __new__(cls, n_neurons: int, block: str = "reference", **options: Any) -> nn.Module:
        return build(n_neurons, NeuralTowerConfig(block=block, **options))
