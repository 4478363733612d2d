"""The latent neural tower, linear in K: `n_latents` learned queries cross-attend to the neuron
tokens (`latents + MHA(LN(latents), tokens)`), `n_layers - 1` transformer blocks over the latents,
a final LayerNorm, then a shared readout d_model -> 8 per latent, flattened to `n_latents * 8`
features for the MLP map head (whose first layer is `n_latents*8 -> 2048`). Attention weights are
`(B, heads, n_latents, K)`.

With `folded=True` (the default) the cross-attention runs through
`neuroalign.models.folded.folded_latent_cross_attention`: the same function without the
`(B, K, d)` tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from neuroalign.config import NeuralTowerConfig
from neuroalign.models import folded
from neuroalign.models.neural.parts import AttentionTower, MultiHeadAttention, TransformerBlock, map_mlp, reset_embedding
from neuroalign.models.neural.registry import register

LATENT_READOUT_DIM = 8


@register("latent")
class LatentTower(AttentionTower):
    """Responses `(B, K)` -> maps `(B, 1, 16, 64)` in [0, 1]; see the module docstring."""

    def __init__(self, n_neurons: int, d_model: int = 512, n_heads: int = 1, n_layers: int = 1,
                 mlp_activation: str = "none", dropout: float = 0.0, n_latents: int = 64,
                 folded: bool = True) -> None:
        super().__init__(n_neurons, d_model, n_heads, n_layers)
        if n_latents < 1:
            raise ValueError(f"n_latents must be >= 1, got {n_latents}")
        self.n_latents = n_latents
        self.use_folded = bool(folded)
        self.latents = nn.Parameter(torch.randn(n_latents, d_model) * 0.02)
        self.latent_norm = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, n_heads)
        self.layers = nn.ModuleList(TransformerBlock(d_model, n_heads, dropout) for _ in range(n_layers - 1))
        self.final_norm = nn.LayerNorm(d_model)
        self.latent_readout = nn.Linear(d_model, LATENT_READOUT_DIM)
        self.mlp = map_mlp(n_latents * LATENT_READOUT_DIM, mlp_activation, dropout)
        reset_embedding(self.embed_weight, self.embed_bias)

    @classmethod
    def from_config(cls, n_neurons: int, config: NeuralTowerConfig | None = None,
                    n_components: int | None = None) -> "LatentTower":
        c = config or NeuralTowerConfig(kind="latent")
        return cls(n_neurons, d_model=c.d_model, n_heads=c.n_heads, n_layers=c.n_layers,
                   mlp_activation=c.mlp_activation, dropout=c.dropout, n_latents=c.n_latents, folded=c.folded)

    def _cross_attention(self, r: torch.Tensor) -> torch.Tensor:
        """`MHA(LN(latents), tokens)`: `(B, n_latents, d)`, folded or through the tokens."""
        mha = self.cross_attn
        if self.use_folded:
            query = mha.q(self.latent_norm(self.latents))
            out = folded.folded_latent_cross_attention(r, query, self.embed_weight, self.embed_bias, mha.k.weight,
                                                       mha.k.bias, mha.v.weight, mha.v.bias, self.n_heads)
            return mha.o(out)
        lat = self.latents.unsqueeze(0).expand(r.shape[0], -1, -1)
        return mha(self.latent_norm(lat), self.embed(r))

    def neuron_features(self, r: torch.Tensor) -> torch.Tensor:
        """The MLP input: `(B, n_latents * 8)` latent readouts."""
        self._check_responses(r)
        lat = self.latents.unsqueeze(0).expand(r.shape[0], -1, -1)
        lat = lat + self._cross_attention(r)
        for layer in self.layers:
            lat = layer(lat)
        return self.latent_readout(self.final_norm(lat)).flatten(1)

    @torch.no_grad()
    def attention_weights(self, responses: torch.Tensor, layer: int = 0) -> torch.Tensor:
        """Cross-attention weights latents -> neurons `(B, heads, n_latents, K)` (layer 0 only)."""
        if layer != 0:
            raise ValueError(f"the latent tower exposes only layer 0 (latents -> neurons), got {layer}")
        mha, query, context = self._first_attention(responses)
        return mha.weights(query, context)

    def _first_attention(self, responses: torch.Tensor) -> tuple[MultiHeadAttention, torch.Tensor, torch.Tensor]:
        tokens = self.embed(responses)
        lat = self.latent_norm(self.latents.unsqueeze(0).expand(responses.shape[0], -1, -1))
        return self.cross_attn, lat, tokens
