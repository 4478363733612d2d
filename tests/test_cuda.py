"""Device choice (CPU checks always run) and the CUDA path: bf16 autocast, pinned-memory loading,
the folded tower against the plain one (skipped without a GPU; benchmarks/gpu_check.sh runs them)."""

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
    return TrainConfig(preset="reference").replace(**base)


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
    tr = Trainer(tiny_config(device="cpu", epochs=1), subject).prepare()
    assert tr.model is tr.core  # no DDP wrapper
    assert not torch.distributed.is_initialized()
    tr.fit()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError):
        dist_info_from_env()


@needs_cuda
@pytest.mark.cuda
def test_cuda_bf16_training_and_pinned_loading(subject):
    tr = Trainer(tiny_config(device="cuda", bf16=True, epochs=2), subject).prepare()
    assert tr.device.type == "cuda" and tr.inputs.is_cuda and tr.responses.is_cuda
    with tr.autocast():
        out = tr.core.image_tower.proj(tr.inputs[:2])
    assert out.dtype == torch.bfloat16  # autocast really active
    res = tr.fit()
    assert all(np.isfinite(res.train_loss_hist)) and res.best_epoch >= 1
    img, neu = tr.predict(tr.split["test"])
    assert img.dtype == np.float32 and img.shape == (len(tr.split["test"]), 16, 64)


@needs_cuda
@pytest.mark.cuda
def test_cuda_finetune_and_auto_device(subject):
    tr = Trainer(tiny_config(device="auto", epochs=1, **{"image.mode": "finetune"}), subject).prepare()
    assert tr.device.type == "cuda"
    assert tr.inputs.is_cuda and tr.inputs.shape[1:] == subject.images.shape[1:]
    assert np.isfinite(tr.fit().best_val_loss)


def _ddp_worker(rank: int, port: int, out_dir: str, arrays: dict) -> None:
    import os

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
                       "RANK": str(rank), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    sub = Subject("toy", arrays["images"], arrays["responses"], None)
    run_dir = out_dir if rank == 0 else None
    tr = Trainer(tiny_config(device="cpu", epochs=2, batch_size=8, log_every_steps=1), sub,
                 run_dir=run_dir).prepare()
    assert tr.model is not tr.core  # wrapped in DistributedDataParallel
    res = tr.fit()
    torch.save({"state": tr.model_state(), "steps": tr.state.global_step, "epochs": res.epochs_run},
               os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_ddp_two_cpu_processes_share_the_work(subject, tmp_path):
    """torchrun-style WORLD_SIZE=2 on CPU (gloo): each rank takes half of each global batch, weights stay
    identical, only rank 0 writes the run folder."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    arrays = {"images": subject.images[:40], "responses": subject.responses[:40]}
    mp.spawn(_ddp_worker, args=(port, str(tmp_path), arrays), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    n_train = 40 - 2 * 4  # 10 % val and 10 % test of 40 images
    assert r0["steps"] == r1["steps"] == 2 * -(-n_train // 8)  # every global batch of 8 (4 rows per rank), 2 epochs
    for part in ("image_tower", "neural_tower"):
        for k, v in r0["state"][part].items():
            assert torch.equal(v, r1["state"][part][k]), k
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "metrics.jsonl").is_file()


@needs_cuda
@pytest.mark.cuda
def test_cuda_folded_tower_matches_plain():
    """On a GPU the folded path (compiled chunk kernels by default, eager if compilation fails)
    gives the plain path's outputs and gradients; under bf16 autocast it stays close."""
    from neuroalign.models.neural_tower import NeuralTower

    torch.manual_seed(0)
    tower = NeuralTower(300, d_model=64, n_heads=1).cuda()
    r = torch.rand(40, 300, device="cuda")
    named = [(n, p) for n, p in tower.named_parameters() if not n.startswith("mlp")]
    with torch.autocast("cuda", enabled=False):
        z_fold = tower._folded_attention_readout(r)
        z_plain = tower._plain_attention_readout(r)
    torch.testing.assert_close(z_fold, z_plain, rtol=1e-3, atol=1e-3 * z_plain.abs().max().item())
    g_fold = torch.autograd.grad(z_fold.square().sum(), [p for _, p in named])
    g_plain = torch.autograd.grad(z_plain.square().sum(), [p for _, p in named])
    scale = max(g.abs().max().item() for g in g_plain)
    for (name, _), gf, gp in zip(named, g_fold, g_plain):
        if name == "attn.k.bias":
            # the key bias adds q.b_k to every logit of a query alike, which softmax ignores: its
            # gradient is 0 in exact arithmetic and float rounding on both paths (first GPU run:
            # 1e-8 against 6e-8) is not a difference between them
            assert gf.abs().max() < 1e-6 * scale and gp.abs().max() < 1e-6 * scale
            continue
        torch.testing.assert_close(gf, gp, rtol=2e-3, atol=2e-3 * max(gp.abs().max().item(), 1e-6), msg=name)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        z_bf16 = tower._folded_attention_readout(r)
    assert (z_bf16.float() - z_plain).abs().max() < 0.05 * z_plain.abs().max()
