"""A tiny trained run for the neuron-importance tests: half of the subject's neurons carry the image,
the other half are pure noise (independent of the image and from trial to trial)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

N_IMAGES, N_NEURONS = 300, 40
SIGNAL = np.arange(N_NEURONS // 2)  # the first half of the columns carries the image
_TRAINED: dict[str, Path] = {}


def write_half_noise_subject(root: Path, name: str = "half", seed: int = 0) -> Path:
    """`<root>/<name>/Data/{images,responses}.mat`: 68x270 images of 4x16 random grey blocks; neurons
    0..19 respond to a sparse random mix of the blocks' brightness (plus trial noise), neurons 20..39
    are unit-variance noise, new on every trial. Two repeats."""
    rng = np.random.default_rng(seed)
    blocks = rng.random((N_IMAGES, 4, 16))
    images = np.kron(blocks, np.ones((17, 17)))[:, :68, :270]
    images = np.pad(images, ((0, 0), (0, 0), (0, 270 - images.shape[2])), mode="edge").astype(np.float32)
    k_signal = len(SIGNAL)
    weights = rng.standard_normal((64, k_signal)) * (rng.random((64, k_signal)) < 0.15)
    weights[rng.integers(0, 64, k_signal), np.arange(k_signal)] += 1.0  # every signal neuron sees a block
    drive = (blocks.reshape(N_IMAGES, -1) - 0.5) @ weights
    drive = (drive - drive.mean(0)) / drive.std(0)
    repeats = np.empty((2, N_IMAGES, N_NEURONS))
    repeats[:, :, :k_signal] = drive[None] + 0.3 * rng.standard_normal((2, N_IMAGES, k_signal))
    repeats[:, :, k_signal:] = rng.standard_normal((2, N_IMAGES, N_NEURONS - k_signal))
    data = Path(root) / name / "Data"
    data.mkdir(parents=True)
    savemat(data / "images.mat", {"images": images})
    savemat(data / "responses.mat", {"responses": repeats.mean(0).astype(np.float32),
                                     "responses_repeats": repeats.astype(np.float32)})
    return data.parent


def tiny_config(block: str = "linear"):
    """The recommended preset on the tiny backbone, 3 epochs (the closed-form start does most of it)."""
    from neuroalign.config import preset

    return preset("recommended").replace(**{"epochs": 3, "batch_size": 32, "device": "cpu",
                                            "image.backbone": "ds_net_tiny", "image.stage": 1, "image.block": 1})


def trained_half_noise_run(base: Path) -> tuple[Path, Path]:
    """(data root, run dir) of one trained linear-block run of the half-noise subject, trained once per
    test process under `base` (the evaluation's baselines are skipped: importance does not read them)."""
    if "run" not in _TRAINED:
        import torch

        from neuroalign.evaluation import evaluate
        from neuroalign.training.pipeline import run_training

        data, runs = base / "data", base / "runs"
        write_half_noise_subject(data)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(evaluate, "compute_baselines", lambda *a, **k: {})
            run = run_training("half", tiny_config(), data, runs, cache_dir=base / "cache")
        torch.set_num_threads(threads)
        _TRAINED.update(data=data, run=run)
    return _TRAINED["data"], _TRAINED["run"]


def copy_into(data_root: Path, runs_root: Path, base: Path) -> Path:
    """Copy the trained subject and run into an app test's (empty) data and runs roots; returns the run copy."""
    data, run = trained_half_noise_run(base)
    shutil.copytree(data / "half", data_root / "half")
    return Path(shutil.copytree(run, runs_root / run.name))
