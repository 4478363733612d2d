"""The reference neural tower: embedding -> one multi-head attention over the K neuron tokens
(q/k/v/o projections, no LayerNorm/residual/FFN) -> per-neuron readout d -> 1 -> linear MLP map
head. 3585*K + 2,233,088 parameters with d_model=512.

The embed -> attention -> readout part runs through the exact folded O(K^2)-per-sample path of
`neuroalign.models.folded` (`folded=True`, the default) or the plain token computation.
"""

from __future__ import annotations

import torch
from torch import nn

from neuroalign.config import NeuralTowerConfig
from neuroalign.models import folded
from neuroalign.models.neural.parts import (AttentionTower, MultiHeadAttention, map_mlp, readout,
                                            reset_embedding, reset_readout)
from neuroalign.models.neural.registry import register


@register("reference")
class ReferenceAttentionTower(AttentionTower):
    """Responses `(B, K)` -> maps `(B, 1, 16, 64)` in [0, 1]; see the module docstring."""

    is_reference_form = True

    def __init__(self, n_neurons: int, d_model: int = 512, n_heads: int = 1, n_layers: int = 1,
                 mlp_activation: str = "none", dropout: float = 0.0, folded: bool = True) -> None:
        if n_layers != 1:
            raise ValueError(f"the reference neural tower has exactly 1 attention layer, got n_layers={n_layers}; "
                             f"use kind='transformer' or 'latent' for more layers")
        super().__init__(n_neurons, d_model, n_heads, n_layers)
        self.use_folded = bool(folded)
        self.readout_weight = nn.Parameter(torch.empty(n_neurons, d_model))
        self.readout_bias = nn.Parameter(torch.empty(n_neurons))
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.mlp = map_mlp(n_neurons, mlp_activation, dropout)
        reset_embedding(self.embed_weight, self.embed_bias)
        reset_readout(self.readout_weight, self.readout_bias)

    @classmethod
    def from_config(cls, n_neurons: int, config: NeuralTowerConfig | None = None,
                    n_components: int | None = None) -> "ReferenceAttentionTower":
        c = config or NeuralTowerConfig()
        return cls(n_neurons, d_model=c.d_model, n_heads=c.n_heads, n_layers=c.n_layers,
                   mlp_activation=c.mlp_activation, dropout=c.dropout, folded=c.folded)

    @property
    def uses_folded_attention(self) -> bool:
        """True when the attention runs through the folded K x K path."""
        return self.use_folded

    def folded_block_bytes(self, itemsize: int = 4) -> int:
        """Memory the folded attention needs per step, whatever the batch: the blocks MM (h, 2K, 2K)
        and NN (h, K, 2K), kept for backward, and their gradients (0 when the folded path is not
        used). About 4.8 GB at 10,000 neurons in float32, 48 GB at 31,600."""
        if not self.uses_folded_attention:
            return 0
        return 2 * 6 * self.n_heads * self.n_neurons ** 2 * itemsize

    def readout(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-neuron readout: tokens `(B, K, d)` -> `(B, K)`."""
        return readout(tokens, self.readout_weight, self.readout_bias)

    def _plain_attention_readout(self, r: torch.Tensor) -> torch.Tensor:
        """Embed -> attention -> readout without folding: `(B, K)` -> `(B, K)`."""
        return self.readout(self.attn(self.embed(r)))

    def _folded_attention_readout(self, r: torch.Tensor) -> torch.Tensor:
        """The same function through `folded.folded_attention_readout`: `(B, K)` -> `(B, K)`."""
        a = self.attn
        return folded.folded_attention_readout(
            r, self.embed_weight, self.embed_bias, a.q.weight, a.q.bias, a.k.weight, a.k.bias,
            a.v.weight, a.v.bias, a.o.weight, a.o.bias, self.readout_weight, self.readout_bias, self.n_heads)

    def neuron_features(self, r: torch.Tensor) -> torch.Tensor:
        """The MLP input: per-neuron readouts `(B, K)`."""
        self._check_responses(r)
        if self.use_folded:
            return self._folded_attention_readout(r)
        return self._plain_attention_readout(r)

    @torch.no_grad()
    def attention_weights(self, responses: torch.Tensor, layer: int = 0) -> torch.Tensor:
        """Attention weights `(B, heads, K, K)` of the one attention layer (`layer` 0 or -1).
        Memory is B*heads*K^2: call it on small batches for large K."""
        if layer not in (0, -1):
            raise ValueError(f"layer must be in [0, 1), got {layer}")
        return self.attn.weights(self.embed(responses))

    def _first_attention(self, responses: torch.Tensor) -> tuple[MultiHeadAttention, torch.Tensor, torch.Tensor]:
        tokens = self.embed(responses)
        return self.attn, tokens, tokens
