"""Loading DS-Net weights from a state-dict file in the public release's key format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neuroalign.models.dsnet import DSNet
from neuroalign.models.image_tower import ImageTower
from neuroalign.models.weights import load_backbone_weights, needed_for

torch.set_num_threads(1)


def _release_like_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A synthetic checkpoint: 3 input channels, a deeper stage 3 than ds_net_tiny, a classifier
    head, BatchNorm statistics that are not at their defaults."""
    torch.manual_seed(seed)
    net = DSNet((2, 2, 5, 1), in_chans=3)
    state = net.state_dict()
    for key, value in state.items():
        if key.endswith(("running_mean", "running_var")):
            value.copy_(torch.rand_like(value) + 0.5)
    state["head.weight"] = torch.randn(1000, 512)
    state["head.bias"] = torch.randn(1000)
    return state


def _save(path: Path, state: dict, wrap: str | None = "state_dict", prefix: str = "module.") -> Path:
    state = {prefix + k: v for k, v in state.items()}
    torch.save({wrap: state, "epoch": 300} if wrap else state, path)
    return path


def test_loads_release_keys_and_adapts_first_conv(tmp_path: Path):
    state = _release_like_state()
    path = _save(tmp_path / "dsnet.pth", state)
    tower = ImageTower(backbone="ds_net_tiny", stage=2, block=2, weights=path)
    report = tower.weights_report
    own = tower.backbone.state_dict()
    assert sorted(report.loaded) == sorted(own)
    assert any(k.startswith("blocks3.") for k in report.ignored) and "head.weight" in report.ignored
    assert "norm.running_mean" in report.ignored
    assert len(report.adapted) == 1 and "patch_embed1.proj.weight" in report.adapted[0]
    torch.testing.assert_close(own["patch_embed1.proj.weight"], state["patch_embed1.proj.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(own["blocks2.1.norm2.running_var"], state["blocks2.1.norm2.running_var"])
    assert "loaded" in report.summary() and "ignored" in report.summary()
    # summing the first conv over channels == feeding the grey image to all three channels
    source = DSNet((2, 2, 5, 1), in_chans=3).eval()
    source.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
    x = torch.rand(2, 1, 36, 52)
    with torch.no_grad():
        torch.testing.assert_close(tower.features(x), source.features_at(x.repeat(1, 3, 1, 1), 2, 2),
                                   atol=1e-4, rtol=1e-4)


def test_plain_unprefixed_state_dict_and_full_backbone(tmp_path: Path):
    state = _release_like_state(1)
    path = _save(tmp_path / "plain.pt", state, wrap=None, prefix="")
    target = DSNet((2, 2, 4, 1), in_chans=1)  # a full backbone: only what stage 3 block 4 uses is loaded
    report = load_backbone_weights(target, path, stage=3, block=4)
    assert all(needed_for(k, 3, 4) for k in report.loaded)
    assert not any(k.startswith(("patch_embed4", "blocks4", "norm")) for k in report.loaded)
    torch.testing.assert_close(target.state_dict()["blocks3.3.conv2.weight"], state["blocks3.3.conv2.weight"])


def test_needed_for():
    assert needed_for("patch_embed2.proj.bias", 2, 4) and not needed_for("patch_embed3.proj.bias", 2, 4)
    assert needed_for("blocks2.3.conv1.weight", 2, 4) and not needed_for("blocks2.4.conv1.weight", 2, 4)
    assert needed_for("blocks1.2.mlp.fc1.weight", 2, 1) and not needed_for("norm.weight", 4, 3)
    assert not needed_for("head.weight", 4, 3)


def test_missing_and_misshaped_tensors_raise(tmp_path: Path):
    state = _release_like_state()
    del state["blocks2.1.conv1.weight"]
    path = _save(tmp_path / "missing.pth", state)
    with pytest.raises(ValueError, match=r"lacks 1 tensor.*blocks2\.1\.conv1\.weight"):
        ImageTower(backbone="ds_net_tiny", stage=2, block=2, weights=path)
    ImageTower(backbone="ds_net_tiny", stage=2, block=1, weights=path)  # not needed there: fine

    state = _release_like_state()
    state["blocks1.0.conv.weight"] = torch.zeros(32, 1, 5, 5)
    path = _save(tmp_path / "shape.pth", state)
    with pytest.raises(ValueError, match=r"blocks1\.0\.conv\.weight.*\(32, 1, 5, 5\), expected \(32, 1, 3, 3\)"):
        ImageTower(backbone="ds_net_tiny", stage=1, block=1, weights=path)

    # a stage-3 block the file does not have (5 blocks there, the request wants a 6th)
    target = DSNet((2, 2, 6), in_chans=1)
    with pytest.raises(ValueError, match=r"blocks3\.5"):
        load_backbone_weights(target, _save(tmp_path / "ok.pth", _release_like_state()), stage=3, block=6)


def test_file_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ImageTower(backbone="ds_net_tiny", stage=1, block=1, weights=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="could not read"):
        ImageTower(backbone="ds_net_tiny", stage=1, block=1, weights=bad)
    listy = tmp_path / "list.pth"
    torch.save({"epoch": 3, "args": {"lr": 0.1}}, listy)
    with pytest.raises(ValueError, match="no state dict"):
        ImageTower(backbone="ds_net_tiny", stage=1, block=1, weights=listy)


def test_loaded_weights_change_fingerprint(tmp_path: Path):
    path = _save(tmp_path / "w.pth", _release_like_state())
    plain = ImageTower(backbone="ds_net_tiny", stage=1, block=1)
    loaded = ImageTower(backbone="ds_net_tiny", stage=1, block=1, weights=path)
    assert plain.backbone_fingerprint() != loaded.backbone_fingerprint()
    assert not any(p.requires_grad for p in loaded.backbone.parameters())
