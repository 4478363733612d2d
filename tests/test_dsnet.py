"""DS-Net backbone: parameter counts, stage shapes/strides, forward_intermediates (timm's contract),
truncation and early stopping, the variant registry."""

from __future__ import annotations

import pytest
import torch

from neuroalign import config
from neuroalign.models.dsnet import (VARIANT_DEPTHS, VARIANTS, DSNet, MixBlock, build_backbone, ds_net_small,
                                     ds_net_tiny, truncated_depths)


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_small_parameter_count_matches_reference():
    n = _n_params(ds_net_small(in_chans=1))
    assert abs(n - 27_757_344) <= 0.03 * 27_757_344
    assert n == 27_757_344  # same layer set as the reference


def test_tiny_parameter_count():
    assert _n_params(ds_net_tiny(in_chans=1)) == 10_019_264
    # paper's DS-Net-T (10.5M) counts 3 input channels and a 1000-class head
    assert _n_params(ds_net_tiny(in_chans=3)) + 512 * 1000 + 1000 == 10_534_312


@pytest.mark.parametrize("hw,expected", [
    ((68, 270), [(17, 67), (8, 33), (4, 16), (2, 8)]),
    ((32, 32), [(8, 8), (4, 4), (2, 2), (1, 1)]),
    ((45, 77), [(11, 19), (5, 9), (2, 4), (1, 2)]),
])
def test_stage_shapes_and_strides(hw, expected):
    torch.manual_seed(0)
    net = DSNet((1, 1, 1, 1)).eval()
    x = torch.randn(1, 1, *hw)
    assert net.stage_channels == (64, 128, 320, 512)
    assert net.stage_strides == (4, 8, 16, 32)
    with torch.no_grad():
        for stage in range(1, 5):
            out = net.features_at(x, stage, 1)
            assert out.shape == (1, net.stage_channels[stage - 1], *expected[stage - 1])
            assert torch.isfinite(out).all()
            # floor conv arithmetic: size == input // stride
            assert out.shape[-2:] == (hw[0] // net.stage_strides[stage - 1], hw[1] // net.stage_strides[stage - 1])


def test_default_feature_shape_on_reference_input():
    torch.manual_seed(0)
    net = DSNet(truncated_depths("ds_net_small", 2, 4)).eval()
    with torch.no_grad():
        assert net.features_at(torch.randn(1, 1, 68, 270), 2, 4).shape == (1, 128, 8, 33)


def test_intermediate_equals_full_forward_and_stops_early():
    torch.manual_seed(0)
    net = ds_net_tiny().eval()
    x = torch.randn(2, 1, 40, 72)
    captured, calls = {}, {"later": 0}
    # test-side hook only to observe the full forward's intermediate
    h = net.blocks2[1].register_forward_hook(lambda m, i, o: captured.setdefault("full", o.clone()))
    with torch.no_grad():
        full = net.forward_features(x)
    h.remove()
    assert full.shape == (2, 512, 1, 2)

    def count(*_):
        calls["later"] += 1

    later = [net.patch_embed3, net.patch_embed4, *net.blocks3, *net.blocks4, net.norm]
    handles = [m.register_forward_pre_hook(count) for m in later]
    with torch.no_grad():
        inter = net.features_at(x, 2, 2)
    for hnd in handles:
        hnd.remove()
    assert calls["later"] == 0
    torch.testing.assert_close(inter, captured["full"])
    # the first block of stage 2 is computed, i.e. the block index is honoured
    with torch.no_grad():
        first = net.features_at(x, 2, 1)
    assert not torch.allclose(first, inter)


def test_truncated_backbone_equals_full_backbone():
    torch.manual_seed(0)
    full = ds_net_tiny().eval()
    trunc = DSNet(truncated_depths("ds_net_tiny", 3, 2)).eval()
    missing, unexpected = trunc.load_state_dict(full.state_dict(), strict=False)
    assert missing == []
    assert all(k.startswith(("blocks3.2", "blocks3.3", "patch_embed4", "blocks4", "norm")) for k in unexpected)
    assert len(trunc.blocks3) == 2 and not hasattr(trunc, "blocks4") and trunc.norm is None
    x = torch.randn(1, 1, 36, 50)
    with torch.no_grad():
        torch.testing.assert_close(trunc.features_at(x, 3, 2), full.features_at(x, 3, 2))


def test_mix_block_keeps_residual_and_gradients():
    torch.manual_seed(0)
    blk = MixBlock(64, 1, downsample=8)
    x = torch.randn(2, 64, 9, 13, requires_grad=True)
    y = blk(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    names = ["cross_channel_up_conv", "cross_channel_up_sa", "fuse_channel_conv", "fuse_channel_sa",
             "channel_up", "conv", "conv1", "conv2", "mlp.fc1"]
    params = dict(blk.named_parameters())
    for name in names:
        grad = params[f"{name}.weight"].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_mix_block_puts_tokens_back_in_place():
    """Co-attention outputs return to their own positions (no token/channel scramble): with
    mirror-symmetric depthwise kernels and no global downsampling every layer commutes with a
    horizontal flip, so the whole block must too."""
    torch.manual_seed(0)
    blk = MixBlock(64, 1, downsample=1).eval()
    with torch.no_grad():
        for conv in (blk.pos_embed, blk.conv):
            conv.weight.copy_(0.5 * (conv.weight + conv.weight.flip(-1)))
        x = torch.randn(1, 64, 8, 8)
        torch.testing.assert_close(blk(x.flip(-1)), blk(x).flip(-1), atol=1e-4, rtol=1e-4)


def test_input_validation():
    net = DSNet((1, 1))
    with pytest.raises(ValueError, match="at least 32"):
        net.features_at(torch.zeros(1, 1, 31, 64), 1, 1)
    with pytest.raises(ValueError, match="stage must be"):
        net.features_at(torch.zeros(1, 1, 32, 32), 3, 1)
    with pytest.raises(ValueError, match="block must be"):
        net.features_at(torch.zeros(1, 1, 32, 32), 2, 2)
    with pytest.raises(ValueError, match="expected images"):
        net.features_at(torch.zeros(1, 3, 32, 32), 1, 1)
    with pytest.raises(ValueError, match=r"block index must be in \[-2, 2\)"):
        net.forward_intermediates(torch.zeros(1, 1, 32, 32), [2])
    with pytest.raises(ValueError, match="count must be in 1..2"):
        net.forward_intermediates(torch.zeros(1, 1, 32, 32), 3)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet50")
    with pytest.raises(ValueError, match="block must be"):
        truncated_depths("ds_net_small", 2, 5)


def _full_forward_block_outputs(net: DSNet, x: torch.Tensor) -> list[torch.Tensor]:
    """Every block's output of the full forward, observed with test-side hooks."""
    seen: list[torch.Tensor] = []
    blocks = [blk for s in range(1, net.num_stages + 1) for blk in getattr(net, f"blocks{s}")]
    handles = [blk.register_forward_hook(lambda m, i, o: seen.append(o.clone())) for blk in blocks]
    with torch.no_grad():
        net.forward_features(x)
    for h in handles:
        h.remove()
    assert len(seen) == len(blocks)
    return seen


def test_forward_intermediates_channels_strides_and_equality_with_full_path():
    torch.manual_seed(0)
    net = ds_net_tiny().eval()
    x = torch.randn(2, 1, 64, 96)
    full = _full_forward_block_outputs(net, x)
    with torch.no_grad():
        every = net.forward_intermediates(x)
    assert len(every) == len(net.block_names) == sum(net.depths) == 9
    for (stage, _), out, ref in zip(net.block_names, every, full):
        stride = net.stage_strides[stage - 1]
        assert out.shape == (2, net.stage_channels[stage - 1], 64 // stride, 96 // stride)
        torch.testing.assert_close(out, ref)
    with torch.no_grad():
        # (stage, block) pairs and flat indices name the same blocks; the list follows `indices`
        pairs = net.forward_intermediates(x, [(3, 2), (1, 1), (4, 1)])
        flat = net.forward_intermediates(x, [5, 0, -1])
        last2 = net.forward_intermediates(x, 2)
        final, inter = net.forward_intermediates(x, [(2, 2)], intermediates_only=False)
    for a, b, ref in zip(pairs, flat, (full[5], full[0], full[8])):
        torch.testing.assert_close(a, ref)
        torch.testing.assert_close(b, ref)
    torch.testing.assert_close(last2[0], full[7])
    torch.testing.assert_close(last2[1], full[8])
    torch.testing.assert_close(inter[0], full[3])
    with torch.no_grad():
        torch.testing.assert_close(final, net.forward_features(x))


@pytest.mark.parametrize("stop_early", [True, False])
def test_stop_early_skips_every_later_block(stop_early):
    torch.manual_seed(0)
    net = ds_net_tiny().eval()
    later = [net.patch_embed3, *net.blocks2[1:], *net.blocks3, net.patch_embed4, *net.blocks4]
    calls = []
    handles = [m.register_forward_pre_hook(lambda *_: calls.append(1)) for m in later]
    with torch.no_grad():
        out = net.forward_intermediates(torch.randn(1, 1, 40, 72), [(2, 1)], stop_early=stop_early)
    for h in handles:
        h.remove()
    assert len(out) == 1 and out[0].shape == (1, 128, 5, 9)
    assert len(calls) == (0 if stop_early else len(later))


def test_variants_registered_once_and_named_in_config():
    assert set(VARIANTS) <= set(config.BACKBONES)  # the image-model registry holds more than DS-Net
    assert all(config.IMAGE_MODEL_DEPTHS[name] == v.depths for name, v in VARIANTS.items())
    assert dict(VARIANT_DEPTHS) == {"ds_net_tiny": (2, 2, 4, 1), "ds_net_small": (3, 4, 12, 3)}
    for name, v in VARIANTS.items():
        assert v.build is {"ds_net_tiny": ds_net_tiny, "ds_net_small": ds_net_small}[name]
        assert build_backbone(name).depths == v.depths
    assert build_backbone("ds_net_tiny", in_chans=3, depths=(1, 1)).depths == (1, 1)
