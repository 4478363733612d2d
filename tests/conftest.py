"""Shared pytest fixtures (all cheap: milliseconds, a few MB at most), and a session-start hook
that loads (on a new machine: builds) the fused CPU kernels of the folded attention.

* `make_tiny_arrays(n_images=60, n_neurons=40, n_repeats=2, seed=0, hw=(68, 270))` -- factory
  returning a dict with `images (N, H, W) uint8`, `rates (N, K)` noiseless float32,
  `repeats (R, N, K)` float32, `responses (N, K)` = mean of repeats. Responses are a linear
  function of 4x-downsampled pixels plus noise, so tiny models can learn something.
* `tiny_subject_root` -- a data root (in tmp_path) holding subject "tiny" in the reference
  layout `tiny/Data/{images,responses}.mat` (MAT v5, `images` (60, 68, 270) uint8, `responses`
  (60, 40) float32, `responses_repeats` (2, 60, 40)), without a sidecar. Function-scoped, so
  tests may modify it.
* `tiny_subject` -- that subject loaded with `neuroalign.data.load_subject`.
* `sim_root` -- session-scoped data root with the two simulated subjects at size "tiny"
  (`sim-M1`, `sim-M2`: 160 images x 48 neurons, ground_truth.npz, subject.json). Read-only:
  do not modify (copy it with shutil.copytree if you need to).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from scipy.io import savemat


def pytest_sessionstart(session: pytest.Session) -> None:
    """Load the fused CPU kernels once before any test. A first build on a new machine takes
    ~20 s and must not fall inside a test that has a time limit (an AppTest run, the browser)."""
    from neuroalign.models import native

    native.load()


def _tiny_arrays(n_images: int = 60, n_neurons: int = 40, n_repeats: int = 2, seed: int = 0,
                 hw: tuple[int, int] = (68, 270)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, w = hw
    # smooth random images: low-resolution noise upsampled, so neighbouring pixels correlate
    low = rng.random((n_images, max(1, h // 4), max(1, w // 4)))
    images = np.repeat(np.repeat(low, 4, axis=1), 4, axis=2)[:, :h, :w]
    images = np.pad(images, ((0, 0), (0, h - images.shape[1]), (0, w - images.shape[2])), mode="edge")
    images_u8 = np.round(images * 255).astype(np.uint8)
    weights = rng.standard_normal((low.shape[1] * low.shape[2], n_neurons)) / np.sqrt(low[0].size)
    rates = np.exp(0.8 * (low.reshape(n_images, -1) - 0.5) @ weights * 4).astype(np.float32)
    repeats = rng.poisson(np.broadcast_to(rates * 3, (n_repeats, n_images, n_neurons))).astype(np.float32) / 3
    return {"images": images_u8, "rates": rates, "repeats": repeats,
            "responses": repeats.mean(axis=0).astype(np.float32)}


@pytest.fixture
def make_tiny_arrays() -> Callable[..., dict[str, np.ndarray]]:
    return _tiny_arrays


@pytest.fixture
def tiny_subject_root(tmp_path: Path) -> Path:
    arrays = _tiny_arrays()
    root = tmp_path / "data"
    data = root / "tiny" / "Data"
    data.mkdir(parents=True)
    savemat(data / "images.mat", {"images": arrays["images"]})
    savemat(data / "responses.mat", {"responses": arrays["responses"], "responses_repeats": arrays["repeats"]})
    return root


@pytest.fixture
def tiny_subject(tiny_subject_root: Path):
    from neuroalign.data import load_subject

    return load_subject(tiny_subject_root / "tiny")


@pytest.fixture(scope="session")
def sim_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from neuroalign.data.simulate import make_demo_subjects

    root = tmp_path_factory.mktemp("sim-data")
    make_demo_subjects(root, size="tiny", seed=0)
    return root


@pytest.fixture(autouse=True)
def _isolated_neuroalign_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own data/runs/cache roots, so nothing is written into the checkout
    (tests that need specific roots set the variables themselves, which overrides these)."""
    from neuroalign import paths

    base = tmp_path_factory.mktemp("roots")
    for var, sub in ((paths.DATA_DIR_ENV, "data"), (paths.RUNS_DIR_ENV, "runs"), (paths.CACHE_DIR_ENV, "cache")):
        monkeypatch.setenv(var, str(base / sub))


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread (training tests: faster and steadier on a shared 2-core CPU)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
