"""Contrastive (CLIP-style), RMSE and SSIM losses between image maps and neural maps.

All functions take maps of shape `(B, 1, H, W)` or `(B, H, W)` (anything with the batch first).
`clip_loss` with `center=False` and `temperature=0.01` is the reference behaviour; `center=True`
mean-centres every flattened map before the L2 normalisation, so similarities become
correlations (the towers emit non-negative min-max maps, whose plain cosines are all large).

The losses are functions of the maps they are given and keep no batch state (open_clip's split):
under torchrun the trainer passes them both towers' maps gathered over every rank
(`neuroalign.training.distributed.gather_rows`), so every term is the whole global batch's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from neuroalign.config import LossConfig

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
TEMPERATURE_RANGE = (0.001, 1.0)  # clamp of the learnable temperature


def _flat_normalised(x: torch.Tensor, center: bool) -> torch.Tensor:
    flat = x.flatten(1).float()
    if center:
        flat = flat - flat.mean(dim=1, keepdim=True)
    return F.normalize(flat, dim=1, eps=1e-8)


def similarity_matrix(a: torch.Tensor, b: torch.Tensor, center: bool = False) -> torch.Tensor:
    """Cosine (or, with `center=True`, Pearson-correlation) similarities `(N, M)` of `a (N, ...)` rows
    against `b (M, ...)` rows. Rows are images, columns neural maps when called as (image, neural)."""
    return _flat_normalised(a, center) @ _flat_normalised(b, center).T


def clip_loss(image_maps: torch.Tensor, neural_maps: torch.Tensor,
              temperature: float | torch.Tensor = 0.01, center: bool = False) -> torch.Tensor:
    """Symmetric InfoNCE: mean of cross-entropy(image->neural) and cross-entropy(neural->image).

    Matching pairs share a row index; logits are similarities divided by `temperature`.
    """
    if image_maps.shape[0] != neural_maps.shape[0]:
        raise ValueError(f"clip_loss needs equal batch sizes, got {image_maps.shape[0]} image maps "
                         f"and {neural_maps.shape[0]} neural maps")
    logits = similarity_matrix(image_maps, neural_maps, center=center) / temperature
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def rmse_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root mean squared error over all elements (a tiny epsilon keeps the gradient finite at 0)."""
    return torch.sqrt(F.mse_loss(a.float(), b.float()) + 1e-12)


def _as_bchw(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f"SSIM expects maps of shape (B, H, W) or (B, C, H, W), got {tuple(x.shape)}")
    return x


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Local SSIM `(B, C, H, W)` with 3x3 average-pool windows (reflection padded), C1=0.01^2,
    C2=0.03^2 (maps in [0, 1])."""
    x, y = _as_bchw(a).float(), _as_bchw(b).float()
    pad = lambda t: F.pad(t, (1, 1, 1, 1), mode="reflect")  # noqa: E731
    pool = lambda t: F.avg_pool2d(pad(t), kernel_size=3, stride=1)  # noqa: E731
    mu_x, mu_y = pool(x), pool(y)
    var_x = pool(x * x) - mu_x**2
    var_y = pool(y * y) - mu_y**2
    cov = pool(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_x**2 + mu_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return num / den


def ssim_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per sample `(B,)`; 1 for identical maps."""
    return ssim_map(a, b).flatten(1).mean(dim=1)


def ssim_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - mean SSIM over the batch."""
    return 1.0 - ssim_per_sample(a, b).mean()


class CombinedLoss(nn.Module):
    """`w_clip * clip + w_rmse * rmse + w_ssim * (1 - ssim)` from a `LossConfig`.

    With `learnable_temperature` the temperature is `exp(log_temperature)` clamped to
    `TEMPERATURE_RANGE`; `log_temperature` is then this module's only parameter (give it to an
    optimizer). `forward` returns `(loss, parts)`; `parts` maps `"clip"`, `"rmse"`, `"ssim"` (the
    1 - SSIM term; only terms with a weight > 0 are computed), `"temperature"` and `"loss"` to
    detached 0-dim tensors (call `float()` at the log interval, not every step).
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()
        if self.config.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.config.temperature}")
        if self.config.learnable_temperature:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(self.config.temperature)))
        else:
            self.log_temperature = None

    @property
    def temperature(self) -> torch.Tensor | float:
        """Current temperature (a tensor carrying gradient when learnable, else a float)."""
        if self.log_temperature is None:
            return self.config.temperature
        return self.log_temperature.exp().clamp(*TEMPERATURE_RANGE)

    def forward(self, img_maps: torch.Tensor, neu_maps: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        temperature = self.temperature
        loss = img_maps.new_zeros((), dtype=torch.float32)
        parts: dict[str, torch.Tensor] = {}
        if cfg.w_clip > 0:
            term = clip_loss(img_maps, neu_maps, temperature=temperature, center=cfg.center)
            loss = loss + cfg.w_clip * term
            parts["clip"] = term.detach()
        if cfg.w_rmse > 0:
            term = rmse_loss(img_maps, neu_maps)
            loss = loss + cfg.w_rmse * term
            parts["rmse"] = term.detach()
        if cfg.w_ssim > 0:
            term = ssim_loss(img_maps, neu_maps)
            loss = loss + cfg.w_ssim * term
            parts["ssim"] = term.detach()
        parts["temperature"] = torch.as_tensor(temperature).detach().float()
        parts["loss"] = loss.detach()
        return loss, parts
