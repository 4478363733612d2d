"""Image generators of the benchmark simulation suite (independent of `neuroalign.data.stimuli`).

Every generator returns `(n, 68, 270)` float32 in [0, 1], vectorised over images (chunks of a few
hundred images), deterministic for a `numpy.random.Generator`:

* `powerlaw_edges(rng, n)` -- 1/f^alpha noise (amplitude slope alpha ~ U(1.0, 1.4)) plus blurred
  step edges and occluding bars of random orientation, width, length and luminance.
* `textures(rng, n)` -- procedural textures, one third each: narrow-band noise with one or two
  oriented spectral peaks, plaid/checker mixtures (sine, square-wave and checkerboard gratings),
  and dead leaves (power-law disc radii).
* `photo_gratings(rng, n)` -- crops of scikit-learn's sample photos (china.jpg, flower.jpg;
  gray, random position/scale/flip, spatially varying local contrast) (60 %), gratings/plaids,
  some in a circular window on gray (25 %), and photo + grating blends (15 %).
* `shaded_objects(rng, n)` -- 3..8 Lambertian-shaded, occluding ellipsoids (random size, elongation,
  albedo, light direction) over a low-contrast 1/f^1.6 background.

`spectral_slope(images)` measures the radially averaged amplitude-spectrum slope per image.
"""

from __future__ import annotations

import numpy as np

H, W = 68, 270
_CHUNK = 256


def _coords() -> tuple[np.ndarray, np.ndarray]:
    """Pixel rows (H, 1) and columns (1, W), float32: broadcasting keeps per-image maths cheap."""
    return np.arange(H, dtype=np.float32)[:, None], np.arange(W, dtype=np.float32)[None, :]


def _freq_radius() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fy = np.fft.fftfreq(H)[:, None]
    fx = np.fft.rfftfreq(W)[None, :]
    return np.sqrt(fy**2 + fx**2), fy, fx


def _col(a) -> np.ndarray:
    return np.asarray(a, np.float32)[:, None, None]


def _c2(a) -> np.ndarray:
    return np.asarray(a, np.float32)[:, None]


def _zscore(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=(1, 2), keepdims=True)
    return x / (x.std(axis=(1, 2), keepdims=True) + 1e-8)


def _filtered_noise(rng: np.random.Generator, amp: np.ndarray) -> np.ndarray:
    """White noise shaped by the amplitude spectrum `amp (n, H, W//2+1)`, z-scored per image."""
    n = amp.shape[0]
    white = rng.standard_normal((n, H, W), dtype=np.float32)
    from scipy import fft

    spec = fft.rfft2(white, workers=2) * amp.astype(np.float32)
    return _zscore(fft.irfft2(spec, s=(H, W), workers=2).astype(np.float32))


def _to_unit(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Z-scored images -> mean + sd * x, clipped to [0, 1]."""
    out = x * _col(sd)
    out += _col(mean)
    return np.clip(out, 0.0, 1.0, out=out)


def _chunked(fn, rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.empty((n, H, W), np.float32)
    for s in range(0, n, _CHUNK):
        out[s:s + _CHUNK] = fn(rng, min(_CHUNK, n - s))
    return out


# ---------------------------------------------------------------------------------------------
# 1. 1/f noise + edges + occluding bars


def _powerlaw_edges_chunk(rng: np.random.Generator, n: int) -> np.ndarray:
    f, _, _ = _freq_radius()
    f = np.maximum(f, 1.0 / W)
    alpha = rng.uniform(1.0, 1.4, n)
    amp = f[None] ** -alpha[:, None, None]
    img = _filtered_noise(rng, amp) * rng.uniform(0.35, 1.0, n).astype(np.float32)[:, None, None].astype(np.float32)
    y, x = _coords()
    max_edges, max_bars = 6, 4
    n_edges = rng.poisson(2.5, n)
    n_bars = rng.poisson(1.5, n)
    for e in range(max_edges):
        on = (n_edges > e).astype(np.float32)[:, None, None]
        th = rng.uniform(0, np.pi, n).astype(np.float32)[:, None, None]
        cy, cx = rng.uniform(0, H, n).astype(np.float32)[:, None, None], rng.uniform(0, W, n).astype(np.float32)[:, None, None]
        width = rng.uniform(0.4, 2.5, n).astype(np.float32)[:, None, None]
        step = rng.choice([-1.0, 1.0], n).astype(np.float32)[:, None, None] * rng.uniform(0.5, 1.5, n).astype(np.float32)[:, None, None]
        d = (x - cx) * np.cos(th) + (y - cy) * np.sin(th)
        img += on * step * np.tanh(d / width)
    img = _zscore(img)
    for b in range(max_bars):
        on = (n_bars > b)[:, None, None]
        th = rng.uniform(0, np.pi, n).astype(np.float32)[:, None, None]
        cy, cx = rng.uniform(0, H, n).astype(np.float32)[:, None, None], rng.uniform(0, W, n).astype(np.float32)[:, None, None]
        half_w = rng.uniform(2, 12, n).astype(np.float32)[:, None, None]
        half_l = rng.uniform(15, 110, n).astype(np.float32)[:, None, None]
        lum = rng.uniform(-2.0, 2.0, n).astype(np.float32)[:, None, None]
        u = (x - cx) * np.cos(th) + (y - cy) * np.sin(th)
        v = -(x - cx) * np.sin(th) + (y - cy) * np.cos(th)
        mask = on & (np.abs(u) < half_l) & (np.abs(v) < half_w)
        img = np.where(mask, lum + 0.1 * img, img)
    return _to_unit(img, rng.uniform(0.4, 0.6, n), rng.uniform(0.12, 0.22, n))


def powerlaw_edges(rng: np.random.Generator, n: int) -> np.ndarray:
    return _chunked(_powerlaw_edges_chunk, rng, n)


# ---------------------------------------------------------------------------------------------
# 2. procedural textures


def _oriented_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    f, fy, fx = _freq_radius()
    ang = np.arctan2(fy, fx + 0 * fy)
    fsafe = np.maximum(f, 1.0 / W)
    amp = np.zeros((n,) + f.shape, np.float64)
    n_peaks = rng.integers(1, 3, n)
    for p in range(2):
        f0 = np.exp(rng.uniform(np.log(0.03), np.log(0.2), n)).astype(np.float32)[:, None, None]
        th0 = rng.uniform(0, np.pi, n).astype(np.float32)[:, None, None]
        bw = rng.uniform(0.15, 0.45, n).astype(np.float32)[:, None, None]
        ab = rng.uniform(0.1, 0.4, n).astype(np.float32)[:, None, None]
        dth = np.angle(np.exp(2j * (ang[None] - th0))) / 2  # orientation difference modulo pi
        bump = np.exp(-np.log(fsafe[None] / f0) ** 2 / (2 * bw**2) - dth**2 / (2 * ab**2))
        amp += (n_peaks > p).astype(np.float32)[:, None, None] * bump
    amp += 0.02 * fsafe[None] ** -1.0 / (1.0 / 0.05)  # a faint broadband floor
    amp[:, 0, 0] = 0
    return _filtered_noise(rng, amp)


def _plaid_checker(rng: np.random.Generator, n: int) -> np.ndarray:
    y, x = _coords()
    img = np.zeros((n, H, W), np.float32)
    n_comp = rng.integers(1, 4, n)
    for c in range(3):
        th = rng.uniform(0, np.pi, n).astype(np.float32)[:, None, None]
        sf = np.exp(rng.uniform(np.log(0.015), np.log(0.15), n)).astype(np.float32)[:, None, None]
        ph = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
        u = x * np.cos(th) + y * np.sin(th)
        v = -x * np.sin(th) + y * np.cos(th)
        g = np.sin(2 * np.pi * sf * u + ph)
        kind = rng.integers(0, 3, n).astype(np.float32)[:, None, None]  # 0 sine, 1 square wave, 2 checkerboard
        g = np.where(kind == 1, np.sign(g), g)
        g = np.where(kind == 2, np.sign(g) * np.sign(np.sin(2 * np.pi * sf * v + ph)), g)
        img += ((n_comp > c).astype(np.float32)[:, None, None] * rng.uniform(0.4, 1.0, n).astype(np.float32)[:, None, None] * g).astype(np.float32)
    return _zscore(img + 0.05 * rng.standard_normal((n, H, W), dtype=np.float32))


def _dead_leaves(rng: np.random.Generator, n: int, n_leaves: int = 90) -> np.ndarray:
    y, x = _coords()
    img = np.broadcast_to(_col(rng.uniform(0, 1, n)), (n, H, W)).copy()
    rmin, rmax = 3.0, 60.0
    u = rng.uniform(0, 1, (n, n_leaves))  # pdf ~ r^-3 on [rmin, rmax] by inverse transform
    radii = (rmin**-2 - u * (rmin**-2 - rmax**-2)) ** -0.5
    cys, cxs = rng.uniform(-10, H + 10, (n, n_leaves)), rng.uniform(-10, W + 10, (n, n_leaves))
    grays = rng.uniform(0, 1, (n, n_leaves)).astype(np.float32)
    for d in range(n_leaves):  # later leaves occlude earlier ones
        r2 = _col(radii[:, d] ** 2)
        mask = ((y - _col(cys[:, d])) ** 2 + (x - _col(cxs[:, d])) ** 2) < r2
        np.putmask(img, mask, np.broadcast_to(grays[:, d, None, None], img.shape))
    return _zscore(img + 0.02 * rng.standard_normal((n, H, W), dtype=np.float32))


def _textures_chunk(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = rng.integers(0, 3, n)
    img = np.empty((n, H, W), np.float32)
    for k, fn in enumerate((_oriented_noise, _plaid_checker, _dead_leaves)):
        idx = np.flatnonzero(kind == k)
        if idx.size:
            img[idx] = fn(rng, idx.size)
    return _to_unit(img, rng.uniform(0.35, 0.65, n), rng.uniform(0.1, 0.25, n))


def textures(rng: np.random.Generator, n: int) -> np.ndarray:
    return _chunked(_textures_chunk, rng, n)


# ---------------------------------------------------------------------------------------------
# 3. photo crops + gratings


_PHOTOS: np.ndarray | None = None


def sample_photos() -> np.ndarray:
    """scikit-learn's two sample photos as gray float32 (2, 427, 640) in [0, 1]."""
    global _PHOTOS
    if _PHOTOS is None:
        from sklearn.datasets import load_sample_images

        imgs = load_sample_images().images  # china.jpg, flower.jpg (427, 640, 3) uint8
        _PHOTOS = np.stack([(im.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])) / 255.0 for im in imgs])
    return _PHOTOS


def _photo_crops(rng: np.random.Generator, n: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F
    photos = torch.from_numpy(sample_photos())[:, None]  # (2, 1, PH, PW)
    ph, pw = photos.shape[2:]
    which = rng.integers(0, photos.shape[0], n)
    scale = rng.uniform(0.45, 1.4, n)  # output px per source px
    ch, cw = H / scale, W / scale  # crop size in source px
    cy = rng.uniform(ch / 2, ph - ch / 2)
    cx = rng.uniform(cw / 2, pw - cw / 2)
    flip = rng.choice([-1.0, 1.0], n)
    # sampling grid in grid_sample's normalised coordinates: separable in x and y
    u = (np.arange(W, dtype=np.float32) + 0.5) / W * 2 - 1
    v = (np.arange(H, dtype=np.float32) + 0.5) / H * 2 - 1
    gx = (_c2(flip * cw / pw) * u[None] + _c2(2 * cx / pw - 1))  # (n, W)
    gy = (_c2(ch / ph) * v[None] + _c2(2 * cy / ph - 1))  # (n, H)
    out = np.empty((n, H, W), np.float32)
    for k in range(photos.shape[0]):
        idx = np.flatnonzero(which == k)
        if idx.size:
            grid = torch.empty((idx.size, H, W, 2))
            grid[..., 0] = torch.from_numpy(gx[idx])[:, None, :]
            grid[..., 1] = torch.from_numpy(gy[idx])[:, :, None]
            out[idx] = F.grid_sample(photos[k:k + 1].expand(idx.size, -1, -1, -1), grid, mode="bilinear",
                                     align_corners=False)[:, 0].numpy()
    # spatially varying local contrast: deviations from a local mean scaled by a smooth field
    local = F.interpolate(F.avg_pool2d(torch.from_numpy(out)[:, None], 4, ceil_mode=True), size=(H, W),
                          mode="bilinear", align_corners=False)[:, 0].numpy()
    coarse = torch.from_numpy(rng.standard_normal((n, 1, 4, 8), dtype=np.float32))
    field = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False)[:, 0].numpy()
    field = np.exp(0.8 * _zscore(field)) * rng.uniform(0.5, 1.5, n).astype(np.float32)[:, None, None]
    return _zscore(local + (out - local) * field)


def _gratings(rng: np.random.Generator, n: int) -> np.ndarray:
    y, x = _coords()
    img = np.zeros((n, H, W), np.float32)
    n_comp = rng.integers(1, 3, n)
    for c in range(2):
        th = rng.uniform(0, np.pi, n).astype(np.float32)[:, None, None]
        sf = np.exp(rng.uniform(np.log(0.01), np.log(0.16), n)).astype(np.float32)[:, None, None]
        ph = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
        g = np.sin(2 * np.pi * sf * (x * np.cos(th) + y * np.sin(th)) + ph).astype(np.float32)
        img += (n_comp > c).astype(np.float32)[:, None, None] * rng.uniform(0.5, 1.0, n).astype(np.float32)[:, None, None] * g
    windowed = rng.uniform(size=n) < 0.4
    cy, cx = rng.uniform(10, H - 10, n).astype(np.float32)[:, None, None], rng.uniform(30, W - 30, n).astype(np.float32)[:, None, None]
    rad = rng.uniform(12, 45, n).astype(np.float32)[:, None, None]
    win = 1 / (1 + np.exp(np.minimum(((y - cy) ** 2 + (x - cx) ** 2) ** 0.5 - rad, 50)))
    img = np.where(windowed[:, None, None], img * win, img)
    return img / (img.std(axis=(1, 2), keepdims=True) + 1e-8)


def _photo_gratings_chunk(rng: np.random.Generator, n: int) -> np.ndarray:
    u = rng.uniform(size=n)
    img = np.empty((n, H, W), np.float32)
    photo, grating = np.flatnonzero(u < 0.6), np.flatnonzero((u >= 0.6) & (u < 0.85))
    blend = np.flatnonzero(u >= 0.85)
    if photo.size:
        img[photo] = _photo_crops(rng, photo.size)
    if grating.size:
        img[grating] = _gratings(rng, grating.size)
    if blend.size:
        a = rng.uniform(0.2, 0.5, blend.size).astype(np.float32)[:, None, None].astype(np.float32)
        img[blend] = _zscore((1 - a) * _photo_crops(rng, blend.size) + a * _gratings(rng, blend.size))
    return _to_unit(img, rng.uniform(0.35, 0.65, n), rng.uniform(0.1, 0.24, n))


def photo_gratings(rng: np.random.Generator, n: int) -> np.ndarray:
    return _chunked(_photo_gratings_chunk, rng, n)


# ---------------------------------------------------------------------------------------------
# 4. shaded objects


def _shaded_objects_chunk(rng: np.random.Generator, n: int, max_objects: int = 8) -> np.ndarray:
    """Lambertian-shaded ellipsoids (random size, elongation, rotation, albedo and light direction,
    painted far to near: occlusion) over a low-pass 1/f^1.6 background of lower contrast."""
    f, _, _ = _freq_radius()
    amp = np.maximum(f, 1.0 / W) ** -1.6
    img = 0.35 * _filtered_noise(rng, np.broadcast_to(amp, (n, *amp.shape)))
    y, x = _coords()
    n_obj = rng.integers(3, max_objects + 1, n)
    for o in range(max_objects):
        on = (n_obj > o)[:, None, None]
        cy, cx = _col(rng.uniform(-5, H + 5, n)), _col(rng.uniform(0, W, n))
        a = _col(np.exp(rng.uniform(np.log(6), np.log(40), n)))  # semi-axes (px)
        b = a * _col(rng.uniform(0.3, 1.0, n))
        th = _col(rng.uniform(0, np.pi, n))
        u = ((x - cx) * np.cos(th) + (y - cy) * np.sin(th)) / a
        v = (-(x - cx) * np.sin(th) + (y - cy) * np.cos(th)) / b
        r2 = u**2 + v**2
        inside = on & (r2 < 1)
        nz = np.sqrt(np.clip(1 - r2, 0, 1))  # the ellipsoid's surface normal (u, v, nz) in its own frame
        el, az = _col(rng.uniform(0.3, 1.3, n)), _col(rng.uniform(0, 2 * np.pi, n))  # light: elevation, azimuth
        lu, lv, lz = np.cos(el) * np.cos(az - th), np.cos(el) * np.sin(az - th), np.sin(el)
        shade = np.clip(u * lu + v * lv + nz * lz, 0, None)
        lum = _col(rng.uniform(-1.5, 1.5, n)) + _col(rng.uniform(1.0, 3.0, n)) * (shade - 0.5)
        img = np.where(inside, lum, img)
    return _to_unit(_zscore(img), rng.uniform(0.4, 0.6, n), rng.uniform(0.14, 0.24, n))


def shaded_objects(rng: np.random.Generator, n: int) -> np.ndarray:
    return _chunked(_shaded_objects_chunk, rng, n)


# ---------------------------------------------------------------------------------------------
# statistics


def spectral_slope(images: np.ndarray) -> np.ndarray:
    """Per image: slope of log amplitude vs log spatial frequency (0.01..0.25 cycles/px), (n,)."""
    x = np.asarray(images, np.float64)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    amp = np.abs(np.fft.rfft2(x))
    f, _, _ = _freq_radius()
    bins = np.exp(np.linspace(np.log(0.01), np.log(0.25), 13))
    which = np.digitize(f, bins)
    centres, logamp = [], []
    for b in range(1, len(bins)):
        m = which == b
        if m.any():
            centres.append(np.log(f[m].mean()))
            logamp.append(np.log(amp[:, m].mean(axis=1) + 1e-12))
    c = np.array(centres)
    a = np.stack(logamp, axis=1)
    c0 = c - c.mean()
    return ((a - a.mean(axis=1, keepdims=True)) @ c0) / (c0 @ c0)
