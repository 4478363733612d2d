"""Linear neural tower: population response `(B, K)` -> shared embedding `(B, q)` -> 16x64 map.

The encoder is one `nn.Linear(K, q)` over the (z-scored) responses, with neuron dropout (each
neuron of each training sample silenced with probability `dropout`, the rest rescaled) as its
regulariser. Its maps are the embedding drawn through the same orthonormal DCT basis as the
readout image tower (`maps.dct_basis`), so the two towers' maps are directly comparable and the
cosine between maps is the cosine between embeddings. Cost is linear in K; no attention, no loop
over neurons. `neuroalign.training.linear_start` sets the encoder in closed form (the predictable
subspace of the responses), after which contrastive training fine-tunes it.
"""

from __future__ import annotations

import torch
from torch import nn

from neuroalign.models.maps import dct_basis, synthesise_maps


class LinearNeuralTower(nn.Module):
    """Responses `(B, K)` -> maps `(B, 1, 16, 64)` (zero-mean, unscaled)."""

    def __init__(self, n_neurons: int, n_components: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        if n_neurons < 1:
            raise ValueError(f"n_neurons must be >= 1, got {n_neurons}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"neuron dropout must be in [0, 1), got {dropout}")
        self.n_neurons, self.n_components = int(n_neurons), int(n_components)
        self.neuron_dropout = nn.Dropout(dropout)
        self.encoder = nn.Linear(self.n_neurons, self.n_components)
        self.register_buffer("basis", dct_basis(self.n_components), persistent=False)

    uses_folded_attention = False  # the trainer's memory check and kernel build do not apply

    def folded_block_bytes(self, itemsize: int = 4) -> int:
        return 0

    @classmethod
    def from_config(cls, n_neurons: int, config, n_components: int) -> "LinearNeuralTower":
        return cls(n_neurons, n_components=n_components, dropout=config.dropout)

    def _check_responses(self, r: torch.Tensor) -> None:
        if r.dim() != 2 or r.shape[1] != self.n_neurons:
            raise ValueError(f"expected responses of shape (B, {self.n_neurons}), got {tuple(r.shape)}")

    def embed(self, responses: torch.Tensor) -> torch.Tensor:
        """`(B, K)` -> `(B, n_components)`."""
        self._check_responses(responses)
        return self.encoder(self.neuron_dropout(responses.to(self.encoder.weight.dtype)))

    def forward(self, responses: torch.Tensor) -> torch.Tensor:
        return synthesise_maps(self.embed(responses), self.basis)

    @torch.no_grad()
    def neuron_importance(self, responses: torch.Tensor) -> torch.Tensor:
        """Share of each neuron in the embedding of each sample: `|r_bk| * ||w_k||`, rows summing to
        1 `(B, K)` (the same contract as the attention tower's `neuron_importance`)."""
        self._check_responses(responses)
        contrib = responses.abs().float() * self.encoder.weight.float().norm(dim=0)
        return contrib / contrib.sum(dim=1, keepdim=True).clamp_min(1e-12)
