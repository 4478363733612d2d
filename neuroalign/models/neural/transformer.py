"""The transformer neural tower: embedding -> `n_layers` pre-LN blocks `x + MHA(LN(x))`,
`x + FFN(LN(x))` (FFN ratio 4, GELU) over the K neuron tokens -> final LayerNorm -> per-neuron
readout -> MLP map head. Cost grows as K^2 per layer (no folded path: the LayerNorms and the FFN
are not affine in the responses)."""

from __future__ import annotations

import torch
from torch import nn

from neuroalign.config import NeuralTowerConfig
from neuroalign.models.neural.parts import (AttentionTower, MultiHeadAttention, TransformerBlock, map_mlp,
                                            readout, reset_embedding, reset_readout)
from neuroalign.models.neural.registry import register


@register("transformer")
class TransformerTower(AttentionTower):
    """Responses `(B, K)` -> maps `(B, 1, 16, 64)` in [0, 1]; see the module docstring."""

    def __init__(self, n_neurons: int, d_model: int = 512, n_heads: int = 1, n_layers: int = 1,
                 mlp_activation: str = "none", dropout: float = 0.0) -> None:
        super().__init__(n_neurons, d_model, n_heads, n_layers)
        self.readout_weight = nn.Parameter(torch.empty(n_neurons, d_model))
        self.readout_bias = nn.Parameter(torch.empty(n_neurons))
        self.layers = nn.ModuleList(TransformerBlock(d_model, n_heads, dropout) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.mlp = map_mlp(n_neurons, mlp_activation, dropout)
        reset_embedding(self.embed_weight, self.embed_bias)
        reset_readout(self.readout_weight, self.readout_bias)

    @classmethod
    def from_config(cls, n_neurons: int, config: NeuralTowerConfig | None = None,
                    n_components: int | None = None) -> "TransformerTower":
        c = config or NeuralTowerConfig(kind="transformer")
        return cls(n_neurons, d_model=c.d_model, n_heads=c.n_heads, n_layers=c.n_layers,
                   mlp_activation=c.mlp_activation, dropout=c.dropout)

    def readout(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-neuron readout: tokens `(B, K, d)` -> `(B, K)`."""
        return readout(tokens, self.readout_weight, self.readout_bias)

    def neuron_features(self, r: torch.Tensor) -> torch.Tensor:
        """The MLP input: per-neuron readouts `(B, K)`."""
        tokens = self.embed(r)
        for layer in self.layers:
            tokens = layer(tokens)
        return self.readout(self.final_norm(tokens))

    @torch.no_grad()
    def attention_weights(self, responses: torch.Tensor, layer: int = 0) -> torch.Tensor:
        """Attention weights `(B, heads, K, K)` of block `layer` (negative counts from the end).
        Memory is B*heads*K^2: call it on small batches for large K."""
        if not -len(self.layers) <= layer < len(self.layers):
            raise ValueError(f"layer must be in [0, {len(self.layers)}), got {layer}")
        layer = layer % len(self.layers)
        x = self.embed(responses)
        for block in self.layers[:layer]:
            x = block(x)
        block = self.layers[layer]
        return block.attn.weights(block.norm1(x))

    def _first_attention(self, responses: torch.Tensor) -> tuple[MultiHeadAttention, torch.Tensor, torch.Tensor]:
        h = self.layers[0].norm1(self.embed(responses))
        return self.layers[0].attn, h, h
