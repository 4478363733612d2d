"""Tiny subjects that saw the same images (for the dashboard's shared-run tests and screenshots):
seconds to train a shared model of them with the random-feature image model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import savemat

HW = (36, 64)


def _images(n_images: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = HW
    low = rng.random((n_images, h // 4, w // 4))
    return np.round(np.repeat(np.repeat(low, 4, axis=1), 4, axis=2) * 255).astype(np.uint8)


def population_responses(images_u8: np.ndarray, n_neurons: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean responses and 2 repeats of a population reading 4x4-block means of the images."""
    rng = np.random.default_rng(seed)
    n, h, w = images_u8.shape
    low = images_u8.astype(np.float64).reshape(n, h // 4, 4, w // 4, 4).mean(axis=(2, 4)).reshape(n, -1) / 255
    weights = rng.standard_normal((low.shape[1], n_neurons)) / np.sqrt(low.shape[1])
    rates = np.exp(3.2 * (low - 0.5) @ weights)
    reps = rng.poisson(np.broadcast_to(rates * 3, (2, n, n_neurons))).astype(np.float32) / 3
    return reps.mean(axis=0).astype(np.float32), reps


def write_subject(root: Path, name: str, images: np.ndarray, responses: np.ndarray, repeats: np.ndarray) -> Path:
    """`<root>/<name>/Data/{images,responses}.mat` (responses with their repeats); returns the subject folder."""
    data = Path(root) / name / "Data"
    data.mkdir(parents=True)
    savemat(data / "images.mat", {"images": images})
    savemat(data / "responses.mat", {"responses": responses, "responses_repeats": repeats})
    return data.parent


def write_shared_subjects(root: Path, names=("A", "B", "C"), n_images: int = 90, neurons=(12, 30, 20),
                          image_seed: int = 0, order_seed: int = 3) -> list[Path]:
    """Subjects `names` that saw the same `n_images` images (each after the first in its own order),
    with different neurons; `<root>/<name>/Data/{images,responses}.mat`."""
    base = _images(n_images, image_seed)
    rng = np.random.default_rng(order_seed)
    out = []
    for i, name in enumerate(names):
        perm = np.arange(n_images) if i == 0 else rng.permutation(n_images)
        mean, reps = population_responses(base, neurons[i % len(neurons)], 1 + i + 10 * image_seed)
        out.append(write_subject(root, name, base[perm], mean[perm], reps[:, perm]))
    return out


def write_other_sized(root: Path, name: str = "E", n_images: int = 60) -> Path:
    """A subject whose images are 32x48 (not HW): a shared model with the others must be refused."""
    rng = np.random.default_rng(9)
    images = np.round(rng.random((n_images, 32, 48)) * 255).astype(np.uint8)
    resp = rng.random((n_images, 10)).astype(np.float32)
    data = Path(root) / name / "Data"
    data.mkdir(parents=True)
    savemat(data / "images.mat", {"images": images})
    savemat(data / "responses.mat", {"responses": resp})
    return data.parent


def shared_config():
    """The recommended preset with the random-feature image model (no weights, fast) and q = 16."""
    from neuroalign.config import preset

    return preset("recommended").replace(**{"image.backbone": "random_rectified", "image.stage": 1,
                                            "image.block": 1, "image.transform": "none", "n_components": 16})
