"""Neuron models and noise of the benchmark simulation suite (independent of `neuroalign.data.simulate`).

Neurons see the image at half resolution (2x2 block means of 68x270 -> 34x135 = 4,590 pixels,
minus mid-gray 0.5). Each neuron's linear filters are built on that grid (positions and sizes in
full-resolution pixels) and applied to all images with one matrix product per chunk of neurons
(torch, CPU), so 2,800 images x 10,000 neurons cost a few hundred GFLOP, not a Python loop.

Populations return *relative* noiseless rates `(n_images, k)` (float32, positive, of order 1)
and per-neuron labels; `calibrate_gain` turns them into expected spike counts:

* `gabor_ln_population` -- Gabor simple cells (half-wave rectified linear drive ** p, p ~ U(1.5,
  2.5)) and complex cells (quadrature energy ** q, q ~ U(0.5, 1)); 0.02..0.12 cycles/px,
  elongated envelopes, centres in a subject-specific region.
* `subunit_population` -- LN-LN cells: 4 rectified subunits (small DoGs, or Gabors sharing an
  orientation +- jitter) at jittered positions, weighted sum, softplus output nonlinearity; a
  fraction of "unreliable" cells keeps 2 % of the stimulus drive.
* `surround_population` -- Gabor energy cells divided by a surround contrast-energy pool
  (band-passed contrast squared, Gaussian-pooled at a scale ~2.5x the centre), plus on/off DoG
  centre-surround cells.
* `higher_order_population` -- a second stage on divisively normalised Gabor energy maps: units that
  combine 3..6 oriented parts at offsets (corner / junction selective, tolerant to small shifts,
  thresholded), and large pooled-energy units.

Noise (`NoiseModel`): per trial, counts ~ Poisson(rate * G * Gamma) + gauss_sd * N(0, 1), with
a shared lognormal gain G per trial (mean 1, log-sd gain_sd) and, when nb_shape is set, a
per-neuron Gamma(shape, 1/shape) multiplier (gamma-Poisson = negative binomial, Fano = 1 +
rate / shape). `calibrate_gain` picks the overall rate scale so that the *expected* median
repeat-to-repeat correlation over neurons equals `target_r`, from the closed form
r = g^2 var / (g mean + g^2 (E[x^2] c - mean^2) + gauss_sd^2), c = exp(gain_sd^2) (1 + 1/shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

HH, WH = 34, 135
_YG = (2 * np.arange(HH, dtype=np.float32) + 0.5)[:, None].repeat(WH, 1).reshape(-1)  # full-res px
_XG = (2 * np.arange(WH, dtype=np.float32) + 0.5)[None, :].repeat(HH, 0).reshape(-1)
_CHUNK = 1000


def half_res(images: np.ndarray) -> torch.Tensor:
    """(n, 68, 270) in [0, 1] -> (n, 4590) float32 contrast (2x2 block mean - 0.5)."""
    x = np.asarray(images, np.float32)
    n = x.shape[0]
    x = x.reshape(n, HH, 2, WH, 2).mean(axis=(2, 4)) - 0.5
    return torch.from_numpy(np.ascontiguousarray(x.reshape(n, -1)))


def rf_centres(rng: np.random.Generator, k: int, region: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Centres (full-res px) clustered around region = (cy, cx, sd_y, sd_x), kept inside the image."""
    cy, cx, sy, sx = region
    y = np.clip(rng.normal(cy, sy, k), 6, 2 * HH - 6)
    x = np.clip(rng.normal(cx, sx, k), 8, 2 * WH - 8)
    return y.astype(np.float32), x.astype(np.float32)


def random_region(rng: np.random.Generator) -> tuple[float, float, float, float]:
    return (float(rng.uniform(24, 44)), float(rng.uniform(70, 200)), float(rng.uniform(7, 12)),
            float(rng.uniform(20, 45)))


def _c(a) -> np.ndarray:
    return np.asarray(a, np.float32)[:, None]


def gabor_filters(cy, cx, sf, sigma, aspect, theta, phase) -> tuple[np.ndarray, np.ndarray]:
    """Even/odd (quadrature) Gabors (k, 4590), zero mean, unit norm; sf in cycles per full-res px."""
    dy, dx = _YG[None] - _c(cy), _XG[None] - _c(cx)
    th = _c(theta)
    u = dx * np.cos(th) + dy * np.sin(th)  # across the bars
    v = -dx * np.sin(th) + dy * np.cos(th)  # along the bars
    s = _c(sigma)
    env = np.exp(-(u**2 + (v / _c(aspect)) ** 2) / (2 * s**2))
    arg = 2 * np.pi * _c(sf) * u + _c(phase)
    out = []
    for f in (np.cos(arg) * env, np.sin(arg) * env):
        f -= env * (f.sum(1, keepdims=True) / (env.sum(1, keepdims=True) + 1e-12))
        f /= np.linalg.norm(f, axis=1, keepdims=True) + 1e-12
        out.append(f.astype(np.float32))
    return out[0], out[1]


def dog_filters(cy, cx, sigma_c, sigma_s, w_surround, sign) -> np.ndarray:
    """Centre minus w * surround Gaussians (each of unit sum), times sign, unit norm (k, 4590)."""
    r2 = (_YG[None] - _c(cy)) ** 2 + (_XG[None] - _c(cx)) ** 2
    c = np.exp(-r2 / (2 * _c(sigma_c) ** 2))
    s = np.exp(-r2 / (2 * _c(sigma_s) ** 2))
    f = c / c.sum(1, keepdims=True) - _c(w_surround) * s / s.sum(1, keepdims=True)
    f *= _c(sign)
    return (f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-12)).astype(np.float32)


def _drive(x: torch.Tensor, filters: np.ndarray) -> torch.Tensor:
    """(n, P) @ (k, P).T -> (n, k), each column divided by its std over images.

    Filter tails below 1e-7 are zeroed: Gaussian tails are float32 denormals otherwise, and
    denormal arithmetic makes the matrix product 10-20x slower."""
    f = np.where(np.abs(filters) < 1e-7, np.float32(0), filters)
    d = x @ torch.from_numpy(np.ascontiguousarray(f.T))
    return d / (d.std(dim=0, keepdim=True) + 1e-8)


def _finish(r: torch.Tensor, base: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """base + amp * r / mean(r) per neuron -> float32 numpy."""
    r = r / (r.mean(dim=0, keepdim=True) + 1e-8)
    return (torch.from_numpy(base)[None] + torch.from_numpy(amp)[None] * r).numpy().astype(np.float32)


def _chunks(k: int):
    for s in range(0, k, _CHUNK):
        yield slice(s, min(k, s + _CHUNK))


def gabor_ln_population(x: torch.Tensor, rng: np.random.Generator, k: int, region, frac_complex: float = 0.4
                        ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    cy, cx = rf_centres(rng, k, region)
    sf = np.exp(rng.uniform(np.log(0.02), np.log(0.12), k))
    sigma = np.minimum(0.39 / sf * rng.uniform(0.8, 1.2, k), 22.0)
    aspect, theta, phase = rng.uniform(1.0, 2.0, k), rng.uniform(0, np.pi, k), rng.uniform(0, 2 * np.pi, k)
    complex_ = rng.uniform(size=k) < frac_complex
    expo = np.where(complex_, rng.uniform(0.5, 1.0, k), rng.uniform(1.5, 2.5, k)).astype(np.float32)
    base, amp = rng.uniform(0.1, 0.6, k).astype(np.float32), rng.lognormal(0, 0.4, k).astype(np.float32)
    out = np.empty((x.shape[0], k), np.float32)
    for s in _chunks(k):
        ev, od = gabor_filters(cy[s], cx[s], sf[s], sigma[s], aspect[s], theta[s], phase[s])
        cpx = complex_[s]
        de = _drive(x, ev)
        r = torch.relu(de) ** torch.from_numpy(expo[s])[None]  # simple: rectified drive ** p
        if cpx.any():  # complex: quadrature energy ** q (the odd drive only for these)
            energy = 0.5 * (de[:, cpx] ** 2 + _drive(x, od[cpx]) ** 2)
            r[:, cpx] = energy ** torch.from_numpy(expo[s][cpx])[None]
        out[:, s] = _finish(r, base[s], amp[s])
    return out, {"cell_type": complex_.astype(np.int8), "unreliable": np.zeros(k, bool)}  # 0 simple, 1 complex


def subunit_population(x: torch.Tensor, rng: np.random.Generator, k: int, region, frac_unreliable: float = 0.25,
                       n_sub: int = 4, frac_dog: float = 0.4) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    cy, cx = rf_centres(rng, k, region)
    jit = rng.uniform(3, 8, k)
    sy = (cy[:, None] + rng.normal(0, 1, (k, n_sub)) * jit[:, None]).clip(2, 2 * HH - 2).ravel()
    sx = (cx[:, None] + rng.normal(0, 1, (k, n_sub)) * jit[:, None]).clip(2, 2 * WH - 2).ravel()
    dog = np.repeat(rng.uniform(size=k) < frac_dog, n_sub)
    sf = np.repeat(np.exp(rng.uniform(np.log(0.04), np.log(0.12), k)), n_sub)
    theta = np.repeat(rng.uniform(0, np.pi, k), n_sub) + rng.normal(0, 0.25, k * n_sub)
    phase = rng.uniform(0, 2 * np.pi, k * n_sub)
    sig_c = np.repeat(rng.uniform(2.5, 5.0, k), n_sub)
    sign = np.repeat(rng.choice([-1.0, 1.0], k), n_sub)
    w = rng.uniform(0.4, 1.0, (k, n_sub)).astype(np.float32)
    sub_p = np.repeat(rng.uniform(1.2, 2.0, k), n_sub).astype(np.float32)
    thresh = rng.uniform(0.2, 1.2, k).astype(np.float32)
    unreliable = np.zeros(k, bool)
    unreliable[rng.permutation(k)[: int(round(frac_unreliable * k))]] = True
    base = rng.uniform(0.2, 0.8, k).astype(np.float32)
    amp = (rng.lognormal(0, 0.4, k) * np.where(unreliable, 0.02, 1.0)).astype(np.float32)
    out = np.empty((x.shape[0], k), np.float32)
    for s in _chunks(k):
        j = slice(s.start * n_sub, s.stop * n_sub)
        gab, _ = gabor_filters(sy[j], sx[j], sf[j], 0.35 / sf[j], np.ones(j.stop - j.start), theta[j], phase[j])
        dg = dog_filters(sy[j], sx[j], sig_c[j], 2.5 * sig_c[j], np.full(j.stop - j.start, 0.9), sign[j])
        filt = np.where(dog[j, None], dg, gab)
        sub = torch.relu(_drive(x, filt)) ** torch.from_numpy(sub_p[j])[None]  # (n, kc * n_sub)
        u = (sub.reshape(x.shape[0], -1, n_sub) * torch.from_numpy(w[s])[None]).sum(-1)
        u = u / (u.mean(dim=0, keepdim=True) + 1e-8)
        r = torch.nn.functional.softplus(3.0 * (u - torch.from_numpy(thresh[s])[None])) / 3.0
        out[:, s] = _finish(r, base[s], amp[s])
    return out, {"cell_type": dog[::n_sub].astype(np.int8), "unreliable": unreliable}  # 0 Gabor, 1 DoG subunits


def gaussian_blur(img: np.ndarray, sigmas: tuple[float, ...]) -> list[np.ndarray]:
    """Gaussian blurs of `img (n, h, w)` at each sigma (px): one FFT of the reflect-padded images."""
    from scipy import fft

    n, h, w = img.shape
    p = int(math.ceil(3 * max(sigmas)))
    eh, ew = fft.next_fast_len(h + 2 * p, real=True) - h - 2 * p, fft.next_fast_len(w + 2 * p, real=True) - w - 2 * p
    padded = np.pad(img, ((0, 0), (p, p + eh), (p, p + ew)), mode="reflect")  # fast FFT lengths
    spec = fft.rfft2(padded, workers=2)
    f2 = np.fft.fftfreq(padded.shape[1])[:, None] ** 2 + np.fft.rfftfreq(padded.shape[2])[None, :] ** 2
    return [fft.irfft2(spec * np.exp(-2 * np.pi**2 * s**2 * f2).astype(np.float32), s=padded.shape[1:],
                       workers=2)[:, p:p + h, p:p + w].astype(np.float32) for s in sigmas]


def contrast_energy(x: torch.Tensor) -> torch.Tensor:
    """Band-passed (minus a sigma-2 half-res px blur) contrast, squared: (n, P)."""
    img = x.numpy().reshape(-1, HH, WH)
    e = (img - gaussian_blur(img, (2.0,))[0]) ** 2
    return torch.from_numpy(np.ascontiguousarray(e.reshape(len(img), -1)))


def _gaussian_pools(cy, cx, sigma) -> np.ndarray:
    """Unit-sum isotropic Gaussian weights (k, P): the surround pool of each cell."""
    g = np.exp(-((_YG[None] - _c(cy)) ** 2 + (_XG[None] - _c(cx)) ** 2) / (2 * _c(sigma) ** 2))
    g = (g / g.sum(1, keepdims=True)).astype(np.float32)
    g[g < 1e-9] = 0  # no float32 denormals in the matrix product (10-20x slower)
    return g


def surround_population(x: torch.Tensor, rng: np.random.Generator, k: int, region, frac_dog: float = 0.4
                        ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    cy, cx = rf_centres(rng, k, region)
    dog = rng.uniform(size=k) < frac_dog
    sf = np.exp(rng.uniform(np.log(0.02), np.log(0.1), k))
    sigma = np.minimum(0.39 / sf * rng.uniform(0.8, 1.2, k), 20.0)
    aspect, theta, phase = rng.uniform(1.0, 1.8, k), rng.uniform(0, np.pi, k), rng.uniform(0, 2 * np.pi, k)
    sig_pool = np.minimum(2.5 * sigma, 40.0)  # surround pool ~2.5x the centre envelope (full-res px)
    w_sur, q = rng.uniform(0.5, 3.0, k).astype(np.float32), rng.uniform(0.8, 1.2, k).astype(np.float32)
    sig_c = rng.uniform(3, 10, k)
    sig_s, w_dog = sig_c * rng.uniform(2.0, 3.5, k), rng.uniform(0.6, 1.0, k)
    sign, p_dog = rng.choice([-1.0, 1.0], k), rng.uniform(1.2, 2.0, k).astype(np.float32)
    base, amp = rng.uniform(0.1, 0.5, k).astype(np.float32), rng.lognormal(0, 0.4, k).astype(np.float32)
    energy = contrast_energy(x)
    out = np.empty((x.shape[0], k), np.float32)
    for s in _chunks(k):
        ie = np.arange(s.start, s.stop)[~dog[s]]  # energy cells of this chunk
        idg = np.arange(s.start, s.stop)[dog[s]]
        ev, od = gabor_filters(cy[ie], cx[ie], sf[ie], sigma[ie], aspect[ie], theta[ie], phase[ie])
        e = 0.5 * (_drive(x, ev) ** 2 + _drive(x, od) ** 2)
        sur = torch.relu(energy @ torch.from_numpy(_gaussian_pools(cy[ie], cx[ie], sig_pool[ie]).T.copy()))
        sur = sur / (sur.mean(dim=0, keepdim=True) + 1e-12)  # (n, k_energy), mean 1
        qq, ww = torch.from_numpy(q[ie])[None], torch.from_numpy(w_sur[ie])[None]
        r = torch.empty((x.shape[0], s.stop - s.start))
        r[:, ~dog[s]] = (1 + ww) * e**qq / (1 + ww * sur**qq)
        dd = _drive(x, dog_filters(cy[idg], cx[idg], sig_c[idg], sig_s[idg], w_dog[idg], sign[idg]))
        r[:, dog[s]] = torch.relu(dd) ** torch.from_numpy(p_dog[idg])[None]
        out[:, s] = _finish(r, base[s], amp[s])
    return out, {"cell_type": dog.astype(np.int8), "unreliable": np.zeros(k, bool)}  # 0 energy+surround, 1 DoG


def energy_maps(x: torch.Tensor, wavelengths=(4.0, 8.0), n_orient: int = 8, chunk: int = 256) -> torch.Tensor:
    """A first stage of oriented units: quadrature Gabor energy maps `(n, len(wavelengths) * n_orient, HH, WH)`
    of the half-resolution contrast, each divided by the local mean energy of all channels (divisive
    normalisation, a Gaussian pool of 3 half-res px) and smoothed by 1 half-res px."""
    import torch.nn.functional as F

    kernels = []
    for lam in wavelengths:
        size = int(2 * round(0.8 * lam) + 1)
        r = torch.arange(size, dtype=torch.float32) - size // 2
        yy, xx = torch.meshgrid(r, r, indexing="ij")
        env = torch.exp(-(xx**2 + yy**2) / (2 * (0.5 * lam) ** 2))
        pad = (int(2 * round(0.8 * wavelengths[-1]) + 1) - size) // 2
        for o in range(n_orient):
            th = math.pi * o / n_orient
            u = xx * math.cos(th) + yy * math.sin(th)
            for f in (torch.cos(2 * math.pi * u / lam) * env, torch.sin(2 * math.pi * u / lam) * env):
                f = f - env * (f.sum() / env.sum())
                kernels.append(F.pad(f / f.norm(), (pad, pad, pad, pad)))
    weight = torch.stack(kernels)[:, None]  # (2 * C, 1, s, s): even, odd, even, odd, ...

    def blur(t: torch.Tensor, sigma: float) -> torch.Tensor:
        r = torch.arange(-3 * int(math.ceil(sigma)), 3 * int(math.ceil(sigma)) + 1, dtype=torch.float32)
        g = torch.exp(-r**2 / (2 * sigma**2))
        g = g / g.sum()
        c, h = t.shape[1], len(r) // 2
        column = g.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous()  # separable: down the rows, then along
        t = F.conv2d(F.pad(t, (0, 0, h, h), mode="replicate"), column, groups=c)
        return F.conv2d(F.pad(t, (h, h, 0, 0), mode="replicate"), column.transpose(2, 3).contiguous(), groups=c)
    out = []
    for s in range(0, x.shape[0], chunk):
        img = x[s:s + chunk].reshape(-1, 1, HH, WH)
        d = F.conv2d(F.pad(img, [weight.shape[-1] // 2] * 4, mode="reflect"), weight)
        e = (d[:, 0::2] ** 2 + d[:, 1::2] ** 2).sqrt()
        norm = blur(e.mean(dim=1, keepdim=True), 3.0)
        out.append(blur(e / (0.1 * norm.mean() + norm), 1.0))
    return torch.cat(out)


def higher_order_population(x: torch.Tensor, rng: np.random.Generator, k: int, region, frac_energy: float = 0.3,
                            ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Units of a second stage on `energy_maps` (16 channels: 2 scales x 8 orientations):

    * higher-order units (1 - `frac_energy`): 3..6 parts, each one channel at an offset of up to 7 half-res
      px from the unit's centre, weights 3:1 excitatory:inhibitory (half the units' parts are drawn
      from two orientations only: corner / junction selective), the weighted sum computed at the centre
      and 4 positions 2 half-res px away, the maximum over the five kept (local position tolerance),
      thresholded at its 40th..80th percentile over images and raised to p ~ U(1, 2);
    * pooled energy units: one or two channels of one orientation summed over a Gaussian field of
      3..8 half-res px, raised to q ~ U(0.6, 1.2) (large, position-tolerant complex cells)."""
    maps = energy_maps(x)
    n, c = maps.shape[:2]
    flat = maps.reshape(n, -1)
    cy, cx = rf_centres(rng, k, region)
    hy = np.clip(np.round(cy / 2 - 0.25), 0, HH - 1).astype(np.int64)
    hx = np.clip(np.round(cx / 2 - 0.25), 0, WH - 1).astype(np.int64)
    energy = rng.uniform(size=k) < frac_energy
    base, amp = rng.uniform(0.1, 0.5, k).astype(np.float32), rng.lognormal(0, 0.4, k).astype(np.float32)
    out = np.empty((n, k), np.float32)
    shifts = np.array([(0, 0), (2, 0), (-2, 0), (0, 2), (0, -2)])
    n_orient = c // 2
    for s in _chunks(k):
        ids = np.arange(s.start, s.stop)
        r = torch.empty((n, len(ids)))
        hi = ids[~energy[ids]]
        if hi.size:
            m = 6
            n_parts = rng.integers(3, m + 1, hi.size)
            corner = rng.uniform(size=hi.size) < 0.5
            o1, o2 = rng.integers(0, n_orient, hi.size), rng.integers(0, n_orient, hi.size)
            orient = np.where(corner[:, None] & (rng.uniform(size=(hi.size, m)) < 0.5), o2[:, None],
                              np.where(corner[:, None], o1[:, None], rng.integers(0, n_orient, (hi.size, m))))
            chan = orient + n_orient * rng.integers(0, 2, (hi.size, m))
            rad, ang = rng.uniform(0, 7, (hi.size, m)), rng.uniform(0, 2 * np.pi, (hi.size, m))
            dy, dx = np.round(rad * np.sin(ang)).astype(np.int64), np.round(rad * np.cos(ang)).astype(np.int64)
            w = rng.lognormal(0, 0.3, (hi.size, m)) * np.where(rng.uniform(size=(hi.size, m)) < 0.25, -0.7, 1.0)
            w = w * (np.arange(m)[None] < n_parts[:, None])
            yy = np.clip(hy[hi, None, None] + dy[:, :, None] + shifts[None, None, :, 0], 0, HH - 1)
            xx = np.clip(hx[hi, None, None] + dx[:, :, None] + shifts[None, None, :, 1], 0, WH - 1)
            idx = torch.from_numpy((chan[:, :, None] * HH * WH + yy * WH + xx).reshape(-1))
            vals = flat[:, idx].reshape(n, hi.size, m, len(shifts))
            drive = (vals * torch.from_numpy(w.astype(np.float32))[None, :, :, None]).sum(2).amax(-1)  # (n, k_hi)
            drive = (drive - drive.mean(0)) / (drive.std(0) + 1e-8)
            thr = torch.from_numpy(np.stack([np.quantile(drive[:, j].numpy(), q) for j, q in
                                             enumerate(rng.uniform(0.4, 0.8, hi.size))]).astype(np.float32))
            p = torch.from_numpy(rng.uniform(1.0, 2.0, hi.size).astype(np.float32))
            r[:, ~energy[ids]] = torch.relu(drive - thr[None]) ** p[None]
        en = ids[energy[ids]]
        if en.size:
            orient = rng.integers(0, n_orient, en.size)
            scales = rng.integers(0, 3, en.size)  # 0: fine, 1: coarse, 2: both
            sig = rng.uniform(3, 8, en.size)
            pool = _gaussian_pools(2 * hy[en] + 0.5, 2 * hx[en] + 0.5, 2 * sig)  # (k_en, P) in full-res px
            e = torch.zeros((n, en.size))
            for sc in (0, 1):
                for o in range(n_orient):  # each channel once: its units' fields in one product
                    units = np.flatnonzero(((scales == sc) | (scales == 2)) & (orient == o))
                    if units.size:
                        e[:, units] += maps[:, o + n_orient * sc].reshape(n, -1) @ torch.from_numpy(pool[units].T.copy())
            q = torch.from_numpy(rng.uniform(0.6, 1.2, en.size).astype(np.float32))
            r[:, energy[ids]] = e ** q[None]
        out[:, s] = _finish(r + 1e-3, base[s], amp[s])
    return out, {"cell_type": energy.astype(np.int8), "unreliable": np.zeros(k, bool)}  # 0 higher-order, 1 energy


# ---------------------------------------------------------------------------------------------
# noise


@dataclass(frozen=True)
class NoiseModel:
    target_r: float  # expected median repeat-to-repeat correlation over neurons
    gain_sd: float = 0.0  # log-sd of the shared multiplicative gain per trial
    nb_shape: float | None = None  # gamma-Poisson shape (None: plain Poisson)
    gauss_sd: float = 0.0  # additive Gaussian noise, in counts

    def _c(self) -> float:
        return math.exp(self.gain_sd**2) * (1.0 + (0.0 if self.nb_shape is None else 1.0 / self.nb_shape))


def expected_repeat_r(rel: np.ndarray, noise: NoiseModel, g: float) -> np.ndarray:
    """Closed-form expected repeat-to-repeat correlation per neuron at rate scale g, (k,)."""
    x = np.asarray(rel, np.float64)
    m, s2 = x.mean(0), (x**2).mean(0)
    v = s2 - m**2
    return g * g * v / (g * m + g * g * (s2 * noise._c() - m**2) + noise.gauss_sd**2 + 1e-300)


def calibrate_gain(rel: np.ndarray, noise: NoiseModel) -> float:
    """Rate scale g (bisection in log g) whose expected median repeat r is noise.target_r (or the
    highest reachable, when the multiplicative noise caps it)."""
    x = np.asarray(rel, np.float32)
    m, s2 = x.mean(0, dtype=np.float64), np.einsum("ij,ij->j", x, x, dtype=np.float64) / len(x)
    v, c, gs2 = s2 - m**2, noise._c(), noise.gauss_sd**2

    def med(lg: float) -> float:
        g = math.exp(lg)
        return float(np.median(g * g * v / (g * m + g * g * (s2 * c - m**2) + gs2 + 1e-300)))

    lo, hi = math.log(1e-3), math.log(1e5)
    if med(hi) < noise.target_r:
        return math.exp(hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if med(mid) < noise.target_r else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def sample_repeats(rates: np.ndarray, noise: NoiseModel, rng: np.random.Generator, n_repeats: int = 2,
                   chunk: int = 256) -> np.ndarray:
    """Single trials (R, n, k) float32 from expected counts `rates (n, k)` (see NoiseModel)."""
    n, k = rates.shape
    out = np.empty((n_repeats, n, k), np.float32)
    for r in range(n_repeats):
        gain = np.exp(noise.gain_sd * rng.standard_normal(n) - 0.5 * noise.gain_sd**2).astype(np.float32)
        for s in range(0, n, chunk):
            lam = rates[s:s + chunk] * gain[s:s + chunk, None]
            if noise.nb_shape is not None:
                lam = lam * rng.gamma(noise.nb_shape, 1.0 / noise.nb_shape, lam.shape).astype(np.float32)
            y = rng.poisson(lam).astype(np.float32)
            if noise.gauss_sd > 0:
                y += noise.gauss_sd * rng.standard_normal(lam.shape, dtype=np.float32)
            out[r, s:s + chunk] = y
    return out


def repeat_r(repeats: np.ndarray) -> np.ndarray:
    """Measured correlation across images between repeat 1 and repeat 2, per neuron (k,)."""
    a = repeats[0] - repeats[0].mean(0)
    b = repeats[1] - repeats[1].mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    return np.where(den > 0, (a * b).sum(0) / np.where(den > 0, den, 1), 0.0)
