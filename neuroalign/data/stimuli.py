"""Offline natural-like stimuli for the simulated subjects: 68 x 270 grayscale in [0, 1].

Five kinds, shuffled together (fractions in `KIND_FRACTIONS`):

* ``photo`` -- crops of the two CC0 photographs shipped inside scikit-learn
  (`sklearn.datasets.load_sample_images`: china, flower) at varied scale (0.75-2.35x the
  68 x 270 frame), position, small rotation, horizontal/vertical flips and gamma;
* ``mix`` -- a photo crop blended with 1/f noise;
* ``leaves`` -- dead-leaves images (occluding discs and rectangles, power-law sizes);
* ``pink`` -- 1/f^a noise with random spectral slope and orientation anisotropy;
* ``grating`` -- sums of one to three oriented gratings under a soft random window.

Near-duplicates are rejected: every accepted image correlates (|r| on a 4x-downsampled version)
below `MAX_CORRELATION` with every other one. All randomness comes from one numpy Generator,
so a seed gives the same stimuli on every run.
"""

from __future__ import annotations

import importlib.util
import logging
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

logger = logging.getLogger(__name__)

HEIGHT, WIDTH = 68, 270
MAX_CORRELATION = 0.8
KIND_FRACTIONS = {"photo": 0.36, "mix": 0.12, "leaves": 0.27, "pink": 0.15, "grating": 0.10}
KINDS = tuple(KIND_FRACTIONS)


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The scikit-learn sample photos as float32 grayscale in [0, 1] (read from the installed wheel)."""
    from PIL import Image  # optional (comes with the dashboard's dependencies)

    # read the JPEGs straight from the installed wheel: importing sklearn itself takes ~1.5 s
    spec = importlib.util.find_spec("sklearn")
    folder = Path(spec.origin).parent / "datasets" / "images" if spec and spec.origin else None
    files = [folder / "china.jpg", folder / "flower.jpg"] if folder else []
    if files and all(f.is_file() for f in files):
        imgs = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    else:  # pragma: no cover - other sklearn layouts
        from sklearn.datasets import load_sample_images

        imgs = load_sample_images().images
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return tuple((img.astype(np.float32) @ weights) / 255.0 for img in imgs)


def _downsample(x: np.ndarray) -> np.ndarray:
    """(n, 68, 270) -> (n, 17*67) z-scored rows, for duplicate checks."""
    n = x.shape[0]
    small = x[:, :68, :268].reshape(n, 17, 4, 67, 4).mean(axis=(2, 4)).reshape(n, -1)
    small = small - small.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(small, axis=1, keepdims=True)
    return small / np.maximum(norm, 1e-8)


def max_abs_correlation(images: np.ndarray) -> float:
    """Largest |correlation| between two different images (4x-downsampled), (n, H, W) input."""
    z = _downsample(np.asarray(images, dtype=np.float32))
    c = np.abs(z @ z.T)
    np.fill_diagonal(c, 0)
    return float(c.max())


def _photo_crop(rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    photos = _photos()
    src = photos[rng.integers(len(photos))]
    ph, pw = src.shape
    zoom = float(np.exp(rng.uniform(np.log(0.75), np.log(2.35))))
    angle = float(rng.normal(0, 6))
    ch, cw = int(round(HEIGHT * zoom)), int(round(WIDTH * zoom))
    # room for the rotation: take a slightly larger window, rotate, then centre-crop
    pad = int(np.ceil(abs(np.sin(np.deg2rad(angle))) * cw / 2)) + 1
    wh, ww = min(ph, ch + 2 * pad), min(pw, cw + 2 * pad)
    y0, x0 = rng.integers(0, ph - wh + 1), rng.integers(0, pw - ww + 1)
    window = Image.fromarray(src[y0:y0 + wh, x0:x0 + ww])
    window = window.rotate(angle, resample=Image.BILINEAR)
    top, left = (wh - min(ch, wh)) // 2, (ww - min(cw, ww)) // 2
    crop = window.crop((left, top, left + min(cw, ww), top + min(ch, wh)))
    out = np.asarray(crop.resize((WIDTH, HEIGHT), resample=Image.BILINEAR, reducing_gap=2.0), dtype=np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.2:
        out = out[::-1, :]
    out = np.clip(out, 0, 1) ** rng.uniform(0.7, 1.4)
    return out


def _pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, H, W) 1/f^a noise in [0, 1]: slope a in [1.6, 2.6] (power), random anisotropy."""
    fy = np.fft.fftfreq(HEIGHT)[:, None]
    fx = np.fft.rfftfreq(WIDTH)[None, :]
    theta = rng.uniform(0, np.pi, (n, 1, 1))
    stretch = rng.uniform(1.0, 3.0, (n, 1, 1))
    u = fx * np.cos(theta) + fy * np.sin(theta)
    v = -fx * np.sin(theta) + fy * np.cos(theta)
    f = np.sqrt(u ** 2 * stretch + v ** 2 / stretch)
    f[:, 0, 0] = 1.0
    slope = rng.uniform(1.6, 2.6, (n, 1, 1))
    amp = f ** (-slope / 2)
    amp[:, 0, 0] = 0.0
    amp = amp.astype(np.float32)
    spec = amp * (rng.standard_normal(amp.shape, dtype=np.float32)
                  + 1j * rng.standard_normal(amp.shape, dtype=np.float32)).astype(np.complex64)
    x = np.fft.irfft2(spec, s=(HEIGHT, WIDTH), axes=(1, 2))
    x = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
    contrast = rng.uniform(0.1, 0.25, (n, 1, 1))
    mean = rng.uniform(0.35, 0.65, (n, 1, 1))
    return np.clip(mean + contrast * x, 0, 1).astype(np.float32)


def _dead_leaves(rng: np.random.Generator) -> np.ndarray:
    img = np.full((HEIGHT, WIDTH), rng.uniform(0.2, 0.8), dtype=np.float32)
    covered = np.zeros((HEIGHT, WIDTH), dtype=bool)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    rmin, rmax = 3.0, float(rng.uniform(30, 80))
    # front-to-back: a leaf only paints pixels no earlier (nearer) leaf covered
    for i in range(220):
        u = rng.random()
        r = (rmin ** -2 - u * (rmin ** -2 - rmax ** -2)) ** -0.5  # density ~ r^-3
        cy, cx = rng.uniform(-r, HEIGHT + r), rng.uniform(-r, WIDTH + r)
        y0, y1 = max(0, int(cy - r)), min(HEIGHT, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r)), min(WIDTH, int(cx + r) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        sy, sx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        if rng.random() < 0.7:
            mask = sx ** 2 + sy ** 2 <= r * r
        else:
            a = rng.uniform(0, np.pi)
            ru, rv = r, r * rng.uniform(0.3, 1.0)
            pu, pv = sx * np.cos(a) + sy * np.sin(a), -sx * np.sin(a) + sy * np.cos(a)
            mask = (np.abs(pu) <= ru) & (np.abs(pv) <= rv)
        mask &= ~covered[y0:y1, x0:x1]
        shade = rng.uniform(0.05, 0.95) + rng.uniform(-0.003, 0.003) * (sx * np.cos(r) + sy * np.sin(r))
        img[y0:y1, x0:x1][mask] = np.broadcast_to(shade, mask.shape)[mask]
        covered[y0:y1, x0:x1] |= mask
        if i % 16 == 15 and covered.all():
            break
    return np.clip(gaussian_filter(img, rng.uniform(0.5, 1.2)), 0, 1).astype(np.float32)


def _gratings(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    x = np.zeros((HEIGHT, WIDTH), np.float32)
    for _ in range(rng.integers(1, 4)):
        theta, sf, phase = rng.uniform(0, np.pi), np.exp(rng.uniform(np.log(0.015), np.log(0.15))), rng.uniform(0, 2 * np.pi)
        x += rng.uniform(0.3, 1.0) * np.cos(2 * np.pi * sf * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    cy, cx = rng.uniform(0, HEIGHT), rng.uniform(0, WIDTH)
    sigma = rng.uniform(20, 120)
    window = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
    x = x / np.abs(x).max()
    return np.clip(0.5 + rng.uniform(0.15, 0.45) * x * window, 0, 1).astype(np.float32)


def make_stimuli(n: int, seed: int = 0, max_correlation: float = MAX_CORRELATION) -> tuple[np.ndarray, np.ndarray]:
    """`n` distinct stimuli: (images (n, 68, 270) float32 in [0, 1], kinds (n,) str), shuffled.

    Candidates correlating above `max_correlation` with an accepted stimulus are redrawn.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5717]))
    counts = {k: int(round(f * n)) for k, f in KIND_FRACTIONS.items()}
    counts["photo"] += n - sum(counts.values())
    images = np.empty((n, HEIGHT, WIDTH), np.float32)
    kinds: list[str] = []
    accepted = np.empty((n, 17 * 67), np.float32)
    n_acc = 0
    n_rejected = 0
    pink = {"pool": _pink_noise(rng, counts["pink"] + counts["mix"] + 16), "next": 0}

    def next_pink() -> np.ndarray:
        if pink["next"] >= pink["pool"].shape[0]:
            pink["pool"], pink["next"] = _pink_noise(rng, 64), 0
        pink["next"] += 1
        return pink["pool"][pink["next"] - 1]

    def draw(kind: str) -> np.ndarray:
        if kind == "photo":
            return _photo_crop(rng)
        if kind == "mix":
            a = rng.uniform(0.35, 0.65)
            return a * _photo_crop(rng) + (1 - a) * next_pink()
        if kind == "leaves":
            return _dead_leaves(rng)
        if kind == "pink":
            return next_pink()
        return _gratings(rng)

    for kind in KINDS:
        target, made, drawn = counts[kind], 0, 0
        while made < target:
            if drawn > 50 * target + 200:
                raise RuntimeError(f"could not draw {target} distinct {kind} stimuli (got {made})")
            # candidates in batches: one matrix product checks them against everything accepted
            batch = np.stack([draw(kind) for _ in range(min(64, int(1.3 * (target - made)) + 2))])
            drawn += batch.shape[0]
            z = _downsample(batch)
            ok = np.abs(z @ accepted[:n_acc].T).max(axis=1) <= max_correlation if n_acc else np.ones(len(z), bool)
            within = np.abs(z @ z.T)
            taken: list[int] = []
            for i in range(len(z)):
                if made == target:
                    break
                if not ok[i] or any(within[i, j] > max_correlation for j in taken):
                    n_rejected += 1
                    continue
                taken.append(i)
                accepted[n_acc], images[n_acc] = z[i], batch[i]
                kinds.append(kind)
                n_acc += 1
                made += 1
    order = rng.permutation(n)
    logger.info("made %d stimuli (%s), %d near-duplicates redrawn", n,
                ", ".join(f"{k} {v}" for k, v in counts.items()), n_rejected)
    return images[order], np.asarray(kinds)[order]
