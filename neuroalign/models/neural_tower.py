"""Neural tower: population response `(B, K)` -> map `(B, 1, 16, 64)` through attention over neurons.

Reference form (the default): a per-neuron affine embedding 1 -> d_model, one multi-head attention
layer over the K neuron tokens (q/k/v/o projections, no LayerNorm/residual/FFN), a per-neuron
readout d_model -> 1, a purely linear MLP K -> 2048 -> 512 -> 256, reshape (8, 32), bilinear
upsample to 16x64 and per-sample min-max. 3585*K + 2,233,088 parameters with d_model=512.

The per-neuron layers are batched parameter tensors (broadcast/einsum), never a loop over neurons.
In reference form the embed -> attention -> readout part can run through the exact folded
O(K^2)-per-sample formulation in `neuroalign.models.folded`; the latent block's cross-attention
folds the same way (linear in K, no (B, K, d) tokens). Both are on by default (`use_folded`).

Options:
* `block="transformer"`: n_layers pre-LN blocks `x + MHA(LN(x))`, `x + FFN(LN(x))` (FFN ratio 4,
  GELU), a final LayerNorm, then the per-neuron readout.
* `block="latent"`: linear in K. `n_latents` learned queries cross-attend to the neuron tokens
  (`latents + MHA(LN(latents), tokens)`), `n_layers - 1` transformer blocks over the latents, a
  final LayerNorm, then a shared readout d_model -> 8 per latent, flattened to `n_latents * 8`
  features which feed the MLP (whose first layer is then `n_latents*8 -> 2048` instead of K).
  Attention weights are `(B, heads, n_latents, K)`.
* `mlp_activation` ("none" | "gelu" | "relu") and `dropout` inside the MLP; `n_heads`.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from neuroalign.config import NeuralTowerConfig
from neuroalign.models.maps import MAP_SIZE, minmax_per_sample

logger = logging.getLogger(__name__)

MLP_WIDTHS = (2048, 512, 256)
GRID = (8, 32)  # the MLP's 256 outputs as an 8x32 map, upsampled to MAP_SIZE
LATENT_READOUT_DIM = 8
FFN_RATIO = 4


class MultiHeadAttention(nn.Module):
    """q/k/v/o `nn.Linear(d, d)` projections around `F.scaled_dot_product_attention`."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
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


def _activation(name: str) -> nn.Module | None:
    if name == "none":
        return None
    if name == "gelu":
        return nn.GELU()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"MLP activation must be one of none, gelu, relu; got {name!r}")


class NeuralTower(nn.Module):
    """Responses `(B, K)` -> maps `(B, 1, 16, 64)` in [0, 1]; see the module docstring."""

    def __init__(self, n_neurons: int, d_model: int = 512, n_heads: int = 1, n_layers: int = 1,
                 block: str = "reference", mlp_activation: str = "none", dropout: float = 0.0,
                 n_latents: int = 64, folded: bool = True) -> None:
        super().__init__()
        if n_neurons < 1:
            raise ValueError(f"n_neurons must be >= 1, got {n_neurons}")
        if block not in ("reference", "transformer", "latent"):
            raise ValueError(f"neural block must be reference, transformer or latent; got {block!r}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_neurons, self.d_model, self.n_heads, self.n_layers = n_neurons, d_model, n_heads, n_layers
        self.block = block
        self.use_folded = bool(folded)

        self.embed_weight = nn.Parameter(torch.empty(n_neurons, d_model))
        self.embed_bias = nn.Parameter(torch.empty(n_neurons, d_model))
        if block == "reference":
            self.attn = MultiHeadAttention(d_model, n_heads)
            self.extra_layers = nn.ModuleList(MultiHeadAttention(d_model, n_heads) for _ in range(n_layers - 1))
        elif block == "transformer":
            self.layers = nn.ModuleList(TransformerBlock(d_model, n_heads, dropout) for _ in range(n_layers))
            self.final_norm = nn.LayerNorm(d_model)
        else:
            if n_latents < 1:
                raise ValueError(f"n_latents must be >= 1, got {n_latents}")
            self.n_latents = n_latents
            self.latents = nn.Parameter(torch.randn(n_latents, d_model) * 0.02)
            self.latent_norm = nn.LayerNorm(d_model)
            self.cross_attn = MultiHeadAttention(d_model, n_heads)
            self.layers = nn.ModuleList(TransformerBlock(d_model, n_heads, dropout) for _ in range(n_layers - 1))
            self.final_norm = nn.LayerNorm(d_model)
            self.latent_readout = nn.Linear(d_model, LATENT_READOUT_DIM)
        if block != "latent":
            self.readout_weight = nn.Parameter(torch.empty(n_neurons, d_model))
            self.readout_bias = nn.Parameter(torch.empty(n_neurons))
        mlp_in = n_latents * LATENT_READOUT_DIM if block == "latent" else n_neurons
        self.mlp = self._build_mlp(mlp_in, mlp_activation, dropout)
        self._reset_per_neuron()

    @staticmethod
    def _build_mlp(n_in: int, activation: str, dropout: float) -> nn.Sequential:
        layers: list[nn.Module] = []
        widths = (n_in, *MLP_WIDTHS)
        for i in range(len(MLP_WIDTHS)):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(MLP_WIDTHS) - 1:
                act = _activation(activation)
                if act is not None:
                    layers.append(act)
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        return nn.Sequential(*layers)

    def _reset_per_neuron(self) -> None:
        # Same distribution as a separate nn.Linear(1, d) / nn.Linear(d, 1) per neuron.
        nn.init.uniform_(self.embed_weight, -1.0, 1.0)
        nn.init.uniform_(self.embed_bias, -1.0, 1.0)
        if self.block != "latent":
            bound = 1.0 / math.sqrt(self.d_model)
            nn.init.uniform_(self.readout_weight, -bound, bound)
            nn.init.uniform_(self.readout_bias, -bound, bound)

    @classmethod
    def from_config(cls, n_neurons: int, config: NeuralTowerConfig | None = None) -> "NeuralTower":
        c = config or NeuralTowerConfig()
        return cls(n_neurons, d_model=c.d_model, n_heads=c.n_heads, n_layers=c.n_layers, block=c.block,
                   mlp_activation=c.mlp_activation, dropout=c.dropout, n_latents=c.n_latents, folded=c.folded)

    def folded_block_bytes(self, itemsize: int = 4) -> int:
        """Memory the folded reference attention needs per step, whatever the batch: the blocks
        MM (h, 2K, 2K) and NN (h, K, 2K), kept for backward, and their gradients (0 when the
        folded path is not used). About 4.8 GB at 10,000 neurons in float32, 48 GB at 31,600."""
        if not self.uses_folded_attention:
            return 0
        return 2 * 6 * self.n_heads * self.n_neurons ** 2 * itemsize

    @property
    def uses_folded_attention(self) -> bool:
        """True when the reference attention runs through the folded K x K path."""
        return self.use_folded and self.is_reference_form

    @property
    def is_reference_form(self) -> bool:
        """True for the reference architecture (one plain attention layer), where folding is exact."""
        return self.block == "reference" and self.n_layers == 1

    # --- pieces -------------------------------------------------------------------------------
    def embed(self, r: torch.Tensor) -> torch.Tensor:
        """Per-neuron affine embedding: `r (B, K)` -> tokens `(B, K, d)`."""
        self._check_responses(r)
        return torch.addcmul(self.embed_bias, r.unsqueeze(-1), self.embed_weight)

    def _check_responses(self, r: torch.Tensor) -> None:
        if r.dim() != 2 or r.shape[1] != self.n_neurons:
            raise ValueError(f"expected responses of shape (B, {self.n_neurons}), got {tuple(r.shape)}")

    def readout(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-neuron readout: tokens `(B, K, d)` -> `(B, K)`."""
        return torch.einsum("bkd,kd->bk", tokens, self.readout_weight) + self.readout_bias

    def _plain_attention_readout(self, r: torch.Tensor) -> torch.Tensor:
        """Embed -> attention -> readout without folding (reference form): `(B, K)` -> `(B, K)`."""
        x = self.attn(self.embed(r))
        for layer in self.extra_layers:
            x = layer(x)
        return self.readout(x)

    def _folded_attention_readout(self, r: torch.Tensor) -> torch.Tensor | None:
        try:
            from neuroalign.models.folded import folded_attention_readout
        except ImportError:
            return None
        a = self.attn
        return folded_attention_readout(
            r, self.embed_weight, self.embed_bias, a.q.weight, a.q.bias, a.k.weight, a.k.bias,
            a.v.weight, a.v.bias, a.o.weight, a.o.bias, self.readout_weight, self.readout_bias, self.n_heads)

    def _folded_latent_cross_attention(self, r: torch.Tensor) -> torch.Tensor:
        """The latent block's cross-attention `MHA(LN(latents), tokens)` without building the
        `(B, K, d)` tokens: exactly the same function, linear in K with no K*d^2 per sample.

        The queries do not depend on the sample, and every token is affine in its neuron's scalar
        (e_bj = r_bj W_j + B_j, not normalised before the cross-attention), so per head
        logits_blj = r_bj P1_lj + P2_lj with P1 = q Ak^T, P2 = q Ck^T (Ak = W Wk^T, Ck = B Wk^T + bk,
        once per step), and the attended values are (P_b * r_b) Av + P_b Cv: two
        (B*L, K) x (K, d_h) products instead of K/V projections of B*K tokens (2*B*K*d^2)."""
        mha = self.cross_attn
        b, k = r.shape
        h, d = self.n_heads, self.d_model
        dh = d // h

        def heads(x: torch.Tensor) -> torch.Tensor:  # (n, d) -> (h, n, d_h)
            return x.reshape(x.shape[0], h, dh).transpose(0, 1)

        q = heads(mha.q(self.latent_norm(self.latents))) / math.sqrt(dh)  # (h, L, d_h)
        w, bias = self.embed_weight, self.embed_bias
        ak, ck = heads(w @ mha.k.weight.T), heads(bias @ mha.k.weight.T + mha.k.bias)
        av, cv = heads(w @ mha.v.weight.T), heads(bias @ mha.v.weight.T + mha.v.bias)
        n_lat = self.n_latents
        rj = r[None, :, None, :]  # (1, B, 1, K); head-major layout so the products below are plain bmm
        logits = torch.addcmul((q @ ck.transpose(1, 2))[:, None], (q @ ak.transpose(1, 2))[:, None], rj)
        p = torch.softmax(logits, dim=-1)  # (h, B, L, K)
        out = (p * rj).reshape(h, b * n_lat, k) @ av + p.reshape(h, b * n_lat, k) @ cv  # (h, B*L, d_h)
        return mha.o(out.reshape(h, b, n_lat, dh).permute(1, 2, 0, 3).reshape(b, n_lat, d))

    def neuron_features(self, r: torch.Tensor) -> torch.Tensor:
        """The MLP input: `(B, K)` per-neuron readouts, or `(B, n_latents*8)` for the latent block."""
        self._check_responses(r)
        if self.block == "reference":
            if self.uses_folded_attention:
                out = self._folded_attention_readout(r)
                if out is not None:
                    return out
            return self._plain_attention_readout(r)
        if self.block == "transformer":
            tokens = self.embed(r)
            for layer in self.layers:
                tokens = layer(tokens)
            return self.readout(self.final_norm(tokens))
        lat = self.latents.unsqueeze(0).expand(r.shape[0], -1, -1)
        if self.use_folded:
            lat = lat + self._folded_latent_cross_attention(r)
        else:
            lat = lat + self.cross_attn(self.latent_norm(lat), self.embed(r))
        for layer in self.layers:
            lat = layer(lat)
        return self.latent_readout(self.final_norm(lat)).flatten(1)

    def forward(self, responses: torch.Tensor) -> torch.Tensor:
        """`responses (B, K)` -> maps `(B, 1, 16, 64)` scaled per sample to [0, 1]."""
        z = self.mlp(self.neuron_features(responses))
        z = z.view(-1, 1, *GRID)
        z = F.interpolate(z, size=MAP_SIZE, mode="bilinear", align_corners=False)
        return minmax_per_sample(z)

    # --- inspection ---------------------------------------------------------------------------
    @torch.no_grad()
    def attention_weights(self, responses: torch.Tensor, layer: int = 0) -> torch.Tensor:
        """Attention weights of attention layer `layer` (0 = the one reading the neuron tokens):
        `(B, heads, K, K)`, or `(B, heads, n_latents, K)` for the latent block (layer 0 only).
        Memory is B*heads*K^2: call it on small batches for large K."""
        tokens = self.embed(responses)
        if self.block == "latent":
            if layer != 0:
                raise ValueError(f"the latent block exposes only layer 0 (latents -> neurons), got {layer}")
            lat = self.latents.unsqueeze(0).expand(responses.shape[0], -1, -1)
            return self.cross_attn.weights(self.latent_norm(lat), tokens)
        layers = [self.attn, *self.extra_layers] if self.block == "reference" else list(self.layers)
        if not -len(layers) <= layer < len(layers):
            raise ValueError(f"layer must be in [0, {len(layers)}), got {layer}")
        layer = layer % len(layers)
        x = tokens
        for i, mod in enumerate(layers):
            if i == layer:
                return mod.weights(x) if self.block == "reference" else mod.attn.weights(mod.norm1(x))
            x = mod(x)
        raise AssertionError("unreachable")

    def _first_attention(self, responses: torch.Tensor) -> tuple[MultiHeadAttention, torch.Tensor, torch.Tensor]:
        """(attention module, query input, context input) of the layer that reads the neuron tokens."""
        tokens = self.embed(responses)
        if self.block == "reference":
            return self.attn, tokens, tokens
        if self.block == "transformer":
            h = self.layers[0].norm1(tokens)
            return self.layers[0].attn, h, h
        lat = self.latent_norm(self.latents.unsqueeze(0).expand(responses.shape[0], -1, -1))
        return self.cross_attn, lat, tokens

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
