"""Image tower: output maps, frozen vs fine-tune gradients, truncation, determinism, feature cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from neuroalign.config import ImageTowerConfig
from neuroalign.models import feature_cache
from neuroalign.models.dsnet import ds_net_tiny
from neuroalign.models.image_tower import ImageTower
from neuroalign.models.maps import minmax_per_sample

torch.set_num_threads(1)


def _tower(**kw) -> ImageTower:
    kw.setdefault("backbone", "ds_net_tiny")
    kw.setdefault("stage", 2)
    kw.setdefault("block", 1)
    return ImageTower(**kw)


def test_default_tower_truncated_and_shapes():
    tower = ImageTower()  # ds_net_small, stage 2, block 4
    bb = tower.backbone
    assert len(bb.blocks1) == 3 and len(bb.blocks2) == 4 and not hasattr(bb, "blocks3") and bb.norm is None
    feats = tower.features(torch.rand(1, 1, 68, 270))
    assert feats.shape == (1, 128, 8, 33)
    out = tower.project(feats)
    assert out.shape == (1, 1, 16, 64)
    assert out.min().item() == 0.0 and out.max().item() == pytest.approx(1.0)
    assert sum(p.numel() for p in tower.parameters() if p.requires_grad) == 129


def test_frozen_mode_trains_only_the_projection():
    torch.manual_seed(0)
    tower = _tower()
    tower.train()
    assert not tower.backbone.training  # train() keeps the frozen backbone in eval
    running = tower.backbone.blocks1[0].norm1.running_mean.clone()
    out = tower(torch.rand(3, 1, 32, 48))
    (out * torch.randn_like(out)).sum().backward()
    assert tower.proj.weight.grad is not None and tower.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in tower.backbone.parameters())
    torch.testing.assert_close(tower.backbone.blocks1[0].norm1.running_mean, running)
    assert tower.features(torch.rand(1, 1, 32, 32)).requires_grad is False


def test_finetune_mode_reaches_backbone():
    torch.manual_seed(0)
    tower = _tower(mode="finetune", stage=2, block=2)
    tower.train()
    assert tower.backbone.training
    out = tower(torch.rand(3, 1, 32, 48))
    (out * torch.randn_like(out)).sum().backward()
    for name in ["patch_embed1.proj.weight", "blocks1.0.conv1.weight", "blocks2.1.mlp.fc2.weight"]:
        grad = dict(tower.backbone.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_features_equal_full_backbone_intermediate():
    tower = _tower(stage=2, block=2, init_seed=3)
    full = ds_net_tiny().eval()
    full.load_state_dict(tower.backbone.state_dict(), strict=False)
    x = torch.rand(2, 1, 40, 64)
    with torch.no_grad():
        torch.testing.assert_close(tower.features(x), full.features_at(x, 2, 2))


def test_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    torch.nn.Conv2d(128, 1, 1)  # the trainable projection draws from the global RNG like any layer
    expected_state = torch.get_rng_state()
    torch.manual_seed(123)
    a = _tower(init_seed=7)
    assert torch.equal(torch.get_rng_state(), expected_state)  # the backbone init did not touch it
    b, c = _tower(init_seed=7), _tower(init_seed=8)
    assert a.backbone_fingerprint() == b.backbone_fingerprint() != c.backbone_fingerprint()
    torch.testing.assert_close(a.backbone.blocks2[0].conv1.weight, b.backbone.blocks2[0].conv1.weight)
    assert _tower(block=1).backbone_fingerprint() != _tower(stage=1, block=2).backbone_fingerprint()
    with torch.no_grad():
        a.backbone.blocks1[0].conv.weight.add_(1e-3)
    assert a.backbone_fingerprint() != b.backbone_fingerprint()


def test_projection_constant_features_give_zero_map_and_validates():
    tower = _tower()
    with torch.no_grad():
        tower.proj.weight.zero_()
    out = tower.project(torch.rand(2, 128, 4, 6))
    assert torch.isfinite(out).all() and out.max() < 1e-2  # rounding noise is not stretched to [0, 1]
    flat = minmax_per_sample(torch.full((2, 1, 4, 4), 0.37))
    assert torch.equal(flat, torch.zeros_like(flat))
    with pytest.raises(ValueError, match="expected features"):
        tower.project(torch.rand(2, 64, 4, 6))
    with pytest.raises(ValueError, match="backbone mode"):
        _tower(mode="half")


def test_from_config():
    tower = ImageTower.from_config(ImageTowerConfig(backbone="ds_net_tiny", stage=1, block=2, mode="finetune", init_seed=5))
    assert (tower.stage, tower.block, tower.mode, tower.init_seed) == (1, 2, "finetune", 5)
    assert tower.channels == 64 and len(tower.backbone.blocks1) == 2
    assert all(p.requires_grad for p in tower.backbone.parameters())


def test_cached_features_equal_fresh_and_hit_cache(tmp_path: Path, monkeypatch):
    feature_cache.clear_memory_cache()
    tower = _tower(init_seed=1)
    images = np.random.default_rng(0).random((5, 1, 32, 40)).astype(np.float32)
    calls = []
    original = feature_cache.compute_features
    monkeypatch.setattr(feature_cache, "compute_features", lambda *a, **k: calls.append(1) or original(*a, **k))

    feats = feature_cache.cached_features(tower, images, "hash-a", tmp_path, "cpu", batch_size=2)
    with torch.no_grad():
        fresh = tower.backbone.eval().features_at(torch.from_numpy(images), 2, 1)
    torch.testing.assert_close(feats, fresh, atol=1e-5, rtol=1e-5)
    assert len(calls) == 1
    files = list((tmp_path / "features").glob("*.pt"))
    assert len(files) == 1
    assert torch.equal(torch.load(files[0], weights_only=True)["features"], feats)

    again = feature_cache.cached_features(tower, images, "hash-a", tmp_path, "cpu")  # memory hit
    assert len(calls) == 1 and torch.equal(again, feats)
    feature_cache.clear_memory_cache()
    from_disk = feature_cache.cached_features(tower, images, "hash-a", tmp_path, "cpu")  # disk hit
    assert len(calls) == 1 and torch.equal(from_disk, feats)

    feature_cache.cached_features(tower, images, "hash-b", tmp_path, "cpu")  # other data
    assert len(calls) == 2
    feature_cache.cached_features(_tower(init_seed=2), images, "hash-a", tmp_path, "cpu")  # other weights
    assert len(calls) == 3


def test_features_read_once_are_not_kept_in_memory_and_presence_is_checked_without_reading(tmp_path: Path):
    """A profile reads each layer once: `remember=False` writes the file but keeps nothing in memory,
    and `has_features` answers from the file's presence (its content is not read)."""
    feature_cache.clear_memory_cache()
    tower = _tower(init_seed=1)
    images = np.random.default_rng(0).random((4, 1, 32, 40)).astype(np.float32)
    assert not feature_cache.has_features(tower, images, "hash-r", tmp_path)
    feats = feature_cache.cached_features(tower, images, "hash-r", tmp_path, "cpu", remember=False)
    assert not feature_cache._memory and feature_cache.has_features(tower, images, "hash-r", tmp_path)
    path = next((tmp_path / "features").glob("*.pt"))
    again = feature_cache.cached_features(tower, images, "hash-r", tmp_path, "cpu", remember=False)
    assert torch.equal(again, feats) and not feature_cache._memory
    path.write_bytes(b"not a tensor file")  # present, unread: still "cached" until someone reads it
    assert feature_cache.has_features(tower, images, "hash-r", tmp_path)
    assert not feature_cache.has_features(tower, images, "hash-r", None)
    feature_cache.cached_features(tower, images, "hash-r", None, "cpu")  # no folder: kept in memory
    assert feature_cache.has_features(tower, images, "hash-r", None)
    feature_cache.clear_memory_cache()


def test_corrupt_cache_file_is_recomputed(tmp_path: Path):
    feature_cache.clear_memory_cache()
    tower = _tower(stage=1, block=1)
    images = np.random.default_rng(1).random((2, 1, 32, 32)).astype(np.float32)
    key = feature_cache.feature_key(tower, "h", images.shape)
    path = tmp_path / "features" / f"{key}.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    feats = feature_cache.cached_features(tower, images, "h", tmp_path, "cpu")
    assert feats.shape == (2, 64, 8, 8)
    assert torch.equal(torch.load(path, weights_only=True)["features"], feats)
    with pytest.raises(ValueError, match="expected images"):
        feature_cache.cached_features(tower, images[0], "h", None, "cpu")
