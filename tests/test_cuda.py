"""Device choice (CPU checks always run) and the CUDA path: bf16 autocast, pinned-memory loading
(skipped without a GPU)."""

import numpy as np
import pytest
import torch

from neuroalign.config import TrainConfig
from neuroalign.data import Subject
from neuroalign.training.device import DistInfo, describe_device, dist_info_from_env, resolve_device
from neuroalign.training.trainer import Trainer

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def tiny_config(**changes) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 16, "image.backbone": "ds_net_tiny", "image.stage": 1, "image.block": 1,
            "neural.d_model": 16}
    base.update(changes)
    return TrainConfig().replace(**base)


@pytest.fixture
def subject(make_tiny_arrays):
    a = make_tiny_arrays(n_images=64, n_neurons=24, hw=(34, 136))
    return Subject("toy", a["images"][:, None].astype(np.float32) / 255, a["responses"], a["repeats"])


def test_resolve_device_cpu_and_errors():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")
    assert describe_device("cpu").startswith("cpu")


def test_world_size_one_is_plain_single_process(monkeypatch, subject):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    info = dist_info_from_env()
    assert info == DistInfo(1, 0, 0) and info.is_main and not info.enabled
    tr = Trainer(tiny_config(device="cpu", epochs=1), subject)
    assert tr.model is tr.core  # no DDP wrapper
    assert not torch.distributed.is_initialized()
    tr.fit()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError):
        dist_info_from_env()


@needs_cuda
@pytest.mark.cuda
def test_cuda_bf16_training_and_pinned_loading(subject):
    tr = Trainer(tiny_config(device="cuda", bf16=True, epochs=2), subject)
    assert tr.device.type == "cuda" and tr.inputs.is_cuda and tr.responses.is_cuda
    with tr._autocast():
        out = tr.core.image_tower.proj(tr.inputs[:2])
    assert out.dtype == torch.bfloat16  # autocast really active
    res = tr.fit()
    assert all(np.isfinite(res.train_loss_hist)) and res.best_epoch >= 1
    img, neu = tr.predict(tr.split["test"])
    assert img.dtype == np.float32 and img.shape == (len(tr.split["test"]), 16, 64)


@needs_cuda
@pytest.mark.cuda
def test_cuda_finetune_and_auto_device(subject):
    tr = Trainer(tiny_config(device="auto", epochs=1, **{"image.mode": "finetune"}), subject)
    assert tr.device.type == "cuda"
    assert tr.inputs.is_cuda and tr.inputs.shape[1:] == subject.images.shape[1:]
    assert np.isfinite(tr.fit().best_val_loss)
