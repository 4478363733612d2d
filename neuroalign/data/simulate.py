"""Embedded simulated subjects: mouse-V1-like model neurons responding to offline natural-like stimuli.

Model (all neurons at once, as matrix products over a (K, pixels) filter bank):

1. Stimuli (`neuroalign.data.stimuli`), 68 x 270 px at 1 px = 1 degree, quantised to uint8 as
   stored; contrast image c = I - 0.5 (the gray screen). Filters act on the 2 x 2-binned contrast
   image (34 x 135 samples still carry 0.12 cycles/px), pools on the 4 x 4-binned energy.
2. Each neuron has a Gabor receptive field: centre clustered in a subject-specific patch of the
   visual field (`PATCHES`), envelope sigma 3-12 px (log-uniform), aspect 0.5-1, spatial frequency
   0.02-0.12 cycles/px (log-normal around 0.045), random orientation and phase; the Gabor pair is
   DC-free and unit-norm, and the even filter gets a signed luminance (ON/OFF) share of its
   envelope (sd `LUMINANCE_SD`). 45 % are simple cells (half-squared even-filter drive), 55 %
   complex cells (energy of the quadrature pair).
3. Divisive normalisation by the local contrast energy of a Gaussian pool twice the RF size:
   r = drive / (c50^2 + pool), c50^2 a per-neuron fraction of its median pool.
4. Rates: lambda = mu * (r / mean(r) + baseline); `mu` is solved per neuron so that its expected
   repeat SNR (stimulus variance / noise variance) equals a target drawn log-normally around
   `SNR_MEDIAN` (0.2; Stringer et al. 2019 report ~0.1-0.3), given the noise below.
5. Trials: a gain per trial shared by all neurons (log-normal, sd 0.35), Poisson counts of
   gain * lambda, plus a 3-dimensional shared additive fluctuation (variance equal to the mean
   Poisson variance); two repeats per image.

Measured on the default set: median repeat SNR ~0.2 (repeat-to-repeat r ~0.17); a ridge model
from pixels identifies held-out images well above chance but far from perfectly, the noiseless
rates (oracle) far better -- `tests/test_simulate.py` checks all of these.

The data files hold `responses` = mean over the two repeats (one row per image) and
`responses_repeats (2, N, K)`; `ground_truth.npz` holds the noiseless `rates (N, K)`, the
`repeats` and the neuron parameters, for ceilings ("oracle") in evaluation.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

from neuroalign.data.names import name_taken
from neuroalign.data.stimuli import HEIGHT, WIDTH, make_stimuli, max_abs_correlation
from neuroalign.data.subject import GROUND_TRUTH, Subject
from neuroalign.data.writer import write_subject_folder
from neuroalign.io_utils import atomic_savez

logger = logging.getLogger(__name__)

DEMO_SUBJECTS = ("sim-M1", "sim-M2")
#: size name -> (images, neurons)
SIZES = {"tiny": (160, 48), "default": (1400, 450), "large": (2800, 2000), "full": (2800, 10000)}
#: receptive-field patch centre (x, y) in px, and spread (sd x, sd y), per demo subject
PATCHES = {"sim-M1": ((85.0, 32.0), (28.0, 11.0)), "sim-M2": ((180.0, 38.0), (24.0, 12.0))}
SNR_MEDIAN = 0.2
N_REPEATS = 2
GAIN_SD = 0.35
ADDITIVE_FRACTION = 1.0
N_SHARED_FACTORS = 3
LUMINANCE_SD = 0.5
_CHUNK = 1024


def sample_neurons(k: int, patch: tuple[tuple[float, float], tuple[float, float]],
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Receptive-field and response parameters of `k` model neurons, each a (k,) array."""
    (px, py), (sx, sy) = patch
    log_sf = rng.normal(np.log(0.045), 0.45, k)
    return {
        "rf_x": np.clip(rng.normal(px, sx, k), 0, WIDTH - 1),
        "rf_y": np.clip(rng.normal(py, sy, k), 0, HEIGHT - 1),
        "rf_sigma": np.exp(rng.uniform(np.log(3.0), np.log(12.0), k)),
        "rf_aspect": rng.uniform(0.5, 1.0, k),
        "sf": np.clip(np.exp(log_sf), 0.02, 0.12),
        "orientation": rng.uniform(0, np.pi, k),
        "phase": rng.uniform(0, 2 * np.pi, k),
        "is_complex": rng.random(k) < 0.55,
        "luminance_weight": rng.normal(0.0, LUMINANCE_SD, k),
        "c50_factor": np.exp(rng.uniform(np.log(0.3), np.log(2.0), k)),
        "baseline": rng.uniform(0.1, 0.8, k),
        "target_snr": np.exp(rng.normal(np.log(SNR_MEDIAN), 0.7, k)),
    }


def _grid(step: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (in full-resolution px) of a `step`-binned 68 x 270 frame."""
    x = (np.arange(WIDTH // step, dtype=np.float32) * step + (step - 1) / 2)[None, None, :]
    y = (np.arange(HEIGHT // step, dtype=np.float32) * step + (step - 1) / 2)[None, :, None]
    return x, y


def _bin(images: np.ndarray, step: int) -> np.ndarray:
    """(N, H, W) -> (N, (H//step) * (W//step)) by step x step averaging."""
    n = images.shape[0]
    h, w = HEIGHT // step, WIDTH // step
    x = images[:, :h * step, :w * step].reshape(n, h, step, w, step).mean(axis=(2, 4), dtype=np.float32)
    return x.reshape(n, -1)


def gabor_bank(params: dict[str, np.ndarray], sl: slice = slice(None), step: int = 2
               ) -> tuple[np.ndarray, np.ndarray]:
    """(even, odd) filters (k, H/step * W/step) float32 on the `step`-binned frame: DC-free, unit-norm."""
    x, y = _grid(step)
    p = {name: np.asarray(v[sl], dtype=np.float32)[:, None, None] for name, v in params.items()}
    dx, dy = x - p["rf_x"], y - p["rf_y"]
    cos_t, sin_t = np.cos(p["orientation"]), np.sin(p["orientation"])
    xr = dx * cos_t + dy * sin_t
    yr = -dx * sin_t + dy * cos_t
    env = np.exp(-(xr ** 2 + (p["rf_aspect"] * yr) ** 2) / (2 * p["rf_sigma"] ** 2))
    arg = 2 * np.pi * p["sf"] * xr + p["phase"]
    filters = []
    for carrier in (np.cos(arg), np.sin(arg)):
        f = env * carrier
        f -= env * (f.sum(axis=(1, 2), keepdims=True) / env.sum(axis=(1, 2), keepdims=True))
        f /= np.sqrt((f ** 2).sum(axis=(1, 2), keepdims=True)) + 1e-12
        filters.append(f.reshape(f.shape[0], -1))
    # ON/OFF luminance sensitivity: a signed share of the (unit-norm) envelope in the even filter
    env_unit = (env / np.sqrt((env ** 2).sum(axis=(1, 2), keepdims=True))).reshape(env.shape[0], -1)
    even = filters[0] + p["luminance_weight"][:, :, 0] * env_unit
    return even, filters[1]


def pool_bank(params: dict[str, np.ndarray], sl: slice = slice(None), step: int = 4) -> np.ndarray:
    """Normalisation pools (k, H/step * W/step): Gaussian of twice the RF sigma, summing to 1."""
    x, y = _grid(step)
    p = {name: np.asarray(params[name][sl], dtype=np.float32)[:, None, None] for name in ("rf_x", "rf_y", "rf_sigma")}
    pool = np.exp(-((x - p["rf_x"]) ** 2 + (y - p["rf_y"]) ** 2) / (2 * (2 * p["rf_sigma"]) ** 2))
    return (pool / pool.sum(axis=(1, 2), keepdims=True)).reshape(pool.shape[0], -1)


def normalised_drive(images: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """(N, H, W) images in [0, 1] -> (N, K) divisively normalised drive, mean 1 per neuron.

    Filters act on the 2x2-binned contrast image (34 x 135 samples still carry the highest
    frequency used, 0.12 cycles/px); pools on the 4x4-binned contrast energy.
    """
    n = images.shape[0]
    k = params["rf_x"].shape[0]
    contrast = images.astype(np.float32) - 0.5
    c = _bin(contrast, 2)
    c2 = _bin(contrast * contrast, 4)
    out = np.empty((n, k), np.float32)
    for start in range(0, k, _CHUNK):
        sl = slice(start, min(k, start + _CHUNK))
        even, odd = gabor_bank(params, sl)
        linear = c @ even.T
        energy = np.maximum(linear, 0) ** 2
        cx = np.flatnonzero(params["is_complex"][sl])
        if cx.size:
            energy[:, cx] = linear[:, cx] ** 2 + (c @ odd[cx].T) ** 2
        local = c2 @ pool_bank(params, sl).T
        c50 = params["c50_factor"][sl] * np.median(local, axis=0)
        out[:, sl] = energy / (c50 + local + 1e-6)
    return out / np.maximum(out.mean(axis=0, keepdims=True), 1e-12)


def rate_scale(shape_rates: np.ndarray, target_snr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron scale mu so that mu * shape_rates has the target repeat SNR under the noise model.

    SNR = mu^2 V / (mu M1 (1 + a) + var_g mu^2 M2) with V, M1, M2 the variance, mean and mean
    square of the rates over images, var_g the gain variance and a the additive fraction.
    Returns (mu, achieved target) -- targets above 70 % of the attainable maximum are capped.
    """
    v = shape_rates.var(axis=0)
    m1 = shape_rates.mean(axis=0)
    m2 = (shape_rates ** 2).mean(axis=0)
    var_g = np.exp(GAIN_SD ** 2) - 1
    cap = 0.7 * v / (var_g * m2)
    target = np.minimum(target_snr, cap)
    mu = (1 + ADDITIVE_FRACTION) * target * m1 / (v - target * var_g * m2)
    return mu, target


def simulate_trials(rates: np.ndarray, rng: np.random.Generator, n_repeats: int = N_REPEATS) -> np.ndarray:
    """Noisy responses (R, N, K) float32 to noiseless `rates (N, K)`: shared gain, Poisson, shared additive."""
    n, k = rates.shape
    additive_sd = np.sqrt(ADDITIVE_FRACTION * rates.mean(axis=0))  # (K,)
    loadings = rng.standard_normal((N_SHARED_FACTORS, k))
    loadings *= additive_sd / np.sqrt((loadings ** 2).sum(axis=0))
    out = np.empty((n_repeats, n, k), np.float32)
    for r in range(n_repeats):
        gain = rng.lognormal(-GAIN_SD ** 2 / 2, GAIN_SD, (n, 1))
        counts = rng.poisson(gain * rates)
        shared = rng.standard_normal((n, N_SHARED_FACTORS)) @ loadings
        out[r] = counts + shared
    return out


def repeat_snr(repeats: np.ndarray) -> np.ndarray:
    """Per-neuron SNR from two repeats (R >= 2, N, K): cov(r1, r2) / (var(r1 - r2) / 2)."""
    r1, r2 = repeats[0].astype(np.float64), repeats[1].astype(np.float64)
    signal = ((r1 - r1.mean(0)) * (r2 - r2.mean(0))).mean(0)
    noise = (r1 - r2).var(0) / 2
    return signal / np.maximum(noise, 1e-12)


def repeat_correlation(repeats: np.ndarray) -> np.ndarray:
    """Per-neuron Pearson correlation between repeat 1 and repeat 2 across images, (K,)."""
    r1, r2 = repeats[0].astype(np.float64), repeats[1].astype(np.float64)
    r1, r2 = r1 - r1.mean(0), r2 - r2.mean(0)
    return (r1 * r2).sum(0) / np.maximum(np.sqrt((r1 ** 2).sum(0) * (r2 ** 2).sum(0)), 1e-12)


def simulate_responses(images: np.ndarray, n_neurons: int, patch: tuple[tuple[float, float], tuple[float, float]],
                       seed: int) -> dict[str, np.ndarray]:
    """Neurons for `images (N, H, W)` in [0, 1]: dict with `rates (N, K)`, `repeats (R, N, K)` and parameters."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA11]))
    params = sample_neurons(n_neurons, patch, rng)
    shape = normalised_drive(images, params) + params["baseline"][None].astype(np.float32)
    mu, target = rate_scale(shape.astype(np.float64), params["target_snr"])
    rates = np.round((shape * mu[None]).astype(np.float64), 6)
    repeats = simulate_trials(rates, rng)
    return {"rates": rates.astype(np.float32), "repeats": repeats, "rate_scale": mu.astype(np.float32),
            **{name: (v if name != "target_snr" else target) for name, v in params.items()}}


def make_demo_subjects(root: str | Path, size: str = "default", seed: int = 0, overwrite: bool = False,
                       names: tuple[str, ...] = DEMO_SUBJECTS) -> list[str]:
    """Write the simulated subjects into `root`; returns the names written.

    A subject is written when its name is not taken in `root` (`names.name_taken`: nothing, not
    even a dangling link, uses it), or replaced when `overwrite`. All subjects see the same
    stimulus set (as the mice of the natimg2800 recordings did); their neurons differ
    (receptive-field patch, parameters, noise).
    """
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; expected one of {tuple(SIZES)}")
    root = Path(root).expanduser().resolve()
    todo = [n for n in names if overwrite or not name_taken(root, n)]
    if not todo:
        return []
    n_images, n_neurons = SIZES[size]
    t0 = time.perf_counter()
    stimuli, kinds = make_stimuli(n_images, seed=seed)
    images_u8 = np.clip(np.round(stimuli * 255), 0, 255).astype(np.uint8)
    images = images_u8.astype(np.float32) / 255.0
    max_corr = max_abs_correlation(images)
    logger.info("stimuli: %d images in %.1fs (max pairwise |r| %.2f)", n_images, time.perf_counter() - t0, max_corr)
    written = []
    for index, name in enumerate(names):
        if name not in todo:
            continue
        t1 = time.perf_counter()
        patch = PATCHES.get(name, ((WIDTH / 2, HEIGHT / 2), (30.0, 12.0)))
        sim = simulate_responses(images, n_neurons, patch, seed=seed * 1000 + index)
        repeats = sim["repeats"]
        subject = Subject(name=name, images=images[:, None], responses=repeats.mean(axis=0), repeats=repeats,
                          meta={"format": "v5"})
        snr = repeat_snr(repeats)
        gt = {k: np.asarray(v) for k, v in sim.items()}
        gt["image_kind"] = kinds.astype("U8")
        extra = {"simulation": {"size": size, "seed": seed, "patch_centre": list(patch[0]),
                                "patch_sd": list(patch[1]), "median_repeat_snr": float(np.median(snr)),
                                "median_repeat_correlation": float(np.median(repeat_correlation(repeats))),
                                "max_stimulus_correlation": max_corr,
                                "stimulus_kinds": {k: int((kinds == k).sum()) for k in np.unique(kinds)}}}
        if overwrite and name_taken(root, name):
            shutil.rmtree(root / name)
        try:
            write_subject_folder(root, name, subject, images_uint8=True, simulated=True, source={"simulated": True},
                                 extra_files={GROUND_TRUTH: lambda p, gt=gt: atomic_savez(p, **gt)},
                                 sidecar_extra=extra)
        except FileExistsError:
            logger.info("%s appeared meanwhile (another process made it); kept that one", name)
            continue
        written.append(name)
        logger.info("%s: %d images x %d neurons, median repeat SNR %.2f, in %.1fs", name, n_images, n_neurons,
                    float(np.median(snr)), time.perf_counter() - t1)
    return written

