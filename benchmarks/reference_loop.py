"""The yardstick: a faithful re-creation of the reference code's *cost* per training step.

This is not part of the package and is never used for training. It mirrors what the research code
does each step (facts measured from it, see ``shared/seed/SEED_NOTES.md``), so that the benchmark
can run it side by side with neuroalign, in the same process, on the same data:

Image side (``img_tower`` + ``models`` there)
* The full 4-stage DS-Net "small" backbone (depths [3, 4, 12, 3], dims [64, 128, 320, 512],
  1 input channel, no head; 27.76M parameters) runs forward on every batch, in TRAIN mode
  (BatchNorm statistics update) and with autograd recording (its parameters require grad),
  although only the output of stage 2, block 4 is used. We build it from neuroalign's own DSNet
  (the reference's modified backbone has the same layer sizes, ~1.45 GMAC per 68x270 image; its
  reshape/residual defects do not change the cost).
* The stage-2 feature is taken out by a forward hook that stores ``output.detach()`` in a dict on
  the module (so the backbone never receives a gradient), then a 1x1 conv 128 -> 1, bilinear
  resize to 16x64 and per-sample min-max.
* AdamW(lr 3e-4, weight decay 5e-5) over ALL image-tower parameters (the backbone's grads stay
  None, so AdamW skips them; only the 1x1 conv updates).

Neural side (``neural_tower`` there)
* A ModuleList of K separate ``nn.Linear(1, 512)``, applied in a Python loop over neurons and
  stacked to (B, K, 512).
* ``nn.MultiheadAttention(512, 1)`` over the K tokens (q/k/v/out projections, fused scaled dot
  product), no LayerNorm/residual/FFN. The sinusoidal positional encoding the reference computes
  and never adds is omitted (it costs ~nothing).
* A ModuleList of K separate ``nn.Linear(512, 1)`` in a Python loop, concatenated to (B, K).
* Linear K -> 2048 -> 512 -> 256 with no activations, reshape (B, 1, 8, 32), bilinear upsample to
  16x64, per-sample min-max. RMSprop(lr 5e-5, alpha 0.9).

Loss: flatten both maps, L2-normalise, logits = similarity / 0.01, symmetric cross-entropy.
Parameter count of the neural side: 3585 K + 2,233,088, as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuroalign.models.dsnet import ds_net_small

MAP_SIZE = (16, 64)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    lo, hi = flat.min(1, keepdim=True)[0], flat.max(1, keepdim=True)[0]
    return ((flat - lo) / (hi - lo + 1e-8)).view_as(x)


class ReferenceImageTower(nn.Module):
    """Full DS-Net small forward + forward hook at blocks2[3] + 1x1 conv (the reference's cost)."""

    def __init__(self, stage: int = 2, block: int = 4) -> None:
        super().__init__()
        self.backbone = ds_net_small(in_chans=1)
        self.features: dict[str, torch.Tensor] = {}
        target = getattr(self.backbone, f"blocks{stage}")[block - 1]
        target.register_forward_hook(self._hook)  # the reference's pattern (what neuroalign avoids)
        self.conv = nn.Conv2d(self.backbone.stage_channels[stage - 1], 1, kernel_size=1)

    def _hook(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self.features["feat"] = output.detach()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.backbone(images)  # all four stages, every step
        z = self.conv(self.features["feat"])
        return _minmax(F.interpolate(z, size=MAP_SIZE, mode="bilinear", align_corners=False))


class ReferenceNeuralTower(nn.Module):
    """Per-neuron Linear layers looped in Python around nn.MultiheadAttention, linear MLP."""

    def __init__(self, n_neurons: int, d_model: int = 512, n_heads: int = 1) -> None:
        super().__init__()
        self.embed = nn.ModuleList(nn.Linear(1, d_model) for _ in range(n_neurons))
        self.attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.readout = nn.ModuleList(nn.Linear(d_model, 1) for _ in range(n_neurons))
        self.mlp = nn.Sequential(nn.Linear(n_neurons, 2048), nn.Linear(2048, 512), nn.Linear(512, 256))

    def forward(self, responses: torch.Tensor) -> torch.Tensor:
        tokens = torch.stack([layer(responses[:, i:i + 1]) for i, layer in enumerate(self.embed)], dim=1)
        attended, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        per_neuron = torch.cat([layer(attended[:, i]) for i, layer in enumerate(self.readout)], dim=1)
        z = self.mlp(per_neuron).view(-1, 1, 8, 32)
        return _minmax(F.interpolate(z, size=MAP_SIZE, mode="bilinear", align_corners=False))


def reference_clip_loss(image_maps: torch.Tensor, neural_maps: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    a = F.normalize(image_maps.flatten(1), dim=1)
    b = F.normalize(neural_maps.flatten(1), dim=1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class ReferenceStep:
    """One reference training step: `step(images (B,1,H,W), responses (B,K)) -> loss`."""

    def __init__(self, n_neurons: int, device: torch.device | str = "cpu", d_model: int = 512,
                 n_heads: int = 1) -> None:
        self.image_tower = ReferenceImageTower().to(device).train()
        self.neural_tower = ReferenceNeuralTower(n_neurons, d_model, n_heads).to(device).train()
        self.opt_image = torch.optim.AdamW(self.image_tower.parameters(), lr=3e-4, weight_decay=5e-5)
        self.opt_neural = torch.optim.RMSprop(self.neural_tower.parameters(), lr=5e-5, alpha=0.9)

    def step(self, images: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        loss = reference_clip_loss(self.image_tower(images), self.neural_tower(responses))
        self.opt_image.zero_grad()
        self.opt_neural.zero_grad()
        loss.backward()
        self.opt_image.step()
        self.opt_neural.step()
        return loss.detach()
