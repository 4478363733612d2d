"""Parts the attention neural towers are composed of.

* `MultiHeadAttention`, `TransformerBlock` -- attention over tokens (neurons or latents).
* Per-neuron embedding and readout -- `(K, d)` parameter tensors applied by broadcast/einsum,
  never a loop over neurons (`embed`, `readout`, their `reset_*` initialisers).
* The map head -- the MLP `n_in -> 2048 -> 512 -> 256` (`map_mlp`) and `features_to_map`:
  reshape to 8x32, bilinear upsample to 16x64, per-sample min-max.
* `AttentionTower` -- the base class: responses check, embedding, map head and `neuron_importance`;
  a block supplies `neuron_features` and `_first_attention`.

The parameters stay attributes of the tower (`embed_weight`, `readout_bias`, `mlp.0.weight`, ...),
not of sub-modules, so state dicts keep the keys of every checkpoint written so far.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from neuroalign.config import ACTIVATIONS as ACTIVATION_NAMES
from neuroalign.config import NeuralTowerConfig, head_dim
from neuroalign.models.maps import MAP_SIZE, minmax_per_sample

MLP_WIDTHS = (2048, 512, 256)
GRID = (8, 32)  # the MLP's 256 outputs as an 8x32 map, upsampled to MAP_SIZE
FFN_RATIO = 4
ACTIVATIONS = {"none": None, "gelu": nn.GELU, "relu": nn.ReLU}  # the module of each config.ACTIVATIONS name
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES, "parts.ACTIVATIONS must map exactly config.ACTIVATIONS"


class MultiHeadAttention(nn.Module):
    """q/k/v/o `nn.Linear(d, d)` projections around `F.scaled_dot_product_attention`."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        head_dim(d_model, n_heads)
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, d) -> (B, h, N, d/h)
        b, n, d = x.shape
        return x.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """`query (B, Q, d)` attends to `context (B, N, d)` (self-attention when None) -> `(B, Q, d)`."""
        context = query if context is None else context
        q, k, v = self._heads(self.q(query)), self._heads(self.k(context)), self._heads(self.v(context))
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, dh = out.shape
        return self.o(out.transpose(1, 2).reshape(b, n, h * dh))

    def weights(self, query: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax attention weights `(B, heads, Q, N)` of the same computation."""
        context = query if context is None else context
        q, k = self._heads(self.q(query)), self._heads(self.k(context))
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


class TransformerBlock(nn.Module):
    """Pre-LN residual block: `x + MHA(LN(x) [, context])`, then `x + FFN(LN(x))`."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, FFN_RATIO * d_model), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(FFN_RATIO * d_model, d_model))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h if context is None else context)
        return x + self.ffn(self.norm2(x))


# --- per-neuron embedding and readout ---------------------------------------------------------
def embed(r: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-neuron affine embedding: `r (B, K)`, `weight, bias (K, d)` -> tokens `(B, K, d)`."""
    return torch.addcmul(bias, r.unsqueeze(-1), weight)


def readout(tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-neuron readout: tokens `(B, K, d)`, `weight (K, d)`, `bias (K,)` -> `(B, K)`."""
    return torch.einsum("bkd,kd->bk", tokens, weight) + bias


def reset_embedding(weight: nn.Parameter, bias: nn.Parameter) -> None:
    """Same distribution as a separate `nn.Linear(1, d)` per neuron."""
    nn.init.uniform_(weight, -1.0, 1.0)
    nn.init.uniform_(bias, -1.0, 1.0)


def reset_readout(weight: nn.Parameter, bias: nn.Parameter) -> None:
    """Same distribution as a separate `nn.Linear(d, 1)` per neuron."""
    bound = 1.0 / math.sqrt(weight.shape[1])
    nn.init.uniform_(weight, -bound, bound)
    nn.init.uniform_(bias, -bound, bound)


# --- map head ---------------------------------------------------------------------------------
def map_mlp(n_in: int, activation: str = "none", dropout: float = 0.0) -> nn.Sequential:
    """`n_in -> 2048 -> 512 -> 256` linear layers, each hidden one followed by the activation
    ("none" | "gelu" | "relu") and, when `dropout > 0`, dropout."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"MLP activation must be one of {', '.join(ACTIVATIONS)}; got {activation!r}")
    layers: list[nn.Module] = []
    widths = (n_in, *MLP_WIDTHS)
    for i in range(len(MLP_WIDTHS)):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(MLP_WIDTHS) - 1:
            if ACTIVATIONS[activation] is not None:
                layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def features_to_map(mlp: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """MLP of `features (B, F)` -> 256 values -> 8x32 -> bilinear 16x64 -> per-sample min-max:
    maps `(B, 1, 16, 64)` in [0, 1]."""
    z = mlp(features).view(-1, 1, *GRID)
    z = F.interpolate(z, size=MAP_SIZE, mode="bilinear", align_corners=False)
    return minmax_per_sample(z)


class AttentionTower(nn.Module):
    """Base of the attention towers: `(B, K)` responses -> per-neuron tokens -> kind-specific
    `neuron_features (B, F)` -> `self.mlp` map head -> `(B, 1, 16, 64)`.

    Subclasses build `self.mlp` (`map_mlp`) and implement `neuron_features`, `_first_attention`,
    `attention_weights` and `from_config`."""

    kind: str  # the registered kind, set by `registry.register`
    is_reference_form = False
    uses_folded_attention = False

    def __init__(self, n_neurons: int, d_model: int, n_heads: int, n_layers: int) -> None:
        super().__init__()
        if n_neurons < 1:
            raise ValueError(f"n_neurons must be >= 1, got {n_neurons}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.n_neurons, self.d_model, self.n_heads, self.n_layers = n_neurons, d_model, n_heads, n_layers
        self.embed_weight = nn.Parameter(torch.empty(n_neurons, d_model))
        self.embed_bias = nn.Parameter(torch.empty(n_neurons, d_model))

    @classmethod
    def from_config(cls, n_neurons: int, config: NeuralTowerConfig | None = None,
                    n_components: int | None = None) -> "AttentionTower":
        """The tower for `config` (`n_components` is the registry's build signature; the attention
        towers' maps come from the fixed MLP head, so it is not used)."""
        raise NotImplementedError

    def _check_responses(self, r: torch.Tensor) -> None:
        if r.dim() != 2 or r.shape[1] != self.n_neurons:
            raise ValueError(f"expected responses of shape (B, {self.n_neurons}), got {tuple(r.shape)}")

    def embed(self, r: torch.Tensor) -> torch.Tensor:
        """Per-neuron affine embedding: `r (B, K)` -> tokens `(B, K, d)`."""
        self._check_responses(r)
        return embed(r, self.embed_weight, self.embed_bias)

    def neuron_features(self, r: torch.Tensor) -> torch.Tensor:
        """The MLP input `(B, F)` of responses `r (B, K)`."""
        raise NotImplementedError

    def forward(self, responses: torch.Tensor) -> torch.Tensor:
        """`responses (B, K)` -> maps `(B, 1, 16, 64)` scaled per sample to [0, 1]."""
        return features_to_map(self.mlp, self.neuron_features(responses))

    def folded_block_bytes(self, itemsize: int = 4) -> int:
        """Memory of the folded K x K blocks per step (0: this block keeps none)."""
        return 0

    def _first_attention(self, responses: torch.Tensor) -> tuple[MultiHeadAttention, torch.Tensor, torch.Tensor]:
        """(attention module, query input, context input) of the layer that reads the neuron tokens."""
        raise NotImplementedError

    @torch.no_grad()
    def neuron_importance(self, responses: torch.Tensor, query_chunk: int = 1024) -> torch.Tensor:
        """Attention each neuron receives in layer 0, averaged over heads and queries: `(B, K)`,
        each row sums to 1. Computed over chunks of queries, so memory is B*heads*chunk*K."""
        mha, query, context = self._first_attention(responses)
        q, k = mha._heads(mha.q(query)), mha._heads(mha.k(context))
        received = q.new_zeros(q.shape[0], q.shape[1], k.shape[2])
        for start in range(0, q.shape[2], query_chunk):
            qc = q[:, :, start:start + query_chunk]
            received += torch.softmax(qc @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1).sum(dim=2)
        return received.mean(dim=1) / q.shape[2]
