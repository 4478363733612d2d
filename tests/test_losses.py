"""Losses: CLIP loss and similarities against tiny references, RMSE, SSIM, CombinedLoss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neuroalign.config import LossConfig
from neuroalign.models.losses import (
    CombinedLoss, clip_loss, rmse_loss, similarity_matrix, ssim_loss, ssim_map, ssim_per_sample,
)


def _reference_clip(a: np.ndarray, b: np.ndarray, temperature: float, center: bool) -> float:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    if center:
        a = a - a.mean(1, keepdims=True)
        b = b - b.mean(1, keepdims=True)
    n = len(a)
    sim = [[float(a[i] @ b[j] / (np.linalg.norm(a[i]) * np.linalg.norm(b[j]))) for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):
        row = [sim[i][j] / temperature for j in range(n)]
        col = [sim[j][i] / temperature for j in range(n)]
        total += -row[i] + math.log(sum(math.exp(v - max(row)) for v in row)) + max(row)
        total += -col[i] + math.log(sum(math.exp(v - max(col)) for v in col)) + max(col)
    return total / (2 * n)


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("temperature", [0.01, 0.5])
def test_clip_loss_matches_tiny_reference(center, temperature):
    rng = np.random.default_rng(0)
    a, b = rng.random((4, 1, 3, 5)), rng.random((4, 1, 3, 5))
    got = clip_loss(torch.tensor(a), torch.tensor(b), temperature=temperature, center=center)
    assert got.item() == pytest.approx(_reference_clip(a, b, temperature, center), rel=1e-5)


def test_clip_loss_prefers_matched_pairs():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 4, 4)
    matched = clip_loss(x, x + 0.01 * torch.rand_like(x), center=True)
    shuffled = clip_loss(x, x[torch.randperm(6)], center=True)
    assert matched < shuffled
    with pytest.raises(ValueError, match="equal batch sizes"):
        clip_loss(x, x[:5])


def test_similarity_matrix_cosine_and_correlation():
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 2, 4)), rng.random((5, 2, 4))
    cos = similarity_matrix(torch.tensor(a), torch.tensor(b)).numpy()
    fa, fb = a.reshape(3, -1), b.reshape(5, -1)
    expected = fa @ fb.T / np.outer(np.linalg.norm(fa, axis=1), np.linalg.norm(fb, axis=1))
    np.testing.assert_allclose(cos, expected, rtol=1e-5)
    corr = similarity_matrix(torch.tensor(a), torch.tensor(b), center=True).numpy()
    np.testing.assert_allclose(corr, np.corrcoef(fa, fb)[:3, 3:], rtol=1e-5, atol=1e-6)


def test_rmse():
    a, b = torch.tensor([[0.0, 1.0], [2.0, 3.0]]), torch.tensor([[1.0, 1.0], [2.0, 1.0]])
    assert rmse_loss(a, b).item() == pytest.approx(math.sqrt((1 + 0 + 0 + 4) / 4), rel=1e-5)
    x = torch.rand(3, 4, requires_grad=True)
    rmse_loss(x, x.detach()).backward()
    assert torch.isfinite(x.grad).all()


def test_ssim_identity_and_reference_value():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 16, 64)
    torch.testing.assert_close(ssim_per_sample(x, x), torch.ones(3))
    assert ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    y = torch.rand(3, 1, 16, 64)
    s = ssim_per_sample(x, y)
    assert s.shape == (3,) and (s < 0.5).all()
    torch.testing.assert_close(ssim_per_sample(x, y), ssim_per_sample(y, x))
    # one interior pixel by hand: 3x3 window means, variances, covariance
    px, py = x[0, 0, 4:7, 10:13].double(), y[0, 0, 4:7, 10:13].double()
    mx, my = px.mean(), py.mean()
    vx, vy = (px * px).mean() - mx**2, (py * py).mean() - my**2
    cxy = (px * py).mean() - mx * my
    c1, c2 = 0.01**2, 0.03**2
    expected = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim_map(x, y)[0, 0, 5, 11].item() == pytest.approx(expected.item(), rel=1e-4)
    assert ssim_map(x[:, 0], y[:, 0]).shape == (3, 1, 16, 64)


def test_combined_loss_weights_and_parts():
    torch.manual_seed(0)
    a, b = torch.rand(4, 1, 16, 64), torch.rand(4, 1, 16, 64)
    loss, parts = CombinedLoss(LossConfig())(a, b)
    assert set(parts) == {"clip", "temperature", "loss"}
    assert loss.item() == pytest.approx(clip_loss(a, b).item())
    cfg = LossConfig(w_clip=0.5, w_rmse=2.0, w_ssim=3.0, center=True, temperature=0.1)
    loss, parts = CombinedLoss(cfg)(a, b)
    expected = 0.5 * clip_loss(a, b, 0.1, center=True) + 2 * rmse_loss(a, b) + 3 * ssim_loss(a, b)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert float(parts["loss"]) == pytest.approx(expected.item(), rel=1e-5)
    assert float(parts["temperature"]) == pytest.approx(0.1)
    assert len(list(CombinedLoss(cfg).parameters())) == 0


def test_learnable_temperature_is_log_parameterised_and_clamped():
    torch.manual_seed(0)
    crit = CombinedLoss(LossConfig(learnable_temperature=True, temperature=0.05))
    params = list(crit.parameters())
    assert len(params) == 1 and params[0].item() == pytest.approx(math.log(0.05))
    a, b = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    loss, parts = crit(a, b)
    loss.backward()
    assert params[0].grad is not None and params[0].grad.abs() > 0
    with torch.no_grad():
        params[0].fill_(math.log(1e-6))
    assert float(crit.temperature.detach()) == pytest.approx(0.001)
    with torch.no_grad():
        params[0].fill_(math.log(50.0))
    assert float(crit(a, b)[1]["temperature"]) == pytest.approx(1.0)
